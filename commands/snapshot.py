"""`snapshot`: an Incus snapshot of each volume, optionally with its instance stopped."""

from contextlib import AsyncExitStack
from datetime import datetime

from commands.base import JobContext, Outcome, Plan, Step
from commands.faults import fault_point
from commands.inventory import Inventory
from commands.steps import error_info, instance_stopped
from schemas.commands import SnapshotCommand
from schemas.errors import AtlasError, JobCancelled
from schemas.timefmt import compact


def default_name(now: datetime) -> str:
    return f"backup-{compact(now)}"


def plan(command: SnapshotCommand, inventory: Inventory, now: datetime) -> Plan:
    name = command.name or default_name(now)
    steps: list[Step] = []
    services = inventory.resolve(command.volumes)
    for service in services:
        quiesce = service.quiesce if command.quiesce is None else command.quiesce
        if quiesce:
            steps.append(Step("stop_instance", service.instance, {"if": "running"}))
        steps.append(Step("create_snapshot", service.volume, {"name": name}))
        if quiesce:
            steps.append(Step("start_instance", service.instance, {"if": "was running"}))
    return Plan(targets=tuple(s.volume for s in services), steps=tuple(steps))


async def execute(command: SnapshotCommand, plan: Plan, ctx: JobContext) -> Outcome:
    outcome = Outcome(result={"snapshots": {}})
    total = len(plan.targets)
    creates = [s for s in plan.steps if s.op == "create_snapshot"]
    for index, step in enumerate(creates):
        try:
            ctx.checkpoint()
        except JobCancelled as exc:
            raise JobCancelled(
                str(exc), {**outcome.result, "succeeded": outcome.succeeded}
            ) from None
        volume = step.target
        service = ctx.inventory.require_volume(volume, "$.volumes")
        ctx.progress(f"snapshotting {volume}", index, total, unit="steps")
        stops = [s for s in plan.steps if s.op == "stop_instance" and s.target == service.instance]
        try:
            async with AsyncExitStack() as stack:
                for stop in stops:
                    await stack.enter_async_context(instance_stopped(ctx, stop.target))
                await ctx.incus.create_snapshot(volume, step.detail["name"])
                fault_point("snapshot_taken")
        except AtlasError as exc:
            outcome.failed[volume] = error_info(exc)
            continue
        outcome.result["snapshots"][volume] = step.detail["name"]
        outcome.succeeded.append(volume)
    ctx.progress("done", total, total, unit="steps")
    return outcome
