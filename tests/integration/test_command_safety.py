"""What a careless or hostile client on the broker must not make the agent do: run a
retained command, reply on the agent's own topics, block a job with a bad Response Topic,
cancel the operator's jobs from the plain topic, or lose its session unnoticed."""

import uuid

from tests.support.client import Received, TestClient, response_properties, wipe_session
from tests.support.harness import AgentHarness
from tests.support.incus_env import IncusProject


def client_id(agent: AgentHarness) -> str:
    """The agent's client id, as tests/support/agent_proc.py writes it."""
    return f"agent-{agent.prefix.replace('/', '-')}"


def mentions(agent: AgentHarness, text: str, since: int = 0) -> list[str]:
    return [r.topic for r in agent.client.everything()[since:] if text.encode() in r.payload]


def test_a_retained_command_never_runs_whether_it_was_there_before_or_comes_while_running(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    before, during = f"ret-{uuid.uuid4().hex[:8]}", f"ret-{uuid.uuid4().hex[:8]}"
    assert agent.process.stop() == 0
    agent.client.publish(
        {"id": before, "action": "snapshot", "volumes": ["grafana01-data"], "name": before},
        retain=True,
    )
    wipe_session(agent.port, client_id(agent))  # so the agent starts a new session
    try:
        agent.start()
        mark = agent.client.mark()
        agent.client.publish(
            {"id": during, "action": "snapshot", "volumes": ["grafana01-data"], "name": during},
            retain=True,
        )
        assert agent.client.command({"action": "status"})["status"] == "accepted"  # barrier
        assert agent.client.command({"action": "status"})["status"] == "accepted"
    finally:
        agent.client.publish(b"", topic=f"{agent.prefix}/cmd", retain=True)  # clear it
    assert not [t for t in mentions(agent, before) if t != f"{agent.prefix}/cmd"]
    assert not [t for t in mentions(agent, during, mark) if t != f"{agent.prefix}/cmd"]
    snapshots = atlas.snapshots("grafana01-data")
    assert before not in snapshots
    assert during not in snapshots
    assert agent.process.log().count("ignored a command published with the retain flag") == 1


def test_a_response_topic_with_a_wildcard_is_refused_and_starts_no_job(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    name = f"wild-{uuid.uuid4().hex[:8]}"
    mark = agent.client.mark()
    agent.client.publish(
        {"id": name, "action": "snapshot", "volumes": ["grafana01-data"], "name": name},
        properties=response_properties(f"{agent.prefix}/response/+", b"c-1"),
    )
    answer = agent.client.wait_for(
        lambda r: r.topic == f"{agent.prefix}/response" and r.json().get("id") == name, since=mark
    )
    assert answer.json()["status"] == "rejected"
    assert "Response Topic" in answer.json()["error"]["message"]
    assert answer.properties.CorrelationData == b"c-1"
    assert agent.client.command({"action": "status"})["status"] == "accepted"  # barrier
    assert not agent.client.all(f"{agent.prefix}/jobs/{name}")
    # Nothing waits in the store to run at the next restart either.
    cancel = agent.client.run({"action": "cancel", "job": name})
    assert (cancel["state"], cancel["error"]["code"]) == ("failed", "not_found"), cancel


def test_replies_go_only_to_the_response_topics_never_to_the_agents_state_or_discovery(
    agent: AgentHarness,
) -> None:
    p = agent.prefix
    watcher = TestClient(agent.port, p, extra_topics=("homeassistant/#",))
    try:
        hostile = [
            f"{p}/agent",
            f"{p}/jobs/x",
            f"{p}/volumes/grafana01-data",
            f"{p}/events",
            p,
            f"{p}/cmd",
            f"{p}/responses",
            "homeassistant/sensor/atlas_backup/x/config",
            "homeassistant",
            "a/+/b",
            "a/#",
        ]
        for index, topic in enumerate(hostile):
            request = f"hostile-{index}"
            response = agent.client.command({"id": request, "action": "list", "reply_to": topic})
            assert response["status"] == "rejected", (topic, response)
            assert response["error"]["code"] == "invalid_command"
            assert "`$.reply_to`" in response["error"]["message"], response

            rid = f"{request}-5"
            mark = agent.client.mark()
            agent.client.publish(
                {"id": rid, "action": "list"}, properties=response_properties(topic, b"x")
            )

            def answers(r: Received, rid: str = rid) -> bool:
                return r.topic == f"{p}/response" and r.json().get("id") == rid

            refused = agent.client.wait_for(answers, since=mark).json()
            assert refused["status"] == "rejected"
            assert "Response Topic" in refused["error"]["message"], refused
        assert agent.client.command({"action": "status"})["status"] == "accepted"  # barrier
        foreign = [
            r.topic
            for r in watcher.everything()  # responses anywhere else
            if b"hostile-" in r.payload and b'"status"' in r.payload and r.topic != f"{p}/response"
        ]
        assert foreign == []

        fine = f"{p}/response/mine"
        mark = agent.client.mark()
        agent.client.publish({"id": "fine-1", "action": "list", "reply_to": fine})
        assert (
            agent.client.wait_for(lambda r: r.topic == fine, since=mark).json()["status"]
            == "accepted"
        )
    finally:
        watcher.close()


def test_a_job_from_the_admin_topic_is_cancelled_only_from_the_admin_topic(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    snapshot = f"adm-{uuid.uuid4().hex[:8]}"
    atlas.run(
        "storage", "volume", "snapshot", "create", atlas.pool, "alertmanager01-data", snapshot
    )
    # A long job holds every volume, so the restore waits in the queue.
    first = agent.client.command(
        {
            "action": "snapshot",
            "volumes": "all",
            "quiesce": True,
            "name": f"hold-{uuid.uuid4().hex[:8]}",
        }
    )
    restore = agent.client.command(
        {
            "action": "restore",
            "volume": "alertmanager01-data",
            "snapshot": snapshot,
            "confirm": "alertmanager01-data",
            "dry_run": True,
        }
    )  # on <p>/cmd/admin
    assert restore["status"] == "accepted", restore

    mark = agent.client.mark()
    agent.client.publish(
        {"id": "plain-cancel", "action": "cancel", "job": restore["job"]},
        topic=f"{agent.prefix}/cmd",
    )
    refused = agent.client.wait_for(
        lambda r: r.topic == f"{agent.prefix}/response" and r.json().get("id") == "plain-cancel",
        since=mark,
    ).json()
    assert refused["status"] == "rejected"
    assert refused["error"]["code"] == "not_allowed"
    assert "- at `$.job`" in refused["error"]["message"]

    mark = agent.client.mark()
    agent.client.publish(
        {"id": "admin-cancel", "action": "cancel", "job": restore["job"]},
        topic=f"{agent.prefix}/cmd/admin",
    )
    taken = agent.client.wait_for(
        lambda r: r.topic == f"{agent.prefix}/response" and r.json().get("id") == "admin-cancel",
        since=mark,
    ).json()
    assert taken["status"] == "accepted", taken
    cancel = agent.client.wait_job("admin-cancel")
    assert (cancel["state"], cancel["result"]["was"]) == ("succeeded", "queued"), cancel
    assert agent.client.wait_job(restore["job"])["state"] == "cancelled"
    assert agent.client.wait_job(first["job"], timeout=120)["state"] == "succeeded"


def test_a_repeated_id_answers_with_the_existing_job_and_its_plan(agent: AgentHarness) -> None:
    first = agent.client.command(
        {
            "id": "rep-1",
            "action": "snapshot",
            "dry_run": True,
            "volumes": ["grafana01-data"],
            "name": "rep-a",
        }
    )
    assert first["status"] == "accepted", first
    assert first["plan"], first
    again = agent.client.command(
        {
            "id": "rep-1",
            "action": "snapshot",
            "dry_run": True,
            "volumes": ["loki01-data"],
            "name": "rep-b",
        }
    )
    assert again == first
    other = agent.client.command({"id": "rep-1", "action": "status"})
    assert (other["job"], other["action"], other["plan"]) == ("rep-1", "snapshot", first["plan"])


def test_the_agent_reports_a_session_the_broker_no_longer_had(agent: AgentHarness) -> None:
    topic = f"{agent.prefix}/agent"
    assert agent.client.latest(topic)["session_lost"] == 0
    assert agent.process.stop() == 0
    agent.start()  # the broker kept the session: nothing to report
    assert agent.client.latest(topic)["session_lost"] == 0

    assert agent.process.stop() == 0
    wipe_session(agent.port, client_id(agent))
    agent.start()
    state = agent.client.wait_for(
        lambda r: r.topic == topic and r.json().get("session_lost") == 1
    ).json()
    assert state["session_lost_at_ts"] > 0
    assert state["session_lost_at"]
    assert "MQTT session lost" in agent.process.log()
