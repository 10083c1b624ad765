"""The one table that maps each command type to its handler."""

from typing import Any

from commands import (
    cancel,
    dashboards,
    drill,
    export,
    import_volume,
    list_volumes,
    mark_compromised,
    protect,
    prune,
    rebuild,
    restore,
    snapshot,
    state_bucket,
    status,
    verify,
)
from commands.base import Action
from schemas.commands import (
    CancelCommand,
    Command,
    DashboardsExportCommand,
    DashboardsImportCommand,
    DrillCommand,
    ExportCommand,
    ImportCommand,
    ListCommand,
    MarkCompromisedCommand,
    ProtectCommand,
    PruneCommand,
    RebuildCommand,
    RestoreCommand,
    SnapshotCommand,
    StateExportCommand,
    StateImportCommand,
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
    RebuildCommand: Action(rebuild.plan, rebuild.execute, decides_when_run=True),
    ProtectCommand: Action(protect.plan, protect.execute, looks=protect.looks),
    UnprotectCommand: Action(protect.plan, protect.execute, looks=protect.looks),
    MarkCompromisedCommand: Action(mark_compromised.plan, mark_compromised.execute),
    StateExportCommand: Action(state_bucket.plan_export, state_bucket.execute_export),
    StateImportCommand: Action(state_bucket.plan_import, state_bucket.execute_import),
    DashboardsExportCommand: Action(dashboards.plan_export, dashboards.execute_export),
    DashboardsImportCommand: Action(dashboards.plan_import, dashboards.execute_import),
}


def action_for(command: Command) -> Action[Any] | None:
    """The handler, or None for an action of the contract this version does not run yet."""
    return ACTIONS.get(type(command))
