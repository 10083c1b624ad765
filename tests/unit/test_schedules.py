"""Schedules, pure: cron times across DST, catch-up, jitter, the runbook's defaults and
the age alarms that follow from them."""

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from commands.schedules import (
    Schedule,
    ScheduleError,
    age_limits,
    command_for,
    jitter,
    job_id,
    last_slot,
    missed_slot,
    next_slot,
    resolve,
    zone,
)
from schemas.commands import (
    REQUEST_ID_PATTERN,
    DrillCommand,
    ExportCommand,
    PruneCommand,
    SnapshotCommand,
)
from schemas.config import ATLAS_SERVICES, ScheduleEntry, SchedulesConfig, ServiceConfig

BERLIN = zone("Europe/Berlin")
NEW_YORK = zone("America/New_York")


def slots(cron: str, tz_name: str, start: datetime, end: datetime) -> list[datetime]:
    tz, found, at = zone(tz_name), [], start
    while (at := next_slot(cron, tz, at)) <= end:
        found.append(at)
    return found


def local(moments: list[datetime], tz_name: str) -> list[str]:
    return [m.astimezone(zone(tz_name)).strftime("%m-%d %H:%M %Z") for m in moments]


def test_a_0230_job_runs_once_on_the_spring_forward_night_moved_on_by_the_gap() -> None:
    # Europe/Berlin skips 02:00-03:00 on 2026-03-29.
    found = slots(
        "30 2 * * *",
        "Europe/Berlin",
        datetime(2026, 3, 27, 12, tzinfo=UTC),
        datetime(2026, 3, 31, 12, tzinfo=UTC),
    )
    assert local(found, "Europe/Berlin") == [
        "03-28 02:30 CET",
        "03-29 03:30 CEST",
        "03-30 02:30 CEST",
        "03-31 02:30 CEST",
    ]


def test_a_0230_job_runs_once_on_the_fall_back_night() -> None:
    # Europe/Berlin has 02:00-03:00 twice on 2026-10-25.
    found = slots(
        "30 2 * * *",
        "Europe/Berlin",
        datetime(2026, 10, 23, 12, tzinfo=UTC),
        datetime(2026, 10, 26, 12, tzinfo=UTC),
    )
    assert local(found, "Europe/Berlin") == [
        "10-24 02:30 CEST",
        "10-25 02:30 CEST",
        "10-26 02:30 CET",
    ]


def test_new_york_0130_runs_once_when_the_hour_repeats_and_once_when_it_is_skipped() -> None:
    fall = slots(
        "30 1 * * *",
        "America/New_York",
        datetime(2026, 10, 31, 12, tzinfo=UTC),
        datetime(2026, 11, 2, 12, tzinfo=UTC),
    )
    assert local(fall, "America/New_York") == ["11-01 01:30 EDT", "11-02 01:30 EST"]
    spring = slots(
        "30 2 * * *",
        "America/New_York",
        datetime(2026, 3, 7, 12, tzinfo=UTC),
        datetime(2026, 3, 9, 12, tzinfo=UTC),
    )
    assert local(spring, "America/New_York") == ["03-08 03:30 EDT", "03-09 02:30 EDT"]


def test_a_half_hourly_job_never_gets_two_runs_at_one_instant_across_the_gap() -> None:
    found = slots(
        "*/30 * * * *",
        "Europe/Berlin",
        datetime(2026, 3, 29, 0, 0, tzinfo=UTC),
        datetime(2026, 3, 29, 2, 0, tzinfo=UTC),
    )
    assert len(found) == len(set(found))
    assert local(found, "Europe/Berlin") == [
        "03-29 01:30 CET",
        "03-29 03:00 CEST",
        "03-29 03:30 CEST",
        "03-29 04:00 CEST",
    ]


def test_last_slot_includes_the_time_itself() -> None:
    at = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)
    assert last_slot("0 2 * * *", zone("UTC"), at) == at
    assert last_slot("0 2 * * *", zone("UTC"), at - timedelta(seconds=1)) == at - timedelta(days=1)


def test_a_week_down_misses_seven_times_and_catches_up_once_with_the_latest() -> None:
    since = datetime(2026, 11, 24, 3, tzinfo=UTC)
    now = datetime(2026, 12, 1, 9, tzinfo=UTC)
    assert missed_slot("0 2 * * *", zone("UTC"), since, now) == datetime(2026, 12, 1, 2, tzinfo=UTC)
    assert missed_slot("0 2 * * *", zone("UTC"), now, now + timedelta(hours=16)) is None


def schedule(**changes: object) -> Schedule:
    fields: dict[str, object] = {
        "service": "grafana",
        "kind": "snapshot",
        "cron": "0 2 * * *",
        "volumes": ("grafana01-data",),
    }
    return Schedule(**(fields | changes))  # type: ignore[arg-type]


def test_jitter_stays_within_its_bound_is_fixed_per_time_and_spreads() -> None:
    noisy = schedule(jitter_s=300)
    start = datetime(2026, 1, 1, 2, tzinfo=UTC)
    delays = [jitter(noisy, start + timedelta(days=d)) for d in range(200)]
    assert all(timedelta(0) <= d <= timedelta(seconds=300) for d in delays)
    assert delays == [jitter(noisy, start + timedelta(days=d)) for d in range(200)]
    assert len(set(delays)) > 100
    assert jitter(schedule(jitter_s=0), start) == timedelta(0)


def test_job_ids_name_schedule_and_time_and_are_valid_request_ids() -> None:
    at = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)
    assert job_id(schedule(), at) == "s-grafana-snapshot-20261206-0200"
    assert job_id(schedule(service="*", kind="prune"), at) == "s-all-prune-20261206-0200"
    long = job_id(schedule(service="x" * 63, kind="snapshot"), at)
    assert len(long) <= 64
    assert long.endswith("-snapshot-20261206-0200")
    for made in (long, job_id(schedule(), at)):
        assert re.match(REQUEST_ID_PATTERN, made)


def test_schedules_submit_the_commands_a_person_would_send() -> None:
    assert command_for(schedule(), "s-1") == SnapshotCommand(id="s-1", volumes=["grafana01-data"])
    step_ca = schedule(service="step-ca", kind="export", volumes=("step-ca01-data",))
    assert command_for(step_ca, "s-2") == ExportCommand(id="s-2", volumes=["step-ca01-data"])
    prune = schedule(service="*", kind="prune", volumes=("a", "b"))
    assert command_for(prune, "s-3") == PruneCommand(id="s-3", volumes=["a", "b"])


ATLAS_NAMES = [s.name for s in ATLAS_SERVICES]


def table(schedules: list[Schedule]) -> set[tuple[str, str, str, bool]]:
    return {(s.service, s.kind, s.cron, s.enabled) for s in schedules}


def test_the_defaults_are_the_runbooks_table() -> None:
    assert table(resolve(SchedulesConfig(), ATLAS_SERVICES)) == {
        ("grafana", "snapshot", "0 2 * * *", True),
        ("alertmanager", "snapshot", "0 2 * * *", True),
        ("mosquitto", "snapshot", "0 2 * * *", True),
        ("prometheus", "snapshot", "0 2 * * 0", True),
        ("loki", "snapshot", "0 2 * * 0", True),
        ("step-ca", "export", "0 2 * * 0", True),
        ("*", "prune", "0 2 * * *", True),
        # The runbook's quarterly DR drill, of every service.
        *{(name, "drill", "0 4 1 1,4,7,10 *", True) for name in ATLAS_NAMES},
    }
    # Loki and Mosquitto are stopped around it: the services' own quiesce.
    assert {s.name for s in ATLAS_SERVICES if s.quiesce} == {"loki", "mosquitto"}


def test_backups_are_submitted_before_prune_at_the_same_time() -> None:
    kinds = [s.kind for s in resolve(SchedulesConfig(), ATLAS_SERVICES) if s.kind != "drill"]
    assert kinds.index("prune") == len(kinds) - 1


def test_a_drill_restores_what_the_service_is_backed_up_with() -> None:
    drills = {
        s.service: s.scenario
        for s in resolve(SchedulesConfig(), ATLAS_SERVICES)
        if s.kind == "drill"
    }
    # step-ca is only exported (encrypted): its drill is from the tarball.
    assert drills == {name: "tarball" if name == "step-ca" else "snapshot" for name in ATLAS_NAMES}
    step_ca = schedule(service="step-ca", kind="drill", volumes=("step-ca01-data",))
    step_ca = replace(step_ca, scenario="tarball")
    assert command_for(step_ca, "s-4") == DrillCommand(
        id="s-4", service="step-ca", scenario="tarball"
    )


def test_a_config_turns_a_default_off_or_moves_it() -> None:
    config = SchedulesConfig(
        entries=[
            ScheduleEntry(service="prometheus", kind="snapshot", enabled=False),
            ScheduleEntry(service="grafana", kind="snapshot", cron="15 3 * * *"),
            ScheduleEntry(kind="prune", enabled=False),
        ]
    )
    found = table(resolve(config, ATLAS_SERVICES))
    assert ("prometheus", "snapshot", "0 2 * * 0", False) in found
    assert ("grafana", "snapshot", "15 3 * * *", True) in found
    assert ("*", "prune", "0 2 * * *", False) in found


def test_without_the_runbook_defaults_only_the_entries_run() -> None:
    config = SchedulesConfig(
        runbook_defaults=False,
        entries=[ScheduleEntry(kind="verify", cron="0 5 * * 1")],
    )
    found = resolve(config, ATLAS_SERVICES)
    assert {s.kind for s in found} == {"verify"}
    assert {s.service for s in found} == {s.name for s in ATLAS_SERVICES}


def test_a_service_of_every_entry_yields_to_one_of_its_own() -> None:
    config = SchedulesConfig(
        runbook_defaults=False,
        entries=[
            ScheduleEntry(kind="snapshot", cron="0 1 * * *"),
            ScheduleEntry(service="grafana", kind="snapshot", cron="0 */6 * * *"),
        ],
    )
    crons = {s.service: s.cron for s in resolve(config, ATLAS_SERVICES)}
    assert crons["grafana"] == "0 */6 * * *"
    assert crons["loki"] == "0 1 * * *"


def test_a_service_the_table_does_not_name_gets_the_scripts_daily_snapshot() -> None:
    extra = ServiceConfig(name="vault", instance="vault01", volume="vault01-data")
    found = table(resolve(SchedulesConfig(), [*ATLAS_SERVICES, extra]))
    assert ("vault", "snapshot", "0 2 * * *", True) in found


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (ScheduleEntry(service="nope", kind="snapshot", cron="0 2 * * *"), "unknown service"),
        (ScheduleEntry(service="grafana", kind="verify"), "has no default time"),
        (ScheduleEntry(service="grafana", kind="snapshot", cron="61 2 * * *"), "not a valid"),
        (ScheduleEntry(service="grafana", kind="snapshot", cron="0 2 * *"), "five fields"),
    ],
)
def test_a_bad_entry_is_refused_naming_it(entry: ScheduleEntry, message: str) -> None:
    with pytest.raises(ScheduleError, match=message) as caught:
        resolve(SchedulesConfig(entries=[entry]), ATLAS_SERVICES)
    assert "$.schedules.entries[0]" in str(caught.value)


def test_age_alarms_follow_the_schedule() -> None:
    schedules = resolve(SchedulesConfig(), ATLAS_SERVICES)
    by_name = {s.name: s for s in ATLAS_SERVICES}
    daily = age_limits(by_name["grafana"], schedules)
    assert (daily.warn, daily.critical) == (timedelta(hours=26), timedelta(hours=50))
    weekly = age_limits(by_name["step-ca"], schedules)
    assert (weekly.warn, weekly.critical) == (timedelta(days=8), timedelta(days=15))
    hourly = [schedule(cron="0 * * * *")]
    limits = age_limits(by_name["grafana"], hourly)
    assert (limits.warn, limits.critical) == (timedelta(hours=3), timedelta(hours=4))


def test_age_alarms_take_the_configured_ages_and_none_without_a_schedule() -> None:
    grafana = ServiceConfig(
        name="grafana", instance="g", volume="grafana01-data", max_age_h=10, critical_age_h=20
    )
    limits = age_limits(grafana, resolve(SchedulesConfig(), ATLAS_SERVICES))
    assert (limits.warn, limits.critical) == (timedelta(hours=10), timedelta(hours=20))
    off = resolve(SchedulesConfig(runbook_defaults=False), ATLAS_SERVICES)
    none = age_limits(ATLAS_SERVICES[0], off)
    assert (none.warn, none.critical) == (None, None)
    # A turned-off schedule sets no age either.
    turned_off = [schedule(enabled=False)]
    assert age_limits(ATLAS_SERVICES[0], turned_off).warn is None


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ScheduleError, match=r"\$\.agent\.timezone"):
        zone("Mars/Olympus_Mons")
