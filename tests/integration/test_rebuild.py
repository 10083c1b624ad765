"""`rebuild` end to end on the real Incus and Mosquitto: the six demo services exported,
their data changed, then every one brought back from the set, started and health-checked.

The demo services are busybox containers: their health check reads the marker file on
the volume (`tests.support.drills.marker_check`), so it passes only on the exported data."""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import Broker
from tests.support.drills import MARKER, fingerprint, service
from tests.support.harness import ATLAS, AgentHarness, running_agent
from tests.support.incus_env import IMAGE_ALIAS, IncusProject, incus_project

JOB_TIMEOUT_S = 300.0
CLI = str(Path(sys.executable).parent / "atlas-backup")
STATE = "/data/state"


@pytest.fixture(scope="module")
def stack() -> Iterator[IncusProject]:
    with incus_project("atlas-rb") as project:
        for name in ATLAS:
            project.make_service(f"{name}01", f"{name}01-data")
        yield project


def _agent(broker: Broker, stack: IncusProject, workdir: Path, **rebuild: Any) -> Any:
    services = [service(name, f"{name} ok") for name in ATLAS]
    return running_agent(broker.port, stack.name, workdir, services=services, rebuild=rebuild)


@pytest.fixture
def agent(broker: Broker, stack: IncusProject, tmp_path: Path) -> Iterator[AgentHarness]:
    host = ["sh", "-c", "echo init-and-apply; echo to-stderr >&2"]
    with _agent(broker, stack, tmp_path, after_state_command=host) as harness:
        yield harness


def run(agent: AgentHarness, **fields: Any) -> dict[str, Any]:
    return agent.client.run(fields, timeout=JOB_TIMEOUT_S)


def exported_set(agent: AgentHarness, stack: IncusProject) -> str:
    """Every service written `<name> ok` / `v1` and exported: the set's name."""
    for name in ATLAS:
        stack.write(f"{name}01", MARKER, f"{name} ok")
        stack.write(f"{name}01", STATE, f"{name} v1")
    job = run(agent, action="export", volumes="all")
    assert job["state"] == "succeeded", job
    return str(job["result"]["files"][0]["backup"]).split("/")[0]


def damage(stack: IncusProject) -> None:
    for name in ATLAS:
        stack.write(f"{name}01", MARKER, f"{name} broken")
        stack.write(f"{name}01", STATE, f"{name} v2")


def remake(stack: IncusProject, name: str) -> None:
    """A service a test removed, made again for the next test."""
    instance, volume = f"{name}01", f"{name}01-data"
    if stack.state(instance) == "Missing":
        stack.run("launch", IMAGE_ALIAS, instance)
    if not stack.run("storage", "volume", "list", stack.pool, volume, "-f", "csv").strip():
        stack.run("storage", "volume", "create", stack.pool, volume)
    if volume not in stack.run("config", "device", "list", instance).split():
        stack.run("storage", "volume", "attach", stack.pool, volume, instance, "/data")
    if stack.state(instance) != "Running":
        stack.run("start", instance)


def services_of(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["service"]: s for s in job["result"]["services"]}


def test_a_rebuild_brings_every_service_back_from_the_set(
    agent: AgentHarness, stack: IncusProject
) -> None:
    set_name = exported_set(agent, stack)
    for name in ATLAS:
        assert (agent.backup_dir / set_name / "instances" / f"{name}01.json").is_file()
    recorded = json.loads(
        (agent.backup_dir / set_name / "instances" / "grafana01.json").read_text()
    )
    assert recorded["image"]
    assert "grafana01-data" in {d.get("source") for d in recorded["devices"].values()}
    assert not any(k.startswith("volatile.") for k in recorded["config"])
    damage(stack)

    dry = run(agent, action="rebuild", set=set_name, confirm="all", dry_run=True)
    assert dry["state"] == "succeeded", dry
    planned = dry["result"]
    assert planned["dry_run"] is True
    assert planned["services"][0]["service"] == "step-ca"
    assert {s["how"] for s in planned["services"]} == {"replace"}
    assert all(s["outcome"] == "planned" for s in planned["services"])
    assert [st["op"] for st in planned["services"][0]["steps"]] == [
        "verify_and_upload",
        "stop_instances",
        "swap_volume",
        "start_instance",
        "health_check",
        "delete_volume",
    ]
    assert planned["host_command"] is None
    for name in ATLAS:  # a dry run changes nothing
        assert stack.read(f"{name}01", STATE) == f"{name} v2"

    job = run(agent, action="rebuild", set=set_name, confirm="all")
    assert job["state"] == "succeeded", job
    result = job["result"]
    assert result["ok"] is True
    assert 0 < result["total_s"] < result["target_rto_s"] == 3600
    assert "init-and-apply" in result["host_command"]["output"]
    assert "to-stderr" in result["host_command"]["output"]
    assert result["host_command"]["exit_code"] == 0
    for name, row in services_of(job).items():
        assert row["outcome"] == "rebuilt", row
        assert 0 < row["seconds"] < row["target_rto_s"] == 900
        assert "marker ok" in row["health"]
        assert stack.read(f"{name}01", STATE) == f"{name} v1"
        assert stack.state(f"{name}01") == "Running"
    # The old data went once the instances ran on the new; no temporary volume is left.
    volumes = stack.run("storage", "volume", "list", stack.pool, "-f", "csv", "-c", "n")
    assert "pre-import" not in volumes
    assert "-import-" not in volumes


def test_a_service_failing_its_health_check_on_the_restored_data_gets_its_volume_back(
    agent: AgentHarness, stack: IncusProject
) -> None:
    """grafana's backup holds data its health check refuses: the volume it replaced is
    swapped back, byte for byte, the instance runs on it, and the rebuild goes on."""
    for name in ATLAS:
        stack.write(f"{name}01", MARKER, f"{name} ok" if name != "grafana" else "damaged")
        stack.write(f"{name}01", STATE, f"{name} v1")
    exported = run(agent, action="export", volumes="all")
    assert exported["state"] == "succeeded", exported
    set_name = str(exported["result"]["files"][0]["backup"]).split("/")[0]
    damage(stack)
    stack.write("grafana01", MARKER, "grafana ok")
    stack.run(
        "exec", "grafana01", "--", "sh", "-c", "head -c 1048576 /dev/urandom > /data/blob"
    )  # fmt: skip
    before = fingerprint(stack, "grafana")

    job = run(agent, action="rebuild", set=set_name, confirm="all")
    assert job["state"] == "partial", job
    assert job["result"]["ok"] is False
    rows = services_of(job)
    grafana = rows["grafana"]
    assert grafana["outcome"] == "failed", grafana
    assert grafana["rolled_back"] is True
    assert "did not pass its health check" in grafana["rollback"]
    assert "the previous grafana01-data is back and grafana01 runs on it" in grafana["rollback"]
    assert job["result"]["failed"]["grafana01-data"]["code"] == "drill_failed"
    after = fingerprint(stack, "grafana")
    assert after["files"] == before["files"]  # the blob and the rest, byte for byte
    assert after["volume"] == before["volume"]
    assert after["snapshots"] == before["snapshots"]
    assert after["status"] == "Running"
    # The rebuild went on with the other services.
    for name in ATLAS:
        if name != "grafana":
            assert rows[name]["outcome"] == "rebuilt", rows[name]
            assert rows[name]["rolled_back"] is False
            assert stack.read(f"{name}01", STATE) == f"{name} v1"
    volumes = stack.run("storage", "volume", "list", stack.pool, "-f", "csv", "-c", "n")
    assert "pre-import" not in volumes
    assert "-import-" not in volumes
    stack.run("exec", "grafana01", "--", "rm", "/data/blob")


def test_a_missing_volume_gets_a_plain_import_and_a_missing_instance_is_skipped(
    agent: AgentHarness, stack: IncusProject
) -> None:
    set_name = exported_set(agent, stack)
    damage(stack)
    try:
        stack.run("stop", "grafana01", "--force")
        stack.run("storage", "volume", "detach", stack.pool, "grafana01-data", "grafana01")
        stack.run("storage", "volume", "delete", stack.pool, "grafana01-data")
        stack.run("delete", "--force", "alertmanager01")

        job = run(agent, action="rebuild", set=set_name, confirm="all")
        assert job["state"] == "succeeded", job
        rows = services_of(job)
        assert rows["grafana"]["how"] == "import"
        assert rows["grafana"]["outcome"] == "rebuilt", rows["grafana"]
        assert "nothing to roll back to" in rows["grafana"]["rollback"]
        assert stack.read("grafana01", STATE) == "grafana v1"
        assert stack.state("grafana01") == "Running"
        assert rows["alertmanager"]["outcome"] == "skipped"
        assert "alertmanager01 does not exist any more" in rows["alertmanager"]["reason"]
        assert stack.state("alertmanager01") == "Missing"
        assert job["result"]["ok"] is False
        assert stack.read("loki01", STATE) == "loki v1"
    finally:
        remake(stack, "grafana")
        remake(stack, "alertmanager")


def test_a_missing_instance_is_recreated_from_the_set_when_configured(
    broker: Broker, stack: IncusProject, tmp_path: Path
) -> None:
    with _agent(broker, stack, tmp_path, missing_instance="recreate") as agent:
        set_name = exported_set(agent, stack)
        damage(stack)
        try:
            stack.run("delete", "--force", "mosquitto01")
            job = run(agent, action="rebuild", set=set_name, confirm="all")
            assert job["state"] == "succeeded", job
            row = services_of(job)["mosquitto"]
            assert row["recreate_instance"] is True
            assert row["outcome"] == "rebuilt", row
            assert stack.state("mosquitto01") == "Running"
            assert stack.read("mosquitto01", STATE) == "mosquitto v1"
        finally:
            remake(stack, "mosquitto")


def test_a_compromised_step_ca_backup_is_refused_and_the_plan_says_regenerate(
    agent: AgentHarness, stack: IncusProject
) -> None:
    set_name = exported_set(agent, stack)
    damage(stack)
    marked = run(agent, action="mark_compromised", service="step-ca", reason="key leak")
    assert marked["state"] == "succeeded", marked
    job = run(agent, action="rebuild", set=set_name, confirm="all")
    assert job["state"] == "partial", job
    result = job["result"]
    assert any("step-ca: regenerate it" in note for note in result["regenerate"])
    row = services_of(job)["step-ca"]
    assert row["outcome"] == "failed"
    assert "compromised" in row["reason"]
    assert "regenerate" in row["reason"]
    assert result["failed"]["step-ca01-data"]["code"] == "compromised"
    assert stack.read("step-ca01", STATE) == "step-ca v2"  # untouched
    assert stack.read("grafana01", STATE) == "grafana v1"


def test_the_cli_rebuilds_from_a_set_with_confirm_all(
    agent: AgentHarness, stack: IncusProject
) -> None:
    set_name = exported_set(agent, stack)
    damage(stack)
    command = [CLI, "rebuild", set_name, "--config", str(agent.workdir / "config.toml")]
    refused = subprocess.run(
        command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False
    )
    assert refused.returncode == 2, refused  # off a terminal, no confirm: rejected
    assert stack.read("loki01", STATE) == "loki v2"
    done = subprocess.run(
        [*command, "--confirm", "all", "--json"],
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    printed = json.loads(done.stdout)
    assert printed["state"] == "succeeded"
    assert printed["result"]["ok"] is True
    for name in ATLAS:
        assert stack.read(f"{name}01", STATE) == f"{name} v1"
