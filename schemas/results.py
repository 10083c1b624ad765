"""What each action's job leaves in `result` (API.md, "Job state"), one Struct per action.

The job state's `action` says which type its `result` has (`RESULT_TYPES`), a dry run's is
`DryRunResult`. Every result may also carry the fields of `JobResult`, which the runner and
recovery add; they are absent, not null, until then. A job whose action produced nothing
(failed, interrupted, or cancelled before it started) has a `NoResult`: `{}`, or only what
recovery undid.
"""

from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from schemas.commands import Compression, ExportMode
from schemas.manifest import EncryptionMethod, ManifestEntry, TfState
from schemas.messages import ErrorInfo


class JobResult(msgspec.Struct, kw_only=True):
    """Fields any job's result may carry, added by the runner and by recovery."""

    # Some targets failed (the job is `partial`, or `failed` when none succeeded): the
    # error of each. Absent when no target failed.
    failed: dict[str, ErrorInfo] | UnsetType = UNSET
    # The targets that succeeded: set with `failed`, and by a cancel mid-job.
    succeeded: list[str] | UnsetType = UNSET
    # What the agent undid after the job was interrupted or left something behind.
    undone: list[str] | UnsetType = UNSET
    # Undo that failed so far and is retried (Incus down); absent once all is undone.
    undo_pending: list[str] | UnsetType = UNSET


class NoResult(JobResult, kw_only=True, forbid_unknown_fields=True):
    """The result of a job whose action produced none: `{}`, or only what was undone."""


class DryRunResult(JobResult, kw_only=True):
    """A dry run's result: the plan, exactly as the response gave it; nothing changed."""

    dry_run: Literal[True] = True
    plan: list[dict[str, Any]]


class ListedSnapshot(msgspec.Struct, kw_only=True):
    name: str
    created: str
    created_ts: int
    # Kept from any prune (`protect`).
    protected: bool = False


class ListedBackup(ManifestEntry, kw_only=True, forbid_unknown_fields=False):
    """An exported backup in the catalog: its reference and set, then its manifest entry."""

    backup: str
    set: str
    # Kept from any prune (`protect`), and its last verify ("" and false when none).
    protected: bool = False
    verified: str = ""
    verify_ok: bool = False


class ListedVolume(msgspec.Struct, kw_only=True):
    volume: str
    service: str
    instance: str
    criticality: str
    # Newest first.
    backups: list[ListedBackup]
    # False when Incus has no such volume; then `used_by` and `snapshots` are empty.
    exists: bool
    used_by: list[str]
    snapshots: list[ListedSnapshot]


class ListResult(JobResult, kw_only=True):
    volumes: list[ListedVolume]
    # Backup sets whose manifest could not be read: named, never fatal to the listing.
    catalog_problems: list[str]


class HookOutput(msgspec.Struct, kw_only=True):
    """One hook step that ran: its command, exit code and the tail of its output (bounded,
    with `password=`-like values masked)."""

    volume: str
    when: Literal["pre", "post"]
    command: list[str]
    exit_code: int  # -1: it did not finish (a timeout, Incus failed)
    seconds: float
    output: str
    ok: bool
    error: str = ""


class SnapshotResult(JobResult, kw_only=True):
    # Volume -> the snapshot taken of it.
    snapshots: dict[str, str]
    # The service hooks that ran around the snapshots, in order.
    hooks: list[HookOutput] | UnsetType = UNSET


class RestoreResult(JobResult, kw_only=True):
    volume: str
    snapshot: str
    # What the volume held before, kept as a snapshot.
    safety_snapshot: str
    instances_restarted: list[str]


class ExportedFileResult(msgspec.Struct, kw_only=True):
    """One backup file written by an export."""

    volume: str
    backup: str  # `<set>/<volume>`, for `import` and `verify`
    file: str  # `<set>/<file name>`, relative to the backup directory
    size: int
    sha256: str
    compression: Compression
    encrypted: bool
    encryption: EncryptionMethod
    key_ids: list[str]
    mode: ExportMode
    # The snapshot exported in `snapshot` mode; "" in `stop` mode.
    source_snapshot: str
    created: str
    # How long the volume's instances were stopped; 0 in `snapshot` mode.
    downtime_s: float
    # Always empty: each export has a set of its own and replaces nothing (kept for v1).
    replaced: list[str]


class ExportResult(JobResult, kw_only=True):
    files: list[ExportedFileResult]
    # The service hooks that ran around the exports, in order.
    hooks: list[HookOutput] | UnsetType = UNSET


class ImportResult(JobResult, kw_only=True):
    volume: str
    # True: the volume was swapped out for the backup; False: imported under a new name.
    replaced: bool
    file: str
    size: int
    sha256: str
    # False for a file outside any manifest: its checksum could not be checked.
    checksum_verified: bool
    encrypted: bool
    instances_restarted: list[str]


class VerifyChecks(msgspec.Struct, kw_only=True):
    """Each check's verdict: `ok...`, `not encrypted` or `skipped: <why>`."""

    sha256: str
    decrypt: str
    archive: str
    index: str
    # Only when the command asked for `restore_test`.
    restore_test: str | UnsetType = UNSET


class VerifiedBackup(msgspec.Struct, kw_only=True):
    volume: str
    backup: str
    file: str
    size: int
    sha256: str
    encryption: EncryptionMethod
    checks: VerifyChecks


class VerifyResult(JobResult, kw_only=True):
    # The backups that passed; those that did not are in `failed`.
    verified: list[VerifiedBackup]


class DrillPhaseResult(msgspec.Struct, kw_only=True):
    name: str
    seconds: float


class DrillResult(JobResult, kw_only=True):
    """A drill's verdict, also retained at `<p>/drills/<service>` (its first fields)."""

    service: str
    scenario: str
    ok: bool
    # From the drill project's creation to the health check passing (0 until it did).
    rto_s: float
    target_rto_s: float
    phases: list[DrillPhaseResult]
    at: str
    at_ts: int
    error: str
    # What was restored: `<volume>/<snapshot>`, or the backup `<set>/<volume>`.
    source: str
    # The throwaway project the drill ran in (gone when the job ends).
    project: str
    health: str  # the health check's last output, bounded


class RebuildStep(msgspec.Struct, kw_only=True):
    """One step of a rebuild's plan, e.g. `replace_import grafana01-data`."""

    op: str
    target: str
    detail: str = ""


class RebuildService(msgspec.Struct, kw_only=True):
    """One service of a rebuild: what was planned for it, and what happened."""

    service: str
    volume: str
    instance: str
    # `<set>/<volume>`, "" when the set holds no backup of the volume.
    backup: str
    # `replace`: the safe replace-import; `import`: a plain import (the volume is gone);
    # `skip`: not rebuilt (`reason` says why).
    how: Literal["replace", "import", "skip"]
    recreate_instance: bool
    steps: list[RebuildStep]
    # `planned` (a dry run, or not reached), `rebuilt`, `skipped`, `failed`.
    outcome: Literal["planned", "rebuilt", "skipped", "failed"]
    reason: str
    seconds: float
    target_rto_s: float
    health: str  # the health check's last output, bounded; "" when none ran
    # The volume it replaced put back (and the instance started on it) after the
    # instance or its health check failed on the restored data; `rollback` says why, or
    # why there was nothing to roll back to (a plain import: the volume did not exist).
    rolled_back: bool = False
    rollback: str = ""


class HostCommandResult(msgspec.Struct, kw_only=True):
    """The configured host command run after the state bucket (`[rebuild]`)."""

    argv: list[str]
    exit_code: int
    seconds: float
    output: str  # stdout and stderr, bounded, secret-looking values masked


class RebuildResult(JobResult, kw_only=True):
    set: str
    dry_run: bool
    # The state bucket backup imported (`<set>/<bucket>`), "" when none was.
    state_bucket: str
    state_bucket_note: str
    host_command: HostCommandResult | None
    services: list[RebuildService]
    # Services the plan says must be regenerated, not restored (`compromise marks`).
    regenerate: list[str]
    ok: bool
    total_s: float
    target_rto_s: float


class ScheduleListing(msgspec.Struct, kw_only=True):
    """One schedule, as the agent runs it (README, "Schedules")."""

    # `<service>/<kind>`; `*` is every service without a schedule of its own for the kind.
    schedule: str
    service: str
    kind: str
    cron: str
    timezone: str
    volumes: list[str]
    enabled: bool
    # `default`: the runbook's table; `config`: an entry of `[schedules]`.
    source: Literal["default", "config"]
    jitter_s: int
    catch_up: bool
    # False when this version cannot run the kind yet: its times pass without a job.
    runnable: bool
    # When the next run starts (its time plus jitter); "" and 0 when off.
    next_run: str
    next_run_ts: int
    # The last time it handled ("" and 0 before the first), its job ("" if none started)
    # and what became of it: `accepted`, `known`, `skipped: ...`, `rejected: ...`.
    last_run: str
    last_run_ts: int
    last_job: str
    last_outcome: str


class StatusResult(JobResult, kw_only=True):
    queue: int
    running: list[str]
    # How many volume states were republished.
    volumes: int
    # Every schedule, on or off, with its next run.
    schedules: list[ScheduleListing] = msgspec.field(default_factory=list)


class MarkCompromisedResult(JobResult, kw_only=True):
    service: str
    volume: str
    until: str
    until_ts: int
    reason: str
    # Exported backups newly marked in their manifests (`<set>/<file>`), and the
    # volume's snapshots the mark covers (they have no manifest: `compromised.json`).
    backups_marked: list[str]
    snapshots_covered: list[str]
    # What to do instead of restoring: for step-ca, regenerate.
    advice: str


class StateExportResult(JobResult, kw_only=True):
    mode: Literal["incus", "s3"]
    bucket: str
    backup: str  # `<set>/<bucket>`, for `state_import`
    file: str
    size: int
    sha256: str
    encryption: EncryptionMethod
    objects: int
    # Each state file with its serial and lineage.
    states: list[TfState]


class StateImportResult(JobResult, kw_only=True):
    mode: Literal["incus", "s3"]
    bucket: str
    backup: str
    replaced: bool
    # What the bucket held before, exported first (`<set>/<bucket>`); "" with `as`.
    safety_backup: str
    objects: int
    states: list[TfState]
    # State keys whose lineage the import changed (allowed by `allow_lineage_change`).
    lineage_changed: list[str]


class ExportedDashboard(msgspec.Struct, kw_only=True):
    uid: str
    title: str
    folder_uid: str
    version: int
    file: str  # `<set>/grafana-dashboards/<uid>.json`
    sha256: str


class DashboardsExportResult(JobResult, kw_only=True):
    set: str
    dashboards: list[ExportedDashboard]
    # The git commit made ("" when nothing changed, or no `git_repo` is configured), and
    # the files it changed.
    commit: str
    changed: list[str]


class DashboardsImportResult(JobResult, kw_only=True):
    set: str
    # uid -> the folder it went to ("" = General).
    imported: dict[str, str]


class CancelResult(JobResult, kw_only=True):
    job: str
    # The job's state when the cancel arrived.
    was: str
    # `cancelled`, `cancelling` (a running job stops at its next safe point), or the
    # final state of a job that had finished already.
    state: str


class PruneItem(msgspec.Struct, kw_only=True):
    """One item of a volume and what retention decided for it."""

    volume: str
    # `snapshot`; `export` (`name` is `<set>/<file>`); `volume` (a kept original).
    type: Literal["snapshot", "export", "volume"]
    name: str
    # `backup` (the agent's, under the policy), `manual` (never touched), `safety`,
    # `scratch`, `kept_original` (the agent's helpers, with their own age limit).
    kind: str
    created: str
    created_ts: int
    # `verified`, `unverified`, `failed` (its last verify failed), `partial` (its file is
    # missing), `unverifiable`: only the first two count as generations.
    health: str
    protected: bool
    keep: bool
    # The rules that keep it (`keep_daily`, `protected`, `newest_verified`...); [] if it goes.
    rules: list[str]
    # Why it goes; "" when kept.
    reason: str
    # A real prune removed it (never in a dry run).
    removed: bool


class PruneResult(JobResult, kw_only=True):
    dry_run: bool
    # The time zone whose days, weeks, months and years the rules counted.
    timezone: str
    # Every item of every volume pruned, newest first per volume.
    items: list[PruneItem]
    kept: int
    # Items that go (a dry run: would go).
    going: int
    removed: int
    # Backup sets whose manifest could not be read: their exports were left alone.
    catalog_problems: list[str]


class ProtectResult(JobResult, kw_only=True):
    volume: str
    type: Literal["snapshot", "export"]
    # The snapshot's name, or the export's `<set>/<file>`.
    name: str
    protected: bool
    # False when it was already so.
    changed: bool


# The one table: which result type each action's job has (the job state's `action`).
RESULT_TYPES: dict[str, type[JobResult]] = {
    "list": ListResult,
    "snapshot": SnapshotResult,
    "restore": RestoreResult,
    "export": ExportResult,
    "import": ImportResult,
    "verify": VerifyResult,
    "drill": DrillResult,
    "rebuild": RebuildResult,
    "status": StatusResult,
    "cancel": CancelResult,
    "prune": PruneResult,
    "protect": ProtectResult,
    "unprotect": ProtectResult,
    "mark_compromised": MarkCompromisedResult,
    "state_export": StateExportResult,
    "state_import": StateImportResult,
    "dashboards_export": DashboardsExportResult,
    "dashboards_import": DashboardsImportResult,
}
