"""A job as the runner holds it, and its conversions to the stored row and the wire state."""

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from agent.runtime.store import JobRow
from commands.base import Plan
from schemas.commands import Command
from schemas.messages import FINAL_STATES, ErrorInfo, JobState, JobStateName
from schemas.results import JobResult, NoResult
from schemas.timefmt import compact, epoch_ms, iso


def new_job_id(action: str, now: datetime) -> str:
    return f"j-{compact(now)}-{action}-{secrets.token_hex(3)}"


def from_ms(ms: int) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None


@dataclass
class Job:
    id: str
    action: str
    command: Command
    plan: Plan
    created: datetime
    state: JobStateName = "queued"
    phase: str = ""
    bytes_done: int = 0
    bytes_total: int = 0
    # Progress counted in volumes (snapshots) rather than bytes.
    steps_done: int = 0
    steps_total: int = 0
    started: datetime | None = None
    finished: datetime | None = None
    # The action's result once it has one (`schemas.results`); `{}` until then.
    result: JobResult = field(default_factory=NoResult)
    error: ErrorInfo = field(default_factory=ErrorInfo)
    # Sent on `<p>/cmd/admin`: such a job is cancelled only from there (kept in the store).
    admin: bool = False

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def targets(self) -> list[str]:
        return list(self.plan.targets)

    def to_row(self) -> JobRow:
        return JobRow(
            id=self.id,
            action=self.action,
            command=msgspec.json.encode(self.command),
            state=self.state,
            phase=self.phase,
            targets=self.targets,
            dry_run=self.command.dry_run,
            created_ms=epoch_ms(self.created),
            started_ms=epoch_ms(self.started) if self.started else 0,
            finished_ms=epoch_ms(self.finished) if self.finished else 0,
            result=msgspec.to_builtins(self.result),
            error=self.error,
            admin=self.admin,
            plan=self.plan.as_list(),
        )

    def to_state(self, now: datetime) -> JobState:
        end = self.finished or now
        duration = (end - self.started).total_seconds() if self.started else 0.0
        if self.state == "succeeded":
            pct = 100.0
        elif self.bytes_total:
            pct = round(100.0 * self.bytes_done / self.bytes_total, 1)
        elif self.steps_total:
            pct = round(100.0 * self.steps_done / self.steps_total, 1)
        else:
            pct = 0.0
        return JobState(
            id=self.id,
            action=self.action,
            state=self.state,
            phase=self.phase,
            progress_pct=pct,
            bytes_done=self.bytes_done,
            bytes_total=self.bytes_total,
            created=iso(self.created),
            created_ts=epoch_ms(self.created),
            started=iso(self.started) if self.started else "",
            started_ts=epoch_ms(self.started) if self.started else 0,
            finished=iso(self.finished) if self.finished else "",
            finished_ts=epoch_ms(self.finished) if self.finished else 0,
            duration_s=round(duration, 3),
            targets=self.targets,
            dry_run=self.command.dry_run,
            result=msgspec.to_builtins(self.result),
            error=self.error,
        )


def state_from_row(row: JobRow, now: datetime) -> JobState:
    """The wire state of a stored job, for jobs the runner no longer holds."""
    started, finished = from_ms(row.started_ms), from_ms(row.finished_ms)
    created = from_ms(row.created_ms) or now
    end = finished or now
    return JobState(
        id=row.id,
        action=row.action,
        state=row.state,  # type: ignore[arg-type]
        phase=row.phase,
        progress_pct=100.0 if row.state == "succeeded" else 0.0,
        created=iso(created),
        created_ts=row.created_ms,
        started=iso(started) if started else "",
        started_ts=row.started_ms,
        finished=iso(finished) if finished else "",
        finished_ts=row.finished_ms,
        duration_s=round((end - started).total_seconds(), 3) if started else 0.0,
        targets=row.targets,
        dry_run=row.dry_run,
        result=row.result,
        error=row.error,
    )
