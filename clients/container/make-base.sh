#!/usr/bin/env bash
# The base image of the Containerfile, made here instead of pulled (no image registry is
# reachable): a Debian bookworm minbase root filesystem from debootstrap, with python3,
# python3-venv and ca-certificates, imported into podman's storage as $BASE_IMAGE.
#
#   clients/container/make-base.sh            # makes localhost/aigw-base:bookworm if missing
#   FORCE=1 clients/container/make-base.sh    # makes it again
#
# The Debian mirror is the one this machine's apt uses (its first URIs:/deb line of the
# main archive), else debootstrap's default; MIRROR=... overrides it. Needs root,
# debootstrap and podman.
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-localhost/aigw-base:bookworm}
SUITE=${SUITE:-bookworm}
PODMAN=${PODMAN:-podman}
PACKAGES=python3,python3-venv,ca-certificates

if [ -z "${FORCE:-}" ] && $PODMAN image exists "$BASE_IMAGE"; then
  echo "$BASE_IMAGE is there (FORCE=1 makes it again)"
  exit 0
fi

mirror() {
  local uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list)
  fi
  echo "$uri"
}
MIRROR=${MIRROR:-$(mirror)}

for tool in debootstrap "$PODMAN"; do
  command -v "$tool" >/dev/null || { echo "$tool missing: apt-get install -y debootstrap podman" >&2; exit 1; }
done

rootfs=$(mktemp -d /var/tmp/aigw-base.XXXXXX)
trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT

echo "debootstrap $SUITE (minbase + $PACKAGES) from ${MIRROR:-the default mirror of debootstrap}"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" ${MIRROR:+"$MIRROR"} >"$rootfs.log" 2>&1 \
  || { tail -20 "$rootfs.log" >&2; exit 1; }

# What an image needs no copy of: downloaded packages, package lists, manuals, translations.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
       "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
       "$rootfs"/var/log/*.log "$rootfs"/var/cache/debconf/*-old

tar --numeric-owner -C "$rootfs" -c . \
  | $PODMAN import --quiet --change 'CMD ["/bin/bash"]' \
      --message "debootstrap $SUITE minbase + $PACKAGES" - "$BASE_IMAGE" >/dev/null
echo "made $BASE_IMAGE"
