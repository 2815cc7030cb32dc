"""Vendored copies of aigw-sidecar's generated protobuf modules (see ../README.md)."""
