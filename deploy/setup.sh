#!/usr/bin/env bash
# Sets up atlas-backup on Debian 12 as root and runs the agent in the foreground:
# system packages, Incus (started when not running), Mosquitto with the project's
# broker settings, the Python environment, and, when no configuration exists yet, a demo
# Atlas stack with a configuration that points at it.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
config=${ATLAS_CONFIG:-/etc/atlas-backup/config.toml}

bash "$repo/deploy/install-deps.sh"
bash "$repo/deploy/start-incus.sh"
bash "$repo/deploy/start-mosquitto.sh"
bash "$repo/deploy/python-env.sh"

if [ ! -f "$config" ]; then
    bash "$repo/deploy/demo-stack.sh" atlas-demo local
    install -d -m 0700 "$(dirname "$config")" /backup/atlas /var/lib/atlas-backup
    sed "s|@PROJECT@|atlas-demo|" "$repo/deploy/config.example.toml" > "$config"
    chmod 0600 "$config"
    echo "setup: wrote $config for the demo stack in Incus project atlas-demo"
fi

exec "$repo/.venv/bin/atlas-backup" agent --config "$config"
