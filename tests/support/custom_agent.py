"""An agent harness with a configuration of the test's own (encryption, services, a
backup directory elsewhere), for tests the shared `agent` fixture does not fit."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.integration.conftest import ATLAS, AgentHarness
from tests.support.agent_proc import AgentProcess, write_config
from tests.support.client import TestClient


def services_toml(extra: dict[str, tuple[str, str]] | None = None) -> str:
    """The six Atlas services, plus `extra` services: name -> (instance, volume)."""
    entries = {s: (f"{s}01", f"{s}01-data") for s in ATLAS} | (extra or {})
    return "".join(
        f'\n[[services]]\nname = "{name}"\ninstance = "{instance}"\nvolume = "{volume}"\n'
        + ('criticality = "critical"\n' if name == "step-ca" else "")
        for name, (instance, volume) in entries.items()
    )


@contextmanager
def custom_agent(
    port: int, project: str, workdir: Path, *, extra: str = "", services: str = ""
) -> Iterator[AgentHarness]:
    """A running agent on `project`, configured with `extra` tables and `services`."""
    workdir.mkdir(parents=True, exist_ok=True)
    prefix = f"atlas-test/{uuid.uuid4().hex[:8]}"
    config = workdir / "config.toml"
    write_config(config, port=port, prefix=prefix, project=project, workdir=workdir,
                 extra=extra, services=services)
    client = TestClient(port, prefix)
    harness = AgentHarness(
        AgentProcess(config, workdir / "agent.log"), client, prefix, port, workdir
    )
    harness.start()
    try:
        yield harness
    finally:
        harness.process.stop()
        client.close()
        print(harness.process.log()[-20000:])
