#!/usr/bin/env bash
# Installs Node-RED, for tests/integration/test_node_red.py, into its own directory
# (default /opt/atlas-node-red, or $ATLAS_NODE_RED_DIR) with `npm ci` from
# deploy/node-red/package-lock.json: every package at the version locked there. A
# directory already made from the same lock is kept, so a second run takes a second.
#
# Node-RED 4.1 needs Node.js 18.5 or newer (Debian 12 has 18.19; this machine has 20).
# To move the pin: change package.json, then `npm install --package-lock-only` here.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dir=${ATLAS_NODE_RED_DIR:-/opt/atlas-node-red}
lock="$here/package-lock.json"
stamp="$dir/.atlas-lock.sha256"
want=$(sha256sum "$lock" | cut -d' ' -f1)

if [ -x "$dir/node_modules/.bin/node-red" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    exit 0
fi
# Debian 12's own Node.js 18.19 and npm where no Node.js is installed yet.
if ! command -v npm >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm
fi
rm -rf "$dir"
mkdir -p "$dir"
cp "$here/package.json" "$lock" "$dir/"
# Optional native modules (bcrypt, serialport bindings) are not needed headless.
npm ci --prefix "$dir" --no-audit --no-fund --omit=optional --loglevel=error
echo "$want" > "$stamp"
