"""The CLI's own cost: start-up (`--version`, `--help`), and `atlas-backup status` from
invocation to its printed table, against `mosquitto_sub` + `mosquitto_pub` (and
`mosquitto_rr`) doing the same round trip: publish `status` with a Response Topic, wait
for the response. All cases run interleaved, round by round, in one run, against one
agent (six Atlas services in a throwaway Incus project) on its own Mosquitto. Then the
client's imports, from `python -X importtime`, largest first.

    .venv/bin/python -m bench.cli [--rounds 15]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.support.broker import running_broker
from tests.support.harness import ATLAS, running_agent
from tests.support.incus_env import incus_project

CLI = str(Path(sys.executable).parent / "atlas-backup")
# What `status` imports: the argument parser, then the connection, then the tables.
MODULES = (
    "client.main",
    "client.run",
    "client.render",
    "paho.mqtt.client",
    "msgspec",
    "schemas.config",
    "rich.table",
    "rich.progress",
)


def timed(argv: list[str]) -> float:
    """Wall time of a process, in ms; it must succeed."""
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, check=False)
    elapsed = (time.perf_counter() - started) * 1000
    assert done.returncode == 0, (argv, done.stderr)
    return elapsed


def sub_then_pub(port: int, prefix: str) -> float:
    """`mosquitto_sub` on a response topic, then, once it has its SUBACK, `mosquitto_pub`
    of `status` with that Response Topic; ms from starting the sub to its exit on the answer."""
    reply = f"{prefix}/response/bench-{uuid.uuid4().hex[:8]}"
    command = json.dumps({"action": "status", "id": f"rr-{uuid.uuid4().hex[:12]}"})
    started = time.perf_counter()
    sub = subprocess.Popen(
        [
            "stdbuf",  # line-buffered: its SUBACK line must reach us before it exits
            "-oL",
            "mosquitto_sub",
            "-d",
            "-V",
            "mqttv5",
            "-p",
            str(port),
            "-t",
            reply,
            "-C",
            "1",
            "-W",
            "10",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sub.stdout is not None
    for line in sub.stdout:
        if "SUBACK" in line:
            break
    subprocess.run(
        [
            "mosquitto_pub",
            "-V",
            "mqttv5",
            "-p",
            str(port),
            "-q",
            "1",
            "-t",
            f"{prefix}/cmd",
            "-m",
            command,
            "-D",
            "publish",
            "response-topic",
            reply,
        ],
        check=True,
    )
    answer = sub.stdout.read()
    assert sub.wait() == 0, answer
    assert '"accepted"' in answer, answer
    return (time.perf_counter() - started) * 1000


def request_response(port: int, prefix: str) -> list[str]:
    reply = f"{prefix}/response/bench-rr"
    return [
        "mosquitto_rr",
        "-p",
        str(port),
        "-q",
        "1",
        "-t",
        f"{prefix}/cmd",
        "-e",
        reply,
        "-W",
        "10",
        "-m",
        json.dumps({"action": "status"}),
    ]


def import_cost(module: str, tries: int = 5) -> float:
    """The cumulative import time of `module` alone in a fresh interpreter, in ms (the
    fastest of `tries`: the machine is shared)."""
    best = float("inf")
    for _ in range(tries):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {module}"],
            capture_output=True,
            text=True,
            check=True,
        )
        best = min(best, int(done.stderr.splitlines()[-1].split("|")[1]) / 1000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory() as tmp, incus_project("atlas-bench") as project:
        for service in ATLAS:
            project.make_service(f"{service}01", f"{service}01-data")
        with (
            running_broker(Path(tmp) / "broker") as broker,
            running_agent(broker.port, project.name, Path(tmp) / "agent") as agent,
        ):
            config = ["--config", str(agent.workdir / "config.toml")]
            cases: dict[str, Callable[[], float]] = {
                "python -c pass (the interpreter)": lambda: timed([sys.executable, "-c", "pass"]),
                "atlas-backup --version": lambda: timed([CLI, "--version"]),
                "atlas-backup --help": lambda: timed([CLI, "--help"]),
                "atlas-backup status (to its table)": lambda: timed([CLI, "status", *config]),
                "atlas-backup status --no-wait": lambda: timed(
                    [CLI, "status", "--no-wait", *config]
                ),
                "mosquitto_sub + mosquitto_pub": lambda: sub_then_pub(broker.port, agent.prefix),
                "mosquitto_rr": lambda: timed(request_response(broker.port, agent.prefix)),
            }
            for case in cases.values():  # warm the page cache and the agent
                case()
            times: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(rounds):
                for name, case in cases.items():
                    times[name].append(case())
    print(f"{rounds} rounds, interleaved; wall time in ms")
    print(f"{'case':<38} {'median':>8} {'min':>8} {'max':>8}")
    for name, values in times.items():
        print(f"{name:<38} {statistics.median(values):8.1f} {min(values):8.1f} {max(values):8.1f}")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} (2 cores)")
    print("\nimport cost, each alone in a fresh interpreter (python -X importtime), best of 5:")
    for module in MODULES:
        print(f"  {module:<38} {import_cost(module):8.1f} ms")


if __name__ == "__main__":
    main()
