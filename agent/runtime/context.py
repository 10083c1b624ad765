"""The running job's view of the agent: the job, the ports, its journal, the controls and
the clock a command's `execute` step may use."""

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.clock import Clock
from agent.runtime.jobs import Job
from agent.runtime.store import Store
from commands.base import Control, EffectKind, Ports
from schemas.errors import JobCancelled
from schemas.timefmt import epoch_ms

log = logging.getLogger(__name__)


@dataclass
class StoreJournal:
    """Journals a job's side effects in the store before they are made."""

    store: Store
    job_id: str
    clock: Clock

    def record(self, kind: EffectKind, target: str, data: dict[str, Any] | None = None) -> int:
        return self.store.record_effect(
            self.job_id, kind, target, data or {}, epoch_ms(self.clock())
        )

    def update(self, seq: int, data: dict[str, Any]) -> None:
        self.store.update_effect(seq, data)

    def resolve(self, seq: int) -> None:
        self.store.resolve_effect(seq, epoch_ms(self.clock()))


@dataclass
class RunningJob:
    job: Job
    ports: Ports
    journal: StoreJournal
    control: Control
    clock: Clock
    cancel_requested: bool = False
    # Bumped on every progress report; the runner publishes when it moved.
    revision: int = field(default=0)

    @property
    def job_id(self) -> str:
        return self.job.id

    def now(self) -> datetime:
        return self.clock()

    def checkpoint(self) -> None:
        if self.cancel_requested:
            raise JobCancelled(f"job {self.job.id} was cancelled")

    def progress(self, phase: str, done: int = 0, total: int = 0, *, unit: str = "bytes") -> None:
        """Safe to call from a worker thread: it only sets fields the runner reads."""
        if phase != self.job.phase:
            log.info("job %s: %s", self.job.id, phase)
        self.job.phase = phase
        if unit == "bytes":
            self.job.bytes_done, self.job.bytes_total = done, total
        else:
            self.job.steps_done, self.job.steps_total = done, total
        self.revision += 1
