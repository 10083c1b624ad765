"""The fault suite's fixtures: the one agent harness, on an Incus project
(`atlas-fault-*`) and brokers of its own, started with a fault point when a test asks.

Every test ends with two checks: the shared stack is as it was (six instances running, the
six volumes and nothing else, no `.part` file), and no secret the suite knows (passwords,
passphrases, private keys) shows in any agent log or any message a test client received.
The parts tests import are in `tests.support.fault_suite`.
"""

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import Broker
from tests.support.client import TestClient
from tests.support.fault_suite import (
    AgentFactory,
    ClientFactory,
    Evidence,
    FaultAgent,
    assert_stack_intact,
)
from tests.support.harness import ATLAS, prepare_agent
from tests.support.incus_env import IncusProject, incus_project


@pytest.fixture(scope="session")
def atlas() -> Iterator[IncusProject]:
    """The six Atlas services, made once for the suite: every test leaves them as found."""
    with incus_project("atlas-fault") as project:
        for service in ATLAS:
            project.make_service(f"{service}01", f"{service}01-data")
            project.write(f"{service}01", "/data/state", f"{service} v1")
        yield project


@pytest.fixture
def evidence() -> Iterator[Evidence]:
    collected = Evidence()
    yield collected
    leaks = collected.leaks()
    assert not leaks, f"secrets leaked: {leaks}"


@pytest.fixture
def make_agent(
    broker: Broker, atlas: IncusProject, tmp_path: Path, evidence: Evidence
) -> Iterator[AgentFactory]:
    """Agents on the module's broker and the shared stack; each stopped, then the stack
    checked, when the test ends. Keyword arguments are config tables for `agent_config`
    (`agent={"recovery_retry_s": 1}`); `port` and `client` replace the broker's port and
    the test client (for TLS or credentials)."""
    made: list[FaultAgent] = []

    def make(
        *,
        start: bool = True,
        port: int | None = None,
        client: ClientFactory | None = None,
        prefix: str = "",
        **tables: Any,
    ) -> FaultAgent:
        agent = prepare_agent(
            port or broker.port,
            atlas.name,
            tmp_path / f"agent{len(made)}",
            prefix=prefix or f"atlas-fault/{uuid.uuid4().hex[:8]}",
            client=client or (lambda p: TestClient(broker.port, p)),
            after_recovery=True,
            **tables,
        )
        evidence.clients.append(agent.client)
        evidence.logs.append(agent.process.log_path)
        made.append(agent)
        if start:
            agent.start()
        return agent

    yield make
    for agent in made:
        agent.close()
    print("\n".join(agent.log[-8000:] for agent in made))
    assert_stack_intact(atlas, [agent.workdir for agent in made])


@pytest.fixture
def agent(make_agent: AgentFactory) -> FaultAgent:
    return make_agent()
