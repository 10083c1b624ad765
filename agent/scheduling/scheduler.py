"""Runs the schedules: sleeps until the next one is due, then submits its job the way an
MQTT command is submitted (recorded, retained job state, events).

The clock and the sleep are injected, so tests drive weeks of schedule in seconds. The
last time each schedule handled is kept in the store before the next sleep: at start, a
time missed while the agent was down runs once (`catch_up`), however many passed. A job
id names its schedule and time, so a run submitted again after a crash is the same job.
"""

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import anyio
from anyio.abc import TaskStatus

from agent.clock import Clock
from agent.runtime.jobs import from_ms
from agent.runtime.store import ScheduleRun, Store
from commands import schedules as plan
from commands.registry import action_for
from commands.schedules import BACKUP_KINDS, Schedule
from schemas.commands import Command
from schemas.results import ScheduleListing
from schemas.timefmt import epoch_ms, iso

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
# Submits a command the agent gives itself; returns `accepted`, `known` or why not.
Submit = Callable[[Command], Awaitable[str]]

# However far the next run is, wake at least this often: a wall clock set forward
# (NTP, a resumed VM) is noticed within it. Idle, that is 6 wake-ups an hour.
MAX_SLEEP_S = 600.0
# Never loop faster than this, whatever the clock says.
MIN_SLEEP_S = 1.0
# After a round that failed (the store busy), wait this long before the next.
RETRY_S = 60.0


@dataclass
class _Tracked:
    schedule: Schedule
    # The last time handled (run, skipped, or first seen); the next time comes after it.
    last: datetime
    next_slot: datetime
    last_job: str = ""
    last_outcome: str = ""
    handled: bool = False  # `last` is a time of the schedule, not the moment first seen

    @property
    def due(self) -> datetime:
        return plan.due_at(self.schedule, self.next_slot)


class Scheduler:
    def __init__(
        self,
        schedules: Sequence[Schedule],
        *,
        tz: ZoneInfo,
        store: Store,
        submit: Submit,
        clock: Clock,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self._schedules = list(schedules)
        self._tz = tz
        self._store = store
        self._submit = submit
        self._clock = clock
        self._sleep = sleep
        self._tracked: dict[str, _Tracked] = {}

    @property
    def schedules(self) -> list[Schedule]:
        return list(self._schedules)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Catch up what was missed, then run each schedule at its times, until cancelled."""
        self._load(self._clock())
        await self._round(starting=True)
        task_status.started()
        while True:
            await self._sleep(self._sleep_s(self._clock()))
            await self._round(starting=False)

    async def _round(self, *, starting: bool) -> None:
        try:
            await self._run_due(self._clock(), starting=starting)
        except Exception:
            # The store busy or the like: the schedules stay due; try again shortly.
            log.exception("running the due schedules failed; trying again in %g s", RETRY_S)
            if not starting:  # at start, the agent goes on serving; the loop tries again
                await self._sleep(RETRY_S)

    def _sleep_s(self, now: datetime) -> float:
        if not self._tracked:
            return MAX_SLEEP_S
        wake = min(t.due for t in self._tracked.values())
        return min(MAX_SLEEP_S, max(MIN_SLEEP_S, (wake - now).total_seconds()))

    def _load(self, now: datetime) -> None:
        """Read each schedule's last time; one seen for the first time starts from now."""
        runs = self._store.schedule_runs()
        for schedule in self._schedules:
            if not schedule.enabled:
                continue
            run = runs.get(schedule.key)
            last = from_ms(run.last_slot_ms) if run else None
            if run is None or last is None:
                last = now
                self._store.set_schedule_run(ScheduleRun(schedule.key, epoch_ms(now)))
            tracked = _Tracked(
                schedule,
                last=last,
                next_slot=plan.next_slot(schedule.cron, self._tz, last),
                last_job=run.last_job if run else "",
                handled=bool(run and run.updated_ms),
            )
            self._tracked[schedule.key] = tracked

    async def _run_due(self, now: datetime, *, starting: bool) -> None:
        """Submit every schedule due by `now`, once each, in time and then kind order."""
        due = sorted(
            (t for t in self._tracked.values() if t.due <= now),
            key=lambda t: (t.due, plan.KIND_ORDER.index(t.schedule.kind), t.schedule.service),
        )
        for tracked in due:
            slot = plan.last_slot(tracked.schedule.cron, self._tz, now)
            if starting and not tracked.schedule.catch_up:
                await self._handled(tracked, slot, "", "skipped: missed while the agent was down")
                continue
            await self._run(tracked, slot)

    async def _run(self, tracked: _Tracked, slot: datetime) -> None:
        schedule = tracked.schedule
        job = plan.job_id(schedule, slot)
        command = plan.command_for(schedule, job)
        if action_for(command) is None:
            log.info(
                "schedule %s: %s is not available in this version; nothing runs at %s",
                schedule.key,
                schedule.kind,
                iso(slot),
            )
            await self._handled(tracked, slot, "", f"skipped: {schedule.kind} is not available")
            return
        try:
            outcome = await self._submit(command)
        except Exception as exc:
            # The time is handled all the same: a broken run must not repeat every second.
            log.exception("schedule %s: submitting job %s failed", schedule.key, job)
            outcome = f"rejected: {exc}"
        if outcome.startswith("rejected"):
            log.warning("schedule %s: job %s not started: %s", schedule.key, job, outcome)
        started = not outcome.startswith("rejected")
        await self._handled(tracked, slot, job if started else "", outcome)

    async def _handled(self, tracked: _Tracked, slot: datetime, job: str, outcome: str) -> None:
        now = self._clock()
        self._store.set_schedule_run(
            ScheduleRun(tracked.schedule.key, epoch_ms(slot), job, epoch_ms(now))
        )
        tracked.last, tracked.last_job, tracked.last_outcome = slot, job, outcome
        tracked.handled = True
        tracked.next_slot = plan.next_slot(tracked.schedule.cron, self._tz, slot)

    # What the states and the listing show

    def next_run_for(self, volume: str) -> datetime | None:
        """When the next scheduled backup of `volume` starts; None if none is scheduled."""
        times = [
            t.due
            for t in self._tracked.values()
            if t.schedule.kind in BACKUP_KINDS and volume in t.schedule.volumes
        ]
        return min(times, default=None)

    def listing(self) -> list[ScheduleListing]:
        return [self._listed(s) for s in self._schedules]

    def _listed(self, schedule: Schedule) -> ScheduleListing:
        tracked = self._tracked.get(schedule.key)
        upcoming = tracked.due if tracked else None
        last = tracked.last if tracked and tracked.handled else None
        return ScheduleListing(
            schedule=schedule.key,
            service=schedule.service,
            kind=schedule.kind,
            cron=schedule.cron,
            timezone=self._tz.key,
            volumes=list(schedule.volumes),
            enabled=schedule.enabled,
            source=schedule.source,
            jitter_s=schedule.jitter_s,
            catch_up=schedule.catch_up,
            runnable=action_for(plan.command_for(schedule, "s-x")) is not None,
            next_run=iso(upcoming) if upcoming else "",
            next_run_ts=epoch_ms(upcoming) if upcoming else 0,
            last_run=iso(last) if last else "",
            last_run_ts=epoch_ms(last) if last else 0,
            last_job=tracked.last_job if tracked else "",
            last_outcome=tracked.last_outcome if tracked else "",
        )
