"""The one table that maps each command type to its handler."""

from typing import Any

from commands import (
    cancel,
    drill,
    export,
    import_volume,
    list_volumes,
    protect,
    prune,
    restore,
    snapshot,
    status,
    verify,
)
from commands.base import Action
from schemas.commands import (
    CancelCommand,
    Command,
    DrillCommand,
    ExportCommand,
    ImportCommand,
    ListCommand,
    ProtectCommand,
    PruneCommand,
    RestoreCommand,
    SnapshotCommand,
    StatusCommand,
    UnprotectCommand,
    VerifyCommand,
)

ACTIONS: dict[type[Command], Action[Any]] = {
    ListCommand: Action(list_volumes.plan, list_volumes.execute, immediate=True),
    SnapshotCommand: Action(snapshot.plan, snapshot.execute, looks=snapshot.looks),
    RestoreCommand: Action(restore.plan, restore.execute, looks=restore.looks),
    StatusCommand: Action(status.plan, status.execute, immediate=True),
    CancelCommand: Action(cancel.plan, cancel.execute, immediate=True),
    ImportCommand: Action(import_volume.plan, import_volume.execute, looks=import_volume.looks),
    ExportCommand: Action(export.plan, export.execute, looks=export.looks),
    VerifyCommand: Action(verify.plan, verify.execute),
    DrillCommand: Action(drill.plan, drill.execute),
    PruneCommand: Action(prune.plan, prune.execute, decides_when_run=True),
    ProtectCommand: Action(protect.plan, protect.execute, looks=protect.looks),
    UnprotectCommand: Action(protect.plan, protect.execute, looks=protect.looks),
}


def action_for(command: Command) -> Action[Any] | None:
    """The handler, or None for an action of the contract this version does not run yet."""
    return ACTIONS.get(type(command))
