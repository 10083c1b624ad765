"""The agent end to end: MQTT commands in, real Incus snapshots and restores, state out."""

import json

import pytest

from tests.support.client import TestClient, response_properties
from tests.support.harness import AgentHarness
from tests.support.incus_env import IncusProject


def test_snapshot_is_accepted_succeeds_and_shows_in_incus(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    response = agent.client.command(
        {"action": "snapshot", "volumes": ["grafana01-data"], "name": "it-snap-1"}
    )
    assert response["status"] == "accepted"
    assert response["action"] == "snapshot"
    assert response["job"] == response["id"]
    job = agent.client.wait_job(response["job"])
    assert job["state"] == "succeeded", job
    assert job["result"]["snapshots"] == {"grafana01-data": "it-snap-1"}
    assert job["progress_pct"] == 100.0
    assert job["finished_ts"] >= job["started_ts"] >= job["created_ts"] > 0
    assert "it-snap-1" in atlas.snapshots("grafana01-data")
    volume = agent.client.wait_for(
        lambda r: r.topic == f"{agent.prefix}/volumes/grafana01-data" and r.json()["snapshots"] >= 1
    ).json()
    assert volume["last_snapshot_ts"] > 0
    assert volume["service"] == "grafana"


def test_snapshot_default_name_and_quiesce_restart_the_instance(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    job = agent.client.run({"action": "snapshot", "volumes": ["loki01-data"], "quiesce": True})
    assert job["state"] == "succeeded", job
    name = job["result"]["snapshots"]["loki01-data"]
    assert name.startswith("backup-")
    assert len(name) == len("backup-20261128-020000")
    assert name in atlas.snapshots("loki01-data")
    assert atlas.state("loki01") == "Running"


def test_restore_brings_the_content_back_and_the_instance_runs(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    atlas.write("alertmanager01", "/data/state", "before")
    job = agent.client.run(
        {"action": "snapshot", "volumes": ["alertmanager01-data"], "name": "good"}
    )
    assert job["state"] == "succeeded", job
    atlas.write("alertmanager01", "/data/state", "damaged")
    job = agent.client.run(
        {
            "action": "restore",
            "volume": "alertmanager01-data",
            "snapshot": "good",
            "confirm": "alertmanager01-data",
        }
    )
    assert job["state"] == "succeeded", job
    assert atlas.state("alertmanager01") == "Running"
    assert atlas.read("alertmanager01", "/data/state") == "before"
    safety = job["result"]["safety_snapshot"]
    assert safety.startswith("pre-restore-")
    assert safety in atlas.snapshots("alertmanager01-data")
    assert job["result"]["instances_restarted"] == ["alertmanager01"]


def test_restore_of_a_missing_snapshot_is_rejected_and_changes_nothing(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    atlas.write("mosquitto01", "/data/state", "keep me")
    snapshots = atlas.snapshots("mosquitto01-data")
    response = agent.client.command(
        {
            "action": "restore",
            "volume": "mosquitto01-data",
            "snapshot": "never-made",
            "confirm": "mosquitto01-data",
        }
    )
    assert response["status"] == "rejected"
    assert response["error"]["code"] == "invalid_command"
    assert "never-made" in response["error"]["message"]
    assert response["error"]["message"].endswith("- at `$.snapshot`")
    assert atlas.state("mosquitto01") == "Running"
    assert atlas.read("mosquitto01", "/data/state") == "keep me"
    assert atlas.snapshots("mosquitto01-data") == snapshots


BAD_COMMANDS = [
    (b"this is not json", "invalid_command", "`$`"),
    (b"[1, 2, 3]", "invalid_command", "Expected `object`, got `array`"),
    (b'{"action": "frobnicate"}', "invalid_command", "`$.action`"),
    (b'{"volumes": "all"}', "invalid_command", "`$.action`"),
    (b'{"action": "snapshot", "volumes": [5]}', "invalid_command", "`$.volumes[0]`"),
    (b'{"action": "snapshot", "volumes": ["nope-data"]}', "invalid_command", "`$.volumes[0]`"),
    (b'{"action": "snapshot", "volumes": ["../x"]}', "invalid_command", "`$.volumes[0]`"),
    (b'{"action": "snapshot", "volumes": "all", "when": 1}', "invalid_command", "`when`"),
    (
        b'{"action": "restore", "volume": "grafana01-data", "snapshot": "s"}',
        "invalid_command",
        "`$.confirm`",
    ),
    (
        b'{"action": "restore", "volume": "grafana01-data", "snapshot": "s", "confirm": "all"}',
        "invalid_command",
        "`$.confirm`",
    ),
    (
        b'{"action": "status", "pad": "' + b"x" * (1024 * 1024) + b'"}',
        "invalid_command",
        "limit is 65536",
    ),
]


@pytest.mark.parametrize(
    ("payload", "code", "names"), BAD_COMMANDS, ids=[f"bad{i}" for i in range(len(BAD_COMMANDS))]
)
def test_bad_input_is_rejected_naming_the_field_and_the_agent_keeps_serving(
    agent: AgentHarness, payload: bytes, code: str, names: str
) -> None:
    response = agent.client.command(payload)
    assert response["status"] == "rejected"
    assert response["error"]["code"] == code
    assert names in response["error"]["message"]
    assert "job" not in response
    follow_up = agent.client.command({"action": "status"})
    assert follow_up["status"] == "accepted"
    assert agent.process.process is not None
    assert agent.process.process.poll() is None


def test_a_rejection_echoes_a_valid_id(agent: AgentHarness) -> None:
    response = agent.client.command(
        b'{"id": "bad-1", "action": "snapshot", "volumes": [5]}', request_id="bad-1"
    )
    assert response == {
        "id": "bad-1",
        "status": "rejected",
        "error": {
            "code": "invalid_command",
            "message": "Expected `str`, got `int` - at `$.volumes[0]`",
        },
    }


def test_the_same_id_twice_starts_one_job(agent: AgentHarness, atlas: IncusProject) -> None:
    command = {
        "id": "dup-1",
        "action": "snapshot",
        "volumes": ["grafana01-data"],
        "name": "dup-snap",
    }
    first = agent.client.command(command)
    second = agent.client.command(command)
    assert first["job"] == second["job"] == "dup-1"
    assert agent.client.wait_job("dup-1")["state"] == "succeeded"
    events = [
        r.json() for r in agent.client.all(f"{agent.prefix}/events") if r.json()["job"] == "dup-1"
    ]
    assert [e["state"] for e in events].count("running") == 1
    assert atlas.snapshots("grafana01-data").count("dup-snap") == 1


def test_a_command_published_while_the_agent_is_stopped_runs_once_after_it_starts(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    assert agent.process.stop() == 0
    offline = agent.client.latest(f"{agent.prefix}/agent")
    assert offline == {"state": "offline"}
    agent.client.publish(
        {
            "id": "while-down",
            "action": "snapshot",
            "volumes": ["prometheus01-data"],
            "name": "while-down",
        }
    )
    agent.start()
    job = agent.client.wait_job("while-down")
    assert job["state"] == "succeeded", job
    assert atlas.snapshots("prometheus01-data").count("while-down") == 1
    running = [
        r
        for r in agent.client.all(f"{agent.prefix}/jobs/while-down")
        if r.payload and r.json()["state"] == "running"
    ]
    assert len(running) == 1


def test_after_kill_9_the_retained_agent_state_reads_offline(agent: AgentHarness) -> None:
    mark = agent.client.mark()
    agent.process.kill()
    will = agent.client.wait_for(
        lambda r: r.topic == f"{agent.prefix}/agent" and r.json()["state"] == "offline",
        timeout=90,
        since=mark,
    )
    assert will.json() == {"state": "offline"}
    fresh = TestClient(agent.port, agent.prefix)
    try:
        retained = fresh.wait_for(lambda r: r.topic == f"{agent.prefix}/agent", timeout=5)
        assert retained.retain
        assert retained.json() == {"state": "offline"}
    finally:
        fresh.close()


def test_dry_run_answers_the_plan_and_changes_nothing(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    before = atlas.snapshots("step-ca01-data")
    response = agent.client.command(
        {"action": "snapshot", "volumes": ["step-ca01-data"], "name": "dry", "dry_run": True}
    )
    assert response["status"] == "accepted"
    assert response["plan"] == [
        {"op": "create_snapshot", "target": "step-ca01-data", "name": "dry"}
    ]
    job = agent.client.wait_job(response["job"])
    assert job["state"] == "succeeded"
    assert job["dry_run"] is True
    assert job["result"] == {"dry_run": True, "plan": response["plan"]}
    assert atlas.snapshots("step-ca01-data") == before


def test_list_reports_volumes_instances_and_snapshots(agent: AgentHarness) -> None:
    agent.client.run({"action": "snapshot", "volumes": ["grafana01-data"], "name": "listed"})
    job = agent.client.run({"action": "list", "volumes": ["grafana01-data", "loki01-data"]})
    assert job["state"] == "succeeded", job
    volumes = {v["volume"]: v for v in job["result"]["volumes"]}
    assert set(volumes) == {"grafana01-data", "loki01-data"}
    grafana = volumes["grafana01-data"]
    assert grafana["used_by"] == ["grafana01"]
    assert grafana["exists"] is True
    assert "listed" in [s["name"] for s in grafana["snapshots"]]


def test_mqtt5_response_topic_and_correlation_data_are_honoured(agent: AgentHarness) -> None:
    reply = f"{agent.prefix}/response/me"
    mark = agent.client.mark()
    agent.client.publish(
        {"id": "corr-1", "action": "status"},
        properties=response_properties(reply, b"\x01corr"),
    )
    answer = agent.client.wait_for(lambda r: r.topic == reply, since=mark)
    assert answer.json()["id"] == "corr-1"
    assert answer.properties.CorrelationData == b"\x01corr"
    assert not agent.client.all(f"{agent.prefix}/response", since=mark)


def test_reply_to_directs_the_response(agent: AgentHarness) -> None:
    reply = f"{agent.prefix}/response/legacy"
    mark = agent.client.mark()
    agent.client.publish({"id": "rt-1", "action": "status", "reply_to": reply})
    answer = agent.client.wait_for(lambda r: r.topic == reply, since=mark)
    assert json.loads(answer.payload)["status"] == "accepted"


def test_cancel_removes_a_queued_job_at_once(agent: AgentHarness, atlas: IncusProject) -> None:
    # Two snapshots of one volume: the second waits for the first's volume lock.
    first = agent.client.command(
        {"action": "snapshot", "volumes": "all", "quiesce": True, "name": "c-first"}
    )
    second = agent.client.command(
        {"action": "snapshot", "volumes": ["grafana01-data"], "name": "c-second"}
    )
    cancel = agent.client.run({"action": "cancel", "job": second["job"]})
    assert cancel["state"] == "succeeded"
    assert cancel["result"]["was"] == "queued"
    assert agent.client.wait_job(second["job"])["state"] == "cancelled"
    assert agent.client.wait_job(first["job"], timeout=120)["state"] == "succeeded"
    assert "c-second" not in atlas.snapshots("grafana01-data")
    assert all(atlas.state(f"{s}01") == "Running" for s in ("loki", "mosquitto"))


def test_agent_state_is_retained_online_with_incus_version(agent: AgentHarness) -> None:
    state = agent.client.latest(f"{agent.prefix}/agent")
    assert state["state"] == "online"
    assert state["incus"]["server"] == "incus"
    assert state["incus"]["version"].startswith("6.")
    assert isinstance(state["queue"], int)
    assert state["started_ts"] > 0


def test_cancel_stops_a_running_job_at_its_next_safe_point(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    started = agent.client.command(
        {"action": "snapshot", "volumes": "all", "quiesce": True, "name": "c-running"}
    )
    agent.client.wait_job(started["job"], states=frozenset({"running"}))
    cancel = agent.client.run({"action": "cancel", "job": started["job"]})
    assert cancel["result"]["was"] == "running"
    job = agent.client.wait_job(started["job"], timeout=120)
    assert job["state"] == "cancelled", job
    done = job["result"]["succeeded"]
    assert len(done) < 6
    for volume in done:
        assert "c-running" in atlas.snapshots(volume)
    assert all(atlas.state(f"{s}01") == "Running" for s in ("grafana", "loki", "mosquitto"))


def test_snapshot_progress_counts_volumes_not_bytes(agent: AgentHarness) -> None:
    job = agent.client.run({"action": "snapshot", "volumes": ["grafana01-data"]})
    assert job["state"] == "succeeded"
    assert (job["bytes_done"], job["bytes_total"], job["progress_pct"]) == (0, 0, 100.0)
