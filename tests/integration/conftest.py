"""Real parts for integration tests: a Mosquitto of their own, an Incus project of their
own with the six Atlas services as busybox containers, and the agent as a process."""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.agent_proc import AgentProcess, write_config
from tests.support.broker import Broker, running_broker
from tests.support.client import TestClient
from tests.support.incus_env import IncusProject, incus_project

# A secret the suite can look for in everything logged and published: it must never show.
TEST_PASSPHRASE = "correct horse battery staple 7f3a"
ATLAS = ["grafana", "prometheus", "loki", "step-ca", "alertmanager", "mosquitto"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with running_broker(tmp_path_factory.mktemp("broker")) as running:
        yield running


@pytest.fixture(scope="module")
def atlas() -> Iterator[IncusProject]:
    """The demo Atlas stack: six running containers, each with its data volume."""
    with incus_project("atlas-it") as project:
        for service in ATLAS:
            project.make_service(f"{service}01", f"{service}01-data")
            project.write(f"{service}01", "/data/state", f"{service} v1")
        yield project


@dataclass
class AgentHarness:
    process: AgentProcess
    client: TestClient
    prefix: str
    port: int
    workdir: Path

    @property
    def backup_dir(self) -> Path:
        return self.workdir / "backup"

    def start(self) -> None:
        mark = self.client.mark()
        self.process.start()
        self.client.wait_for(
            lambda r: r.topic == f"{self.prefix}/agent" and r.json().get("state") == "online",
            timeout=30,
            since=mark,
        )


@pytest.fixture
def agent(broker: Broker, atlas: IncusProject, tmp_path: Path) -> Iterator[AgentHarness]:
    prefix = f"atlas-test/{uuid.uuid4().hex[:8]}"
    config = tmp_path / "config.toml"
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(TEST_PASSPHRASE + "\n")
    passphrase.chmod(0o600)
    write_config(
        config, port=broker.port, prefix=prefix, project=atlas.name, workdir=tmp_path,
        extra=f'[encryption]\npassphrase_file = "{passphrase}"\n',
    )
    client = TestClient(broker.port, prefix)
    harness = AgentHarness(
        AgentProcess(config, tmp_path / "agent.log"), client, prefix, broker.port, tmp_path
    )
    harness.start()
    try:
        yield harness
    finally:
        harness.process.stop()
        client.close()
        print(harness.process.log()[-20000:])
