"""`list`: the configured volumes as Incus has them, their instances and snapshots."""

from datetime import datetime
from typing import Any

from commands.base import JobContext, Outcome, Plan, Step
from commands.inventory import Inventory
from schemas.commands import ListCommand
from schemas.errors import NotFound
from schemas.timefmt import epoch_ms, iso


def plan(command: ListCommand, inventory: Inventory, now: datetime) -> Plan:
    services = inventory.resolve(command.volumes)
    # Read-only: it locks nothing, so it never waits behind a long export.
    return Plan(targets=(), steps=tuple(Step("describe_volume", s.volume) for s in services))


async def execute(command: ListCommand, plan: Plan, ctx: JobContext) -> Outcome:
    volumes: list[dict[str, Any]] = []
    for step in plan.steps:
        service = ctx.inventory.require_volume(step.target, "$.volumes")
        entry: dict[str, Any] = {
            "volume": service.volume,
            "service": service.name,
            "instance": service.instance,
            "criticality": service.criticality,
        }
        try:
            info = await ctx.incus.get_volume(service.volume)
        except NotFound:
            volumes.append({**entry, "exists": False, "used_by": [], "snapshots": []})
            continue
        snapshots = [
            {"name": s.name, "created": iso(s.created), "created_ts": epoch_ms(s.created)}
            for s in info.snapshots
        ]
        volumes.append(
            {**entry, "exists": True, "used_by": list(info.used_by), "snapshots": snapshots}
        )
    return Outcome(result={"volumes": volumes}, succeeded=[v["volume"] for v in volumes])
