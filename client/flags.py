"""The connection flags every subcommand takes. Kept apart from `settings` so that
`--help` and `--version` parse without importing msgspec and the config types."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_CONFIG = Path("/etc/atlas-backup/config.toml")


def add_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection (default: from the config file)")
    group.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help=f"the agent's config file (default {DEFAULT_CONFIG}; ignored when absent)",
    )
    group.add_argument("--no-config", action="store_true", help="read no config file")
    group.add_argument("--host")
    group.add_argument("--port", type=int)
    group.add_argument("--prefix", help="the topic prefix <p> (default atlas/backup)")
    group.add_argument("--username")
    group.add_argument("--password-file", help="a file whose first line is the password")
    group.add_argument("--tls-ca-file")
    group.add_argument("--tls-cert-file")
    group.add_argument("--tls-key-file")
