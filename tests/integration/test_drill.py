"""`drill` end to end on the real Incus: the newest snapshot or tarball of a service
restored into a throwaway project, started, health-checked, torn down; production left
as it was, config for config and byte for byte.

The demo services are busybox containers that run no Grafana: their health check reads
a marker file on the restored volume (`tests.support.drills.marker_check`)."""

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas.config import Hooks, HookStep
from tests.support.backups import flip_byte
from tests.support.broker import Broker, free_port
from tests.support.drills import MARKER, drill_projects, fingerprint, service
from tests.support.harness import AgentHarness, running_agent
from tests.support.incus_env import IncusProject, incus_project

JOB_TIMEOUT_S = 180.0
PHASES = [
    "find backup",
    "create project",
    "restore volume",
    "create instance",
    "start instance",
    "health check",
    "teardown",
]


@pytest.fixture(scope="module")
def stack() -> Iterator[IncusProject]:
    with incus_project("atlas-dr") as project:
        for name in ("grafana", "step-ca"):
            project.make_service(f"{name}01", f"{name}01-data")
            project.write(f"{name}01", MARKER, f"{name} ok")
        yield project


@pytest.fixture
def agent(broker: Broker, stack: IncusProject, tmp_path: Path) -> Iterator[AgentHarness]:
    services = [
        service("grafana", "grafana ok"),
        service("step-ca", "step-ca ok", criticality="critical"),
    ]
    with running_agent(broker.port, stack.name, tmp_path, services=services) as harness:
        yield harness


@pytest.fixture(autouse=True)
def no_drill_project_left(stack: IncusProject) -> Iterator[None]:
    before = set(drill_projects())  # another agent's drill on this machine is not ours
    yield
    assert sorted(set(drill_projects()) - before) == []
    for name in ("grafana", "step-ca"):
        assert stack.state(f"{name}01") == "Running"


def run(agent: AgentHarness, **fields: Any) -> dict[str, Any]:
    return agent.client.run(fields, timeout=JOB_TIMEOUT_S)


def snapshot(stack: IncusProject, name: str, snap: str) -> None:
    stack.run("storage", "volume", "snapshot", "create", stack.pool, f"{name}01-data", snap)


def test_a_snapshot_drill_brings_the_service_back_and_leaves_production_as_it_was(
    agent: AgentHarness, stack: IncusProject
) -> None:
    snapshot(stack, "grafana", "backup-good-1")
    before = fingerprint(stack, "grafana")
    mark = agent.client.mark()
    job = run(agent, action="drill", service="grafana", scenario="snapshot")
    assert job["state"] == "succeeded", job
    result = job["result"]
    assert result["ok"] is True
    assert result["error"] == ""
    assert result["source"] == "grafana01-data/backup-good-1"
    assert [p["name"] for p in result["phases"]] == PHASES
    assert 0 < result["rto_s"] < result["target_rto_s"] == 900
    assert result["rto_s"] == pytest.approx(
        sum(p["seconds"] for p in result["phases"][:-1]), abs=0.01
    )
    assert "marker ok" in result["health"]
    assert result["project"].startswith("atlas-drill-")
    retained = agent.client.wait_for(
        lambda r: r.topic == f"{agent.prefix}/drills/grafana", since=mark
    ).json()
    assert retained == {
        key: result[key]
        for key in (
            "service",
            "scenario",
            "ok",
            "rto_s",
            "target_rto_s",
            "phases",
            "at",
            "at_ts",
            "error",
        )
    }
    assert fingerprint(stack, "grafana") == before


def test_a_tarball_drill_imports_the_newest_export(
    agent: AgentHarness, stack: IncusProject
) -> None:
    exported = run(agent, action="export", volumes=["step-ca01-data"])
    assert exported["state"] == "succeeded", exported
    before = fingerprint(stack, "step-ca")
    job = run(agent, action="drill", service="step-ca", scenario="tarball")
    assert job["state"] == "succeeded", job
    assert job["result"]["source"] == exported["result"]["files"][0]["backup"]
    assert [p["name"] for p in job["result"]["phases"]] == PHASES
    assert fingerprint(stack, "step-ca") == before


def test_a_drill_of_damaged_data_fails_its_health_check(
    agent: AgentHarness, stack: IncusProject
) -> None:
    stack.write("grafana01", MARKER, "grafana broken")
    snapshot(stack, "grafana", "backup-damaged")
    stack.write("grafana01", MARKER, "grafana ok")
    try:
        job = run(agent, action="drill", service="grafana")
        assert job["state"] == "failed", job
        assert job["error"]["code"] == "drill_failed"
        result = job["result"]
        assert result["ok"] is False
        assert result["rto_s"] == 0
        assert "did not pass its health check" in result["error"]
        assert result["phases"][-1]["name"] == "teardown"
    finally:
        snapshot(stack, "grafana", "backup-good-2")


def test_a_drill_of_a_corrupted_tarball_fails_and_says_why(
    agent: AgentHarness, stack: IncusProject
) -> None:
    exported = run(agent, action="export", volumes=["step-ca01-data"])
    assert exported["state"] == "succeeded", exported
    flip_byte(agent.backup_dir / exported["result"]["files"][0]["file"])
    job = run(agent, action="drill", service="step-ca", scenario="tarball")
    assert job["state"] == "failed", job
    assert job["error"]["code"] == "integrity_error"
    # Why, naming the file: the encrypted file fails its integrity check on decryption
    # (an unencrypted one its sha256 against the manifest).
    assert exported["result"]["files"][0]["file"] in job["result"]["error"]
    assert "damaged" in job["result"]["error"]
    # Nothing was made: the backup was refused before the project.
    assert [p["name"] for p in job["result"]["phases"]] == ["find backup"]


def test_a_dry_run_drill_shows_its_plan_and_makes_nothing(agent: AgentHarness) -> None:
    job = run(agent, action="drill", service="grafana", dry_run=True)
    ops = [step["op"] for step in job["result"]["plan"]]
    assert ops == [
        "find_backup",
        "create_project",
        "restore_volume",
        "create_instance",
        "start_instance",
        "health_check",
        "delete_project",
    ]


def test_a_drill_of_an_unknown_service_is_rejected(agent: AgentHarness) -> None:
    response = agent.client.command({"action": "drill", "service": "nope"})
    assert response["status"] == "rejected"
    assert "$.service" in response["error"]["message"]


def test_service_hooks_run_inside_the_instance_around_its_snapshot(
    broker: Broker, stack: IncusProject, tmp_path: Path
) -> None:
    """A `pre` step writes into the volume (as Prometheus's TSDB snapshot does), the
    snapshot holds it, and the `post` step removes it from the live volume."""
    pre = HookStep(command=["sh", "-c", "echo consistent > /data/hooked && echo token=s3cret"])
    post = HookStep(command=["rm", "/data/hooked"])
    hooked = service("grafana", "grafana ok", hooks=Hooks(pre=[pre], post=[post]))
    with running_agent(broker.port, stack.name, tmp_path, services=[hooked]) as agent:
        job = run(agent, action="snapshot", volumes=["grafana01-data"], name="backup-hooked")
    assert job["state"] == "succeeded", job
    hooks = job["result"]["hooks"]
    assert [(h["when"], h["exit_code"], h["ok"]) for h in hooks] == [
        ("pre", 0, True),
        ("post", 0, True),
    ]
    assert "s3cret" not in hooks[0]["output"]
    assert "token=***" in hooks[0]["output"]
    assert stack.run("exec", "grafana01", "--", "ls", "/data").split() == ["marker"]
    # The snapshot took what `pre` wrote (read where the `dir` pool keeps it).
    snapshots = Path("/var/lib/incus/storage-pools") / stack.pool / "custom-snapshots"
    held = snapshots / f"{stack.name}_grafana01-data" / "backup-hooked" / "hooked"
    assert held.read_text() == "consistent\n"


def test_a_drill_shows_in_the_prometheus_metrics(
    broker: Broker, stack: IncusProject, tmp_path: Path
) -> None:
    snapshot(stack, "grafana", "backup-metrics")
    port = free_port()
    services = [service("grafana", "grafana ok")]
    metrics = {"listen": f"127.0.0.1:{port}"}
    with running_agent(
        broker.port, stack.name, tmp_path, services=services, metrics=metrics
    ) as agent:
        job = run(agent, action="drill", service="grafana")
        assert job["state"] == "succeeded", job
        # The metrics take the drill's verdict as `<p>/drills/<service>` is published,
        # just after the job's final state.
        agent.client.wait_for(lambda r: r.topic == f"{agent.prefix}/drills/grafana")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
    assert 'atlas_backup_drill_ok{service="grafana"} 1.0' in text
    rto = job["result"]["rto_s"]
    assert f'atlas_backup_drill_rto_seconds{{service="grafana"}} {float(rto)}' in text
