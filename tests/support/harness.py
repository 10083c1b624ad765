"""The one harness for a test agent: a config built from the config Structs and written as
TOML, the agent as a process, and a test client on its topics.

`running_agent` is an agent for the length of a `with` block; `prepare_agent` makes one
without starting it, for fixtures that start, crash and restart it themselves.
"""

import signal
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from schemas.config import (
    AgentConfig,
    Config,
    IncusConfig,
    MqttConfig,
    SchedulesConfig,
    ServiceConfig,
    StorageConfig,
)
from tests.support.agent_proc import AgentProcess
from tests.support.client import TestClient

# A secret the suite can look for in everything logged and published: it must never show.
TEST_PASSPHRASE = "correct horse battery staple 7f3a"
ATLAS = ["grafana", "prometheus", "loki", "step-ca", "alertmanager", "mosquitto"]
FAULT_ENV = "ATLAS_BACKUP_FAULT"
ONLINE_TIMEOUT_S = 30.0
# A job, from command to final state, on this small shared machine.
JOB_TIMEOUT_S = 120.0

# Makes the test client for an agent's topic prefix, e.g. with credentials or TLS.
ClientFactory = Callable[[str], TestClient]


def atlas_services(extra: dict[str, tuple[str, str]] | None = None) -> list[ServiceConfig]:
    """The six Atlas services with default settings (step-ca critical), plus `extra`
    services: name -> (instance, volume)."""
    entries = {s: (f"{s}01", f"{s}01-data") for s in ATLAS} | (extra or {})
    return [
        ServiceConfig(
            name=name,
            instance=instance,
            volume=volume,
            criticality="critical" if name == "step-ca" else "medium",
        )
        for name, (instance, volume) in entries.items()
    ]


def agent_config(*, port: int, prefix: str, project: str, workdir: Path, **tables: Any) -> Config:
    """A test agent's config: the broker on localhost, `project` on the local pool, the
    backup and state directories in `workdir`, debug logs, short Incus timeouts. `tables`
    change keys of a table (`agent={"recovery_retry_s": 1}`) or replace the services
    (`services=[...]`); see `with_tables`. The runbook's schedules are off unless
    `schedules={"runbook_defaults": True}`."""
    config = Config(
        mqtt=MqttConfig(
            host="127.0.0.1",
            port=port,
            client_id=f"agent-{prefix.replace('/', '-')}",
            topic_prefix=prefix,
        ),
        incus=IncusConfig(project=project, pool="local", timeout_s=60, stop_timeout_s=10),
        storage=StorageConfig(backup_dir=f"{workdir}/backup", state_dir=f"{workdir}/state"),
        agent=AgentConfig(status_interval_s=60, log_level="debug"),
        # No runbook schedules unless a test asks: a test must not meet a 02:00 snapshot.
        schedules=SchedulesConfig(runbook_defaults=False),
    )
    return with_tables(config, **tables)


def with_tables(config: Config, **tables: Any) -> Config:
    """`config` with the keys given for each table replaced, and `services` (a list of
    `ServiceConfig`) replacing the services; checked as the agent decodes it."""
    changes: dict[str, Any] = {
        name: value
        if name == "services"
        else msgspec.structs.replace(getattr(config, name), **value)
        for name, value in tables.items()
    }
    return decode_config(encode_config(msgspec.structs.replace(config, **changes)))


def encode_config(config: Config) -> bytes:
    """The config as TOML. TOML has no null: a key set to None is left out, which the
    agent reads as its default (None)."""
    return msgspec.toml.encode(_without_none(msgspec.to_builtins(config)))


def decode_config(text: bytes) -> Config:
    return msgspec.toml.decode(text, type=Config)


def write_config(path: Path, config: Config) -> None:
    path.write_bytes(encode_config(config))


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def write_secret(path: Path, secret: str) -> Path:
    """A secret file as the agent wants it: the secret on its first line, mode 0600."""
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return path


@dataclass
class AgentHarness:
    """A test agent: its process, its config and a test client on its topics."""

    process: AgentProcess
    client: TestClient
    prefix: str
    port: int
    workdir: Path
    # Wait for a `status` round trip too when starting: commands are taken only after
    # recovery, which some tests need to be over.
    after_recovery: bool = False

    @property
    def backup_dir(self) -> Path:
        return self.workdir / "backup"

    @property
    def log(self) -> str:
        return self.process.log()

    def start(self, fault: str | None = None, env: dict[str, str] | None = None) -> None:
        """Start the agent (set to stop at fault point `fault` if given) and return once it
        is online; with `after_recovery`, once recovery is over."""
        mark = self.client.mark()
        self.process.start(env={**(env or {}), **({FAULT_ENV: fault} if fault else {})})
        self.client.wait_for(
            lambda r: r.topic == f"{self.prefix}/agent" and r.json().get("state") == "online",
            timeout=ONLINE_TIMEOUT_S,
            since=mark,
        )
        if self.after_recovery:
            response = self.client.command({"action": "status"}, timeout=JOB_TIMEOUT_S)
            assert response["status"] == "accepted"

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

    def close(self) -> None:
        """Stop the agent and close the client."""
        self.process.stop()
        self.client.close()


def prepare_agent(
    port: int,
    project: str,
    workdir: Path,
    *,
    prefix: str = "",
    passphrase: str | None = TEST_PASSPHRASE,
    client: ClientFactory | None = None,
    after_recovery: bool = False,
    **tables: Any,
) -> AgentHarness:
    """An agent on the broker at `port` and the Incus `project`, working in `workdir`,
    not started. With `passphrase`, exports are encrypted with it by default; `client`
    makes the test client (default: plain MQTT on `port`); `tables` go to `agent_config`."""
    workdir.mkdir(parents=True, exist_ok=True)
    prefix = prefix or f"atlas-test/{uuid.uuid4().hex[:8]}"
    if passphrase is not None:
        secret = write_secret(workdir / "passphrase", passphrase)
        tables["encryption"] = {"passphrase_file": str(secret), **tables.get("encryption", {})}
    path = workdir / "config.toml"
    write_config(
        path, agent_config(port=port, prefix=prefix, project=project, workdir=workdir, **tables)
    )
    return AgentHarness(
        AgentProcess(path, workdir / "agent.log"),
        client(prefix) if client else TestClient(port, prefix),
        prefix,
        port,
        workdir,
        after_recovery,
    )


@contextmanager
def running_agent(
    port: int,
    project: str,
    workdir: Path,
    *,
    env: dict[str, str] | None = None,
    **options: Any,
) -> Iterator[AgentHarness]:
    """A started agent for the block (`prepare_agent` takes `options`); stopped after it,
    with the end of its log printed for a failing test's report."""
    harness = prepare_agent(port, project, workdir, **options)
    try:
        harness.start(env=env)
        yield harness
    finally:
        harness.close()
        print(harness.log[-20000:])
