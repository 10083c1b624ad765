"""Dependencies point one way: schemas <- commands <- agent, and the agent's adapters
reach a command's pure policies through shared modules, never through a command module."""

import ast
from pathlib import Path

from commands.registry import ACTIONS

ROOT = Path(__file__).resolve().parents[2]
COMMAND_MODULES = {action.plan.__module__ for action in ACTIONS.values()}


def imported_modules(package: str) -> dict[str, set[str]]:
    """Every module each file of `package` imports, by file."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[str(path.relative_to(ROOT))] = names
    return found


def test_the_agent_never_imports_a_command_module() -> None:
    offending = {
        path: sorted(names & COMMAND_MODULES)
        for path, names in imported_modules("agent").items()
        if names & COMMAND_MODULES
    }
    assert offending == {}


def test_commands_and_schemas_never_import_the_agent() -> None:
    for package in ("commands", "schemas"):
        offending = {
            path: sorted(n for n in names if n == "agent" or n.startswith("agent."))
            for path, names in imported_modules(package).items()
        }
        assert {path: names for path, names in offending.items() if names} == {}


def test_the_client_uses_only_the_wire_types_and_the_topic_names() -> None:
    """The CLI runs on any host with a broker login: no agent runtime, no Incus, no gpg.
    `atlas-backup agent` reaches the runtime through `client.main` with a lazy import."""
    allowed = {"agent", "agent.mqtt.topics", "agent.cli"}
    offending = {
        path: sorted(
            n
            for n in names
            if (n == "agent" or n.startswith("agent.") or n.startswith("commands"))
            and n not in allowed
        )
        for path, names in imported_modules("client").items()
    }
    assert {path: names for path, names in offending.items() if names} == {}
    assert "agent.cli" not in {
        n for p, ns in imported_modules("client").items() for n in ns if p != "client/main.py"
    }
