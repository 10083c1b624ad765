#!/usr/bin/env bash
# Installs the system packages atlas-backup needs on Debian 12 (bookworm), as root.
# Incus comes from bookworm-backports; the mirror URI is taken from the machine's own
# debian.sources so that no host name is written into this repository.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

backports_list=/etc/apt/sources.list.d/atlas-backup-backports.sources

add_backports() {
    if grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        return
    fi
    local uri
    uri=$(awk '/^URIs:/ && !/security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    if [ -z "$uri" ]; then
        uri=$(awk '/^deb / && !/security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    fi
    if [ -z "$uri" ]; then
        echo "install-deps: cannot find the Debian mirror URI in debian.sources or sources.list" >&2
        exit 1
    fi
    cat > "$backports_list" <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
}

add_backports
apt-get update -q
apt-get install -y -q --no-install-recommends \
    mosquitto mosquitto-clients gnupg busybox-static zstd python3-venv sqlite3 ca-certificates
apt-get install -y -q -t bookworm-backports --no-install-recommends incus-base incus-client

# With --tests: Prometheus, for promtool (the alert rules' tests) and the server the
# integration tests start on a free port. Debian's package would start and enable a
# Prometheus of its own on :9090; a fresh install here does neither (policy-rc.d 101:
# "do not start", removed again however the install ends).
if [ "${1:-}" = "--tests" ] && ! dpkg -s prometheus >/dev/null 2>&1; then
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        trap 'rm -f "$policy"' EXIT
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 0755 "$policy"
    fi
    apt-get install -y -q --no-install-recommends prometheus
    if command -v deb-systemd-helper >/dev/null 2>&1; then
        deb-systemd-helper disable prometheus.service >/dev/null 2>&1 || true
    fi
fi
