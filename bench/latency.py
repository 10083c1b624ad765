"""Publish -> `accepted` latency of the agent against the floor, from one real MQTT client,
and where the agent's time goes, hop by hop.

Starts its own Mosquitto (with set_tcp_nodelay), the agent as a process against a
throwaway Incus project (with ATLAS_TRACE_HOPS set, see agent/runtime/hops.py), and the
floor: bench.echo, a plain client that fdatasyncs each request and answers through the same
broker. Publishes N cheap commands one after another (`status` and a dry-run `snapshot`,
alternating), each followed by a request to the floor, so both see the same machine, and
prints p50/p90/p99/max of publish -> response for both, then the agent's hops.

    .venv/bin/python -m bench.latency [--count 500]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import uuid
from functools import partial
from pathlib import Path
from typing import Any

from agent.runtime.hops import HOPS, TRACE_ENV
from schemas.config import ServiceConfig
from tests.support.agent_proc import AgentProcess
from tests.support.broker import running_broker
from tests.support.client import Received, TestClient
from tests.support.harness import agent_config, write_config
from tests.support.incus_env import incus_project

SERVICES = [ServiceConfig(name="grafana", instance="grafana01", volume="grafana01-data")]
# (id, sent, answered) on the client's monotonic clock, which the agent's hops share.
Trip = tuple[str, float, float]


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))
    return ordered[index]


def _answers(request_id: bytes, received: Received) -> bool:
    return received.topic.endswith("/response") and request_id in received.payload


def round_trip(client: TestClient, command: dict[str, Any], topic: str | None = None) -> Trip:
    request_id = str(command["id"])
    mark = client.mark()
    sent = client.publish(command, topic=topic)
    answer = client.wait_for(partial(_answers, request_id.encode()), timeout=10, since=mark)
    assert answer.json()["status"] == "accepted", answer.json()
    return request_id, sent, answer.at


def measure(client: TestClient, count: int, tag: str) -> tuple[list[Trip], list[Trip]]:
    """The agent's round trips and the floor's, taken in turn."""
    agent: list[Trip] = []
    floor: list[Trip] = []
    for i in range(count):
        request_id = f"{tag}-{i}"
        command: dict[str, Any] = (
            {"id": request_id, "action": "status"}
            if i % 2
            else {
                "id": request_id,
                "action": "snapshot",
                "volumes": ["grafana01-data"],
                "dry_run": True,
            }
        )
        agent.append(round_trip(client, command))
        echo = {"id": f"echo-{request_id}"}
        floor.append(round_trip(client, echo, topic=f"{client.prefix}/echo/cmd"))
    return agent, floor


def line(name: str, ms: list[float]) -> str:
    return (
        f"  {name:<34} p50 {percentile(ms, 50):6.2f}   p90 {percentile(ms, 90):6.2f}"
        f"   p99 {percentile(ms, 99):6.2f}   max {max(ms):6.2f}   mean {statistics.fmean(ms):6.2f}"
    )


def hop_lines(trips: list[Trip], trace: Path) -> list[str]:
    """The agent's round trips cut at each hop the agent traced (milliseconds)."""
    stamps = {}
    for row in trace.read_text().splitlines():
        request_id, *times = row.split()
        stamps[request_id] = [float(t) for t in times]
    joined = [(sent, stamps[rid], got) for rid, sent, got in trips if rid in stamps]
    legs: list[tuple[str, list[float]]] = [
        ("client -> broker -> agent (received)", [h[0] - s for s, h, _ in joined])
    ]
    for i in range(1, len(HOPS)):
        legs.append((f"{HOPS[i - 1]} -> {HOPS[i]}", [h[i] - h[i - 1] for _, h, _ in joined]))
    legs.append(("acked -> answered -> broker -> client", [g - h[-1] for _, h, g in joined]))
    return [line(name, [t * 1000 for t in times]) for name, times in legs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, incus_project("atlas-bench") as project:
        work = Path(tmp)
        project.make_service("grafana01", "grafana01-data")
        with running_broker(work / "broker") as broker:
            prefix = f"atlas-bench/{uuid.uuid4().hex[:6]}"
            config = work / "config.toml"
            write_config(
                config,
                agent_config(
                    port=broker.port,
                    prefix=prefix,
                    project=project.name,
                    workdir=work,
                    services=SERVICES,
                    # As shipped: the test harness's debug logs cost 20% of the CPU here.
                    agent={"log_level": "info"},
                ),
            )
            trace = work / "hops.txt"
            client = TestClient(broker.port, prefix)
            agent = AgentProcess(config, work / "agent.log")
            agent.start(env={TRACE_ENV: str(trace)})
            floor_args = ["--port", str(broker.port), "--prefix", prefix]
            floor_args += ["--record", str(work / "echo.log")]
            echo = subprocess.Popen([sys.executable, "-m", "bench.echo", *floor_args])
            try:
                client.wait_for(
                    lambda r: r.topic == f"{prefix}/agent" and r.json().get("state") == "online",
                    timeout=30,
                )
                client.wait_for(lambda r: r.topic == f"{prefix}/echo/ready", timeout=30)
                measure(client, 20, "warm")
                trips, floor_trips = measure(client, args.count, "lat")
            finally:
                echo.terminate()
                echo.wait()
                agent.stop()
                client.close()
            hops = hop_lines(trips, trace)
    agent_ms = [(got - sent) * 1000 for _, sent, got in trips]
    floor_ms = [(got - sent) * 1000 for _, sent, got in floor_trips]
    print(f"publish -> accepted, {len(trips)} commands each, in turn (QoS 1, sequential; ms):")
    print(line("agent", agent_ms))
    print(line("floor (fdatasync, then answer)", floor_ms))
    p50 = percentile(agent_ms, 50) / percentile(floor_ms, 50)
    p99 = percentile(agent_ms, 99) / percentile(floor_ms, 99)
    print(f"  agent / floor: p50 {p50:.2f}x   p99 {p99:.2f}x")
    print("the agent's round trip, hop by hop (ms):")
    print("\n".join(hops))


if __name__ == "__main__":
    main()
