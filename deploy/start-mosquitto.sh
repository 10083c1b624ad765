#!/usr/bin/env bash
# Installs the broker drop-in and makes sure Mosquitto runs with it.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
install -m 0644 "$here/mosquitto/atlas-backup.conf" /etc/mosquitto/conf.d/atlas-backup.conf
install -d -o mosquitto -g mosquitto /run/mosquitto /var/lib/mosquitto /var/log/mosquitto

if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
    systemctl restart mosquitto
else
    if [ -f /run/mosquitto/mosquitto.pid ] && kill -0 "$(cat /run/mosquitto/mosquitto.pid)" 2>/dev/null; then
        kill "$(cat /run/mosquitto/mosquitto.pid)"
        sleep 0.5
    fi
    mosquitto -d -c /etc/mosquitto/mosquitto.conf
fi
for _ in $(seq 1 40); do
    mosquitto_pub -h 127.0.0.1 -p 1883 -t atlas/backup/setup-check -n -q 1 2>/dev/null && exit 0
    sleep 0.25
done
echo "start-mosquitto: the broker does not answer on 127.0.0.1:1883" >&2
exit 1
