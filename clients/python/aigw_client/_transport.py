"""The RPCs the clients call, call metadata, and channel construction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
