#!/usr/bin/env bash
# The SHA-256 of what the Containerfile is built from (the files .containerignore lets
# through), as one hex line. make image records it as the image's label
# io.aigw.source-digest; tests/process/test_container_image.py compares it with the tree,
# so an image built from other sources is reported as stale instead of being tested.
set -euo pipefail
cd "$(dirname "$0")/../.."
find Containerfile pyproject.toml README.md clients/container/sidecar.yaml aigw_sidecar \
     -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
  | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
