"""`cancel`: a queued job at once, a running one at its next safe point."""

from datetime import datetime

from commands.base import JobContext, Outcome, Plan, Step
from commands.inventory import Inventory
from schemas.commands import CancelCommand
from schemas.results import CancelResult


def plan(command: CancelCommand, inventory: Inventory, now: datetime) -> Plan:
    return Plan(targets=(), steps=(Step("cancel_job", command.job),))


async def execute(command: CancelCommand, plan: Plan, ctx: JobContext) -> Outcome[CancelResult]:
    return Outcome(ctx.control.cancel_job(command.job))
