"""The command each subcommand sends (API.md, "Fields of each action"), built from the
parsed arguments. Pure: no I/O, so unit tests check the exact JSON."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

# Subcommands that send a command and follow its job, in the order `--help` lists them.
JOB_ACTIONS = (
    "snapshot",
    "export",
    "restore",
    "import",
    "verify",
    "prune",
    "drill",
    "rebuild",
    "list",
    "status",
    "cancel",
)


def request_id(action: str, now: float | None = None) -> str:
    """A unique job id that says where it came from: `cli-snapshot-20261202-0456-1a2b3c`."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"cli-{action}-{stamp}-{os.urandom(3).hex()}"


def _volumes(names: list[str]) -> list[str] | str:
    """`all` (or nothing) means every volume, as the API spells it."""
    return "all" if not names or names == ["all"] else names


def _set(command: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        command[key] = value


def build(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON object for `args.action`; `confirm` is added by the caller (`confirm_target`)."""
    action: str = args.action
    command: dict[str, Any] = {"id": args.id or request_id(action), "action": action}
    if args.dry_run:
        command["dry_run"] = True
    match action:
        case "snapshot":
            command["volumes"] = _volumes(args.volumes)
            _set(command, "name", args.name)
            _set(command, "quiesce", args.quiesce)
        case "export":
            command["volumes"] = _volumes(args.volumes)
            _set(command, "mode", args.mode)
            _set(command, "compression", args.compression)
            _set(command, "encrypt", args.encrypt)
        case "restore":
            command["volume"] = args.volume
            command["snapshot"] = args.snapshot
        case "import":
            _set(command, "backup", args.backup)
            _set(command, "file", args.file)
            _set(command, "as", args.as_)
            if args.replace:
                command["replace"] = True
        case "verify":
            _set(command, "backup", args.backup)
            if args.volumes or not args.backup:
                command["volumes"] = _volumes(args.volumes)
            if args.restore_test:
                command["restore_test"] = True
        case "prune" | "list":
            command["volumes"] = _volumes(args.volumes)
        case "drill":
            command["service"] = args.service
            _set(command, "scenario", args.scenario)
        case "rebuild":
            command["set"] = args.set
        case "cancel":
            command["job"] = args.job
        case "status":
            pass
        case _:
            raise ValueError(f"not a job action: {action}")
    return command


def confirm_target(command: dict[str, Any]) -> str | None:
    """What `confirm` must equal for this command (API.md), or None when it needs none.
    For `import --file --replace` the volume is only known to the agent: "" asks for it."""
    match command["action"]:
        case "restore":
            return str(command["volume"])
        case "import" if command.get("replace"):
            backup = command.get("backup")
            return str(backup).rpartition("/")[2] if backup else ""
        case "rebuild":
            return "all"
    return None
