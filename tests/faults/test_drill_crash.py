"""A drill killed (-9, as a power cut) at each of its phases: after the agent's next
start no drill project is left, production is as it was (config and bytes), every
instance runs, and the job is `interrupted`, naming what recovery removed."""

import uuid
from collections.abc import Iterator

import pytest

from schemas.config import HealthCheck, ServiceConfig
from tests.support.drills import drill_projects, fingerprint
from tests.support.fault_suite import JOB_TIMEOUT_S, AgentFactory, FaultAgent
from tests.support.harness import atlas_services
from tests.support.incus_env import IncusProject

# Each point comes after a phase has made something (the first: before anything exists).
SNAPSHOT_POINTS = [
    "creating_drill_project",
    "drill_project_created",
    "drill_volume_restored",
    "drill_instance_created",
    "drill_instance_started",
    "drill_health_checked",
]
TARBALL_POINTS = ["drill_volume_restored", "drill_instance_started"]


def drill_services() -> list[ServiceConfig]:
    """The suite's services; grafana's health check reads its data (busybox runs no Grafana)."""
    check = HealthCheck(command=["test", "-s", "/data/state"], timeout_s=10)
    return [
        ServiceConfig(
            name=s.name,
            instance=s.instance,
            volume=s.volume,
            criticality=s.criticality,
            health=check if s.name == "grafana" else None,
        )
        for s in atlas_services()
    ]


@pytest.fixture
def backup_snapshot(atlas: IncusProject) -> Iterator[str]:
    name = f"backup-drill-{uuid.uuid4().hex[:8]}"
    atlas.run("storage", "volume", "snapshot", "create", atlas.pool, "grafana01-data", name)
    yield name
    atlas.run("storage", "volume", "snapshot", "delete", atlas.pool, "grafana01-data", name)


def crash_and_recover(agent: FaultAgent, atlas: IncusProject, point: str, scenario: str) -> None:
    before = fingerprint(atlas, "grafana")
    others = set(drill_projects())  # another agent's drill on this machine is not ours
    command: dict[str, object] = {"action": "drill", "service": "grafana", "scenario": scenario}
    job_id = agent.crash_at(point, command)
    agent.start()  # recovery runs before the agent takes commands
    job = agent.job(job_id, timeout=JOB_TIMEOUT_S)
    assert job["state"] == "interrupted", job
    assert sorted(set(drill_projects()) - others) == []
    assert fingerprint(atlas, "grafana") == before
    if point != "creating_drill_project":
        assert any("removed drill project" in what for what in job["result"]["undone"]), job


@pytest.mark.parametrize("point", SNAPSHOT_POINTS)
def test_a_snapshot_drill_killed_leaves_no_project_and_production_untouched(
    make_agent: AgentFactory, atlas: IncusProject, backup_snapshot: str, point: str
) -> None:
    agent = make_agent(services=drill_services())
    crash_and_recover(agent, atlas, point, "snapshot")


@pytest.mark.parametrize("point", TARBALL_POINTS)
def test_a_tarball_drill_killed_leaves_no_project_and_production_untouched(
    make_agent: AgentFactory, atlas: IncusProject, point: str
) -> None:
    agent = make_agent(services=drill_services())
    exported = agent.client.run(
        {"action": "export", "volumes": ["grafana01-data"]}, timeout=JOB_TIMEOUT_S
    )
    assert exported["state"] == "succeeded", exported
    crash_and_recover(agent, atlas, point, "tarball")


@pytest.mark.parametrize("point", ["drill_volume_restored", "drill_instance_started"])
def test_a_drill_stopped_by_sigterm_tears_its_project_down_before_the_agent_exits(
    make_agent: AgentFactory, atlas: IncusProject, backup_snapshot: str, point: str
) -> None:
    agent = make_agent(start=False, services=drill_services())
    before = fingerprint(atlas, "grafana")
    others = set(drill_projects())
    agent.start(fault=f"{point}:term")
    response = agent.client.command({"action": "drill", "service": "grafana"})
    assert response["status"] == "accepted", response
    job = agent.client.wait_job(str(response["job"]), JOB_TIMEOUT_S)
    assert agent.wait_exit() == 0
    assert job["state"] in ("interrupted", "cancelled", "succeeded"), job
    # Before any recovery: the job removed it itself.
    assert sorted(set(drill_projects()) - others) == []
    assert fingerprint(atlas, "grafana") == before
