#!/usr/bin/env bash
# Installs Home Assistant core, for the tests that run it against the agent, into its own
# virtual environment (default /opt/atlas-ha-venv, or $ATLAS_HA_VENV): every package at the
# version pinned in deploy/homeassistant/constraints.txt. A venv already made from the same
# constraints is kept, so a second run takes a second.
#
# 2024.3 is the newest Home Assistant that installs on Debian 12's Python 3.11 (2024.4
# needs 3.12). constraints.txt is `pip freeze` of an install made with Home Assistant's own
# homeassistant/package_constraints.txt; pip's resolver backtracks for long without it.
# josepy is held at 1.14.0: 2.x dropped what acme (under hass-nabucasa) imports.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
venv=${ATLAS_HA_VENV:-/opt/atlas-ha-venv}
constraints="$here/constraints.txt"
stamp="$venv/.atlas-constraints.sha256"
want=$(sha256sum "$constraints" | cut -d' ' -f1)

if [ -x "$venv/bin/hass" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    exit 0
fi
rm -rf "$venv"
python3 -m venv "$venv"
# Home Assistant and the requirements of the integrations it sets up: MQTT (paho-mqtt) and
# its defaults: frontend (critical: without it Home Assistant starts in recovery mode),
# image_upload, hardware, backup, file_upload, and analytics' recorder and camera imports.
# With them here it runs with --skip-pip and never installs anything at start.
"$venv/bin/pip" install -q --disable-pip-version-check -c "$constraints" \
    homeassistant paho-mqtt home-assistant-frontend Pillow psutil-home-assistant securetar \
    janus SQLAlchemy fnv-hash-fast numpy PyTurboJPEG
echo "$want" > "$stamp"
