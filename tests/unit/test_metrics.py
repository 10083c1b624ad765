"""The Prometheus metrics, fed as the event bus feeds them, read in the exposition format."""

import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.config import parse_config
from agent.metrics.backup_metrics import VOLUME_ACTIONS, BackupMetrics
from agent.metrics.server import serve_metrics, split_listen
from agent.runtime.events import EventBus, JobFinished, VolumeStateChanged
from agent.runtime.jobs import Job
from commands.base import Plan
from commands.schedules import AgeLimits
from schemas.commands import ExportCommand, SnapshotCommand
from schemas.errors import ConfigError
from schemas.messages import DrillState, ErrorInfo, VolumeState
from schemas.results import SnapshotResult

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
LIMITS = {"v1": AgeLimits(warn=timedelta(hours=26), critical=timedelta(hours=50))}


def _metrics() -> BackupMetrics:
    return BackupMetrics(["v1", "v2"], LIMITS, version="9.9.9", process=False)


def samples(metrics: BackupMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: BackupMetrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


def _snapshot_job(state: str, *, dry_run: bool = False, volumes: list[str] | None = None) -> Job:
    targets = volumes or ["v1", "v2"]
    job = Job(
        id="j1",
        action="snapshot",
        command=SnapshotCommand(volumes=targets, dry_run=dry_run),
        plan=Plan(targets=tuple(targets), steps=()),
        created=NOW,
        state=state,  # type: ignore[arg-type]
        started=NOW,
        finished=NOW + timedelta(seconds=12),
        bytes_done=0,
    )
    return job


def test_every_volume_and_action_counts_from_zero_and_the_thresholds_are_there() -> None:
    metrics = _metrics()
    for volume in ("v1", "v2"):
        for action in VOLUME_ACTIONS:
            for name in ("attempt", "success", "failure"):
                assert (
                    value(metrics, f"atlas_backup_{name}_total", volume=volume, action=action) == 0
                )
    assert value(metrics, "atlas_backup_age_warning_seconds", volume="v1") == 26 * 3600
    assert value(metrics, "atlas_backup_age_critical_seconds", volume="v1") == 50 * 3600
    assert value(metrics, "atlas_backup_age_warning_seconds", volume="v2") is None
    assert value(metrics, "atlas_backup_agent_info", version="9.9.9") == 1
    # Drills: no series until a drill has run.
    assert not [k for k in samples(metrics) if k[0].startswith("atlas_backup_drill")]


async def test_a_partial_job_counts_a_success_and_a_failure_and_sets_each_last_status() -> None:
    metrics, bus = _metrics(), EventBus()
    metrics.follow(bus)
    job = _snapshot_job("partial")
    job.result = SnapshotResult(snapshots={"v1": "s1"}, failed={"v2": ErrorInfo(message="x")})
    await bus.emit(JobFinished(job))
    assert value(metrics, "atlas_backup_attempt_total", volume="v1", action="snapshot") == 1
    assert value(metrics, "atlas_backup_success_total", volume="v1", action="snapshot") == 1
    assert value(metrics, "atlas_backup_failure_total", volume="v2", action="snapshot") == 1
    assert value(metrics, "atlas_backup_success_total", volume="v2", action="snapshot") == 0
    assert value(metrics, "atlas_backup_last_status", volume="v1", action="snapshot") == 1
    assert value(metrics, "atlas_backup_last_status", volume="v2", action="snapshot") == 0
    at = (NOW + timedelta(seconds=12)).timestamp()
    assert (
        value(metrics, "atlas_backup_last_successful_timestamp", volume="v1", action="snapshot")
        == at
    )
    assert value(metrics, "atlas_backup_duration_seconds_count", action="snapshot") == 1
    assert value(metrics, "atlas_backup_duration_seconds_sum", action="snapshot") == 12


async def test_a_dry_run_and_an_unconfigured_volume_count_nothing() -> None:
    metrics, bus = _metrics(), EventBus()
    metrics.follow(bus)
    await bus.emit(JobFinished(_snapshot_job("succeeded", dry_run=True)))
    await bus.emit(JobFinished(_snapshot_job("succeeded", volumes=["elsewhere"])))
    assert value(metrics, "atlas_backup_attempt_total", volume="v1", action="snapshot") == 0
    assert not [k for k in samples(metrics) if ("volume", "elsewhere") in k[1]]


async def test_an_export_counts_its_bytes() -> None:
    metrics, bus = _metrics(), EventBus()
    metrics.follow(bus)
    job = Job(
        id="e1",
        action="export",
        command=ExportCommand(volumes=["v1"]),
        plan=Plan(targets=("v1",), steps=()),
        created=NOW,
        state="failed",
        bytes_done=4096,
    )
    await bus.emit(JobFinished(job))
    assert value(metrics, "atlas_backup_bytes_total", action="export") == 4096
    assert value(metrics, "atlas_backup_failure_total", volume="v1", action="export") == 1


async def test_a_volume_state_sets_age_size_severity_and_seeds_the_last_successes() -> None:
    metrics, bus = _metrics(), EventBus()
    metrics.follow(bus)
    snap_ms, export_ms = 1_700_000_000_000, 1_700_000_100_000
    state = VolumeState(
        volume="v1",
        service="s1",
        instance="i1",
        criticality="medium",
        last_snapshot_ts=snap_ms,
        last_export_ts=export_ms,
        last_export_size_bytes=1234,
        last_success_age_s=77,
        severity=1,
        problem=1,
    )
    await bus.emit(VolumeStateChanged(state))
    assert (
        value(metrics, "atlas_backup_newest_backup_timestamp_seconds", volume="v1")
        == export_ms / 1000
    )
    assert value(metrics, "atlas_backup_newest_backup_age_seconds", volume="v1") == 77
    assert value(metrics, "atlas_backup_last_export_size_bytes", volume="v1") == 1234
    assert value(metrics, "atlas_backup_volume_severity", volume="v1") == 1
    assert (
        value(metrics, "atlas_backup_last_successful_timestamp", volume="v1", action="snapshot")
        == snap_ms / 1000
    )
    assert (
        value(metrics, "atlas_backup_last_successful_timestamp", volume="v1", action="verify")
        is None
    )


def test_a_drill_sets_its_gauges() -> None:
    metrics = _metrics()
    drill = DrillState(
        service="s1",
        scenario="snapshot",
        ok=True,
        rto_s=42.5,
        target_rto_s=300,
        phases=[],
        at="",
        at_ts=1_700_000_000_000,
    )
    metrics.drill(drill)
    assert value(metrics, "atlas_backup_drill_ok", service="s1") == 1
    assert value(metrics, "atlas_backup_drill_rto_seconds", service="s1") == 42.5
    assert value(metrics, "atlas_backup_drill_last_success", service="s1") == 1_700_000_000


def test_the_listen_address_splits_into_host_and_port() -> None:
    assert split_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert split_listen("[::1]:9464") == ("::1", 9464)


def test_the_server_binds_only_the_configured_address_and_a_taken_port_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = _metrics()
    server = serve_metrics("127.0.0.1:0", metrics.registry)
    assert server is not None
    try:
        assert server.server.server_address[0] == "127.0.0.1"
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            assert b"atlas_backup_attempt_total" in answer.read()
        assert serve_metrics(f"127.0.0.1:{server.port}", metrics.registry) is None
        assert "cannot serve metrics on" in caplog.text
    finally:
        server.close()


def test_metrics_are_off_by_default_and_a_listen_address_is_checked() -> None:
    assert parse_config("").metrics.listen == ""
    assert parse_config('[metrics]\nlisten = "[::1]:9464"').metrics.listen == "[::1]:9464"
    for bad in ("9464", "127.0.0.1", "http://127.0.0.1:9464", "127.0.0.1:9464\\n"):
        with pytest.raises(ConfigError, match=r"\$\.metrics\.listen"):
            parse_config(f'[metrics]\nlisten = "{bad}"')
