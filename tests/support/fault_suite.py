"""The fault suite's parts other than fixtures: what it collects to scan for leaked
secrets, the check that a test left the shared stack as it found it, and polling."""

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.client import TestClient
from tests.support.export_checks import part_files, server_backups
from tests.support.harness import (
    ATLAS,
    FAULT_ENV,
    JOB_TIMEOUT_S,
    ONLINE_TIMEOUT_S,
    TEST_PASSPHRASE,
    AgentHarness,
    ClientFactory,
)
from tests.support.incus_env import IncusProject

__all__ = [
    "FAULT_ENV",
    "INSTANCES",
    "JOB_TIMEOUT_S",
    "ONLINE_TIMEOUT_S",
    "VOLUMES",
    "AgentFactory",
    "ClientFactory",
    "Evidence",
    "FaultAgent",
    "assert_stack_intact",
    "wait_until",
]

INSTANCES = [f"{service}01" for service in ATLAS]
VOLUMES = sorted(f"{service}01-data" for service in ATLAS)

# The fault suite's agents: the one harness, started only once recovery is over.
FaultAgent = AgentHarness
AgentFactory = Callable[..., FaultAgent]


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


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.5
) -> None:
    """Poll what has no event of its own (Incus state, a process, a log), within a bound."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(interval)


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
