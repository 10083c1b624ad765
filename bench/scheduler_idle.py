"""Scheduler overhead: the CPU time of an idle agent with the runbook's default schedules,
beside the same agent with no schedules, over the same window.

Starts its own Mosquitto, a throwaway Incus project with the six Atlas services, and two
agent processes on it (one per prefix and state directory); once both are online and
settled, reads each one's utime + stime from /proc/<pid>/stat at the start and the end
of the window. No job is due in the window (the defaults run at 02:00; the bench refuses
to start within 10 minutes of it).

    .venv/bin/python -m bench.scheduler_idle [--seconds 60]
"""

import argparse
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support.agent_proc import AgentProcess
from tests.support.broker import running_broker
from tests.support.client import TestClient
from tests.support.harness import ATLAS, agent_config, write_config, write_secret
from tests.support.incus_env import incus_project

TICKS = os.sysconf("SC_CLK_TCK")
SETTLE_S = 5.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat (fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def start_agent(
    work: Path, port: int, project: str, name: str, schedules: dict[str, Any]
) -> tuple[AgentProcess, TestClient]:
    folder = work / name
    folder.mkdir()
    prefix = f"atlas-bench/{name}-{uuid.uuid4().hex[:6]}"
    secret = write_secret(folder / "passphrase", "bench passphrase")
    config = folder / "config.toml"
    write_config(
        config,
        agent_config(
            port=port,
            prefix=prefix,
            project=project,
            workdir=folder,
            agent={"log_level": "info"},
            encryption={"passphrase_file": str(secret)},
            schedules=schedules,
        ),
    )
    client = TestClient(port, prefix)
    agent = AgentProcess(config, folder / "agent.log")
    agent.start()
    client.wait_for(
        lambda r: r.topic == f"{prefix}/agent" and r.json().get("state") == "online", timeout=30
    )
    return agent, client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    now = datetime.now(UTC)
    if (now.hour == 1 and now.minute >= 50) or (now.hour == 2 and now.minute < 10):
        raise SystemExit("the default schedules run at 02:00 UTC: run the bench at another time")
    with tempfile.TemporaryDirectory() as tmp, incus_project("atlas-bench") as project:
        work = Path(tmp)
        for service in ATLAS:
            project.make_service(f"{service}01", f"{service}01-data")
        with running_broker(work / "broker") as broker:
            cases = {
                "default schedules": {"runbook_defaults": True},
                "no schedules": {"runbook_defaults": False},
            }
            started = {
                name: start_agent(work, broker.port, project.name, name.replace(" ", "-"), tables)
                for name, tables in cases.items()
            }
            try:
                time.sleep(SETTLE_S)
                before = {name: cpu_seconds(agent.pid) for name, (agent, _) in started.items()}
                wall = time.monotonic()
                time.sleep(args.seconds)
                wall = time.monotonic() - wall
                after = {name: cpu_seconds(agent.pid) for name, (agent, _) in started.items()}
            finally:
                for agent, client in started.values():
                    agent.stop()
                    client.close()
    print(f"idle agent CPU time over {wall:.1f} s (six services, status every 60 s)")
    print(f"{'case':<20} {'CPU s':>7} {'% of a core':>12}")
    for name in cases:
        used = after[name] - before[name]
        print(f"{name:<20} {used:>7.2f} {100 * used / wall:>11.3f}%")
    print(f"clock tick: {1 / TICKS:.3f} s (the resolution of /proc/<pid>/stat)")


if __name__ == "__main__":
    main()
