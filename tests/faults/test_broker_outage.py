"""The broker goes away mid-job: the job runs on, the agent reconnects with backoff, and
what it owns reaches the broker again; commands the broker held for it run once."""

import re
import uuid
from collections.abc import Callable

from tests.support.broker import Broker
from tests.support.client import Received, TestClient
from tests.support.fault_suite import JOB_TIMEOUT_S, VOLUMES, Evidence, FaultAgent, wait_until
from tests.support.incus_env import IncusProject


def retained_on(topic: str) -> Callable[[Received], bool]:
    return lambda received: received.topic == topic and received.retain


def fresh_client(broker: Broker, agent: FaultAgent, evidence: Evidence) -> TestClient:
    """A new subscriber: it gets the retained state as the broker holds it now."""
    client = TestClient(broker.port, agent.prefix)
    evidence.clients.append(client)
    return client


def test_a_job_runs_on_while_the_broker_is_down_and_its_final_state_arrives_after(
    agent: FaultAgent, atlas: IncusProject, broker: Broker, evidence: Evidence
) -> None:
    name = f"outage-{uuid.uuid4().hex[:8]}"
    response = agent.client.command(
        {"action": "snapshot", "volumes": "all", "quiesce": True, "name": name}
    )
    job_id = str(response["job"])
    agent.client.wait_job(job_id, states=frozenset({"running"}))

    broker.stop()
    wait_until(
        lambda: all(name in atlas.snapshots(v) for v in VOLUMES),
        JOB_TIMEOUT_S,
        "every snapshot made while the broker is down",
    )
    broker.start()

    client = fresh_client(broker, agent, evidence)
    try:
        # Published after the restart, maybe before the agent is back: the broker holds it
        # in the agent's persistent session.
        queued = {
            "id": f"queued-{uuid.uuid4().hex[:6]}",
            "action": "snapshot",
            "volumes": ["grafana01-data"],
            "name": f"queued-{uuid.uuid4().hex[:6]}",
        }
        client.publish(queued)
        job = client.wait_job(job_id, JOB_TIMEOUT_S)
        assert job["state"] == "succeeded", job
        assert sorted(job["result"]["snapshots"]) == VOLUMES
        assert client.wait_job(str(queued["id"]), JOB_TIMEOUT_S)["state"] == "succeeded"
        assert atlas.snapshots("grafana01-data").count(str(queued["name"])) == 1
        client.wait_for(
            lambda r: r.topic == f"{agent.prefix}/agent" and r.json().get("state") == "online"
        )
        runs = [
            r
            for r in client.all(f"{agent.prefix}/events")
            if r.json()["job"] == queued["id"] and r.json()["state"] == "running"
        ]
        assert len(runs) == 1
    finally:
        client.close()

    delays = [float(d) for d in re.findall(r"MQTT reconnecting in ([\d.]+) s", agent.log)]
    assert len(delays) >= 2, delays
    assert max(delays) > min(delays), f"no backoff: {delays}"
    assert max(delays) <= 30.0


def test_a_broker_that_lost_its_data_gets_every_retained_state_again(
    agent: FaultAgent, atlas: IncusProject, broker: Broker, evidence: Evidence
) -> None:
    job = agent.client.run(
        {
            "action": "snapshot",
            "volumes": ["prometheus01-data"],
            "name": f"before-{uuid.uuid4().hex[:8]}",
        }
    )
    assert job["state"] == "succeeded", job
    agent.client.wait_for(lambda r: r.topic == f"{agent.prefix}/volumes/prometheus01-data")

    broker.stop()
    for saved in broker.workdir.glob("*.db"):
        saved.unlink()  # retained messages and sessions: all gone
    broker.start()

    watcher = fresh_client(broker, agent, evidence)
    try:  # the agent is back once it says so
        watcher.wait_for(
            lambda r: r.topic == f"{agent.prefix}/agent" and r.json().get("state") == "online",
            timeout=JOB_TIMEOUT_S,
        )
        assert watcher.command({"action": "status"})["status"] == "accepted"
    finally:
        watcher.close()
    # What the broker now holds, as a subscriber arriving later sees it: everything.
    # (Live copies may come too, from the status above: only retained ones count.)
    client = fresh_client(broker, agent, evidence)
    try:
        retained = client.wait_for(retained_on(f"{agent.prefix}/jobs/{job['id']}"))
        assert retained.json() == job
        for volume in VOLUMES:
            client.wait_for(retained_on(f"{agent.prefix}/volumes/{volume}"))
        online = client.wait_for(retained_on(f"{agent.prefix}/agent"))
        assert online.json()["state"] == "online"
        # Its session went with the data: commands held for it may be lost, and it says so.
        assert online.json()["session_lost"] == 1
        assert online.json()["session_lost_at_ts"] > 0
    finally:
        client.close()
    assert "MQTT session lost" in agent.log
