"""The console's calls into KeyManagement: the very servicer gRPC and the JSON API call.

A page calls ``KeyCalls.call("CreateKey", request, principal)``: the servicer
method runs in-process with the caller's principal (the audit trail's "who") and
an HTTP ``CallContext``, so validation, the audit trail and every error are the
same as over gRPC; an error is ``ApiError`` (a gRPC status and the service's
message). Nothing here implements a key operation.

Two RPCs are being added elsewhere; the console uses them when the generated
messages have them, and does without otherwise: ``ListKeys`` with
``view=KEY_VIEW_WITH_USAGE`` (and ``name_contains``), else one ``GetKeyOverview``
per key; ``GetKeyUsageHistory``, else no history section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from aigw_sidecar.api.v1 import keys_pb2 as keys_pb
from aigw_sidecar.server.admin_auth import acting_as
from aigw_sidecar.server.http_api import ApiError, CallContext


class KeyCalls:
    """KeyManagement's servicer, called in-process on behalf of a principal."""

    def __init__(self, servicer: object) -> None:
        self._servicer = servicer

    def has(self, rpc: str) -> bool:
        return callable(getattr(self._servicer, rpc, None))

    async def call(self, rpc: str, request: Message, principal: str) -> Any:
        """The RPC's response message, or ApiError."""
        with acting_as(principal):
            return await getattr(self._servicer, rpc)(request, CallContext())


@dataclass(frozen=True, slots=True)
class KeyPage:
    keys: list[keys_pb.ApiKey]
    overviews: dict[str, keys_pb.KeyOverview]  # by key id; a key may have none
    next_page_token: str


def _has_field(message: type[Message], name: str) -> bool:
    return name in message.DESCRIPTOR.fields_by_name


async def list_keys_with_usage(
    calls: KeyCalls, request: keys_pb.ListKeysRequest, name_contains: str, principal: str
) -> KeyPage:
    """One page of keys with each key's overview, in one call when ListKeys can.

    The switch between ListKeys ``view=WITH_USAGE`` and one GetKeyOverview per
    key lives here only. Without ``name_contains`` in ListKeysRequest the name
    filter applies to the page read (a page may then show fewer keys).
    """
    searched_here = bool(name_contains) and not _has_field(
        keys_pb.ListKeysRequest, "name_contains"
    )
    if name_contains and not searched_here:
        request.name_contains = name_contains  # type: ignore[attr-defined]
    if _has_field(keys_pb.ListKeysRequest, "view"):
        view = keys_pb.ListKeysRequest.DESCRIPTOR.fields_by_name["view"].enum_type
        assert view is not None
        with_usage = next(v.number for v in view.values if v.name.endswith("WITH_USAGE"))
        request.view = with_usage  # type: ignore[attr-defined]
        reply = await calls.call("ListKeys", request, principal)
        overviews = {ov.key.key_id: ov for ov in reply.overviews}
    else:
        reply = await calls.call("ListKeys", request, principal)
        overviews = {}
        for key in reply.keys:
            if searched_here and name_contains.casefold() not in key.name.casefold():
                continue
            try:
                got = await calls.call(
                    "GetKeyOverview", keys_pb.GetKeyOverviewRequest(key_id=key.key_id), principal
                )
            except ApiError:
                continue  # deleted since the listing: the row shows no usage
            overviews[key.key_id] = got.overview
    keys = [
        key for key in reply.keys
        if not searched_here or name_contains.casefold() in key.name.casefold()
    ]
    return KeyPage(keys, overviews, reply.next_page_token)


@dataclass(frozen=True, slots=True)
class DayUsage:
    day_s: int  # the UTC day's start
    cost_micro_usd: int
    tokens: int
    requests: int


async def usage_history(
    calls: KeyCalls, key_id: str, days: int, principal: str
) -> list[DayUsage] | None:
    """Usage per UTC day, oldest first; None where GetKeyUsageHistory does not exist."""
    request_class = getattr(keys_pb, "GetKeyUsageHistoryRequest", None)
    if request_class is None or not calls.has("GetKeyUsageHistory"):
        return None
    reply = await calls.call(
        "GetKeyUsageHistory", request_class(key_id=key_id, days=days), principal
    )
    return [
        DayUsage(d.day.seconds, d.cost_micro_usd, d.tokens, d.requests) for d in reply.days
    ]
