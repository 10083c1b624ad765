"""Writes the JSON Schema files beside these modules: `python -m schemas.export`.

The files are generated from the Structs, and a test fails when they drift apart.
"""

import inspect
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from schemas.commands import AnyCommand
from schemas.config import Config
from schemas.messages import (
    AgentOffline,
    AgentState,
    DrillState,
    Event,
    JobState,
    Response,
    Summary,
    VolumeState,
)
from schemas.results import RESULT_TYPES, DryRunResult, NoResult

HERE = Path(__file__).resolve().parent

SCHEMAS: dict[str, Any] = {
    "command": AnyCommand,
    "response": Response,
    "job-state": JobState,
    "volume-state": VolumeState,
    "summary": Summary,
    "agent-state": AgentState,
    "agent-offline": AgentOffline,
    "event": Event,
    "drill-state": DrillState,
    "config": Config,
    # A job's `result`, one file per action (its job state's `action` names it): the
    # action's result, or `NoResult` when it produced none. A tuple is exported as `anyOf`.
    **{f"result-{action}": (result, NoResult) for action, result in RESULT_TYPES.items()},
    "result-dry-run": (DryRunResult, NoResult),
}


def clean_descriptions(node: Any) -> Any:
    """Docstrings as `inspect.cleandoc` reads them: msgspec releases differ in whether they
    keep a multi-line docstring's indentation, and a schema should not change with that."""
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else clean_descriptions(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [clean_descriptions(item) for item in node]
    return node


def _schema(types: Any) -> dict[str, Any]:
    """msgspec's schema of a type, or `anyOf` a tuple of types: untagged Structs, which
    msgspec accepts in a union only with a tag field."""
    if not isinstance(types, tuple):
        return msgspec.json.schema(types)
    refs, components = msgspec.json.schema_components(types)
    return {"anyOf": list(refs), "$defs": components}


def schema_for(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = clean_descriptions(_schema(SCHEMAS[name]))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"atlas-backup {name} (API v1)"
    return schema


def render(name: str) -> str:
    return json.dumps(schema_for(name), indent=2, sort_keys=True) + "\n"


def path_for(name: str) -> Path:
    return HERE / f"{name}.schema.json"


def main() -> int:
    for name in SCHEMAS:
        path_for(name).write_text(render(name))
        print(path_for(name).relative_to(HERE.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
