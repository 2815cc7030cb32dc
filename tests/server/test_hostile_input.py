"""Hostile input: random fields on every RPC, raw bytes, huge messages, unknown-key floods.

Properties, over an in-process sidecar on the session's Valkey:
only documented statuses come back, the server keeps answering, a refused call
writes nothing, and an unknown key costs at most one store round trip
(malformed ones none), counted with Redis ``INFO commandstats``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from aigw_sidecar.api.envoy.v3 import ext_authz_pb2 as authz
from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1 import keys_pb2 as kpb
from aigw_sidecar.keys import secrets
from aigw_sidecar.server.ext_authz import CHECK_METHOD, MAX_KEY_HEADER_BYTES
from tests.conftest import Stubs
from tests.snapshots import snapshot

CODE = grpc.StatusCode
FUZZ = settings(
    max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Text with control characters, surrogate-free unicode, and now and then something long.
hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x1F), max_size=10),
    st.text(min_size=1, max_size=3).map(lambda s: s * 4000),
    st.sampled_from(["sk-aigw-", "Bearer ", "key_", "a,b", " ", "\x00", "é" * 600]),
)
big_int = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-5, 5))


@pytest.fixture
async def store_client(valkey_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(valkey_url, decode_responses=True)
    yield client
    await client.aclose()


async def _status(call: Any) -> CODE:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        assert err.code() != CODE.INTERNAL, err.details()
        return err.code()
    return CODE.OK


@FUZZ
@given(secret=hostile_text, request_id=hostile_text, model=hostile_text,
       prompt=big_int, output=big_int)
async def test_any_authorize_is_a_decision_or_invalid_argument_and_writes_nothing(
    grpc_stubs: Stubs, store_client: Redis, key_prefix: str,
    secret: str, request_id: str, model: str, prompt: int, output: int,
) -> None:
    before = await snapshot(store_client, key_prefix)
    request = adm.AuthorizeRequest(
        secret=secret, request_id=request_id,
        estimate=adm.Estimate(model=model, prompt_tokens=prompt, max_output_tokens=output),
    )
    code = await _status(grpc_stubs.admission.Authorize(request, timeout=10))
    assert code in (CODE.OK, CODE.INVALID_ARGUMENT)
    assert await snapshot(store_client, key_prefix) == before


@FUZZ
@given(key_id=st.one_of(hostile_text, st.just("real")), request_id=hostile_text,
       prompt=big_int, completion=big_int, cost=big_int, cost_usd=hostile_text)
async def test_any_usage_report_is_counted_or_refused_without_a_write(
    grpc_stubs: Stubs, store_client: Redis, key_prefix: str,
    key_id: str, request_id: str, prompt: int, completion: int, cost: int, cost_usd: str,
) -> None:
    real = await grpc_stubs.keys.CreateKey(
        kpb.CreateKeyRequest(name=f"k{secrets.new_key_id()}"), timeout=10
    )
    before = await snapshot(store_client, key_prefix)
    request = adm.RecordUsageRequest(
        key_id=real.key.key_id if key_id == "real" else key_id, request_id=request_id,
        prompt_tokens=prompt, completion_tokens=completion,
    )
    if cost_usd:
        request.cost_usd = cost_usd
    else:
        request.cost_micro_usd = cost
    code = await _status(grpc_stubs.admission.RecordUsage(request, timeout=10))
    assert code in (CODE.OK, CODE.INVALID_ARGUMENT, CODE.NOT_FOUND)
    if code != CODE.OK:
        assert await snapshot(store_client, key_prefix) == before


@FUZZ
@given(name=hostile_text, workspace=hostile_text, project=hostile_text,
       labels=st.dictionaries(hostile_text, hostile_text, max_size=4),
       cost_usd=hostile_text, tokens=big_int, rpm=big_int)
async def test_any_create_key_is_created_or_refused_without_a_trace(
    grpc_stubs: Stubs, store_client: Redis, key_prefix: str, name: str, workspace: str,
    project: str, labels: dict[str, str], cost_usd: str, tokens: int, rpm: int,
) -> None:
    before = await snapshot(store_client, key_prefix)
    request = kpb.CreateKeyRequest(
        name=name, workspace=workspace, project=project, labels=labels,
        limits=kpb.Limits(cost_limit_usd=cost_usd, token_limit=tokens, requests_per_minute=rpm),
    )
    code = await _status(grpc_stubs.keys.CreateKey(request, timeout=10))
    assert code in (CODE.OK, CODE.INVALID_ARGUMENT, CODE.ALREADY_EXISTS)
    if code != CODE.OK:
        assert await snapshot(store_client, key_prefix) == before


header_name = st.one_of(
    st.sampled_from(["authorization", "x-api-key", "api-key"]), hostile_text
)


@FUZZ
@given(headers=st.dictionaries(header_name, hostile_text, max_size=6),
       repeat=st.integers(0, 3))
async def test_any_check_request_gets_an_http_answer_never_an_rpc_error(
    grpc_stubs: Stubs, store_client: Redis, key_prefix: str,
    headers: dict[str, str], repeat: int,
) -> None:
    for name in list(headers)[:1]:
        headers[name] = ",".join([headers[name]] * (repeat + 1))  # Envoy joins repeats with ","
    request = authz.CheckRequest(attributes=authz.AttributeContext(
        request=authz.AttributeContext.Request(
            http=authz.AttributeContext.HttpRequest(headers=headers)
        )
    ))
    before = await snapshot(store_client, key_prefix)
    check = grpc_stubs.channel.unary_unary(
        CHECK_METHOD, request_serializer=authz.CheckRequest.SerializeToString,
        response_deserializer=authz.CheckResponse.FromString,
    )
    try:
        reply = await check(request, timeout=10)
    except grpc.aio.AioRpcError as err:
        # Only a message past --max-request-bytes is refused as such.
        assert err.code() == CODE.RESOURCE_EXHAUSTED
        return
    assert reply.denied_response.status.code in (401, 403, 429)
    assert await snapshot(store_client, key_prefix) == before


RAW_METHODS = [
    "/aigw.v1.Admission/Authorize", "/aigw.v1.Admission/RecordUsage",
    "/aigw.v1.KeyManagement/CreateKey", "/aigw.v1.KeyManagement/ImportLegacyKey",
    "/aigw.v1.KeyManagement/UpdateKey", "/aigw.v1.KeyManagement/ListKeys", CHECK_METHOD,
]


def _identity(raw: bytes) -> bytes:
    return raw


@FUZZ
@given(method=st.sampled_from(RAW_METHODS),
       body=st.one_of(
           st.binary(max_size=200),
           # field 1 (a string in every request here) holding invalid UTF-8
           st.binary(min_size=1, max_size=50).map(
               lambda b: b"\x0a" + bytes([len(b) + 1]) + b"\xff" + b),
       ))
async def test_raw_bytes_get_a_documented_status_and_the_server_keeps_answering(
    grpc_stubs: Stubs, method: str, body: bytes
) -> None:
    call = grpc_stubs.channel.unary_unary(
        method, request_serializer=_identity, response_deserializer=_identity
    )
    code = await _status(call(body, timeout=10))
    assert code in (CODE.OK, CODE.INVALID_ARGUMENT, CODE.NOT_FOUND, CODE.ALREADY_EXISTS)


async def test_invalid_utf8_in_a_string_field_is_invalid_argument(grpc_stubs: Stubs) -> None:
    call = grpc_stubs.channel.unary_unary(
        "/aigw.v1.Admission/Authorize", request_serializer=_identity,
        response_deserializer=_identity,
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(b"\x0a\x03\xff\xfe\xfd", timeout=10)
    assert err.value.code() == CODE.INVALID_ARGUMENT
    assert "\xff" not in (err.value.details() or "")


async def test_a_request_past_the_size_limit_is_resource_exhausted(grpc_stubs: Stubs) -> None:
    limit = grpc_stubs.sidecar.settings.max_request_bytes
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await grpc_stubs.admission.Authorize(
            adm.AuthorizeRequest(secret="x" * (limit + 1)), timeout=10
        )
    assert err.value.code() == CODE.RESOURCE_EXHAUSTED
    reply = await grpc_stubs.admission.Authorize(adm.AuthorizeRequest(secret="x" * 5000))
    assert reply.deny_reason == adm.DENY_REASON_KEY_MALFORMED


async def _command_calls(client: Redis) -> dict[str, int]:
    """Calls per command (commands a script runs count too), minus pings and INFO."""
    stats = await client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()
        if name.removeprefix("cmdstat_") not in ("ping", "info")
    }


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


async def test_unknown_keys_cost_one_store_call_each_and_malformed_ones_none(
    grpc_stubs: Stubs, store_client: Redis
) -> None:
    unknown = [secrets.new_secret().secret for _ in range(200)]
    malformed = [s[:-1] + ("A" if s[-1] != "A" else "B") for s in unknown]  # bad checksum
    malformed += ["garbage", "sk-aigw-" + "x" * 60, "\x00\x01", "é" * 70]
    await grpc_stubs.admission.Authorize(adm.AuthorizeRequest(secret=unknown[0]))  # load script
    start = await _command_calls(store_client)
    replies = await asyncio.gather(*(
        grpc_stubs.admission.Authorize(adm.AuthorizeRequest(secret=s), timeout=30)
        for s in unknown
    ))
    after_unknown = await _command_calls(store_client)
    await asyncio.gather(*(
        grpc_stubs.admission.Authorize(adm.AuthorizeRequest(secret=s), timeout=30)
        for s in malformed
    ))
    after_malformed = await _command_calls(store_client)
    assert {r.deny_reason for r in replies} == {adm.DENY_REASON_KEY_UNKNOWN}
    # One EVALSHA each; the script reads the clock and the key record once, then stops.
    assert _delta(start, after_unknown) == {
        "evalsha": len(unknown), "time": len(unknown), "hmget": len(unknown),
    }
    assert _delta(after_unknown, after_malformed) == {}


async def test_an_oversized_or_control_character_key_header_is_401_without_a_store_call(
    grpc_stubs: Stubs, store_client: Redis
) -> None:
    check = grpc_stubs.channel.unary_unary(
        CHECK_METHOD, request_serializer=authz.CheckRequest.SerializeToString,
        response_deserializer=authz.CheckResponse.FromString,
    )
    real = await grpc_stubs.keys.CreateKey(
        kpb.CreateKeyRequest(name=f"k{secrets.new_key_id()}"), timeout=10
    )
    values = [
        {"x-api-key": "L" * (MAX_KEY_HEADER_BYTES + 1)},
        {"authorization": "Bearer " + "sk-aigw-" * 200},
        {"x-api-key": real.secret + "\x00"},
        {"authorization": f"Bearer {real.secret}\r\nx-aigw-key-id: forged"},
    ]
    start = await _command_calls(store_client)
    for headers in values:
        reply = await check(authz.CheckRequest(attributes=authz.AttributeContext(
            request=authz.AttributeContext.Request(
                http=authz.AttributeContext.HttpRequest(headers=headers)
            )
        )), timeout=10)
        assert reply.denied_response.status.code == 401
        assert "key_malformed" in reply.denied_response.body
    assert _delta(start, await _command_calls(store_client)) == {}


def _check_call(grpc_stubs: Stubs) -> Any:
    return grpc_stubs.channel.unary_unary(
        CHECK_METHOD, request_serializer=authz.CheckRequest.SerializeToString,
        response_deserializer=authz.CheckResponse.FromString,
    )


def _chat_check(body: bytes, bearer: str = "Bearer anything") -> authz.CheckRequest:
    request = authz.CheckRequest()
    request.attributes.context_extensions["endpoint"] = "chat"
    http = request.attributes.request.http
    http.headers["authorization"] = bearer
    http.path = "/v1/chat/completions"
    http.raw_body = body
    return request


@pytest.mark.parametrize("depth", [1_100, 50_000])
async def test_a_deeply_nested_check_body_is_a_400_not_an_internal_error(
    grpc_stubs: Stubs, store_client: Redis, key_prefix: str, depth: int
) -> None:
    before = await snapshot(store_client, key_prefix)
    for body in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
        reply = await _check_call(grpc_stubs)(_chat_check(body), timeout=10)
        assert reply.denied_response.status.code == 400
        assert b'"invalid_request_body"' in reply.denied_response.body.encode()
    assert await snapshot(store_client, key_prefix) == before


@FUZZ
@given(body=st.one_of(
    st.binary(max_size=300),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                    max_size=4),
        max_leaves=20,
    ).map(lambda value: repr(value).encode()),
))
async def test_any_check_body_gets_an_http_answer_and_writes_nothing(
    grpc_stubs: Stubs, store_client: Redis, key_prefix: str, body: bytes
) -> None:
    before = await snapshot(store_client, key_prefix)
    reply = await _check_call(grpc_stubs)(_chat_check(body), timeout=10)
    assert reply.denied_response.status.code in (400, 401)
    assert await snapshot(store_client, key_prefix) == before


async def test_an_access_log_frame_that_does_not_parse_is_invalid_argument(
    grpc_stubs: Stubs,
) -> None:
    call = grpc_stubs.channel.stream_unary(
        "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs",
        request_serializer=_identity, response_deserializer=_identity,
    )
    for garbage in (b"\x12\x03\xff\xfe\xfd", b"\x0a\x05\x12\x03\xff\xfe", b"\xff" * 20):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(iter([b"", garbage]), timeout=10)
        assert err.value.code() == CODE.INVALID_ARGUMENT
    assert await call(iter([b""]), timeout=10) == b""  # the service still answers
