"""`restore`: roll a volume back to a snapshot, keeping a safety snapshot of what it held."""

from datetime import datetime

import anyio

from commands.base import EffectKind, JobContext, Outcome, Plan, Step
from commands.facts import Looks
from commands.faults import fault_point
from commands.inventory import Inventory
from commands.names import unique
from commands.snapshot_kinds import SAFETY
from commands.steps import instances_stopped
from commands.usability import require_usable
from schemas.commands import RestoreCommand
from schemas.errors import AtlasError, InvalidCommand, NotFound
from schemas.results import RestoreResult


def safety_name(now: datetime) -> str:
    """`pre-restore-<YYYYmmdd-HHMMSS>-<token>`: two restores never take the same name."""
    return unique(SAFETY, now)


def looks(command: RestoreCommand, inventory: Inventory) -> Looks:
    return Looks(volumes=(inventory.require_volume(command.volume, "$.volume").volume,))


def plan(command: RestoreCommand, inventory: Inventory, now: datetime) -> Plan:
    service = inventory.require_volume(command.volume, "$.volume")
    if command.confirm != command.volume:
        raise InvalidCommand(
            f"restore replaces the content of {command.volume!r}: `confirm` must equal"
            " the volume name - at `$.confirm`"
        )
    facts = inventory.facts
    if facts.missing(service.volume):
        raise InvalidCommand(f"volume {service.volume!r} does not exist in Incus - at `$.volume`")
    if facts.volume(service.volume) and command.snapshot not in facts.snapshot_names(
        service.volume
    ):
        raise InvalidCommand(
            f"volume {service.volume!r} has no snapshot {command.snapshot!r} - at `$.snapshot`"
        )
    safety = safety_name(now)
    instances = facts.instances_of(service)
    return Plan(
        targets=(service.volume,),
        steps=(
            *(Step("stop_instance", i, {"if": "running"}) for i in instances),
            Step("create_snapshot", service.volume, {"name": safety, "why": "safety"}),
            Step("restore_snapshot", service.volume, {"snapshot": command.snapshot}),
            *(
                Step("start_instance", i, {"if": "was running", "always": True})
                for i in reversed(instances)
            ),
        ),
    )


async def execute(command: RestoreCommand, plan: Plan, ctx: JobContext) -> Outcome[RestoreResult]:
    volume, snapshot = command.volume, command.snapshot
    safety = next(s.detail["name"] for s in plan.steps if s.op == "create_snapshot")
    info = await ctx.ports.incus.get_volume(volume)
    taken = next((s for s in info.snapshots if s.name == snapshot), None)
    if taken is None:
        raise NotFound(f"volume {volume!r} has no snapshot {snapshot!r}")
    service = ctx.ports.inventory.require_volume(volume, "$.volume")
    await require_usable(
        ctx, service.name, f"snapshot {snapshot!r} of volume {volume!r}", taken.created
    )
    # The planned instances, and any that began to use the volume since.
    planned = [s.target for s in plan.steps if s.op == "stop_instance"]
    instances = [*planned, *sorted(set(info.used_by) - set(planned))]
    async with instances_stopped(ctx, instances) as stopped:
        ctx.checkpoint()
        ctx.progress(f"safety snapshot {safety}")
        await ctx.ports.incus.create_snapshot(volume, safety)
        fault_point("restore_safety_taken")
        ctx.progress(f"restoring {volume} to {snapshot}")
        seq = ctx.journal.record(EffectKind.RESTORING, volume, {"safety_snapshot": safety})
        fault_point("restoring")
        try:
            await ctx.ports.incus.restore_snapshot(volume, snapshot)
        except BaseException as exc:  # an Incus failure, or cancellation by a shutdown
            # Closed here, not left to the next start: by then the instance runs again and
            # Incus refuses to restore a volume a running instance uses.
            if await _roll_back(ctx, volume, safety, exc):
                ctx.journal.resolve(seq)
            raise
        fault_point("restored")
        ctx.journal.resolve(seq)
    return Outcome(
        RestoreResult(
            volume=volume, snapshot=snapshot, safety_snapshot=safety, instances_restarted=stopped
        ),
        succeeded=[volume],
    )


async def _roll_back(ctx: JobContext, volume: str, safety: str, cause: BaseException) -> bool:
    """Put the safety snapshot back; the original error is what the job reports."""
    with anyio.CancelScope(shield=True):
        ctx.progress(f"rolling {volume} back to {safety}")
        try:
            await ctx.ports.incus.restore_snapshot(volume, safety)
        except AtlasError as exc:
            cause.add_note(f"rollback to {safety} failed too: {exc}")
            return False
    return True
