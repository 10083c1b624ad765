"""A real Prometheus scrapes the running agent (real process, Mosquitto and Incus) and
evaluates the alert rules of deploy/prometheus: what the operator's Prometheus would see."""

import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import Broker, free_port
from tests.support.harness import AgentHarness, atlas_services, running_agent
from tests.support.incus_env import IncusProject, incus_project
from tests.support.prometheus import PROMETHEUS, Prometheus, running_prometheus

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "atlas-backup-rules.yml"
VOLUME = "grafana01-data"

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None and not Path(PROMETHEUS).exists(),
    reason="no prometheus: deploy/install-deps.sh --tests installs Debian's package",
)


@pytest.fixture(scope="module")
def stack() -> Iterator[IncusProject]:
    with incus_project("atlas-prom") as project:
        project.make_service("grafana01", VOLUME)
        yield project


@pytest.fixture
def agent(
    broker: Broker, stack: IncusProject, tmp_path: Path
) -> Iterator[tuple[AgentHarness, str]]:
    """The agent on one volume, with the runbook's schedule (its age alarms) and metrics
    on a free loopback port; that `host:port`."""
    services = [s for s in atlas_services() if s.volume == VOLUME]
    listen = f"127.0.0.1:{free_port()}"
    with running_agent(
        broker.port,
        stack.name,
        tmp_path / "agent",
        services=services,
        metrics={"listen": listen},
        schedules={"runbook_defaults": True},
    ) as harness:
        yield harness, listen


def _value(prometheus: Prometheus, expr: str) -> float | None:
    result = prometheus.query(expr)
    return float(result[0]["value"][1]) if result else None


def _firing(prometheus: Prometheus, name: str, **labels: str) -> list[dict[str, Any]]:
    return [
        a
        for a in prometheus.alerts()
        if a["labels"].get("alertname") == name
        and a["state"] == "firing"
        and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def test_prometheus_scrapes_the_agent_and_a_failed_export_fires_the_alert(
    agent: tuple[AgentHarness, str], tmp_path: Path
) -> None:
    harness, listen = agent
    with urllib.request.urlopen(f"http://{listen}/metrics", timeout=10) as answer:
        assert "atlas_backup_attempt_total" in answer.read().decode()
    with running_prometheus(tmp_path / "prometheus", "atlas-backup", [listen], [RULES]) as prom:
        # Scraped: every counter is there at 0, the age thresholds from the runbook's schedule.
        prom.wait_for("the agent up", lambda: _value(prom, 'up{job="atlas-backup"}') == 1)
        counted = f'atlas_backup_attempt_total{{volume="{VOLUME}", action="snapshot"}}'
        assert _value(prom, counted) == 0
        assert _value(prom, f'atlas_backup_age_warning_seconds{{volume="{VOLUME}"}}') == 26 * 3600
        rules = prom.api("rules")["groups"][0]["rules"]
        assert {r["health"] for r in rules} == {"ok"}
        assert len(rules) == 7

        job = harness.client.run({"action": "snapshot", "volumes": [VOLUME]})
        assert job["state"] == "succeeded", job
        success = f'atlas_backup_success_total{{volume="{VOLUME}", action="snapshot"}}'
        prom.wait_for("the snapshot counted", lambda: _value(prom, success) == 1)
        newest = f'atlas_backup_newest_backup_timestamp_seconds{{volume="{VOLUME}"}}'
        assert (_value(prom, newest) or 0) * 1000 >= job["started_ts"] - 1000

        # An encrypted export whose passphrase file is gone fails before touching Incus.
        passphrase = harness.workdir / "passphrase"
        passphrase.rename(harness.workdir / "elsewhere")
        try:
            failed = harness.client.run({"action": "export", "volumes": [VOLUME], "encrypt": True})
        finally:
            (harness.workdir / "elsewhere").rename(passphrase)
        assert failed["state"] == "failed", failed
        alert = prom.wait_for(
            "AtlasBackupLastFailed firing",
            lambda: _firing(prom, "AtlasBackupLastFailed", volume=VOLUME, action="export"),
        )
        assert alert[0]["labels"]["severity"] == "warning"
        failure = f'atlas_backup_failure_total{{volume="{VOLUME}", action="export"}}'
        assert _value(prom, failure) == 1
        assert not _firing(prom, "AtlasBackupTooOld")
        assert not _firing(prom, "AtlasBackupAgentDown")
