"""A rebuild killed (-9, as a power cut) before its first service, in the middle of one
(the backup uploaded, not yet swapped in: the import's own fault point, which the
rebuild's import goes through; swapped in; running on the new data before its health
check passed), and between two: after the agent's next start every
volume holds its old or its new content whole, every instance runs, nothing is left over
(`assert_stack_intact`), and the job is `interrupted`."""

import pytest

from schemas.config import HealthCheck, ServiceConfig
from tests.support.fault_suite import JOB_TIMEOUT_S, AgentFactory
from tests.support.harness import ATLAS, atlas_services
from tests.support.incus_env import IncusProject

STATE = "/data/state"


def checked_services() -> list[ServiceConfig]:
    """The suite's services, each health-checked by its data (busybox runs no service)."""
    check = HealthCheck(command=["test", "-s", STATE], timeout_s=10)
    return [
        ServiceConfig(name=s.name, instance=s.instance, volume=s.volume, health=check)
        for s in atlas_services()
    ]


# The point, and the services (first in rebuild order: step-ca) rebuilt before it.
POINTS = [
    ("rebuild_before_services", set()),
    ("import_uploaded", set()),
    # Swapped in, its instance still stopped: recovery swaps the original back.
    ("import_swapped", set()),
    # Swapped in, its instance running on the new data, not yet proven healthy: the old
    # volume is kept until then, and recovery swaps it back.
    ("rebuild_checking_health", set()),
    ("rebuild_between_services", {"step-ca"}),
]


@pytest.mark.parametrize(("point", "rebuilt"), POINTS)
def test_a_rebuild_killed_leaves_every_volume_whole_and_every_instance_running(
    make_agent: AgentFactory, atlas: IncusProject, point: str, rebuilt: set[str]
) -> None:
    agent = make_agent(services=checked_services())
    for name in ATLAS:
        atlas.write(f"{name}01", STATE, f"{name} exported")
    exported = agent.client.run({"action": "export", "volumes": "all"}, timeout=JOB_TIMEOUT_S)
    assert exported["state"] == "succeeded", exported
    set_name = exported["result"]["files"][0]["backup"].split("/")[0]
    for name in ATLAS:
        atlas.write(f"{name}01", STATE, f"{name} current")

    command: dict[str, object] = {"action": "rebuild", "set": set_name, "confirm": "all"}
    job_id = agent.crash_at(point, command)
    agent.start()  # recovery runs before the agent takes commands
    job = agent.job(job_id, timeout=JOB_TIMEOUT_S)
    assert job["state"] == "interrupted", job
    if point == "rebuild_checking_health":
        assert "swapped the original step-ca01-data back in" in job["result"]["undone"]
    for name in ATLAS:
        assert atlas.state(f"{name}01") == "Running"
        expected = "exported" if name in rebuilt else "current"
        assert atlas.read(f"{name}01", STATE) == f"{name} {expected}"
    # Run again, the rebuild completes.
    again = agent.client.run(command, timeout=JOB_TIMEOUT_S)
    assert again["state"] == "succeeded", again
    for name in ATLAS:
        assert atlas.read(f"{name}01", STATE) == f"{name} exported"
