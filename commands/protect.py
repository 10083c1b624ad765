"""`protect` / `unprotect`: keep one snapshot or export from any prune, or let the policy
decide on it again. Where the mark is kept: `commands.protection`."""

from datetime import datetime

from commands.base import JobContext, Outcome, Plan, Step
from commands.facts import Looks
from commands.inventory import Inventory
from commands.protection import is_protected, with_mark
from schemas.commands import ProtectCommand, UnprotectCommand
from schemas.errors import InvalidCommand, NotFound
from schemas.results import ProtectResult

Protection = ProtectCommand | UnprotectCommand


def _target(command: Protection) -> str:
    """The volume the command is about; exactly one of a snapshot or a backup is named."""
    if command.backup is not None:
        if command.volume is not None or command.snapshot is not None:
            raise InvalidCommand(
                "name a snapshot (`volume` and `snapshot`) or an export (`backup`), not both"
                " - at `$.backup`"
            )
        return command.backup.partition("/")[2]
    if command.volume is None or command.snapshot is None:
        field = "$.volume" if command.volume is None else "$.snapshot"
        raise InvalidCommand(
            f"name a snapshot (`volume` and `snapshot`) or an export (`backup`) - at `{field}`"
        )
    return command.volume


def looks(command: Protection, inventory: Inventory) -> Looks:
    if command.snapshot is not None and command.volume is not None:
        return Looks(volumes=(command.volume,))
    return Looks()


def plan(command: Protection, inventory: Inventory, now: datetime) -> Plan:
    volume = _target(command)
    field = "$.backup" if command.backup is not None else "$.volume"
    inventory.require_volume(volume, field)
    protect = isinstance(command, ProtectCommand)
    op = "protect" if protect else "unprotect"
    if command.backup is not None:
        return Plan(targets=(volume,), steps=(Step(op, volume, {"backup": command.backup}),))
    snapshot = command.snapshot or ""
    facts = inventory.facts
    if facts.volume(volume) is not None and snapshot not in facts.snapshot_names(volume):
        raise InvalidCommand(f"volume {volume!r} has no snapshot {snapshot!r} - at `$.snapshot`")
    return Plan(targets=(volume,), steps=(Step(op, volume, {"snapshot": snapshot}),))


async def execute(command: Protection, plan: Plan, ctx: JobContext) -> Outcome[ProtectResult]:
    step = plan.steps[0]
    volume, protect = step.target, step.op == "protect"
    if "backup" in step.detail:
        before = {r.item: r.note.protected for r in (await ctx.ports.catalog.exports_of(volume))[0]}
        name = await ctx.ports.catalog.set_protected(step.detail["backup"], protect)
        result = ProtectResult(
            volume=volume,
            type="export",
            name=name,
            protected=protect,
            changed=before.get(name) != protect,
        )
        return Outcome(result, succeeded=[volume])
    snapshot = step.detail["snapshot"]
    info = await ctx.ports.incus.get_volume(volume)
    found = next((s for s in info.snapshots if s.name == snapshot), None)
    if found is None:
        raise NotFound(f"volume {volume!r} has no snapshot {snapshot!r}")
    changed = is_protected(found.description) != protect
    if changed:
        ctx.progress(f"{step.op} snapshot {snapshot} of {volume}")
        described = with_mark(found.description, protect)
        await ctx.ports.incus.set_snapshot_description(volume, snapshot, described)
    result = ProtectResult(
        volume=volume, type="snapshot", name=snapshot, protected=protect, changed=changed
    )
    return Outcome(result, succeeded=[volume])
