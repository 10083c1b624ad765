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

# The agent's own user, as deploy/systemd/atlas-backup.service runs it: in `incus-admin`,
# the group Debian's incus package gives the Incus socket; it owns the state and backups.
user=atlas-backup
getent group incus-admin >/dev/null || groupadd --system incus-admin
if ! id "$user" >/dev/null 2>&1; then
    useradd --system --user-group --home-dir /var/lib/atlas-backup --no-create-home \
        --shell /usr/sbin/nologin "$user"
fi
usermod -a -G incus-admin "$user"
install -d -m 0700 -o "$user" -g "$user" /var/lib/atlas-backup /backup/atlas
install -d -m 0750 -o root -g "$user" "$(dirname "$config")"

if [ ! -f "$config" ]; then
    bash "$repo/deploy/demo-stack.sh" atlas-demo local
    # step-ca is critical: its exports are always encrypted, so the demo needs a key.
    if [ ! -s "$passphrase" ]; then
        (umask 077 && head -c 32 /dev/urandom | base64 > "$passphrase")
    fi
    # Readable by the agent's user alone (0600), as the systemd unit runs it.
    chown "$user:$user" "$passphrase"
    chmod 0600 "$passphrase"
    {
        sed "s|@PROJECT@|atlas-demo|" "$repo/deploy/config.example.toml"
        printf '\n[encryption]\n# Written by setup.sh for the demo: exports are encrypted with it (gpg --symmetric).\n'
        printf 'passphrase_file = "%s"\n' "$passphrase"
        # The six services with drill health checks that the busybox containers pass.
        cat "$repo/deploy/demo-services.toml"
    } > "$config"
    echo "setup: wrote $config for the demo stack in Incus project atlas-demo"
    echo "setup: exports are encrypted with the passphrase in $passphrase (0600);" \
        "keep a copy elsewhere: without it the encrypted backups cannot be read"
fi
chown root:"$user" "$config"
chmod 0640 "$config"
# A run as root before (an older setup) leaves files the user could not open.
chown -R "$user:$user" /var/lib/atlas-backup /backup/atlas

# Run as the user when it can reach Incus and this checkout: an incusd started with
# `--group root` (as deploy/start-incus.sh does where no service manager runs) keeps
# the socket from `incus-admin`, and a checkout under /root is closed to other users.
as_user=(setpriv --reuid="$user" --regid="$user" --init-groups --no-new-privs)
socket=/var/lib/incus/unix.socket
if "${as_user[@]}" test -r "$socket" -a -w "$socket" \
    && "${as_user[@]}" "$repo/.venv/bin/python" -c "" 2>/dev/null; then
    exec "${as_user[@]}" "$repo/.venv/bin/atlas-backup" agent --config "$config"
fi
echo "setup: $user cannot use $socket (group $(stat -c %G "$socket")) or this checkout;" \
    "running the agent as root (the systemd unit runs it as $user)" >&2
exec "$repo/.venv/bin/atlas-backup" agent --config "$config"
