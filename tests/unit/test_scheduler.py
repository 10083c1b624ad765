"""The scheduler's loop on virtual time: weeks pass in milliseconds, the store is real."""

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.runtime.store import ScheduleRun, Store
from agent.scheduling.scheduler import MAX_SLEEP_S, MIN_SLEEP_S, Scheduler
from commands.schedules import Schedule, resolve, zone
from schemas.commands import Command
from schemas.config import ATLAS_SERVICES, SchedulesConfig
from schemas.timefmt import epoch_ms

pytestmark = pytest.mark.anyio


class _TimeIsUp(Exception):
    pass


@dataclass
class VirtualTime:
    """A clock and a sleep: sleeping moves the clock, until `end`."""

    now: datetime
    end: datetime
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)
        if self.now > self.end:
            raise _TimeIsUp


@dataclass
class Submitted:
    time: VirtualTime
    jobs: list[tuple[str, datetime]] = field(default_factory=list)

    async def __call__(self, command: Command) -> str:
        assert command.id is not None
        if command.id in [j for j, _ in self.jobs]:
            return "known"
        self.jobs.append((command.id, self.time.now))
        return "accepted"

    @property
    def ids(self) -> list[str]:
        return [j for j, _ in self.jobs]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "state.db")
    yield opened
    opened.close()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def drive(
    store: Store,
    schedules: list[Schedule],
    start: datetime,
    end: datetime,
    tz: str = "UTC",
) -> tuple[Submitted, VirtualTime, Scheduler]:
    time = VirtualTime(now=start, end=end)
    submitted = Submitted(time)
    scheduler = Scheduler(
        schedules,
        tz=zone(tz),
        store=store,
        submit=submitted,
        clock=time.clock,
        sleep=time.sleep,
    )
    with pytest.raises(_TimeIsUp):
        await scheduler.run()
    return submitted, time, scheduler


def daily(cron: str = "0 2 * * *", **changes: object) -> Schedule:
    fields: dict[str, object] = {
        "service": "grafana",
        "kind": "snapshot",
        "cron": cron,
        "volumes": ("grafana01-data",),
    }
    return Schedule(**(fields | changes))  # type: ignore[arg-type]


async def test_a_week_of_the_runbooks_table_submits_the_expected_jobs(store: Store) -> None:
    schedules = resolve(SchedulesConfig(), ATLAS_SERVICES)
    # Monday 2026-11-30 12:00 to Monday 2026-12-07 12:00: one Sunday.
    submitted, time, _ = await drive(
        store, schedules, at("2026-11-30T12:00:00"), at("2026-12-07T12:00:00")
    )
    snapshots = [j for j in submitted.ids if "-snapshot-" in j]
    assert sorted(j for j in snapshots if j.startswith("s-grafana-")) == [
        f"s-grafana-snapshot-202612{d:02d}-0200" for d in range(1, 8)
    ]
    assert len(snapshots) == 3 * 7 + 2  # three daily services, two weekly ones
    assert [j for j in submitted.ids if "-export-" in j] == ["s-step-ca-export-20261206-0200"]
    assert "s-loki-snapshot-20261206-0200" in submitted.ids
    # Every 02:00 ends with a prune of every service, after that time's backups.
    prunes = [j for j in submitted.ids if "-prune-" in j]
    assert prunes == [f"s-all-prune-202612{d:02d}-0200" for d in range(1, 8)]
    for prune in prunes:
        same_time = [j for j in submitted.ids if j.endswith(prune[-13:])]
        assert same_time[-1] == prune
    # Each job starts at its time (no jitter configured), never early.
    assert all(when == at(j[-13:-5] + "T" + j[-4:-2] + ":" + j[-2:]) for j, when in submitted.jobs)
    # Idle, it sleeps in long stretches: never a loop faster than a minute.
    assert min(time.sleeps) >= 60
    assert max(time.sleeps) <= MAX_SLEEP_S
    assert len(time.sleeps) <= 7 * 24 * 3600 / MAX_SLEEP_S + 20


async def test_prune_is_listed_with_its_last_job_and_next_time(store: Store) -> None:
    schedules = resolve(SchedulesConfig(), ATLAS_SERVICES)
    submitted, _, scheduler = await drive(
        store, schedules, at("2026-11-30T12:00:00"), at("2026-12-01T12:00:00")
    )
    prune = next(s for s in scheduler.listing() if s.kind == "prune")
    assert (prune.runnable, prune.enabled) == (True, True)
    assert prune.last_job == "s-all-prune-20261201-0200"
    assert prune.next_run == "2026-12-02T02:00:00+00:00"
    assert prune.last_run == "2026-12-01T02:00:00+00:00"
    assert submitted.ids[-1] == "s-all-prune-20261201-0200"


async def test_a_run_missed_while_down_runs_once_at_start_not_once_per_time(
    store: Store,
) -> None:
    # The agent last ran grafana's snapshot eight days ago, then was down.
    store.set_schedule_run(
        ScheduleRun("grafana/snapshot", epoch_ms(at("2026-11-22T02:00:00")), "s-old", 1)
    )
    submitted, _, _ = await drive(
        store, [daily()], at("2026-11-30T09:00:00"), at("2026-12-01T01:00:00")
    )
    assert submitted.jobs == [("s-grafana-snapshot-20261130-0200", at("2026-11-30T09:00:00"))]


async def test_without_catch_up_a_missed_run_is_skipped(store: Store) -> None:
    store.set_schedule_run(
        ScheduleRun("grafana/snapshot", epoch_ms(at("2026-11-22T02:00:00")), "s-old", 1)
    )
    submitted, _, _ = await drive(
        store, [daily(catch_up=False)], at("2026-11-30T09:00:00"), at("2026-12-01T03:00:00")
    )
    assert submitted.ids == ["s-grafana-snapshot-20261201-0200"]


async def test_a_schedule_seen_first_waits_for_its_next_time(store: Store) -> None:
    submitted, _, _ = await drive(
        store, [daily()], at("2026-11-30T09:00:00"), at("2026-12-01T01:59:00")
    )
    assert submitted.ids == []
    assert "grafana/snapshot" in store.schedule_runs()


async def test_a_restart_does_not_run_a_time_twice(store: Store) -> None:
    first, _, _ = await drive(
        store, [daily()], at("2026-11-30T09:00:00"), at("2026-12-01T03:00:00")
    )
    assert first.ids == ["s-grafana-snapshot-20261201-0200"]
    again, _, _ = await drive(
        store, [daily()], at("2026-12-01T03:00:01"), at("2026-12-01T23:00:00")
    )
    assert again.ids == []


async def test_jittered_runs_start_within_the_bound_after_their_time(store: Store) -> None:
    submitted, _, _ = await drive(
        store,
        [daily(jitter_s=900)],
        at("2026-11-01T12:00:00"),
        at("2026-11-30T12:00:00"),
    )
    assert len(submitted.jobs) == 29
    delays = [(when - when.replace(hour=2, minute=0, second=0)) for _, when in submitted.jobs]
    assert all(timedelta(0) <= d <= timedelta(seconds=900) for d in delays)
    assert len(set(delays)) > 10


@pytest.mark.parametrize(
    ("start", "end", "changed", "expected"),
    [
        # Berlin skips 02:00-03:00 on 2026-03-29: 02:30 runs once, at 03:30 CEST.
        ("2026-03-27T12:00:00", "2026-03-31T12:00:00", "2026-03-29", "2026-03-29T01:30:00"),
        # Berlin has 02:00-03:00 twice on 2026-10-25: 02:30 runs once, the first time.
        ("2026-10-23T12:00:00", "2026-10-27T12:00:00", "2026-10-25", "2026-10-25T00:30:00"),
    ],
)
async def test_spring_forward_and_fall_back_nights_each_run_once(
    store: Store, start: str, end: str, changed: str, expected: str
) -> None:
    submitted, _, _ = await drive(
        store, [daily("30 2 * * *")], at(start), at(end), tz="Europe/Berlin"
    )
    days = [when.astimezone(zone("Europe/Berlin")).date().isoformat() for _, when in submitted.jobs]
    assert len(days) == len(set(days)) == 4
    on_that_day = [
        when for (_, when), day in zip(submitted.jobs, days, strict=True) if day == changed
    ]
    assert on_that_day == [at(expected)]


async def test_a_turned_off_schedule_never_runs_and_has_no_next_run(store: Store) -> None:
    submitted, _, scheduler = await drive(
        store, [daily(enabled=False)], at("2026-11-30T09:00:00"), at("2026-12-03T09:00:00")
    )
    assert submitted.ids == []
    (listed,) = scheduler.listing()
    assert (listed.enabled, listed.next_run, listed.next_run_ts) == (False, "", 0)
    assert scheduler.next_run_for("grafana01-data") is None


async def test_a_rejected_run_is_handled_once_and_the_next_time_runs(store: Store) -> None:
    time = VirtualTime(now=at("2026-11-30T09:00:00"), end=at("2026-12-02T03:00:00"))
    calls: list[str] = []

    async def refuse(command: Command) -> str:
        calls.append(str(command.id))
        return "rejected: volume 'grafana01-data' does not exist"

    scheduler = Scheduler(
        [daily()], tz=zone("UTC"), store=store, submit=refuse, clock=time.clock, sleep=time.sleep
    )
    with pytest.raises(_TimeIsUp):
        await scheduler.run()
    assert calls == ["s-grafana-snapshot-20261201-0200", "s-grafana-snapshot-20261202-0200"]
    assert scheduler.listing()[0].last_outcome.startswith("rejected")
    assert min(time.sleeps) >= MIN_SLEEP_S


async def test_a_round_that_fails_is_logged_and_tried_again_a_minute_later(store: Store) -> None:
    time = VirtualTime(now=at("2026-11-30T09:00:00"), end=at("2026-12-01T03:00:00"))
    submitted = Submitted(time)
    scheduler = Scheduler(
        [daily()], tz=zone("UTC"), store=store, submit=submitted, clock=time.clock, sleep=time.sleep
    )
    real = store.set_schedule_run
    failures = [1]

    def flaky(run: ScheduleRun) -> None:
        if run.last_job and failures:
            failures.pop()
            raise RuntimeError("database is locked")
        real(run)

    store.set_schedule_run = flaky  # type: ignore[method-assign]
    with pytest.raises(_TimeIsUp):
        await scheduler.run()
    # The first try submitted the job but could not record it; the retry finds it known.
    assert submitted.ids == ["s-grafana-snapshot-20261201-0200"]
    assert store.schedule_runs()["grafana/snapshot"].last_job == "s-grafana-snapshot-20261201-0200"
    assert 60.0 in time.sleeps
