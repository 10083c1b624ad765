"""Recovery time of the whole stack: the agent's `rebuild` of the six Atlas services,
each with a `--gib` GiB volume, beside the runbook's RTO for a full rebuild (1 hour).

`python -m bench.rebuild [--gib 1] [--workdir DIR]`

In an Incus project and a broker of their own: six busybox services (the Atlas names),
each volume holding `--gib` GiB of /dev/urandom and a marker file; their health check
reads the marker. One export of all six (zstd, encrypted with a passphrase) is made, the
markers are then damaged, and one rebuild from that set runs, command to final state
over MQTT: each service through the safe replace-import, started and health-checked.
It prints the rebuild's own total and per-service times, and the wall time.
"""

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from schemas.config import FULL_REBUILD_RTO_S, HealthCheck, ServiceConfig
from tests.support.broker import running_broker
from tests.support.harness import ATLAS, AgentHarness, running_agent
from tests.support.incus_env import IncusProject, incus_project

CHECK = HealthCheck(command=["grep", "-qx", "bench ok", "/data/marker"], timeout_s=60)
SERVICES = [
    ServiceConfig(name=name, instance=f"{name}01", volume=f"{name}01-data", health=CHECK)
    for name in ATLAS
]
JOB_TIMEOUT_S = 3600.0


def fill_volumes(project: IncusProject, gib: int) -> None:
    for service in SERVICES:
        project.run("exec", service.instance, "--", "sh", "-c",
                    f"dd if=/dev/urandom of=/data/blob bs=1M count={gib * 1024} 2>/dev/null"
                    " && printf 'bench ok\\n' > /data/marker && sync")  # fmt: skip


def run(agent: AgentHarness, **fields: Any) -> tuple[dict[str, Any], float]:
    began = time.monotonic()
    job = agent.client.run(fields, timeout=JOB_TIMEOUT_S)
    wall = time.monotonic() - began
    assert job["state"] == "succeeded", job
    return job, wall


def main(gib: int, workdir: Path) -> None:
    with (
        running_broker(workdir / "broker") as broker,
        incus_project("atlas-bench-rebuild") as project,
    ):
        for service in SERVICES:
            project.make_service(service.instance, service.volume)
        fill_volumes(project, gib)
        (workdir / "agent").mkdir(mode=0o700)
        with running_agent(
            broker.port,
            project.name,
            workdir / "agent",
            passphrase="bench passphrase",
            services=SERVICES,
        ) as agent:
            exported, export_wall = run(agent, action="export", volumes="all", encrypt=True)
            set_name = exported["result"]["files"][0]["backup"].split("/")[0]
            for service in SERVICES:
                project.write(service.instance, "/data/marker", "damaged")
            job, wall = run(agent, action="rebuild", set=set_name, confirm="all")
        result = job["result"]
        assert result["ok"], result
        print(f"{len(SERVICES)} services x {gib} GiB of /dev/urandom, one run;"
              f" export of all {export_wall:.1f} s;"
              f" runbook target {FULL_REBUILD_RTO_S:g} s (full rebuild, 1 h)")  # fmt: skip
        print(f"rebuild total_s {result['total_s']:.1f} | wall (command to final state) {wall:.1f}")
        for row in result["services"]:
            print(f"  {row['service']:13s} {row['how']:8s} {row['seconds']:6.1f} s", flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder in /var/tmp")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    if args.workdir:
        main(args.gib, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="atlas-bench-", dir="/var/tmp") as tmp:
            main(args.gib, Path(tmp))
