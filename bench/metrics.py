"""`/metrics` scrape time with many volumes: the agent's Prometheus endpoint under a
configuration of N generated services (100 by default).

Starts its own Mosquitto, a throwaway Incus project with N custom volumes (no
instances: a snapshot needs none), and the agent with metrics on a free loopback port;
snapshots every volume once so that each has its last-status and last-success series,
waits for the summary of a full status round, then scrapes `/metrics` sequentially,
one connection per scrape as Prometheus's would be with this HTTP/1.0 server, and
reports the scrape time's median, p99 and max, the agent's CPU time per scrape (from
/proc/<pid>/stat: what the machine's load does not change), the body size and the
series count.

    .venv/bin/python -m bench.metrics [--volumes 100] [--scrapes 500]
"""

import argparse
import os
import statistics
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from bench.scheduler_idle import cpu_seconds
from schemas.config import ServiceConfig
from tests.support.agent_proc import AgentProcess
from tests.support.broker import free_port, running_broker
from tests.support.client import TestClient
from tests.support.harness import agent_config, write_config
from tests.support.incus_env import incus_project

JOB_TIMEOUT_S = 900.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def scrape(url: str) -> tuple[float, bytes]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as answer:
        body = answer.read()
    return time.perf_counter() - start, body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--volumes", type=int, default=100)
    parser.add_argument("--scrapes", type=int, default=500)
    args = parser.parse_args()
    volumes = [f"bench{i:03d}-data" for i in range(args.volumes)]
    services = [
        ServiceConfig(name=f"bench{i:03d}", instance=f"bench{i:03d}", volume=v)
        for i, v in enumerate(volumes)
    ]
    with tempfile.TemporaryDirectory() as tmp, incus_project("atlas-bench") as project:
        work = Path(tmp)
        for volume in volumes:
            project.run("storage", "volume", "create", project.pool, volume)
        with running_broker(work / "broker") as broker:
            prefix = f"atlas-bench/metrics-{uuid.uuid4().hex[:6]}"
            listen = f"127.0.0.1:{free_port()}"
            config = work / "config.toml"
            write_config(
                config,
                agent_config(
                    port=broker.port,
                    prefix=prefix,
                    project=project.name,
                    workdir=work,
                    agent={"log_level": "info"},
                    services=services,
                    metrics={"listen": listen},
                ),
            )
            client = TestClient(broker.port, prefix)
            agent = AgentProcess(config, work / "agent.log")
            agent.start()
            try:
                client.wait_for(
                    lambda r: r.topic == f"{prefix}/agent" and r.json().get("state") == "online",
                    timeout=60,
                )
                job = client.run({"action": "snapshot", "volumes": "all"}, timeout=JOB_TIMEOUT_S)
                assert job["state"] == "succeeded", job
                mark = client.mark()
                client.run({"action": "status"})
                client.wait_for(lambda r: r.topic == f"{prefix}/summary", since=mark, timeout=60)
                url = f"http://{listen}/metrics"
                for _ in range(10):  # warm-up
                    scrape(url)
                times, body = [], b""
                cpu_before = cpu_seconds(agent.pid)
                for _ in range(args.scrapes):
                    took, body = scrape(url)
                    times.append(took * 1000)
                cpu_ms = (cpu_seconds(agent.pid) - cpu_before) * 1000 / args.scrapes
                load = os.getloadavg()[0]
            finally:
                agent.stop()
                client.close()
    series = [line for line in body.decode().splitlines() if line and not line.startswith("#")]
    print(f"/metrics with {args.volumes} volumes, {args.scrapes} sequential scrapes")
    print(f"body {len(body) / 1024:.1f} KiB, {len(series)} series")
    print(
        f"scrape ms: median {statistics.median(times):.2f}, p99 {percentile(times, 0.99):.2f},"
        f" max {max(times):.2f}"
    )
    print(f"agent CPU per scrape: {cpu_ms:.1f} ms (load average during the run: {load:.1f})")


if __name__ == "__main__":
    main()
