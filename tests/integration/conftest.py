"""Real parts for integration tests: a Mosquitto of their own (the root conftest's
`broker`), an Incus project of their own with the six Atlas services as busybox
containers, and the agent as a process."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import Broker
from tests.support.harness import ATLAS, AgentHarness, running_agent
from tests.support.incus_env import IncusProject, incus_project


@pytest.fixture(scope="module")
def atlas() -> Iterator[IncusProject]:
    """The demo Atlas stack: six running containers, each with its data volume."""
    with incus_project("atlas-it") as project:
        for service in ATLAS:
            project.make_service(f"{service}01", f"{service}01-data")
            project.write(f"{service}01", "/data/state", f"{service} v1")
        yield project


@pytest.fixture
def agent(broker: Broker, atlas: IncusProject, tmp_path: Path) -> Iterator[AgentHarness]:
    """A running agent on the stack, encrypting with `TEST_PASSPHRASE` by default."""
    with running_agent(broker.port, atlas.name, tmp_path) as harness:
        yield harness
