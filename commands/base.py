"""What every command is made of: a pure plan, and an execute step that walks it.

`plan` validates against the inventory and returns data only; it is also what `dry_run`
answers. `execute` makes the side effects through `JobContext.ports`.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from commands.facts import Looks
from commands.inventory import Inventory
from commands.ports import (
    ArchiveInspector,
    BackupFiles,
    Catalog,
    DashboardFiles,
    ExportFiles,
    Grafana,
    Incus,
    Sandbox,
    StateBucket,
)
from schemas.commands import Command
from schemas.errors import JobCancelled
from schemas.messages import ErrorInfo
from schemas.results import CancelResult, JobResult, StatusResult


@dataclass(frozen=True)
class Step:
    """One thing the job will do, e.g. `stop_instance grafana01`."""

    op: str
    target: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"op": self.op, "target": self.target, **self.detail}


@dataclass(frozen=True)
class Plan:
    """The volumes a job locks, and its steps in order."""

    targets: tuple[str, ...]
    steps: tuple[Step, ...]

    def as_list(self) -> list[dict[str, Any]]:
        return [step.as_dict() for step in self.steps]


R = TypeVar("R", bound=JobResult)


@dataclass
class Outcome(Generic[R]):
    """What a job produced: its action's result (`schemas.results`), which the runner
    stores and publishes. `failed` maps a target to its error; some failed is `partial`."""

    result: R
    failed: dict[str, ErrorInfo] = field(default_factory=dict)
    succeeded: list[str] = field(default_factory=list)

    def cancelled(self, exc: JobCancelled) -> JobCancelled:
        """The cancel to raise in place of `exc`, carrying what was done so far."""
        return JobCancelled(
            str(exc), msgspec.structs.replace(self.result, succeeded=list(self.succeeded))
        )


@dataclass(frozen=True)
class Ports:
    """The adapters a job reaches the world through, built once when the agent starts.

    A new port is one field here, and one argument where the agent builds the bundle.
    """

    incus: Incus
    backups: BackupFiles
    exports: ExportFiles
    archives: ArchiveInspector
    catalog: Catalog
    inventory: Inventory
    sandbox: Sandbox
    # None when `[state_bucket]` is off.
    state_bucket: StateBucket | None = None
    # None when `[grafana] url` is unset.
    grafana: Grafana | None = None
    dashboard_files: DashboardFiles | None = None


class EffectKind(StrEnum):
    """Every kind of side effect a job journals; recovery has an undo for each."""

    INSTANCE_STOPPED = "instance_stopped"
    RESTORING = "restoring"
    TEMP_VOLUME = "temp_volume"
    OLD_VOLUME = "old_volume"
    VOLUME_SWAP = "volume_swap"
    SERVER_BACKUP = "server_backup"
    EXPORT_SNAPSHOT = "export_snapshot"
    PART_FILE = "part_file"
    DRILL_PROJECT = "drill_project"
    # `state_import` with replace: the bucket removed, the backup going in; recovery puts
    # the bucket back from the safety export the entry names.
    STATE_IMPORT = "state_import"
    # Prune: one entry per item removed, so recovery can say what happened to it and
    # finish an export whose manifest entry is gone but whose file is not.
    PRUNED_SNAPSHOT = "pruned_snapshot"
    PRUNED_VOLUME = "pruned_volume"
    PRUNED_EXPORT = "pruned_export"


class Journal(Protocol):
    """Records a side effect before it is made, so a restarted agent can undo it."""

    def record(self, kind: EffectKind, target: str, data: dict[str, Any] | None = None) -> int: ...

    def update(self, seq: int, data: dict[str, Any]) -> None:
        """Replace an open entry's data: how far the side effect got."""
        ...

    def resolve(self, seq: int) -> None: ...


class Control(Protocol):
    """The agent's own controls, for `cancel` and `status`."""

    def cancel_job(self, job_id: str) -> CancelResult: ...

    async def republish(self) -> StatusResult: ...


class JobContext(Protocol):
    """A running job's view of the agent: the job, the ports, its journal, the agent's
    controls and the clock."""

    @property
    def job_id(self) -> str: ...

    @property
    def ports(self) -> Ports: ...

    @property
    def journal(self) -> Journal: ...

    @property
    def control(self) -> Control: ...

    def now(self) -> datetime: ...

    def checkpoint(self) -> None:
        """A safe point: raises `JobCancelled` when a cancel was requested."""

    def progress(self, phase: str, done: int = 0, total: int = 0, *, unit: str = "bytes") -> None:
        """Report the phase and how far it got, in bytes, or in `unit="steps"` (volumes)."""


C = TypeVar("C", bound=Command)


def looks_at_nothing(command: Command, inventory: Inventory) -> Looks:
    return Looks()


@dataclass(frozen=True)
class Action(Generic[C]):
    """One command type's handler. `immediate` ones run at once, outside the job queue.
    `looks` says what to look up in Incus and the backup directory before `plan`. A dry
    run answers with the plan, unless `decides_when_run`: then `execute` runs, reads what
    is there when the job runs, decides and reports, and changes nothing on a dry run."""

    plan: Callable[[C, Inventory, datetime], Plan]
    execute: Callable[[C, Plan, JobContext], Awaitable[Outcome[Any]]]
    immediate: bool = False
    looks: Callable[[C, Inventory], Looks] = looks_at_nothing
    decides_when_run: bool = False
