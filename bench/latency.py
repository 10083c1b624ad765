"""Publish -> `accepted` latency of the agent, measured from a real MQTT client.

Starts its own Mosquitto (with set_tcp_nodelay) and the agent as a process against a
throwaway Incus project, publishes N cheap commands one after another (`status` and a
dry-run `snapshot`, alternating) and prints p50/p90/p99/max of publish -> response.

    .venv/bin/python -m bench.latency [--count 500]
"""

import argparse
import statistics
import tempfile
import uuid
from functools import partial
from pathlib import Path

from schemas.config import ServiceConfig
from tests.support.agent_proc import AgentProcess
from tests.support.broker import running_broker
from tests.support.client import Received, TestClient
from tests.support.harness import agent_config, write_config
from tests.support.incus_env import incus_project

SERVICES = [ServiceConfig(name="grafana", instance="grafana01", volume="grafana01-data")]


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))
    return ordered[index]


def _answers(request_id: bytes, received: Received) -> bool:
    return received.topic.endswith("/response") and request_id in received.payload


def measure(client: TestClient, count: int) -> list[float]:
    latencies: list[float] = []
    for i in range(count):
        request_id = f"lat-{i}"
        command = (
            {"id": request_id, "action": "status"}
            if i % 2
            else {
                "id": request_id,
                "action": "snapshot",
                "volumes": ["grafana01-data"],
                "dry_run": True,
            }
        )
        mark = client.mark()
        sent = client.publish(command)
        answer = client.wait_for(partial(_answers, request_id.encode()), timeout=10, since=mark)
        assert answer.json()["status"] == "accepted", answer.json()
        latencies.append((answer.at - sent) * 1000)
    return latencies


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
                ),
            )
            client = TestClient(broker.port, prefix)
            agent = AgentProcess(config, work / "agent.log")
            agent.start()
            try:
                client.wait_for(
                    lambda r: r.topic == f"{prefix}/agent" and r.json().get("state") == "online",
                    timeout=30,
                )
                measure(client, 20)  # warm-up
                latencies = measure(client, args.count)
            finally:
                agent.stop()
                client.close()
    print(f"publish -> accepted, {len(latencies)} commands (QoS 1, sequential):")
    print(
        f"  p50 {percentile(latencies, 50):.2f} ms   p90 {percentile(latencies, 90):.2f} ms"
        f"   p99 {percentile(latencies, 99):.2f} ms   max {max(latencies):.2f} ms"
        f"   mean {statistics.fmean(latencies):.2f} ms"
    )


if __name__ == "__main__":
    main()
