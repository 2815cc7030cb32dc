"""AccessLogServicer on hand-made batches, with a recording settler (no Envoy)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf.struct_pb2 import Struct

from aigw_sidecar.admission.bodies import Usage
from aigw_sidecar.admission.decision import Estimate, Reservation
from aigw_sidecar.admission.settlement import AdmittedRequest
from aigw_sidecar.api.envoy.v3 import access_log_pb2 as pb
from aigw_sidecar.server.access_log import (
    EXT_AUTHZ_NAMESPACE,
    USAGE_NAMESPACE,
    AccessLogServicer,
    admitted_request,
)

Call = tuple[AdmittedRequest, int | None, Usage | None, bool, str]


class RecordingSettler:
    def __init__(self, fail_on: str = "") -> None:
        self.calls: list[Call] = []
        self.counts: Counter[str] = Counter()
        self.fail_on = fail_on

    async def settle(self, admitted: AdmittedRequest, status: int | None, usage: Usage | None,
                     upstream_started: bool = True, unreadable: str = "") -> None:
        await asyncio.sleep(0)
        if admitted.request_id == self.fail_on:
            raise RuntimeError("store exploded")
        self.calls.append((admitted, status, usage, upstream_started, unreadable))


def entry(
    status: int | None = 200,
    usage: dict[str, Any] | None = None,
    started: bool = True,
    authz: dict[str, Any] | None = None,
    **lua: str,
) -> pb.HTTPAccessLogEntry:
    item = pb.HTTPAccessLogEntry()
    common = item.common_properties
    if authz is not None:
        struct = Struct()
        struct.update(authz)
        common.metadata.filter_metadata[EXT_AUTHZ_NAMESPACE].CopyFrom(struct)
    captured = dict(lua)
    if usage is not None:
        captured["usage"] = json.dumps(usage)
    if captured:
        common.metadata.filter_metadata[USAGE_NAMESPACE].update(captured)
    if started:
        common.time_to_last_upstream_tx_byte.nanos = 1000
    if status is not None:
        item.response.response_code.value = status
    return item


ADMITTED = {"key_id": "key_a", "request_id": "rid.1", "model": "m", "prompt_tokens": 12,
            "max_output_tokens": 50, "reserved_tokens": 62, "reserved_cost_micro_usd": 3}


async def run(*batches: list[pb.HTTPAccessLogEntry],
              settler: RecordingSettler | None = None) -> tuple[RecordingSettler, Any]:
    settler = settler or RecordingSettler()
    servicer = AccessLogServicer(settler)  # type: ignore[arg-type]

    async def requests() -> AsyncIterator[pb.StreamAccessLogsMessage]:
        for batch in batches:
            yield pb.StreamAccessLogsMessage(
                http_logs=pb.StreamAccessLogsMessage.HTTPAccessLogEntries(log_entry=batch)
            )

    reply = await servicer.StreamAccessLogs(requests(), None)
    await servicer.drain()
    assert isinstance(reply, pb.StreamAccessLogsResponse)
    return settler, servicer


def test_the_admitted_request_is_read_back_from_ext_authz_metadata() -> None:
    struct = Struct()
    struct.update(ADMITTED)
    assert admitted_request(struct) == AdmittedRequest(
        "key_a", "rid.1", Estimate("m", 12, 50), Reservation("rid.1", 62, 3)
    )


def test_a_denial_or_a_fail_open_pass_is_not_an_admitted_request() -> None:
    for fields in ({"key_id": "key_a", "deny_reason": "token_limit"}, {"fail_open": True}, {}):
        struct = Struct()
        struct.update(fields)
        assert admitted_request(struct) is None


async def test_every_admitted_entry_of_a_batch_is_settled_with_what_envoy_saw() -> None:
    usage = {"prompt_tokens": 11, "completion_tokens": 5}
    settler, servicer = await run([
        entry(200, usage, authz=ADMITTED, model="m-2024"),
        entry(None, started=True, authz={**ADMITTED, "request_id": "rid.2"}),
        entry(503, started=False, authz={**ADMITTED, "request_id": "rid.3"}),
        entry(200, authz={**ADMITTED, "request_id": "rid.4"}, unreadable="content_encoding"),
    ])
    got = {c[0].request_id: c[1:] for c in settler.calls}
    assert got == {
        "rid.1": (200, Usage(11, 5, 0, "m-2024"), True, ""),
        "rid.2": (None, None, True, ""),
        "rid.3": (503, None, False, ""),
        "rid.4": (200, None, True, "content_encoding"),
    }
    assert servicer.counts["entries"] == 4 and servicer.counts["batches"] == 1


async def test_entries_nobody_admitted_are_never_charged() -> None:
    settler, servicer = await run([
        entry(401, authz={"deny_reason": "key_unknown"}),
        entry(404),  # a direct response: no ext_authz metadata at all
        entry(200, authz={"fail_open": True}),
    ])
    assert settler.calls == []
    assert servicer.counts["not_charged"] == 3


async def test_an_intermediate_entry_of_a_long_stream_is_not_a_settlement() -> None:
    item = entry(200, authz=ADMITTED)
    item.common_properties.intermediate_log_entry = True
    settler, _ = await run([item])
    assert settler.calls == []


async def test_a_failing_settlement_does_not_stop_the_others_or_the_stream() -> None:
    settler = RecordingSettler(fail_on="rid.1")
    settler, servicer = await run(
        [entry(200, authz=ADMITTED), entry(200, authz={**ADMITTED, "request_id": "rid.2"})],
        [entry(200, authz={**ADMITTED, "request_id": "rid.3"})],
        settler=settler,
    )
    assert sorted(c[0].request_id for c in settler.calls) == ["rid.2", "rid.3"]
    assert servicer.counts["settle_errors"] == 1


async def test_an_unreadable_capture_is_settled_without_usage() -> None:
    item = entry(200, authz=ADMITTED)
    item.common_properties.metadata.filter_metadata[USAGE_NAMESPACE].update({"usage": "{oops"})
    settler, _ = await run([item])
    assert [c[2] for c in settler.calls] == [None]
