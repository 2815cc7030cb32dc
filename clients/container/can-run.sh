#!/usr/bin/env bash
# Whether podman can run a container on this machine, before any image exists: it runs
# /usr/bin/true in a throwaway root filesystem holding the host's true and its libraries.
# Exit 0 when it can; else one line saying why, and exit 1. Uses the podman settings in
# CONTAINERS_CONF (make image-can-run passes clients/container/containers.conf).
set -uo pipefail

if ! command -v podman >/dev/null 2>&1; then
  echo "podman not installed: apt-get install podman"
  exit 1
fi
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
for file in /usr/bin/true $(ldd /usr/bin/true 2>/dev/null | grep -o '/[^ ]*'); do
  mkdir -p "$rootfs$(dirname "$file")" && cp -L "$file" "$rootfs$file" \
    || { echo "cannot probe podman: cannot copy $file"; exit 1; }
done
if ! out=$(podman run --rm --network=host --rootfs "$rootfs" /usr/bin/true 2>&1); then
  echo "podman cannot run containers here: $(printf '%s\n' "$out" | grep . | tail -n 1)"
  exit 1
fi
