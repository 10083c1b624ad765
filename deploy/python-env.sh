#!/usr/bin/env bash
# Creates the project's virtual environment in .venv and installs it with its test tools,
# every package at the version pinned in constraints.txt (deploy/lock-deps.sh makes it).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -x "$repo/.venv/bin/python" ]; then
    python3 -m venv "$repo/.venv"
fi
"$repo/.venv/bin/pip" install -q --disable-pip-version-check \
    -c "$repo/constraints.txt" -e "$repo[dev]"
