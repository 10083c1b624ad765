"""The README's Quick start, run as written: the demo config exactly as setup.sh writes it
(deploy/config.example.toml, the passphrase file, deploy/demo-services.toml; only the
broker port, the directories and the metrics listener are moved for the test), the demo
stack as demo-stack.sh makes it, and every `atlas-backup` line of the tour through the
real CLI, each exiting 0.
"""

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.agent_proc import REPO, AgentProcess
from tests.support.broker import Broker
from tests.support.client import TestClient
from tests.support.harness import ATLAS, ONLINE_TIMEOUT_S, TEST_PASSPHRASE, write_secret
from tests.support.incus_env import IncusProject, incus_project

CLI = str(Path(sys.executable).parent / "atlas-backup")
README = REPO / "README.md"
# The snapshot name the README's restore line uses; the test puts in the one it made.
README_SNAPSHOT = "backup-20261202-054016"


def tour() -> list[list[str]]:
    """The `atlas-backup` command lines of the README's Quick start tour."""
    text = README.read_text()
    start = text.index("```sh", text.index("<!-- quick-start-tour")) + len("```sh")
    lines = text[start : text.index("```", start)].splitlines()
    return [line.split() for line in lines if line.startswith("atlas-backup ")]


def demo_config(project: str, port: int, workdir: Path) -> str:
    """setup.sh's demo config, with the broker, directories and metrics moved for a test."""
    deploy = REPO / "deploy"
    example = (deploy / "config.example.toml").read_text().replace("@PROJECT@", project)
    moved = (
        example.replace("port = 1883", f"port = {port}")
        .replace('"/backup/atlas"', f'"{workdir}/backup"')
        .replace('"/var/lib/atlas-backup"', f'"{workdir}/state"')
        .replace('listen = "127.0.0.1:9464"', 'listen = ""')
    )
    passphrase = write_secret(workdir / "passphrase", TEST_PASSPHRASE)
    encryption = f'\n[encryption]\npassphrase_file = "{passphrase}"\n'
    return moved + encryption + (deploy / "demo-services.toml").read_text()


@pytest.fixture(scope="module")
def demo() -> Iterator[IncusProject]:
    """The demo stack as demo-stack.sh makes it, with the data its health checks read."""
    with incus_project("atlas-qs") as project:
        for service in ATLAS:
            project.make_service(f"{service}01", f"{service}01-data")
            project.write(f"{service}01", "/data/README", f"demo data of {service}, created now")
        yield project


@dataclass
class Demo:
    stack: IncusProject
    config: Path


@pytest.fixture(scope="module")
def agent(
    broker: Broker, demo: IncusProject, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Demo]:
    workdir = tmp_path_factory.mktemp("quick-start")
    config = workdir / "config.toml"
    config.write_text(demo_config(demo.name, broker.port, workdir))
    process = AgentProcess(config, workdir / "agent.log")
    client = TestClient(broker.port, "atlas/backup")
    try:
        process.start()
        client.wait_for(
            lambda r: r.topic == "atlas/backup/agent" and r.json().get("state") == "online",
            timeout=ONLINE_TIMEOUT_S,
        )
        yield Demo(demo, config)
    finally:
        process.stop()
        client.close()
        print(process.log()[-20000:])


def test_every_command_of_the_tour_works_as_written(agent: Demo) -> None:
    commands = tour()
    assert [c[1] for c in commands] == ["status", "snapshot", "export", "list", "restore", "drill"]
    outputs: dict[str, str] = {}
    snapshot = README_SNAPSHOT
    for line in commands:
        argv = [CLI, *(snapshot if a == README_SNAPSHOT else a for a in line[1:])]
        done = subprocess.run(
            [*argv, "--config", str(agent.config)],
            check=False,
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, (argv, done.stdout, done.stderr)
        outputs[argv[1]] = done.stdout
        if argv[1] == "snapshot":
            found = re.search(r"snapshot grafana01-data/(backup-\d{8}-\d{6})", done.stdout)
            assert found, done.stdout
            snapshot = found.group(1)
    assert snapshot in agent.stack.snapshots("grafana01-data")
    assert re.search(r"step-ca01-data\.tar\.zst\.gpg .* encrypted", outputs["export"])
    assert outputs["export"].count("wrote ") == len(ATLAS)
    assert "Plan of restore" in outputs["restore"]
    assert f"restore_snapshot grafana01-data (snapshot={snapshot})" in outputs["restore"]
    assert "succeeded" in outputs["drill"]
    for service in ATLAS:
        assert f"{service}01-data" in outputs["list"]
