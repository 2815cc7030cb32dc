"""ExtProcServicer on hand-made message sequences, with a recording settler (no Envoy)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf.struct_pb2 import Struct

from aigw_sidecar.admission.settlement import AdmittedRequest
from aigw_sidecar.admission.usage_stream import Usage
from aigw_sidecar.api.envoy.v3 import ext_authz_pb2 as authz
from aigw_sidecar.api.envoy.v3 import ext_proc_pb2 as pb
from aigw_sidecar.server.ext_proc import (
    EXT_AUTHZ_NAMESPACE,
    ExtProcOptions,
    ExtProcServicer,
    admitted_request,
)


class RecordingSettler:
    def __init__(self) -> None:
        self.calls: list[tuple[AdmittedRequest, int | None, Usage | None]] = []
        self.counts: Counter[str] = Counter()

    async def settle(self, admitted: AdmittedRequest, status: int | None,
                     usage: Usage | None) -> None:
        self.calls.append((admitted, status, usage))


def metadata(**fields: Any) -> pb.Metadata:
    struct = Struct()
    struct.update({"key_id": "key_a", "request_id": "rid.1", **fields})
    return pb.Metadata(filter_metadata={EXT_AUTHZ_NAMESPACE: struct})


def headers(**values: str) -> authz.HeaderMap:
    return authz.HeaderMap(headers=[
        authz.HeaderValue(key=k.replace("_", "-").replace("status", ":status"),
                          raw_value=v.encode())
        for k, v in values.items()
    ])


async def run(messages: list[pb.ProcessingRequest]) -> tuple[list[Any], RecordingSettler]:
    settler = RecordingSettler()
    servicer = ExtProcServicer(settler, ExtProcOptions())  # type: ignore[arg-type]

    async def requests() -> AsyncIterator[pb.ProcessingRequest]:
        for message in messages:
            yield message

    replies = [reply async for reply in servicer.Process(requests(), None)]
    await servicer.drain()
    await asyncio.sleep(0)
    return replies, settler


async def test_a_local_reply_is_answered_and_never_settled() -> None:
    replies, settler = await run([
        pb.ProcessingRequest(response_headers=pb.HttpHeaders(headers=headers(status="429"))),
        pb.ProcessingRequest(response_body=pb.HttpBody(body=b"{}", end_of_stream=True)),
    ])
    assert [r.WhichOneof("response") for r in replies] == ["response_headers", "response_body"]
    assert settler.calls == []


async def test_a_json_answer_is_settled_once_with_its_usage() -> None:
    body = b'{"model": "m", "usage": {"prompt_tokens": 3, "completion_tokens": 4}}'
    replies, settler = await run([
        pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=headers(x_request_id="r")),
                             metadata_context=metadata()),
        pb.ProcessingRequest(response_headers=pb.HttpHeaders(
            headers=headers(status="200", content_type="application/json"))),
        pb.ProcessingRequest(response_body=pb.HttpBody(body=body[:10])),
        pb.ProcessingRequest(response_body=pb.HttpBody(body=body[10:], end_of_stream=True)),
    ])
    assert len(replies) == 4
    [(admitted, status, usage)] = settler.calls
    assert (admitted.key_id, admitted.request_id, status) == ("key_a", "rid.1", 200)
    assert usage == Usage(3, 4, 0, "m")


async def test_a_stream_cut_after_its_headers_is_settled_without_usage() -> None:
    _, settler = await run([
        pb.ProcessingRequest(request_headers=pb.HttpHeaders(), metadata_context=metadata()),
        pb.ProcessingRequest(response_headers=pb.HttpHeaders(
            headers=headers(status="200", content_type="text/event-stream"))),
        pb.ProcessingRequest(response_body=pb.HttpBody(body=b'data: {"choices": []}\n\n')),
    ])
    assert [(status, usage) for _, status, usage in settler.calls] == [(200, None)]


async def test_a_streaming_request_body_is_replaced_with_its_length() -> None:
    replies, _ = await run([
        pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=headers(content_length="16")),
                             metadata_context=metadata()),
        pb.ProcessingRequest(request_body=pb.HttpBody(body=b'{"stream": true}',
                                                      end_of_stream=True)),
    ])
    common = replies[1].request_body.response
    assert common.body_mutation.body == b'{"stream":true,"stream_options":{"include_usage":true}}'
    length = common.header_mutation.set_headers[0].header
    assert (length.key, length.raw_value) == ("content-length", b"55")


async def test_a_request_without_a_key_turns_reading_off() -> None:
    replies, settler = await run([pb.ProcessingRequest(request_headers=pb.HttpHeaders())])
    assert replies[0].mode_override.response_body_mode == pb.ProcessingMode.NONE
    assert settler.calls == []


async def test_a_large_request_body_is_not_read() -> None:
    replies, _ = await run([pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(headers=headers(content_length=str(10**7))),
        metadata_context=metadata(),
    )])
    mode = replies[0].mode_override
    assert (mode.request_body_mode, mode.response_header_mode, mode.response_body_mode) == (
        pb.ProcessingMode.NONE, pb.ProcessingMode.SKIP, pb.ProcessingMode.NONE
    )


async def test_observability_mode_gets_no_replies() -> None:
    replies, _ = await run([pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(), metadata_context=metadata(), observability_mode=True
    )])
    assert replies == []


def test_a_denial_in_the_metadata_is_not_an_admitted_request() -> None:
    denied = Struct()
    denied.update({"key_id": "key_a", "deny_reason": "token_limit"})
    assert admitted_request(denied) is None
    assert admitted_request(Struct()) is None


def test_the_estimate_and_reservation_are_read_back_from_the_metadata() -> None:
    struct = metadata(model="m", prompt_tokens=7, max_output_tokens=300,
                      reserved_tokens=307, reserved_cost_micro_usd=9).filter_metadata
    admitted = admitted_request(struct[EXT_AUTHZ_NAMESPACE])
    assert admitted is not None
    assert admitted.estimate is not None and admitted.estimate.tokens == 307
    assert admitted.reservation is not None
    assert (admitted.reservation.tokens, admitted.reservation.cost_micro_usd) == (307, 9)


async def test_the_request_filters_stream_rewrites_but_never_settles() -> None:
    _, settler = await run([
        pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=headers(content_length="16")),
                             metadata_context=metadata()),
        pb.ProcessingRequest(request_body=pb.HttpBody(body=b'{"stream": true}',
                                                      end_of_stream=True)),
    ])
    assert settler.calls == []


async def test_the_usage_filters_stream_settles_without_replying() -> None:
    body = b'{"model": "m", "usage": {"prompt_tokens": 3, "completion_tokens": 4}}'
    replies, settler = await run([
        pb.ProcessingRequest(request_headers=pb.HttpHeaders(), metadata_context=metadata(),
                             observability_mode=True),
        pb.ProcessingRequest(response_headers=pb.HttpHeaders(
            headers=headers(status="200", content_type="application/json")),
            observability_mode=True),
        pb.ProcessingRequest(response_body=pb.HttpBody(body=body, end_of_stream=True),
                             observability_mode=True),
    ])
    assert replies == []
    [(_admitted, status, usage)] = settler.calls
    assert (status, usage) == (200, Usage(3, 4, 0, "m"))


async def test_a_usage_stream_reset_before_any_response_settles_without_usage() -> None:
    _, settler = await run([
        pb.ProcessingRequest(request_headers=pb.HttpHeaders(), metadata_context=metadata(),
                             observability_mode=True),
    ])
    assert [(status, usage) for _, status, usage in settler.calls] == [(None, None)]


async def test_a_request_cut_while_its_body_is_buffered_is_released() -> None:
    _, settler = await run([
        pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=headers(content_length="99")),
                             metadata_context=metadata()),
        pb.ProcessingRequest(request_body=pb.HttpBody(body=b'{"stream": tr')),  # then reset
    ])
    assert [(status, usage) for _, status, usage in settler.calls] == [(None, None)]
