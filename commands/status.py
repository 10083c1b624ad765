"""`status`: republish the agent's and every volume's retained state."""

from datetime import datetime

from commands.base import JobContext, Outcome, Plan, Step
from commands.inventory import Inventory
from schemas.commands import StatusCommand
from schemas.results import StatusResult


def plan(command: StatusCommand, inventory: Inventory, now: datetime) -> Plan:
    return Plan(targets=(), steps=(Step("republish", "status"),))


async def execute(command: StatusCommand, plan: Plan, ctx: JobContext) -> Outcome[StatusResult]:
    return Outcome(await ctx.control.republish())
