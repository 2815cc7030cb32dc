"""Listeners: which addresses count as local, and TLS/mTLS server credentials."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import grpc


def is_local_address(address: str) -> bool:
    """True for a unix socket path or a loopback host; ``0.0.0.0`` and ``[::]`` are not.

    An abstract unix socket (``unix-abstract:``) is not: it has no file, so no
    permissions, and every local user (``nobody`` included) can connect to it.
    """
    if address.startswith("unix-abstract:"):
        return False
    if address.startswith("unix:"):
        return True
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_credentials(
    cert_file: str, key_file: str, client_ca_file: str = ""
) -> grpc.ServerCredentials | None:
    """TLS credentials from PEM files, or None (plaintext) when no certificate is set.

    With ``client_ca_file`` every client must present a certificate it signed (mTLS).
    """
    if not cert_file and not key_file:
        if client_ca_file:
            raise RuntimeError("a client CA (mTLS) needs a server certificate and key as well")
        return None
    if not (cert_file and key_file):
        raise RuntimeError("TLS needs both a certificate file and a key file")
    try:
        pair = (Path(key_file).read_bytes(), Path(cert_file).read_bytes())
        client_ca = Path(client_ca_file).read_bytes() if client_ca_file else None
    except OSError as exc:
        raise RuntimeError(f"cannot read TLS file: {exc}") from None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def bind(server: grpc.aio.Server, address: str, creds: grpc.ServerCredentials | None) -> int:
    """Add a listening port; returns the bound port (for unix sockets, 1)."""
    try:
        if creds is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, creds)
    except RuntimeError as exc:
        raise RuntimeError(f"could not listen on {address}: {exc}") from None
    if port == 0:
        raise RuntimeError(f"could not listen on {address}")
    return int(port)
