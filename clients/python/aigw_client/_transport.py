"""The RPCs the clients call, call metadata, and channel construction."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from aigw_client._api.v1 import admission_pb2 as adm_pb
from aigw_client._api.v1 import keys_pb2 as keys_pb

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 5.0
ChannelOptions = Sequence[tuple[str, Any]]


@dataclass(frozen=True, slots=True)
class Rpc:
    path: str
    request: Any  # the request message class
    response: Any  # the response message class
    admin: bool  # KeyManagement: sends the admin token


def _rpcs() -> dict[str, Rpc]:
    found = {}
    for module, service, admin in (
        (adm_pb, "Admission", False),
        (keys_pb, "KeyManagement", True),
    ):
        desc = module.DESCRIPTOR.services_by_name[service]
        for method in desc.methods:
            found[method.name] = Rpc(
                path=f"/{desc.full_name}/{method.name}",
                request=getattr(module, method.input_type.name),
                response=getattr(module, method.output_type.name),
                admin=admin,
            )
    return found


RPCS = _rpcs()


def admin_metadata(admin_token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {admin_token}"),) if admin_token else ()


def tls_credentials(
    root_certificates: bytes | None = None,
    private_key: bytes | None = None,
    certificate_chain: bytes | None = None,
) -> grpc.ChannelCredentials:
    """TLS channel credentials; a key and chain as well make it mutual TLS."""
    return grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)


def token_from_file(path: str) -> str:
    """The first token of a token file: lines ``<token>`` or ``<principal> <token>``."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line.split()[-1]
    raise ValueError(f"admin token file {path} holds no token")


@dataclass(frozen=True, slots=True)
class Connection:
    """Where and how to call, from explicit arguments, else the AIGW_ADMIN_* variables."""

    target: str
    admin_token: str | None
    credentials: grpc.ChannelCredentials | None

    @classmethod
    def resolve(
        cls,
        target: str | None,
        admin_token: str | None,
        credentials: grpc.ChannelCredentials | None,
        env: Mapping[str, str] | None = None,
    ) -> Connection:
        """The same variables as aigw-admin: AIGW_ADMIN_TARGET, AIGW_ADMIN_TOKEN_FILE
        (before AIGW_ADMIN_TOKEN), AIGW_ADMIN_TLS=true and AIGW_ADMIN_TLS_CA_FILE."""
        env = os.environ if env is None else env
        if target is None:
            target = env.get("AIGW_ADMIN_TARGET") or DEFAULT_TARGET
        if admin_token is None:
            token_file = env.get("AIGW_ADMIN_TOKEN_FILE", "")
            admin_token = token_from_file(token_file) if token_file else (
                env.get("AIGW_ADMIN_TOKEN") or None
            )
        if credentials is None:
            ca_file = env.get("AIGW_ADMIN_TLS_CA_FILE", "")
            if ca_file or env.get("AIGW_ADMIN_TLS", "").lower() in ("1", "true"):
                root = Path(ca_file).read_bytes() if ca_file else None
                credentials = tls_credentials(root)
        return cls(target, admin_token, credentials)
