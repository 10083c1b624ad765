"""Messages out: responses, job state, volume state, agent state, events (API.md).

Every timestamp has an epoch-millisecond twin `<field>_ts`; fields that later hold a
number start at 0 or "" rather than null, because Grafana types a field on first sight.
"""

from typing import Annotated, Any, Literal

import msgspec

JobStateName = Literal[
    "queued", "running", "succeeded", "failed", "cancelled", "interrupted", "partial"
]
FINAL_STATES: frozenset[str] = frozenset(
    {"succeeded", "failed", "cancelled", "interrupted", "partial"}
)


class ErrorInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An error on the wire: its stable `code` (`schemas.errors`) and a message naming the
    cause. A job state without an error carries the empty `ErrorInfo()`, sent as `{}`."""

    code: str = ""
    message: str = ""


class Response(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The answer to a command, sent once it is validated and durably recorded."""

    id: str
    status: Literal["accepted", "rejected"]
    job: str = ""
    action: str = ""
    error: ErrorInfo | None = None
    plan: list[dict[str, Any]] | None = None


# Typed per action in `schemas.results`, chosen by the job state's `action`: msgspec puts
# Structs in one union only when tagged, and a tag would add a field to every result.
JobResultObject = Annotated[
    dict[str, Any],
    msgspec.Meta(
        description="What the action produced: the type named by `action`, as exported in"
        " result-<action>.schema.json, or result-dry-run.schema.json when `dry_run` is"
        " true (except `prune`, whose dry run gives its own result). `{}` until the job"
        " ends, and when it failed before producing anything."
    ),
]


class JobState(msgspec.Struct, kw_only=True):
    """Retained at `<p>/jobs/<job_id>`."""

    id: str
    action: str
    state: JobStateName
    phase: str = ""
    progress_pct: float = 0.0
    bytes_done: int = 0
    bytes_total: int = 0
    created: str = ""
    created_ts: int = 0
    started: str = ""
    started_ts: int = 0
    finished: str = ""
    finished_ts: int = 0
    duration_s: float = 0.0
    targets: list[str] = msgspec.field(default_factory=list)
    dry_run: bool = False
    result: JobResultObject = msgspec.field(default_factory=dict)
    error: ErrorInfo = msgspec.field(default_factory=ErrorInfo)


class VolumeState(msgspec.Struct, kw_only=True):
    """Retained at `<p>/volumes/<volume>`: flat, for Grafana and Home Assistant."""

    volume: str
    service: str
    instance: str
    criticality: str
    last_snapshot: str = ""
    last_snapshot_ts: int = 0
    last_export: str = ""
    last_export_ts: int = 0
    last_export_file: str = ""
    last_export_size_bytes: int = 0
    last_export_encrypted: bool = False
    last_verify: str = ""
    last_verify_ts: int = 0
    last_verify_ok: bool = False
    # Seconds since the newest good backup of any kind; -1 when there is none yet.
    last_success_age_s: int = -1
    snapshots: int = 0
    exports: int = 0
    next_run: str = ""
    next_run_ts: int = 0
    # 1 when severity is 1 or 2; the reason names the worst condition found.
    problem: int = 0
    problem_reason: str = ""
    # 0 ok, 1 warning (newest backup past the warning age, last job failed, no backup
    # yet), 2 critical (past the critical age, the volume missing in Incus).
    severity: int = 0


Summary = Annotated[
    dict[str, int | str],
    msgspec.Meta(
        title="Summary",
        description="Retained at `<p>/summary`: every configured volume in one flat object,"
        " for Grafana's MQTT data source (which drops a message's topic): `at`, `at_ts`,"
        " `volumes`, `problems`, `warnings`, `criticals`, `worst_severity`, and per volume"
        " `age_s.<volume>` (-1: no backup), `severity.<volume>`, `export_bytes.<volume>` and"
        " `last_backup_ts.<volume>` (0: none). Numbers only, except `at`.",
    ),
]


class IncusInfo(msgspec.Struct, kw_only=True):
    server: str = ""
    version: str = ""


class AgentState(msgspec.Struct, kw_only=True):
    """Retained at `<p>/agent` while the agent runs."""

    state: Literal["online"] = "online"
    version: str
    started: str
    started_ts: int
    queue: int = 0
    running: list[str] = msgspec.field(default_factory=list)
    incus: IncusInfo = msgspec.field(default_factory=IncusInfo)
    # Times the broker had lost the session the agent expected to resume (expired, taken
    # over by a client with its client id, a broker that lost its state): commands sent
    # meanwhile may be lost. Counted over the life of the state directory.
    session_lost: int = 0
    session_lost_at: str = ""
    session_lost_at_ts: int = 0


class AgentOffline(msgspec.Struct, kw_only=True):
    """The Last Will, and what a clean shutdown leaves at `<p>/agent`."""

    state: Literal["offline"] = "offline"


class Event(msgspec.Struct, kw_only=True):
    """One per job transition on `<p>/events` (not retained)."""

    job: str
    action: str
    state: str
    at: str
    at_ts: int


class DrillPhase(msgspec.Struct, kw_only=True):
    name: str
    seconds: float


class DrillState(msgspec.Struct, kw_only=True):
    """Retained at `<p>/drills/<service>`."""

    service: str
    scenario: str
    ok: bool
    rto_s: float
    target_rto_s: float
    phases: list[DrillPhase]
    at: str
    at_ts: int
    error: str = ""
