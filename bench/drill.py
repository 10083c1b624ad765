"""Recovery time of a single service: the agent's `drill` of a 1 GiB volume, from a
snapshot and from an encrypted tarball, beside the runbook's RTO for a single service.

`python -m bench.drill [--gib 1] [--rounds 3] [--workdir DIR]`

In an Incus project and a broker of its own: one busybox service whose volume holds
`--gib` GiB of /dev/urandom and a marker file, its health check reading the marker (the
check runs inside the restored instance, as Grafana's `/api/health` would). One snapshot
and one export (zstd, encrypted with a passphrase) are made first; then each round runs
a drill of each scenario, command to final state over MQTT. The table gives the median
and fastest `rto_s` (the drill's own figure: finding the backup to the health check
passing), the median of each phase, and the wall time with the teardown.
"""

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from schemas.config import SINGLE_SERVICE_RTO_S, HealthCheck, ServiceConfig
from tests.support.broker import running_broker
from tests.support.harness import AgentHarness, running_agent
from tests.support.incus_env import IncusProject, incus_project

INSTANCE, VOLUME = "bench01", "bench01-data"
CHECK = HealthCheck(command=["grep", "-qx", "bench ok", "/data/marker"], timeout_s=60)
SERVICES = [ServiceConfig(name="bench", instance=INSTANCE, volume=VOLUME, health=CHECK)]
JOB_TIMEOUT_S = 3600.0


def fill_volume(project: IncusProject, gib: int) -> None:
    project.run("exec", INSTANCE, "--", "sh", "-c",
                f"dd if=/dev/urandom of=/data/blob bs=1M count={gib * 1024} 2>/dev/null"
                " && printf 'bench ok\\n' > /data/marker && sync")  # fmt: skip


@contextmanager
def bench_stack(workdir: Path) -> Iterator[tuple[IncusProject, AgentHarness]]:
    with (
        running_broker(workdir / "broker") as broker,
        incus_project("atlas-bench-drill") as project,
    ):
        project.make_service(INSTANCE, VOLUME)
        (workdir / "agent").mkdir(mode=0o700)
        with running_agent(
            broker.port,
            project.name,
            workdir / "agent",
            passphrase="bench passphrase",
            services=SERVICES,
        ) as agent:
            yield project, agent


def run(agent: AgentHarness, **fields: Any) -> tuple[dict[str, Any], float]:
    began = time.monotonic()
    job = agent.client.run(fields, timeout=JOB_TIMEOUT_S)
    wall = time.monotonic() - began
    assert job["state"] == "succeeded", job
    return job, wall


def main(gib: int, rounds: int, workdir: Path) -> None:
    with bench_stack(workdir) as (project, agent):
        fill_volume(project, gib)
        run(agent, action="snapshot", volumes=[VOLUME], name="backup-bench")
        run(agent, action="export", volumes=[VOLUME], encrypt=True)
        results: dict[str, list[tuple[dict[str, Any], float]]] = {"snapshot": [], "tarball": []}
        for _ in range(rounds):
            for scenario, runs in results.items():
                job, wall = run(agent, action="drill", service="bench", scenario=scenario)
                runs.append((job["result"], wall))
        print(f"{gib} GiB of /dev/urandom, {rounds} rounds; runbook target"
              f" {SINGLE_SERVICE_RTO_S:g} s (single service, 15 min)")  # fmt: skip
        for scenario, runs in results.items():
            rtos = [r["rto_s"] for r, _ in runs]
            walls = [w for _, w in runs]
            phases = {
                p["name"]: statistics.median(
                    q["seconds"] for r, _ in runs for q in r["phases"] if q["name"] == p["name"]
                )
                for p in runs[0][0]["phases"]
            }
            shown = ", ".join(f"{name} {s:.2f}" for name, s in phases.items())
            print(
                f"{scenario:8s} rto_s median {statistics.median(rtos):6.2f} min {min(rtos):6.2f}"
                f" | wall with teardown {statistics.median(walls):6.2f}"
                f" | phases (median s): {shown}",
                flush=True,
            )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder in /var/tmp")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    if args.workdir:
        main(args.gib, args.rounds, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="atlas-bench-", dir="/var/tmp") as tmp:
            main(args.gib, args.rounds, Path(tmp))
