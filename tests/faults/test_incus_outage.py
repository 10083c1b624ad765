"""Incus down or hung, for one agent: every call gives up within `incus.timeout_s`, the job
fails saying so, and what the agent could not undo then is undone once Incus answers.

The agent talks to Incus through a proxy socket of the test's (tests/support/incus_proxy),
so the daemon itself keeps serving the other tests on this machine.
"""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fault_suite import AgentFactory
from tests.support.incus_env import IncusProject
from tests.support.incus_proxy import IncusProxy, incus_proxy

RETRY_S = 2
TIMEOUT_S = 3


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[IncusProxy]:
    with incus_proxy(tmp_path / "incus.sock") as running:
        yield running


def test_recovery_with_incus_down_at_start_is_retried_until_the_instance_runs(
    make_agent: AgentFactory, atlas: IncusProject, proxy: IncusProxy
) -> None:
    agent = make_agent(
        start=False,
        incus={"socket": str(proxy.path)},
        agent={"recovery_retry_s": RETRY_S},
    )
    job_id = agent.crash_at(
        "instance_stopped", {"action": "snapshot", "volumes": ["loki01-data"], "quiesce": True}
    )
    assert atlas.state("loki01") == "Stopped"

    proxy.set_mode("down")
    agent.start()  # online and serving, though nothing could be undone yet
    job = agent.job(job_id)
    assert job["state"] == "interrupted", job
    assert "could not undo instance_stopped loki01" in job["result"]["undo_pending"][0]
    assert "retried" in job["error"]["message"]
    assert atlas.state("loki01") == "Stopped"

    mark = agent.client.mark()
    proxy.set_mode("forward")
    undone = agent.client.wait_for(
        lambda r: (
            r.topic == f"{agent.prefix}/jobs/{job_id}" and "undo_pending" not in r.json()["result"]
        ),
        timeout=RETRY_S * 10,
        since=mark,
    ).json()
    assert undone["state"] == "interrupted"
    assert undone["result"]["undone"] == ["started instance loki01"]
    assert atlas.state("loki01") == "Running"


def test_a_hung_incus_call_times_out_and_the_instance_starts_once_incus_answers(
    make_agent: AgentFactory, atlas: IncusProject, proxy: IncusProxy
) -> None:
    agent = make_agent(
        incus={"socket": str(proxy.path), "timeout_s": TIMEOUT_S},
        agent={"recovery_retry_s": RETRY_S},
    )
    atlas.write("mosquitto01", "/data/state", "before the hang")
    proxy.hang_on(rb"POST /1\.0/storage-pools/local/volumes/custom/mosquitto01-data/snapshots")
    started = time.monotonic()
    job = agent.client.run(
        {
            "action": "snapshot",
            "volumes": ["mosquitto01-data"],
            "quiesce": True,
            "name": "never-made",
        }
    )
    assert time.monotonic() - started < 8 * TIMEOUT_S  # each call bounded, none waits forever
    assert proxy.swallowed, "the snapshot request never reached the proxy"
    assert job["state"] == "failed", job
    assert job["error"]["code"] == "incus_error"
    # The cause, not the start that could not follow it.
    assert (
        "cannot create snapshot 'never-made' of volume 'mosquitto01-data': Incus did not"
        f" answer within {TIMEOUT_S} s"
    ) in job["error"]["message"], job["error"]
    assert atlas.state("mosquitto01") == "Stopped"  # Incus hung before it could start it

    mark = agent.client.mark()
    proxy.set_mode("forward")
    undone = agent.client.wait_for(
        lambda r: (
            r.topic == f"{agent.prefix}/jobs/{job['id']}" and bool(r.json()["result"].get("undone"))
        ),
        timeout=RETRY_S * 10,
        since=mark,
    ).json()
    assert undone["result"]["undone"] == ["started instance mosquitto01"]
    assert undone["state"] == "failed"
    assert atlas.state("mosquitto01") == "Running"
    assert atlas.read("mosquitto01", "/data/state") == "before the hang"
    assert "never-made" not in atlas.snapshots("mosquitto01-data")
