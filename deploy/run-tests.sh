#!/usr/bin/env bash
# Installs what the tests need, starts Incus, and runs the linters and the whole suite.
# Integration tests start their own Mosquitto on a free port and use their own Incus
# project, so this is safe on a host that runs the agent.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

bash deploy/install-deps.sh --tests
bash deploy/start-incus.sh
bash deploy/python-env.sh
# Home Assistant core in its own venv, for tests/integration/test_home_assistant.py.
bash deploy/homeassistant/install-ha.sh
# Node-RED, pinned by its package-lock, for tests/integration/test_node_red.py.
bash deploy/node-red/install-node-red.sh
bash deploy/build-busybox-image.sh atlas-busybox default

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy --strict
exec .venv/bin/pytest "$@"
