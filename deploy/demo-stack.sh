#!/usr/bin/env bash
# Creates the demo Atlas stack: the runbook's six services as busybox containers, each
# with its custom volume mounted at /data holding a little data, in their own project.
# Usage: demo-stack.sh [PROJECT] [POOL]   (idempotent)
set -euo pipefail

project=${1:-atlas-demo}
pool=${2:-local}
here=$(cd "$(dirname "$0")" && pwd)

bash "$here/build-busybox-image.sh" atlas-busybox default

if ! incus project show "$project" >/dev/null 2>&1; then
    incus project create "$project" \
        -c features.images=false -c features.profiles=false -c features.storage.volumes=true
fi

for service in grafana prometheus loki step-ca alertmanager mosquitto; do
    instance="${service}01"
    volume="${instance}-data"
    if ! incus storage volume show "$pool" "$volume" --project "$project" >/dev/null 2>&1; then
        incus storage volume create "$pool" "$volume" --project "$project"
    fi
    if ! incus info "$instance" --project "$project" >/dev/null 2>&1; then
        incus launch atlas-busybox "$instance" --project "$project"
        incus storage volume attach "$pool" "$volume" "$instance" /data --project "$project"
        incus exec "$instance" --project "$project" -- sh -c \
            "echo 'demo data of $service, created $(date -u +%FT%TZ)' > /data/README"
    fi
    incus start "$instance" --project "$project" 2>/dev/null || true
done
incus list --project "$project"
