#!/usr/bin/env bash
# Starts incusd when it is not answering, and gives it a `dir` pool and a root disk.
# Idempotent: safe to run on a host where Incus is already set up.
set -euo pipefail

pool=${ATLAS_INCUS_POOL:-local}

if ! incus version >/dev/null 2>&1 || ! incus info >/dev/null 2>&1; then
    if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
        systemctl start incus.socket incus.service || true
    fi
    if ! incus info >/dev/null 2>&1; then
        mkdir -p /var/log/incus
        # From /, with a plain PATH, as a service manager would start it: the daemon and
        # the tools it runs (rsync, tar) must not inherit a caller's folder or virtualenv.
        (cd / && PATH=/usr/sbin:/usr/bin:/sbin:/bin nohup /usr/libexec/incus/incusd --group root \
            >>/var/log/incus/incusd.out 2>&1 &)
    fi
    for _ in $(seq 1 60); do
        incus info >/dev/null 2>&1 && break
        sleep 0.5
    done
fi
if ! incus info >/dev/null 2>&1; then
    echo "start-incus: incusd did not answer; see /var/log/incus/incusd.out" >&2
    exit 1
fi

if ! incus storage show "$pool" >/dev/null 2>&1; then
    incus storage create "$pool" dir
fi
if ! incus profile device show default | grep -q '^root:'; then
    incus profile device add default root disk path=/ pool="$pool"
fi
