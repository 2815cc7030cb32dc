"""Envoy + aigw-sidecar end to end, driven by the official OpenAI SDK (max_retries=0)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from aigw_sidecar.api.v1 import admission_pb2, keys_pb2
from tests.e2e.conftest import Gateway, GatewayFactory
from tests.e2e.envoy_process import SHIPPED_CONFIG, envoy_binary
from tests.e2e.upstream import WORDS
from tests.servers import StoreProcess, find_server_binary

MESSAGES = [{"role": "user", "content": "Say hello"}]


def error_of(exc: openai.APIStatusError) -> dict[str, object]:
    error: dict[str, object] = exc.response.json()["error"]
    return error


def test_the_shipped_envoy_config_validates() -> None:
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(SHIPPED_CONFIG)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout + result.stderr


async def test_a_good_key_completes_a_chat_request(gateway: Gateway) -> None:
    key = await gateway.create_key(requests_per_minute=100)
    async with gateway.client(key.secret) as client:
        completion = await client.chat.completions.create(model="mock", messages=MESSAGES)
    assert completion.choices[0].message.content == "".join(WORDS)


async def test_the_client_response_carries_its_rate_limit_headers(gateway: Gateway) -> None:
    key = await gateway.create_key(requests_per_minute=100, token_limit=5000)
    async with gateway.client(key.secret) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="mock", messages=MESSAGES
        )
    assert raw.headers["x-ratelimit-limit-requests"] == "100"
    assert raw.headers["x-ratelimit-remaining-requests"] == "99"
    assert raw.headers["x-ratelimit-limit-tokens"] == "5000"


async def test_the_upstream_never_sees_the_clients_key_or_a_forged_key_id(
    gateway: Gateway,
) -> None:
    key = await gateway.create_key()
    forged = {"x-aigw-key-id": "key_forgedforgedforgedforg", "x-aigw-workspace": "evil",
              "x-aigw-fail-open": "true", "x-api-key": key.secret}
    async with gateway.client(key.secret, default_headers=forged) as client:
        await client.chat.completions.create(model="mock", messages=MESSAGES)
    seen = gateway.upstream.last().headers
    assert "authorization" not in seen
    assert "x-api-key" not in seen
    assert "x-aigw-fail-open" not in seen
    assert key.secret not in json.dumps(seen)
    assert seen["x-aigw-key-id"] == key.key.key_id
    assert seen["x-aigw-workspace"] == key.key.workspace
    assert seen["x-aigw-project"] == "chat"


async def test_a_bad_key_raises_authentication_error(gateway: Gateway) -> None:
    async with gateway.client("sk-not-a-key-of-ours") as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(model="mock", messages=MESSAGES)
    assert caught.value.response.headers["content-type"] == "application/json"
    assert error_of(caught.value)["code"] in ("key_unknown", "key_malformed")


async def test_two_different_keys_raise_authentication_error(gateway: Gateway) -> None:
    one, two = await gateway.create_key(), await gateway.create_key()
    async with gateway.client(one.secret, default_headers={"api-key": two.secret}) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.models.list()
    assert error_of(caught.value)["code"] == "key_malformed"


async def test_a_disabled_key_raises_permission_denied(gateway: Gateway) -> None:
    key = await gateway.create_key()
    await gateway.keys.DisableKey(keys_pb2.DisableKeyRequest(key_id=key.key.key_id))
    async with gateway.client(key.secret) as client:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await client.chat.completions.create(model="mock", messages=MESSAGES)
    assert "disabled" in caught.value.message


async def test_the_request_past_the_per_minute_limit_raises_rate_limit_with_retry_after(
    gateway: Gateway,
) -> None:
    key = await gateway.create_key(requests_per_minute=3)
    async with gateway.client(key.secret) as client:
        for _ in range(3):
            await client.chat.completions.create(model="mock", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="mock", messages=MESSAGES)
    exc = caught.value
    assert "Requests-per-minute limit reached" in exc.message
    assert 1 <= float(exc.response.headers["retry-after"]) <= 60  # what the SDK parses
    assert exc.response.headers["x-ratelimit-limit-requests"] == "3"
    assert exc.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert key.secret not in exc.response.text


@pytest.mark.parametrize(
    ("limits", "usage", "code", "text"),
    [
        ({"token_limit": 100}, {"prompt_tokens": 80, "completion_tokens": 40},
         "token_limit", "Token limit"),
        ({"cost_limit_micro_usd": 1000}, {"cost_micro_usd": 1500}, "cost_limit", "Cost limit"),
    ],
    ids=["tokens", "cost"],
)
async def test_usage_past_a_budget_makes_the_next_request_a_rate_limit_naming_it(
    gateway: Gateway, limits: dict[str, int], usage: dict[str, int], code: str, text: str
) -> None:
    key = await gateway.create_key(**limits)
    # A model the built-in price table knows: a cost limit refuses an unpriced one.
    model = "gpt-4o-mini"
    async with gateway.client(key.secret) as client:
        await client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=5)
        await gateway.admission.RecordUsage(
            admission_pb2.RecordUsageRequest(key_id=key.key.key_id, request_id="r1", **usage)
        )
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model=model, messages=MESSAGES)
    assert text in caught.value.message
    assert error_of(caught.value)["code"] == code
    assert "retry-after" not in caught.value.response.headers  # this budget never resets


async def test_a_model_without_a_price_is_refused_on_a_key_with_a_cost_limit(
    gateway: Gateway,
) -> None:
    key = await gateway.create_key(cost_limit_micro_usd=1_000_000)
    async with gateway.client(key.secret) as client:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await client.chat.completions.create(model="no-such-model", messages=MESSAGES)
        # A priced model is served, and so is any model on a key without a cost limit.
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert error_of(caught.value)["code"] == "model_not_priced"
    assert "'no-such-model'" in caught.value.message
    free = await gateway.create_key()
    async with gateway.client(free.secret) as client:
        await client.chat.completions.create(model="no-such-model", messages=MESSAGES)


async def test_the_health_route_needs_no_key(gateway: Gateway) -> None:
    with urllib.request.urlopen(f"{gateway.base_url}/healthz", timeout=5) as reply:
        assert reply.status == 200


async def test_the_key_id_reaches_envoys_access_log(gateway: Gateway) -> None:
    key = await gateway.create_key()
    async with gateway.client(key.secret) as client:
        await client.models.list()
    deadline = time.monotonic() + 5  # access logs are flushed every 200 ms
    while key.key.key_id not in gateway.envoy.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f'"key_id":"{key.key.key_id}"' in gateway.envoy.log()


async def test_streaming_passes_through_unbuffered(gateway: Gateway) -> None:
    key = await gateway.create_key()
    arrivals: list[float] = []
    text = ""
    async with gateway.client(key.secret) as client:
        stream = await client.chat.completions.create(
            model="mock", messages=MESSAGES, stream=True
        )
        async for event in stream:
            if event.choices and event.choices[0].delta.content:
                arrivals.append(time.monotonic())
                text += event.choices[0].delta.content
    assert text == "".join(WORDS)
    # The upstream spaces its words 0.12 s apart (0.48 s from first to last);
    # buffered, they would all arrive within a few ms of each other.
    assert arrivals[-1] - arrivals[0] > 0.25


@pytest.fixture
def own_store(tmp_path: Path) -> Iterator[StoreProcess]:
    """A store this test may stop."""
    proc = StoreProcess("valkey", find_server_binary(), tmp_path / "store").start()
    yield proc
    proc.stop()


async def test_a_stopped_store_fails_closed_with_503_by_default(
    gateway_factory: GatewayFactory, own_store: StoreProcess
) -> None:
    gw = await gateway_factory(own_store.url)
    key = await gw.create_key()
    async with gw.client(key.secret) as client:
        await client.models.list()
        own_store.stop()
        with pytest.raises(openai.APIStatusError) as caught:
            await client.models.list()
    assert caught.value.status_code == 503
    assert error_of(caught.value)["code"] == "store_unavailable"


async def test_a_stopped_store_fails_open_with_a_marker_when_configured(
    gateway_factory: GatewayFactory, own_store: StoreProcess
) -> None:
    gw = await gateway_factory(own_store.url, envoy_failure_mode="open")
    key = await gw.create_key()
    forged = {"x-aigw-key-id": "key_forgedforgedforgedforg"}
    async with gw.client(key.secret, default_headers=forged) as client:
        own_store.stop()
        completion = await client.chat.completions.create(model="mock", messages=MESSAGES)
    assert completion.choices[0].message.content == "".join(WORDS)
    seen = gw.upstream.last().headers
    assert seen["x-aigw-fail-open"] == "true"
    assert "x-aigw-key-id" not in seen
    assert "authorization" not in seen
