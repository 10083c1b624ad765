"""The job runner: a bounded FIFO queue, a concurrency limit, one holder per volume.

Jobs move queued -> running -> a final state; every transition is stored, then
emitted on the event stream (the job's state, a transition, and at the end `JobFinished`),
which the publisher puts on the broker. The final state is recorded inside a
shielded scope, so a job cancelled by shutdown still ends `interrupted` on the broker.
"""

import logging
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus

from agent.clock import Clock
from agent.runtime.context import RunningJob, StoreJournal
from agent.runtime.events import EventBus, JobFinished, JobStateChanged, JobTransitioned
from agent.runtime.jobs import Job, state_from_row
from agent.runtime.queue_order import Waiting, runnable
from agent.runtime.store import JobRow, Store
from commands.base import Control, Outcome, Ports
from commands.registry import action_for
from commands.steps import error_info
from schemas.errors import AtlasError, JobCancelled, NotFound, QueueFull
from schemas.messages import ErrorInfo, Event
from schemas.results import CancelResult, DryRunResult
from schemas.timefmt import epoch_ms, iso

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 1.0
# How long the final state of a job may take to record and publish when cancelled.
FINALIZE_BOUND_S = 10.0


@dataclass
class RunnerDeps:
    store: Store
    events: EventBus
    ports: Ports
    control: Control
    clock: Clock


class JobRunner:
    def __init__(self, deps: RunnerDeps, max_queue: int, max_concurrent: int) -> None:
        self._deps = deps
        self._max_queue = max_queue
        self._max_concurrent = max_concurrent
        self._queue: list[Job] = []
        self._running: dict[str, RunningJob] = {}
        self._wake = anyio.Event()
        self._task_group: TaskGroup | None = None

    # What the dispatcher and the status publisher ask

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def running_ids(self) -> list[str]:
        return list(self._running)

    def has_room(self) -> bool:
        return len(self._queue) < self._max_queue

    def can_take(self, job: Job) -> bool:
        """Immediate actions never queue; the others need room in the queue."""
        action = action_for(job.command)
        return (action is not None and action.immediate) or self.has_room()

    def busy_volumes(self) -> set[str]:
        return {v for r in self._running.values() for v in r.job.targets}

    # Submitting and cancelling

    async def submit(self, job: Job, *, requeue: bool = False) -> None:
        """Take a recorded job: immediate actions start now, others wait their turn.

        A job cancelled while recorded but not yet here is not taken. Jobs requeued by
        recovery were admitted before the restart, so the queue's bound does not refuse them.
        """
        if self._task_group is None:
            raise RuntimeError("the runner is not running")
        row = self._deps.store.get_job(job.id)
        if row is not None and row.state != "queued":
            log.info("job %s is %s already; not started", job.id, row.state)
            return
        action = action_for(job.command)
        immediate = action is not None and action.immediate
        if not immediate and not requeue and not self.has_room():
            raise QueueFull(f"the job queue is full ({self._max_queue} jobs)")
        await self._announce(job)
        if immediate:
            self._running[job.id] = self._context(job)  # cancellable from this moment
            self._task_group.start_soon(self._run_job, job)
            return
        self._queue.append(job)
        self._wake.set()

    def cancel(self, job_id: str) -> CancelResult:
        for job in self._queue:
            if job.id == job_id:
                self._queue.remove(job)
                assert self._task_group is not None
                self._task_group.start_soon(self._finish_cancelled_queued, job)
                return CancelResult(job=job_id, was="queued", state="cancelled")
        running = self._running.get(job_id)
        if running is not None:
            running.cancel_requested = True
            return CancelResult(job=job_id, was="running", state="cancelling")
        row = self._deps.store.get_job(job_id)
        if row is None:
            raise NotFound(f"no job {job_id!r} is known")
        if row.state == "queued":
            # Recorded but never handed to the runner (or not yet): cancelled on record, so
            # neither `submit` nor recovery's requeue starts it.
            self._cancel_recorded(row)
            return CancelResult(job=job_id, was="queued", state="cancelled")
        return CancelResult(job=job_id, was=row.state, state=row.state)

    def _cancel_recorded(self, row: JobRow) -> None:
        now = self._deps.clock()
        row.state, row.finished_ms = "cancelled", epoch_ms(now)
        row.error = ErrorInfo(code="cancelled", message="cancelled before it started")
        self._deps.store.update_job(row)
        assert self._task_group is not None
        self._task_group.start_soon(self._announce_row, row)

    async def _announce_row(self, row: JobRow) -> None:
        with anyio.move_on_after(FINALIZE_BOUND_S, shield=True):
            now = self._deps.clock()
            await self._deps.events.emit(JobStateChanged(state_from_row(row, now)))
            await self._deps.events.emit(
                JobTransitioned(
                    Event(
                        job=row.id,
                        action=row.action,
                        state=row.state,
                        at=iso(now),
                        at_ts=epoch_ms(now),
                    )
                )
            )

    # Starting queued jobs as slots and volumes free up

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            task_status.started()
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                self._start_runnable(tg)

    def _start_runnable(self, tg: TaskGroup) -> None:
        waiting = [Waiting(j.id, frozenset(j.targets)) for j in self._queue]
        free = self._max_concurrent - len(self._running)
        for job_id in runnable(waiting, self.busy_volumes(), free):
            job = next(j for j in self._queue if j.id == job_id)
            self._queue.remove(job)
            self._running[job.id] = self._context(job)
            tg.start_soon(self._run_job, job)

    def _context(self, job: Job) -> RunningJob:
        deps = self._deps
        return RunningJob(
            job=job,
            ports=deps.ports,
            journal=StoreJournal(deps.store, job.id, deps.clock),
            control=deps.control,
            clock=deps.clock,
        )

    # Running one job

    async def _run_job(self, job: Job) -> None:
        running = self._running.setdefault(job.id, self._context(job))
        pump = anyio.CancelScope()
        try:
            job.state = "running"
            job.started = self._deps.clock()
            await self._transition(job)
            assert self._task_group is not None
            self._task_group.start_soon(self._pump_progress, running, pump)
            try:
                outcome = await self._execute(running)
            finally:
                pump.cancel()
            self._settle(job, outcome)
        except JobCancelled as exc:
            job.state, job.error, job.result = "cancelled", error_info(exc), exc.result
        except AtlasError as exc:
            job.state, job.error = "failed", error_info(exc)
            log.warning("job %s failed: %s", job.id, exc)
        except anyio.get_cancelled_exc_class():
            job.state = "interrupted"
            job.error = ErrorInfo(code="interrupted", message="the agent stopped while the job ran")
            with anyio.move_on_after(FINALIZE_BOUND_S, shield=True):
                await self._finish(job)
            raise
        except Exception as exc:
            log.exception("job %s crashed", job.id)
            job.state = "failed"
            job.error = ErrorInfo(code="internal_error", message=f"{type(exc).__name__}: {exc}")
        with anyio.move_on_after(FINALIZE_BOUND_S, shield=True):
            await self._finish(job)

    async def _execute(self, running: RunningJob) -> Outcome[Any]:
        job = running.job
        action = action_for(job.command)
        if action is None:
            raise AtlasError(f"no handler for action {job.action!r}")
        if job.command.dry_run and not action.decides_when_run:
            return Outcome(DryRunResult(plan=job.plan.as_list()), succeeded=job.targets)
        return await action.execute(job.command, job.plan, running)

    @staticmethod
    def _settle(job: Job, outcome: Outcome[Any]) -> None:
        if not outcome.failed:
            job.result, job.state = outcome.result, "succeeded"
            return
        job.result = msgspec.structs.replace(
            outcome.result, failed=dict(outcome.failed), succeeded=list(outcome.succeeded)
        )
        job.state = "partial" if outcome.succeeded else "failed"
        first, info = next(iter(outcome.failed.items()))
        job.error = ErrorInfo(
            code=info.code,
            message=f"{len(outcome.failed)} of {len(outcome.failed) + len(outcome.succeeded)}"
            f" targets failed; {first}: {info.message}",
        )

    async def _pump_progress(self, running: RunningJob, scope: anyio.CancelScope) -> None:
        """Publish the job's progress at most every PROGRESS_INTERVAL_S while it moves."""
        seen = running.revision
        with scope:
            while True:
                await anyio.sleep(PROGRESS_INTERVAL_S)
                if running.revision != seen:
                    seen = running.revision
                    await self._publish(running.job)

    async def _finish(self, job: Job) -> None:
        job.finished = self._deps.clock()
        self._running.pop(job.id, None)
        self._wake.set()
        try:
            await self._transition(job)
            await self._deps.events.emit(JobFinished(job))
        except Exception:
            log.exception("could not record the final state of job %s", job.id)

    async def _finish_cancelled_queued(self, job: Job) -> None:
        job.state = "cancelled"
        job.error = ErrorInfo(code="cancelled", message="cancelled before it started")
        await self._finish(job)

    async def _transition(self, job: Job) -> None:
        self._deps.store.update_job(job.to_row())
        await self._announce(job)

    async def _announce(self, job: Job) -> None:
        await self._publish(job)
        now = self._deps.clock()
        event = Event(
            job=job.id, action=job.action, state=job.state, at=iso(now), at_ts=epoch_ms(now)
        )
        await self._deps.events.emit(JobTransitioned(event))

    async def _publish(self, job: Job) -> None:
        await self._deps.events.emit(JobStateChanged(job.to_state(self._deps.clock())))
