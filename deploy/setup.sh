#!/usr/bin/env bash
# Sets up atlas-backup on Debian 12 as root and runs the agent in the foreground:
# system packages, Incus (started when not running), Mosquitto with the project's
# broker settings, the Python environment, and, when no configuration exists yet, a demo
# Atlas stack with a configuration that points at it.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
config=${ATLAS_CONFIG:-/etc/atlas-backup/config.toml}
passphrase=${ATLAS_PASSPHRASE_FILE:-$(dirname "$config")/passphrase}

bash "$repo/deploy/install-deps.sh"
bash "$repo/deploy/start-incus.sh"
bash "$repo/deploy/start-mosquitto.sh"
bash "$repo/deploy/python-env.sh"

if [ ! -f "$config" ]; then
    bash "$repo/deploy/demo-stack.sh" atlas-demo local
    install -d -m 0700 "$(dirname "$config")" /backup/atlas /var/lib/atlas-backup
    # step-ca is critical: its exports are always encrypted, so the demo needs a key.
    if [ ! -s "$passphrase" ]; then
        (umask 077 && head -c 32 /dev/urandom | base64 > "$passphrase")
    fi
    chmod 0600 "$passphrase"
    {
        sed "s|@PROJECT@|atlas-demo|" "$repo/deploy/config.example.toml"
        printf '\n[encryption]\n# Written by setup.sh for the demo: exports are encrypted with it (gpg --symmetric).\n'
        printf 'passphrase_file = "%s"\n' "$passphrase"
    } > "$config"
    chmod 0600 "$config"
    echo "setup: wrote $config for the demo stack in Incus project atlas-demo"
    echo "setup: exports are encrypted with the passphrase in $passphrase (0600);" \
        "keep a copy elsewhere: without it the encrypted backups cannot be read"
fi

exec "$repo/.venv/bin/atlas-backup" agent --config "$config"
