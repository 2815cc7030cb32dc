"""The console's calls into KeyManagement: the very servicer gRPC and the JSON API call.

A page calls ``KeyCalls.call("CreateKey", request, principal)``: the servicer
method runs in-process with the caller's principal (the audit trail's "who") and
an HTTP ``CallContext``, so validation, the audit trail and every error are the
same as over gRPC; an error is ``ApiError`` (a gRPC status and the service's
message). Nothing here implements a key operation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from aigw_sidecar.api.v1 import keys_pb2 as keys_pb
from aigw_sidecar.server.admin_auth import acting_as
from aigw_sidecar.server.http_api import CallContext


class KeyCalls:
    """KeyManagement's servicer, called in-process on behalf of a principal."""

    def __init__(self, servicer: object) -> None:
        self._servicer = servicer

    async def call(self, rpc: str, request: Message, principal: str) -> Any:
        """The RPC's response message, or ApiError."""
        with acting_as(principal):
            return await getattr(self._servicer, rpc)(request, CallContext())


@dataclass(frozen=True, slots=True)
class KeyPage:
    keys: list[keys_pb.ApiKey]
    overviews: dict[str, keys_pb.KeyOverview]  # by key id; a key may have none
    next_page_token: str


async def list_keys_with_usage(
    calls: KeyCalls, request: keys_pb.ListKeysRequest, name_contains: str, principal: str
) -> KeyPage:
    """One page of keys with each key's overview, in one call (ListKeys' usage view)."""
    request.name_contains = name_contains
    request.view = keys_pb.KEY_VIEW_WITH_USAGE
    reply = await calls.call("ListKeys", request, principal)
    overviews = {ov.key.key_id: ov for ov in reply.overviews}
    return KeyPage(list(reply.keys), overviews, reply.next_page_token)
