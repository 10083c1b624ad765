"""`list` against the Incus CLI: a real Incus project with N custom volumes (100 by
default) of M snapshots each (20), the agent's `list` (over MQTT, command to final state,
its result holding every volume and snapshot) against two ways of asking the CLI, in
turn, in one run; medians and the fastest of each:

- the CLI loop a script would run: `incus storage volume list`, then `incus storage
  volume snapshot list` for each volume (1 + N requests);
- one `incus storage volume list <pool>`: the same single recursive listing the agent
  reads (snapshots included as `volume/snapshot`), printed as CSV: the floor.

and, to show what reading the pool once saves, the requests `list` made before it did:
each volume and its snapshots read in turn through the agent's Incus client (2 x N).
Last, the agent's `list` of one volume, which reads that volume alone.

    .venv/bin/python -m bench.list [--volumes 100] [--snapshots 20] [--rounds 5]
"""

import argparse
import statistics
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agent.incus.client import IncusClient
from schemas.config import IncusConfig, ServiceConfig
from tests.support.agent_proc import AgentProcess
from tests.support.broker import running_broker
from tests.support.client import TestClient
from tests.support.harness import agent_config, write_config
from tests.support.incus_env import IncusProject, incus_project

JOB_TIMEOUT_S = 300.0


def populate(project: IncusProject, volumes: list[str], snapshots: int) -> None:
    """The volumes and their snapshots, four CLI calls at a time."""

    def make(volume: str) -> None:
        project.run("storage", "volume", "create", project.pool, volume)
        for n in range(snapshots):
            snapshot = f"backup-202611{n % 28 + 1:02d}-{n:06d}"
            project.run("storage", "volume", "snapshot", "create", project.pool, volume, snapshot)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(make, volumes))


def cli_loop(project: IncusProject, volumes: list[str]) -> float:
    """What a script does: list the volumes, then each one's snapshots."""
    start = time.perf_counter()
    base = ["incus", "--project", project.name, "storage", "volume"]
    listed = subprocess.run(
        [*base, "list", project.pool, "--format", "csv"], capture_output=True, check=True
    )
    assert len(listed.stdout.splitlines()) >= len(volumes)
    for volume in volumes:
        subprocess.run(
            [*base, "snapshot", "list", project.pool, volume, "--format", "csv"],
            capture_output=True,
            check=True,
        )
    return time.perf_counter() - start


def cli_listing(project: IncusProject, volumes: list[str], snapshots: int) -> float:
    """One listing of the pool, snapshots included: the request the agent makes."""
    start = time.perf_counter()
    listed = subprocess.run(
        ["incus", "--project", project.name, "storage", "volume", "list", project.pool,
         "--format", "csv"],
        capture_output=True,
        check=True,
    )  # fmt: skip
    took = time.perf_counter() - start
    assert len(listed.stdout.splitlines()) >= len(volumes) * (snapshots + 1)
    return took


def each_volume(project: IncusProject, volumes: list[str], snapshots: int) -> float:
    """Each volume, then its snapshots, read in turn: what `list` asked Incus before."""
    client = IncusClient(IncusConfig(project=project.name, pool=project.pool))
    start = time.perf_counter()
    read = [client.get_volume(volume) for volume in volumes]
    took = time.perf_counter() - start
    assert all(len(info.snapshots) == snapshots for info in read)
    return took


def agent_list(client: TestClient, volumes: list[str], snapshots: int, *, only: bool) -> float:
    """The agent's `list`: of every volume, or `only` of these."""
    command = {"action": "list", **({"volumes": volumes} if only else {})}
    start = time.perf_counter()
    job = client.run(command, timeout=JOB_TIMEOUT_S)
    took = time.perf_counter() - start
    assert job["state"] == "succeeded", job
    listed = job["result"]["volumes"]
    assert [v["volume"] for v in listed] == volumes, len(listed)
    assert all(len(v["snapshots"]) == snapshots for v in listed), listed[0]
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--volumes", type=int, default=100)
    parser.add_argument("--snapshots", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    volumes = [f"bench{i:03d}-data" for i in range(args.volumes)]
    services = [
        ServiceConfig(name=f"bench{i:03d}", instance=f"bench{i:03d}", volume=v)
        for i, v in enumerate(volumes)
    ]
    with tempfile.TemporaryDirectory() as tmp, incus_project("atlas-bench") as project:
        work = Path(tmp)
        started = time.perf_counter()
        populate(project, volumes, args.snapshots)
        print(f"made {args.volumes} volumes x {args.snapshots} snapshots in "
              f"{time.perf_counter() - started:.0f} s")  # fmt: skip
        with running_broker(work / "broker") as broker:
            prefix = f"atlas-bench/list-{uuid.uuid4().hex[:6]}"
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
                agent_list(client, volumes, args.snapshots, only=False)  # warm-up
                agent_s: list[float] = []
                loop_s: list[float] = []
                listing_s: list[float] = []
                each_s: list[float] = []
                one_s: list[float] = []
                for n in range(args.rounds):
                    agent_s.append(agent_list(client, volumes, args.snapshots, only=False))
                    one_s.append(agent_list(client, volumes[:1], args.snapshots, only=True))
                    loop_s.append(cli_loop(project, volumes))
                    listing_s.append(cli_listing(project, volumes, args.snapshots))
                    each_s.append(each_volume(project, volumes, args.snapshots))
                    took = (agent_s[-1], loop_s[-1], listing_s[-1], each_s[-1], one_s[-1])
                    print(f"round {n + 1}: " + "  ".join(f"{t:.2f} s" for t in took), flush=True)
            finally:
                agent.stop()
                client.close()
    print(f"{args.volumes} volumes x {args.snapshots} snapshots, {args.rounds} rounds, in turn")
    cases = (
        ("agent list", agent_s),
        ("CLI loop (list, then each volume's snapshots)", loop_s),
        ("CLI, one `incus storage volume list`", listing_s),
        ("API, each volume and its snapshots (list before)", each_s),
        ("agent list of one volume (read alone)", one_s),
    )
    for name, times in cases:
        print(
            f"  {name:<49} median {statistics.median(times):7.3f} s   fastest {min(times):7.3f} s"
        )
    for name, times in cases[1:4]:
        ratio = statistics.median(agent_s) / statistics.median(times)
        fastest = min(agent_s) / min(times)
        print(f"  agent / {name}: {ratio:.3f} (fastest {fastest:.3f})")


if __name__ == "__main__":
    main()
