"""The flat per-volume state: ages, counts and the problem flag."""

from datetime import UTC, datetime, timedelta

import msgspec

from agent.status.volumes import build_volume_state
from commands.ports import SnapshotInfo, VolumeInfo
from commands.schedules import AgeLimits, age_limits, resolve
from schemas.config import ATLAS_SERVICES, SchedulesConfig

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
GRAFANA = ATLAS_SERVICES[0]
# The runbook's daily snapshot: a warning after 26 h, critical after 50 h.
DAILY = age_limits(GRAFANA, resolve(SchedulesConfig(), ATLAS_SERVICES))


def volume(*ages_h: float) -> VolumeInfo:
    snaps = tuple(
        SnapshotInfo(name=f"s{i}", created=NOW - timedelta(hours=age))
        for i, age in enumerate(sorted(ages_h, reverse=True))
    )
    return VolumeInfo(name=GRAFANA.volume, pool="local", used_by=("grafana01",), snapshots=snaps)


def test_a_fresh_snapshot_is_no_problem_and_ages_are_numbers() -> None:
    state = build_volume_state(GRAFANA, volume(30, 2), {}, NOW)
    assert state.snapshots == 2
    assert state.last_success_age_s == 2 * 3600
    assert state.last_snapshot_ts == int((NOW - timedelta(hours=2)).timestamp() * 1000)
    assert (state.problem, state.problem_reason) == (0, "")


def test_a_backup_older_than_the_schedule_allows_is_a_warning() -> None:
    state = build_volume_state(GRAFANA, volume(30), {}, NOW, limits=DAILY)
    assert (state.problem, state.severity) == (1, 1)
    assert "30.0 h old; past the warning age of 26 h" in state.problem_reason


def test_a_backup_past_the_critical_age_is_critical() -> None:
    state = build_volume_state(GRAFANA, volume(51), {}, NOW, limits=DAILY)
    assert (state.problem, state.severity) == (1, 2)
    assert "51.0 h old; past the critical age of 50 h" in state.problem_reason


def test_a_backup_within_the_warning_age_is_ok() -> None:
    state = build_volume_state(GRAFANA, volume(25), {}, NOW, limits=DAILY)
    assert (state.problem, state.severity, state.problem_reason) == (0, 0, "")


def test_without_a_backup_schedule_no_age_alarm() -> None:
    state = build_volume_state(GRAFANA, volume(500), {}, NOW, limits=AgeLimits())
    assert (state.problem, state.severity) == (0, 0)


def test_the_next_run_is_an_iso_time_and_its_epoch_ms() -> None:
    at = NOW + timedelta(hours=14)
    state = build_volume_state(GRAFANA, volume(2), {}, NOW, limits=DAILY, next_run=at)
    assert (state.next_run, state.next_run_ts) == (at.isoformat(), int(at.timestamp() * 1000))


def test_number_fields_are_never_null_in_a_first_message() -> None:
    state = build_volume_state(GRAFANA, None, {}, NOW)
    sent = msgspec.json.decode(msgspec.json.encode(state))
    assert (sent["next_run"], sent["next_run_ts"], sent["severity"]) == ("", 0, 2)
    assert all(value is not None for value in sent.values())


def test_a_volume_never_backed_up_is_a_problem_with_age_minus_one() -> None:
    state = build_volume_state(GRAFANA, volume(), {}, NOW)
    assert (state.problem, state.problem_reason, state.last_success_age_s) == (
        1,
        "no backup yet",
        -1,
    )


def test_the_last_job_failing_is_a_problem_even_with_a_fresh_snapshot() -> None:
    facts = {"last_job_id": "j1", "last_job_state": "failed", "last_error": "boom"}
    state = build_volume_state(GRAFANA, volume(1), facts, NOW, limits=DAILY)
    assert (state.problem, state.severity) == (1, 1)
    assert state.problem_reason == "last job j1 failed: boom"


def test_a_missing_volume_is_a_problem() -> None:
    state = build_volume_state(GRAFANA, None, {}, NOW)
    assert state.problem_reason == "volume grafana01-data does not exist in Incus"
    assert state.severity == 2


def test_a_recent_export_counts_as_the_newest_backup() -> None:
    export_ms = int((NOW - timedelta(hours=1)).timestamp() * 1000)
    facts = {"last_export_ts": export_ms, "last_export": "x", "exports": 3}
    state = build_volume_state(GRAFANA, volume(40), facts, NOW)
    assert (state.last_success_age_s, state.exports, state.problem) == (3600, 3, 0)


def named(**ages_h: float) -> VolumeInfo:
    snaps = tuple(
        SnapshotInfo(name=name.replace("_", "-"), created=NOW - timedelta(hours=age))
        for name, age in sorted(ages_h.items(), key=lambda item: -item[1])
    )
    return VolumeInfo(name=GRAFANA.volume, pool="local", used_by=("grafana01",), snapshots=snaps)


def test_a_safety_or_export_snapshot_is_not_a_backup() -> None:
    state = build_volume_state(
        GRAFANA, named(pre_restore_20261128_110000=1, export_20261128_100000=2), {}, NOW
    )
    assert (state.snapshots, state.last_snapshot_ts) == (0, 0)
    assert (state.problem, state.problem_reason) == (1, "no backup yet")


def test_the_newest_real_backup_is_the_one_shown_beside_newer_safety_snapshots() -> None:
    state = build_volume_state(
        GRAFANA, named(backup_20261128_020000=10, pre_restore_20261128_110000=1), {}, NOW
    )
    assert state.snapshots == 1
    assert state.last_success_age_s == 10 * 3600
