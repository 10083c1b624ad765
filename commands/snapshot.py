"""`snapshot`: an Incus snapshot of each volume, optionally with its instance stopped."""

from datetime import datetime

from commands.base import JobContext, Outcome, Plan, Step
from commands.facts import Looks
from commands.faults import fault_point
from commands.hooks import hooks_around
from commands.inventory import Inventory
from commands.snapshot_kinds import BACKUP, RESERVED_PREFIXES
from commands.steps import error_info, instances_stopped
from schemas.commands import SnapshotCommand
from schemas.errors import AtlasError, InvalidCommand, JobCancelled
from schemas.results import HookOutput, SnapshotResult
from schemas.timefmt import compact


def default_name(now: datetime) -> str:
    return f"{BACKUP}-{compact(now)}"


def looks(command: SnapshotCommand, inventory: Inventory) -> Looks:
    return Looks(volumes=tuple(s.volume for s in inventory.resolve(command.volumes)))


def plan(command: SnapshotCommand, inventory: Inventory, now: datetime) -> Plan:
    if command.name is not None and command.name.startswith(RESERVED_PREFIXES):
        raise InvalidCommand(
            f"snapshot names starting with {' or '.join(RESERVED_PREFIXES)} are the agent's"
            " own (safety and export snapshots) - at `$.name`"
        )
    name = command.name or default_name(now)
    steps: list[Step] = []
    services = inventory.resolve(command.volumes)
    facts = inventory.facts
    for service in services:
        if name in facts.snapshot_names(service.volume):
            raise InvalidCommand(
                f"volume {service.volume!r} has a snapshot {name!r} already - at `$.name`"
            )
        quiesce = service.quiesce if command.quiesce is None else command.quiesce
        instances = facts.instances_of(service) if quiesce else ()
        for_volume = {"volume": service.volume}
        steps += [Step("stop_instance", i, {"if": "running", **for_volume}) for i in instances]
        steps.append(Step("create_snapshot", service.volume, {"name": name}))
        steps += [
            Step("start_instance", i, {"if": "was running", **for_volume})
            for i in reversed(instances)
        ]
    return Plan(targets=tuple(s.volume for s in services), steps=tuple(steps))


async def execute(command: SnapshotCommand, plan: Plan, ctx: JobContext) -> Outcome[SnapshotResult]:
    outcome = Outcome(SnapshotResult(snapshots={}))
    hooks: list[HookOutput] = []
    total = len(plan.targets)
    creates = [s for s in plan.steps if s.op == "create_snapshot"]
    for index, step in enumerate(creates):
        try:
            ctx.checkpoint()
        except JobCancelled as exc:
            raise outcome.cancelled(exc) from None
        volume = step.target
        ctx.progress(f"snapshotting {volume}", index, total, unit="steps")
        stops = [
            s.target for s in plan.steps if s.op == "stop_instance" and s.detail["volume"] == volume
        ]
        service = ctx.ports.inventory.require_volume(volume, "$.volumes")
        try:
            async with (
                hooks_around(ctx, service, hooks),
                instances_stopped(ctx, stops),
            ):
                await ctx.ports.incus.create_snapshot(volume, step.detail["name"])
                fault_point("snapshot_taken")
        except AtlasError as exc:
            outcome.failed[volume] = error_info(exc)
            continue
        outcome.result.snapshots[volume] = step.detail["name"]
        outcome.succeeded.append(volume)
    ctx.progress("done", total, total, unit="steps")
    if hooks:
        outcome.result.hooks = hooks
    return outcome
