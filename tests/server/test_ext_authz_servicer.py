"""Authorization/Check over gRPC, without Envoy: an in-process sidecar on the session Valkey."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from aigw_sidecar.api.envoy.v3 import access_log_pb2 as log_pb
from aigw_sidecar.api.envoy.v3 import ext_authz_pb2 as pb
from aigw_sidecar.api.v1 import admission_pb2 as adm_pb
from aigw_sidecar.api.v1 import keys_pb2 as keys_pb
from aigw_sidecar.bootstrap import start
from aigw_sidecar.keys import secrets
from aigw_sidecar.server.ext_authz import CHECK_METHOD
from aigw_sidecar.settings import Settings
from tests.conftest import Stubs
from tests.servers import free_port


def check_stub(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable:
    return channel.unary_unary(
        CHECK_METHOD,
        request_serializer=pb.CheckRequest.SerializeToString,
        response_deserializer=pb.CheckResponse.FromString,
    )


def check_request(**headers: str) -> pb.CheckRequest:
    req = pb.CheckRequest()
    req.attributes.request.http.method = "POST"
    req.attributes.request.http.path = "/v1/chat/completions"
    req.attributes.request.http.headers.update(
        {name.replace("_", "-"): value for name, value in headers.items()}
    )
    return req


async def create_key(stubs: Stubs, **limits: int) -> tuple[str, str]:
    reply = await stubs.keys.CreateKey(
        keys_pb.CreateKeyRequest(
            name=f"k{len(limits)}-{sorted(limits.items())}",
            project="chat",
            limits=keys_pb.Limits(**limits),
        )
    )
    return reply.key.key_id, reply.secret


async def check(stubs: Stubs, **headers: str) -> pb.CheckResponse:
    response: pb.CheckResponse = await check_stub(stubs.channel)(check_request(**headers))
    return response


def reply_headers(response: pb.CheckResponse) -> dict[str, str]:
    return {h.header.key: h.header.value for h in response.denied_response.headers}


async def test_a_good_key_is_allowed_with_its_identity_for_upstream(grpc_stubs: Stubs) -> None:
    key_id, secret = await create_key(grpc_stubs, requests_per_minute=5)
    response = await check(grpc_stubs, authorization=f"Bearer {secret}")
    assert response.status.code == 0
    upstream = {h.header.key: h.header.value for h in response.ok_response.headers}
    assert upstream["x-aigw-key-id"] == key_id
    assert upstream["x-aigw-project"] == "chat"
    assert "authorization" in response.ok_response.headers_to_remove
    client = {h.header.key: h.header.value for h in response.ok_response.response_headers_to_add}
    assert client["x-ratelimit-limit-requests"] == "5"
    assert client["x-ratelimit-remaining-requests"] == "4"
    assert response.dynamic_metadata["key_id"] == key_id


async def test_check_and_authorize_share_one_request_window(grpc_stubs: Stubs) -> None:
    _, secret = await create_key(grpc_stubs, requests_per_minute=2)
    await grpc_stubs.admission.Authorize(adm_pb.AuthorizeRequest(secret=secret))
    assert (await check(grpc_stubs, x_api_key=secret)).status.code == 0
    third = await check(grpc_stubs, x_api_key=secret)
    assert third.denied_response.status.code == 429


async def test_no_key_is_401_with_a_json_error(grpc_stubs: Stubs) -> None:
    response = await check(grpc_stubs)
    assert response.status.code != 0
    assert response.denied_response.status.code == 401
    assert reply_headers(response)["content-type"] == "application/json"
    assert json.loads(response.denied_response.body)["error"]["code"] == "key_missing"


async def test_a_well_formed_but_unknown_key_is_401(grpc_stubs: Stubs) -> None:
    response = await check(grpc_stubs, api_key=secrets.new_secret().secret)
    assert response.denied_response.status.code == 401
    assert json.loads(response.denied_response.body)["error"]["code"] == "key_unknown"


async def test_a_deleted_key_is_401(grpc_stubs: Stubs) -> None:
    key_id, secret = await create_key(grpc_stubs)
    await grpc_stubs.keys.DeleteKey(keys_pb.DeleteKeyRequest(key_id=key_id))
    response = await check(grpc_stubs, api_key=secret)
    assert response.denied_response.status.code == 401
    assert json.loads(response.denied_response.body)["error"]["code"] == "key_unknown"


async def test_two_different_keys_are_401_malformed(grpc_stubs: Stubs) -> None:
    _, one = await create_key(grpc_stubs)
    _, two = await create_key(grpc_stubs, token_limit=5)
    response = await check(grpc_stubs, authorization=f"Bearer {one}", x_api_key=two)
    assert response.denied_response.status.code == 401
    assert json.loads(response.denied_response.body)["error"]["code"] == "key_malformed"


async def test_a_disabled_key_is_403(grpc_stubs: Stubs) -> None:
    key_id, secret = await create_key(grpc_stubs)
    await grpc_stubs.keys.DisableKey(keys_pb.DisableKeyRequest(key_id=key_id))
    response = await check(grpc_stubs, authorization=f"Bearer {secret}")
    assert response.denied_response.status.code == 403
    assert response.dynamic_metadata["key_id"] == key_id


async def test_the_request_past_the_per_minute_limit_is_429_with_retry_after(
    grpc_stubs: Stubs,
) -> None:
    _, secret = await create_key(grpc_stubs, requests_per_minute=1)
    assert (await check(grpc_stubs, api_key=secret)).status.code == 0
    response = await check(grpc_stubs, api_key=secret)
    assert response.denied_response.status.code == 429
    headers = reply_headers(response)
    assert 1 <= int(headers["retry-after"]) <= 60
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert "Requests-per-minute" in json.loads(response.denied_response.body)["error"]["message"]


async def test_a_used_up_token_budget_that_never_resets_is_429_without_retry_after(
    grpc_stubs: Stubs,
) -> None:
    key_id, secret = await create_key(grpc_stubs, token_limit=100)
    await grpc_stubs.admission.RecordUsage(
        adm_pb.RecordUsageRequest(key_id=key_id, request_id="r1", prompt_tokens=100)
    )
    response = await check(grpc_stubs, api_key=secret)
    assert response.denied_response.status.code == 429
    headers = reply_headers(response)
    assert "retry-after" not in headers
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    assert json.loads(response.denied_response.body)["error"]["code"] == "token_limit"


@pytest.fixture
async def unreachable_store_channel(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[grpc.aio.Channel]:
    settings = Settings(
        listen="127.0.0.1:0",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        data_dir=tmp_path,
        shutdown_grace_s=0.5,
        envoy_failure_mode=request.param,
    )
    sidecar = await start(settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}")
    yield channel
    await channel.close()
    await sidecar.stop()


@pytest.mark.parametrize("unreachable_store_channel", ["closed"], indirect=True)
async def test_an_unreachable_store_fails_closed_with_503_by_default(
    unreachable_store_channel: grpc.aio.Channel,
) -> None:
    response = await check_stub(unreachable_store_channel)(
        check_request(x_api_key=secrets.new_secret().secret), timeout=5
    )
    assert response.status.code != 0
    assert response.denied_response.status.code == 503


@pytest.mark.parametrize("unreachable_store_channel", ["open"], indirect=True)
async def test_an_unreachable_store_fails_open_with_a_marker_when_configured(
    unreachable_store_channel: grpc.aio.Channel,
) -> None:
    secret = secrets.new_secret().secret
    response = await check_stub(unreachable_store_channel)(
        check_request(x_api_key=secret), timeout=5
    )
    assert response.status.code == 0
    assert [(h.header.key, h.header.value) for h in response.ok_response.headers] == [
        ("x-aigw-fail-open", "true")
    ]


@pytest.mark.parametrize("answered", [False, True], ids=["answer-dropped", "answer-applied"])
async def test_a_check_whose_answer_envoy_dropped_is_released_when_its_request_is_logged(
    grpc_stubs: Stubs, answered: bool
) -> None:
    # Its client left while the answer was on its way: Envoy logs the request without
    # ext_authz's metadata, so nothing else would settle it before its lease ends.
    key_id, secret = await create_key(grpc_stubs, max_parallel_requests=1)
    request = check_request(authorization=f"Bearer {secret}", x_request_id="envoy-rid-1")
    reply = await check_stub(grpc_stubs.channel)(request)
    assert reply.HasField("ok_response")
    entry = log_pb.HTTPAccessLogEntry()
    entry.request.request_id = "envoy-rid-1"
    if answered:
        entry.common_properties.metadata.filter_metadata[
            "envoy.filters.http.ext_authz"].CopyFrom(reply.dynamic_metadata)
        entry.response.response_code.value = 500  # an upstream failure: released too
    log_call = grpc_stubs.channel.stream_unary(
        "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs",
        request_serializer=log_pb.StreamAccessLogsMessage.SerializeToString,
        response_deserializer=log_pb.StreamAccessLogsResponse.FromString,
    )
    batch = log_pb.StreamAccessLogsMessage(
        http_logs=log_pb.StreamAccessLogsMessage.HTTPAccessLogEntries(log_entry=[entry])
    )
    await log_call(iter([batch]))
    overview = await grpc_stubs.keys.GetKeyOverview(
        keys_pb.GetKeyOverviewRequest(key_id=key_id)
    )
    assert overview.overview.parallel_requests.used == 0


async def test_a_body_on_a_path_that_is_not_metered_is_not_read_or_reserved(
    grpc_stubs: Stubs,
) -> None:
    # GET /v1/models with a chat body: free, so nothing estimated (it was charged 407).
    _key_id, secret = await create_key(grpc_stubs, token_limit=10_000)
    request = check_request(authorization=f"Bearer {secret}")
    http = request.attributes.request.http
    http.method, http.path = "GET", "/v1/models"
    http.raw_body = json.dumps({"model": "m", "max_tokens": 400, "messages": []}).encode()
    reply = await check_stub(grpc_stubs.channel)(request)
    assert reply.HasField("ok_response")
    fields = reply.dynamic_metadata.fields
    assert "prompt_tokens" not in fields and "reserved_tokens" not in fields
