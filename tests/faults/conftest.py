"""The fault suite's parts: the integration suite's agent harness, on an Incus project
(`atlas-fault-*`) and brokers of its own, started with a fault point when a test asks.

Every test ends with two checks: the shared stack is as it was (six instances running, the
six volumes and nothing else, no `.part` file), and no secret the suite knows (passwords,
passphrases, private keys) shows in any agent log or any message a test client received.
"""

import secrets
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ATLAS, TEST_PASSPHRASE, AgentHarness
from tests.support.agent_proc import AgentProcess, write_config
from tests.support.broker import Broker, running_broker
from tests.support.client import TestClient
from tests.support.export_checks import part_files, server_backups
from tests.support.incus_env import IncusProject, incus_project

FAULT_ENV = "ATLAS_BACKUP_FAULT"
INSTANCES = [f"{service}01" for service in ATLAS]
VOLUMES = sorted(f"{service}01-data" for service in ATLAS)
ONLINE_TIMEOUT_S = 30.0
# A job of the fault suite, from command to final state, on this small shared machine.
JOB_TIMEOUT_S = 120.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def atlas() -> Iterator[IncusProject]:
    """The six Atlas services, made once for the suite: every test leaves them as found."""
    with incus_project("atlas-fault") as project:
        for service in ATLAS:
            project.make_service(f"{service}01", f"{service}01-data")
            project.write(f"{service}01", "/data/state", f"{service} v1")
        yield project


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with running_broker(tmp_path_factory.mktemp("broker")) as running:
        yield running


@dataclass
class Evidence:
    """Everything a test's agents logged and its clients received, and the secrets the
    test knows: none of them may appear in the rest."""

    secrets: set[str] = field(default_factory=lambda: {TEST_PASSPHRASE})
    clients: list[TestClient] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def secret(self, prefix: str) -> str:
        """A fresh secret to configure somewhere, registered for the scan."""
        value = f"{prefix}-{secrets.token_urlsafe(12)}"
        self.secrets.add(value)
        return value

    def leaks(self) -> list[str]:
        found = []
        for path in self.logs:
            text = path.read_text(errors="replace") if path.exists() else ""
            found += [f"{path.name} holds {s[:6]}..." for s in self.secrets if s in text]
        for client in self.clients:
            for message in client.everything():
                seen = message.topic.encode() + b" " + message.payload
                found += [
                    f"{message.topic} carried {s[:6]}..."
                    for s in self.secrets
                    if s.encode() in seen
                ]
        return found


@pytest.fixture
def evidence() -> Iterator[Evidence]:
    collected = Evidence()
    yield collected
    leaks = collected.leaks()
    assert not leaks, f"secrets leaked: {leaks}"


@dataclass
class FaultAgent(AgentHarness):
    """The integration harness, started with a fault point when asked."""

    @property
    def log(self) -> str:
        return self.process.log()

    def start(self, fault: str | None = None) -> None:
        """Start, and return once recovery is over: commands are taken only after it."""
        mark = self.client.mark()
        self.process.start(env={FAULT_ENV: fault} if fault else None)
        self.client.wait_for(
            lambda r: r.topic == f"{self.prefix}/agent" and r.json().get("state") == "online",
            timeout=ONLINE_TIMEOUT_S,
            since=mark,
        )
        assert self.client.command({"action": "status"}, timeout=JOB_TIMEOUT_S)["status"] == (
            "accepted"
        )

    def restart(self, fault: str | None = None) -> None:
        self.process.stop()
        self.start(fault)

    def wait_exit(self, timeout: float = JOB_TIMEOUT_S) -> int:
        code = self.process.wait_exit(timeout)
        self.process.stop()  # closes the log; the process is gone already
        return code

    def crash_at(self, point: str, command: dict[str, object]) -> str:
        """Run `command` with the agent set to SIGKILL itself at `point`; the job id."""
        self.restart(fault=point)
        response = self.client.command(command)
        assert response["status"] == "accepted", response
        assert self.wait_exit() == -signal.SIGKILL, f"the agent never reached {point}"
        return str(response["job"])

    def job(self, job_id: str, timeout: float = JOB_TIMEOUT_S) -> dict[str, Any]:
        return self.client.wait_job(job_id, timeout)


def wait_until(condition: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.5) -> None:
    """Poll what has no event of its own (Incus state, a process, a log), within a bound."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(interval)


AgentFactory = Callable[..., FaultAgent]
# Makes the test client for an agent's topic prefix, e.g. with credentials or TLS.
ClientFactory = Callable[[str], TestClient]


def assert_stack_intact(atlas: IncusProject, workdirs: list[Path]) -> None:
    """Every instance runs; the six volumes and no other exist, without server-side
    backups; no `.part` file is left."""
    states = {instance: atlas.state(instance) for instance in INSTANCES}
    stopped = {i: state for i, state in states.items() if state != "Running"}
    for instance in stopped:
        atlas.run("start", instance, check=False)  # for the next test, then fail this one
    assert not stopped, f"instances left not running: {stopped}"
    assert sorted(atlas.volumes()) == VOLUMES, atlas.volumes()
    backups = {v: found for v in VOLUMES if (found := server_backups(atlas, v))}
    assert not backups, backups
    parts = [p for workdir in workdirs for p in part_files(workdir / "backup")]
    assert not parts, parts


@pytest.fixture
def make_agent(
    broker: Broker, atlas: IncusProject, tmp_path: Path, evidence: Evidence
) -> Iterator[AgentFactory]:
    """Agents on the module's broker and the shared stack; each stopped, then the stack
    checked, when the test ends. Keyword arguments go to `write_config`; `port` and
    `client` replace the broker's port and the test client (for TLS or credentials)."""
    made: list[FaultAgent] = []

    def make(
        *,
        start: bool = True,
        port: int | None = None,
        client: ClientFactory | None = None,
        prefix: str = "",
        **config: Any,
    ) -> FaultAgent:
        workdir = tmp_path / f"agent{len(made)}"
        workdir.mkdir()
        passphrase = workdir / "passphrase"
        passphrase.write_text(TEST_PASSPHRASE + "\n")
        passphrase.chmod(0o600)
        prefix = prefix or f"atlas-fault/{uuid.uuid4().hex[:8]}"
        path = workdir / "config.toml"
        extra = config.pop("extra", "")
        write_config(
            path, port=port or broker.port, prefix=prefix, project=atlas.name,
            workdir=workdir,
            extra=f'{extra}\n[encryption]\npassphrase_file = "{passphrase}"\n', **config,
        )
        agent = FaultAgent(
            AgentProcess(path, workdir / "agent.log"),
            client(prefix) if client else TestClient(broker.port, prefix),
            prefix, port or broker.port, workdir,
        )
        evidence.clients.append(agent.client)
        evidence.logs.append(agent.process.log_path)
        made.append(agent)
        if start:
            agent.start()
        return agent

    yield make
    for agent in made:
        agent.process.stop()
        agent.client.close()
    print("\n".join(agent.log[-8000:] for agent in made))
    assert_stack_intact(atlas, [agent.workdir for agent in made])


@pytest.fixture
def agent(make_agent: AgentFactory) -> FaultAgent:
    return make_agent()
