#!/usr/bin/env bash
# Builds a tiny container image from Debian's busybox-static and imports it into Incus
# under the alias given (default atlas-busybox). Used by the demo stack and the tests.
# Usage: build-busybox-image.sh [ALIAS] [PROJECT]
set -euo pipefail

alias=${1:-atlas-busybox}
project=${2:-default}

if incus image info "$alias" --project "$project" >/dev/null 2>&1; then
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
mkdir -p "$rootfs"/{bin,sbin,etc,proc,sys,dev,tmp,root,data,run,var/log}
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $("$rootfs/bin/busybox" --list); do
    [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
# PID 1 exits on the signals Incus sends for a clean stop (SIGPWR) or a shutdown.
cat > "$rootfs/sbin/init" <<'INIT'
#!/bin/sh
trap 'exit 0' PWR TERM INT
while :; do sleep 3600 & wait $!; done
INIT
chmod 0755 "$rootfs/sbin/init"
echo "root:x:0:0:root:/root:/bin/sh" > "$rootfs/etc/passwd"
echo "root:x:0:" > "$rootfs/etc/group"
cat > "$work/metadata.yaml" <<META
architecture: $(uname -m)
creation_date: $(date +%s)
properties:
  description: busybox-static test image for atlas-backup
  os: busybox
  release: static
META
tar -C "$work" -czf "$work/metadata.tar.gz" metadata.yaml
tar -C "$rootfs" -czf "$work/rootfs.tar.gz" .
incus image import "$work/metadata.tar.gz" "$work/rootfs.tar.gz" --alias "$alias" --project "$project"
