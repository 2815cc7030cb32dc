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

MAX_PAGE_SIZE = 500  # ListKeys' largest page
# Fields another branch adds to ListKeys; named here, not typed, so this module reads
# the same before and after the generated code has them.
VIEW, OVERVIEWS, NAME_CONTAINS = "view", "overviews", "name_contains"


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
    filter is applied here, reading on through the listing (500 keys a call)
    until a page's worth of keys match.
    """
    wanted = request.page_size
    if name_contains and not _has_field(keys_pb.ListKeysRequest, NAME_CONTAINS):
        request.page_size = MAX_PAGE_SIZE
        keys: list[keys_pb.ApiKey] = []
        while True:
            reply = await calls.call("ListKeys", request, principal)
            keys += [k for k in reply.keys if name_contains.casefold() in k.name.casefold()]
            if len(keys) >= wanted or not reply.next_page_token:
                break
            request.page_token = reply.next_page_token
        return KeyPage(keys, await _overviews(calls, keys, principal), reply.next_page_token)
    if name_contains:
        search: dict[str, Any] = {NAME_CONTAINS: name_contains}
        request.MergeFrom(keys_pb.ListKeysRequest(**search))
    if not _has_field(keys_pb.ListKeysRequest, VIEW):
        reply = await calls.call("ListKeys", request, principal)
        keys = list(reply.keys)
        return KeyPage(keys, await _overviews(calls, keys, principal), reply.next_page_token)
    view = keys_pb.ListKeysRequest.DESCRIPTOR.fields_by_name[VIEW].enum_type
    assert view is not None
    with_usage = next(v.number for v in view.values if v.name.endswith("WITH_USAGE"))
    fields: dict[str, Any] = {VIEW: with_usage}
    request.MergeFrom(keys_pb.ListKeysRequest(**fields))
    reply = await calls.call("ListKeys", request, principal)
    overviews = {ov.key.key_id: ov for ov in getattr(reply, OVERVIEWS)}
    return KeyPage(list(reply.keys), overviews, reply.next_page_token)


async def _overviews(
    calls: KeyCalls, keys: list[keys_pb.ApiKey], principal: str
) -> dict[str, keys_pb.KeyOverview]:
    """GetKeyOverview per key (without ListKeys' usage view)."""
    found = {}
    for key in keys:
        try:
            reply = await calls.call(
                "GetKeyOverview", keys_pb.GetKeyOverviewRequest(key_id=key.key_id), principal
            )
        except ApiError:
            continue  # deleted since the listing: the row shows no usage
        found[key.key_id] = reply.overview
    return found


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
