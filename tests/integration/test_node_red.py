"""The README's Node-RED flow (deploy/node-red/atlas-backup-flow.json) against a real
Node-RED (headless, its broker node on the module's broker through the flow's environment
variables): the nightly inject, triggered through Node-RED's admin API, makes the agent
take a snapshot in Incus; a failed job, and only a failed one, is written to the
notification file.

Node-RED and the agent start once for the module; the tests run in file order.
"""

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.broker import Broker, free_port
from tests.support.harness import JOB_TIMEOUT_S, AgentHarness, atlas_services, running_agent
from tests.support.incus_env import IncusProject, incus_project
from tests.support.node_red import NODE_RED, NodeRed

# The flow's topics use the default prefix; the module has a broker of its own.
PREFIX = "atlas/backup"
NOTIFY_TIMEOUT_S = 15.0


@pytest.fixture(scope="module")
def node_red(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeRed]:
    if not NODE_RED.exists():
        message = f"Node-RED is not installed at {NODE_RED} (deploy/node-red/install-node-red.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    flow = NodeRed(tmp_path_factory.mktemp("node-red"), free_port(), broker.port)
    try:
        flow.start()
        print(f"Node-RED started and connected in {flow.started_in_s:.1f} s")
        yield flow
    finally:
        flow.stop()
        print(flow.log()[-20000:])


@pytest.fixture(scope="module")
def stack() -> Iterator[IncusProject]:
    with incus_project("atlas-nr") as project:
        project.make_service("grafana01", "grafana01-data")
        yield project


@dataclass
class Setup:
    node_red: NodeRed
    agent: AgentHarness
    stack: IncusProject


@pytest.fixture(scope="module")
def setup(
    node_red: NodeRed,
    broker: Broker,
    stack: IncusProject,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Setup]:
    with running_agent(
        broker.port,
        stack.name,
        tmp_path_factory.mktemp("agent"),
        prefix=PREFIX,
        services=[s for s in atlas_services() if s.name == "grafana"],
    ) as agent:
        yield Setup(node_red, agent, stack)


def notifications(setup: Setup) -> list[str]:
    path = setup.node_red.notify_file
    return path.read_text().splitlines() if path.exists() else []


def test_the_nightly_inject_takes_a_snapshot_in_incus(setup: Setup) -> None:
    client = setup.agent.client
    before = set(setup.stack.snapshots("grafana01-data"))
    mark = client.mark()
    injected = time.monotonic()
    setup.node_red.inject("atlas-nightly-snapshot")
    accepted = client.wait_for(
        lambda r: r.topic == f"{PREFIX}/response" and r.json().get("status") == "accepted",
        since=mark,
    ).json()
    assert accepted["action"] == "snapshot"
    assert accepted["job"].startswith("nodered-snapshot-"), accepted
    job = client.wait_job(accepted["job"], JOB_TIMEOUT_S)
    print(f"inject to snapshot job's end: {time.monotonic() - injected:.2f} s")
    assert job["state"] == "succeeded", job
    new = set(setup.stack.snapshots("grafana01-data")) - before
    assert len(new) == 1, new
    assert next(iter(new)).startswith("backup-"), new
    # A job that succeeded is no failure: nothing to notify.
    assert notifications(setup) == []


def test_a_failed_job_writes_the_notification(setup: Setup) -> None:
    passphrase = setup.agent.workdir / "passphrase"
    passphrase.rename(passphrase.with_name("elsewhere"))
    try:
        job = setup.agent.client.run(
            {"action": "export", "volumes": ["grafana01-data"], "encrypt": True},
            timeout=JOB_TIMEOUT_S,
        )
    finally:
        passphrase.with_name("elsewhere").rename(passphrase)
    assert job["state"] == "failed", job
    deadline = time.monotonic() + NOTIFY_TIMEOUT_S
    while not notifications(setup):
        assert time.monotonic() < deadline, "the flow wrote no notification"
        time.sleep(0.1)
    time.sleep(0.5)  # any second line (there must be none) lands by now
    event = setup.agent.client.wait_for(
        lambda r: (
            r.topic == f"{PREFIX}/events"
            and r.json()["job"] == job["id"]
            and r.json()["state"] == "failed"
        )
    ).json()
    assert notifications(setup) == [f"atlas-backup: export job {job['id']} failed at {event['at']}"]
    assert "atlas-backup: export job" in setup.node_red.log()  # the debug node's console copy
