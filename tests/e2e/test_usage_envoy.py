"""Usage from Envoy with no application code: ext_authz reserves, the access log settles.

Real Envoy with the shipped config, the mock upstream and the official ``openai``
SDK (no retries). Charges are read back with GetKeyOverview over gRPC; settlement
runs after the response, so every check polls (bounded) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import openai
import pytest
import pytest_asyncio

from aigw_sidecar.admission.bodies import read_request
from aigw_sidecar.admission.service import DEFAULT_MAX_OUTPUT_TOKENS
from aigw_sidecar.api.v1 import keys_pb2
from tests.e2e.conftest import Gateway, close_gateway, open_gateway
from tests.e2e.upstream import PROMPT_TOKENS, WORDS, MockUpstream

MESSAGES = [{"role": "user", "content": "Say hello"}]
PRICING = """\
unknown_model: zero
models:
  mock: {input: "1.00", output: "2.00", cached_input: "0.50"}
"""
# 11 prompt tokens at 1 USD/M + 5 completion tokens at 2 USD/M, in micro-USD.
MOCK_COST = PROMPT_TOKENS * 1 + 5 * 2
SETTLE_TIMEOUT_S = 10.0


@pytest_asyncio.fixture(scope="module")
async def gateway(
    valkey_url: str, upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    """The shipped config, with a pricing table for the mock model."""
    workdir = tmp_path_factory.mktemp("usage")
    pricing = Path(workdir / "pricing.yaml")
    pricing.write_text(PRICING)
    gw = await open_gateway(valkey_url, upstream, workdir, pricing_file=str(pricing))
    yield gw
    await close_gateway(gw)


async def overview(gateway: Gateway, key_id: str) -> keys_pb2.KeyOverview:
    reply = await gateway.keys.GetKeyOverview(keys_pb2.GetKeyOverviewRequest(key_id=key_id))
    result: keys_pb2.KeyOverview = reply.overview
    return result


async def settled(
    gateway: Gateway, key_id: str, done: Callable[[keys_pb2.KeyOverview], bool]
) -> keys_pb2.KeyOverview:
    """The overview once ``done`` holds (settlement runs after the response)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        ov = await overview(gateway, key_id)
        if done(ov) or time.monotonic() > deadline:
            return ov
        await asyncio.sleep(0.05)


def no_reservation(ov: keys_pb2.KeyOverview) -> bool:
    return ov.open_reservations == 0 and ov.reserved_tokens == 0


def estimated_tokens(max_tokens: int, stream: bool) -> int:
    """What ext_authz reserves for MESSAGES (the sidecar's own heuristic)."""
    body = {"messages": MESSAGES, "model": "mock", "max_tokens": max_tokens, "stream": stream}
    facts = read_request(json.dumps(body).encode())
    return facts.estimate(DEFAULT_MAX_OUTPUT_TOKENS).tokens


async def test_a_completion_is_charged_its_exact_tokens_and_cost(gateway: Gateway) -> None:
    key = await gateway.create_key(token_limit=100_000)
    async with gateway.client(key.secret) as client:
        reply = await client.chat.completions.create(
            model="mock", messages=MESSAGES, max_tokens=50  # type: ignore[arg-type]
        )
    assert reply.usage is not None and reply.usage.total_tokens == 16
    ov = await settled(gateway, key.key.key_id, lambda ov: ov.tokens.used > 0)
    assert (ov.period_prompt_tokens, ov.period_completion_tokens) == (PROMPT_TOKENS, 5)
    assert ov.tokens.used == 16
    assert ov.lifetime_cost_micro_usd == MOCK_COST
    assert [(m.model, m.tokens, m.cost_micro_usd) for m in ov.per_model] == [
        ("mock", 16, MOCK_COST)
    ]
    assert no_reservation(ov)


async def test_cached_prompt_tokens_are_charged_at_the_cached_price(gateway: Gateway) -> None:
    key = await gateway.create_key(token_limit=100_000)
    async with gateway.client(key.secret) as client:
        await client.chat.completions.create(
            model="mock", messages=MESSAGES,  # type: ignore[arg-type]
            extra_headers={"x-mock-cached-tokens": "4"},
        )
    ov = await settled(gateway, key.key.key_id, lambda ov: ov.tokens.used > 0)
    # 7 uncached at 1 USD/M + 4 cached at 0.50 USD/M + 5 out at 2 USD/M
    assert ov.lifetime_cost_micro_usd == 7 + 2 + 10


async def test_a_streamed_completion_is_charged_its_exact_usage(gateway: Gateway) -> None:
    key = await gateway.create_key(token_limit=100_000)
    text = ""
    async with gateway.client(key.secret) as client:
        stream = await client.chat.completions.create(
            model="mock", messages=MESSAGES, stream=True, max_tokens=50  # type: ignore[arg-type]
        )
        async for event in stream:
            if event.choices and event.choices[0].delta.content:
                text += event.choices[0].delta.content
    assert text == "".join(WORDS)
    ov = await settled(gateway, key.key.key_id, lambda ov: ov.tokens.used > 0)
    assert (ov.tokens.used, ov.lifetime_cost_micro_usd) == (16, MOCK_COST)
    assert no_reservation(ov)


async def test_a_streaming_request_is_asked_for_its_usage_with_a_correct_length(
    gateway: Gateway,
) -> None:
    key = await gateway.create_key()
    async with gateway.client(key.secret) as client:
        stream = await client.chat.completions.create(
            model="mock", messages=MESSAGES, stream=True  # type: ignore[arg-type]
        )
        async for _ in stream:
            pass
    seen = gateway.upstream.last()
    assert json.loads(seen.body)["stream_options"] == {"include_usage": True}
    assert seen.headers["content-length"] == str(len(seen.body))


async def test_streaming_stays_unbuffered_with_usage_accounting(gateway: Gateway) -> None:
    key = await gateway.create_key(token_limit=100_000)
    arrivals: list[float] = []
    async with gateway.client(key.secret) as client:
        stream = await client.chat.completions.create(
            model="mock", messages=MESSAGES, stream=True  # type: ignore[arg-type]
        )
        async for event in stream:
            if event.choices and event.choices[0].delta.content:
                arrivals.append(time.monotonic())
    # Words are sent 0.12 s apart (0.48 s first to last); buffered, all at once.
    assert arrivals[-1] - arrivals[0] > 0.25
    ov = await settled(gateway, key.key.key_id, lambda ov: ov.tokens.used > 0)
    assert ov.tokens.used == 16


async def test_the_key_is_refused_with_429_once_its_token_budget_is_used(
    gateway: Gateway,
) -> None:
    key = await gateway.create_key(token_limit=40)
    async with gateway.client(key.secret) as client:
        with pytest.raises(openai.RateLimitError) as refused:
            for _ in range(5):
                await client.chat.completions.create(
                    model="mock", messages=MESSAGES, max_tokens=5  # type: ignore[arg-type]
                )
                await settled(gateway, key.key.key_id, no_reservation)
    assert refused.value.code == "token_limit"
    assert "Token limit" in refused.value.message


async def test_the_key_is_refused_with_429_once_its_cost_budget_is_used(
    gateway: Gateway,
) -> None:
    key = await gateway.create_key(cost_limit_micro_usd=3 * MOCK_COST)
    async with gateway.client(key.secret) as client:
        with pytest.raises(openai.RateLimitError) as refused:
            for _ in range(5):
                await client.chat.completions.create(
                    model="mock", messages=MESSAGES, max_tokens=5  # type: ignore[arg-type]
                )
                await settled(gateway, key.key.key_id, no_reservation)
    assert refused.value.code == "cost_limit"
    ov = await overview(gateway, key.key.key_id)
    assert ov.lifetime_cost_micro_usd <= 3 * MOCK_COST


async def test_a_request_whose_estimate_exceeds_the_budget_is_refused_and_not_charged(
    gateway: Gateway,
) -> None:
    key = await gateway.create_key(token_limit=100)
    async with gateway.client(key.secret) as client:
        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(
                model="mock", messages=MESSAGES, max_tokens=500  # type: ignore[arg-type]
            )
    assert refused.value.code == "token_limit"
    ov = await overview(gateway, key.key.key_id)
    assert (ov.tokens.used, ov.period_requests) == (0, 0)
    assert no_reservation(ov)


async def test_concurrent_streams_with_estimates_never_overshoot_the_budget(
    gateway: Gateway,
) -> None:
    key = await gateway.create_key(token_limit=1000)
    estimate = estimated_tokens(300, stream=True)
    admitted_at_once = 1000 // estimate
    assert admitted_at_once == 3  # each reserves ~307 tokens; 280 + 11 are used

    async def one(client: openai.AsyncOpenAI) -> bool:
        try:
            stream = await client.chat.completions.create(
                model="mock", messages=MESSAGES, stream=True, max_tokens=300,  # type: ignore[arg-type]
                extra_headers={"x-mock-completion-tokens": "280"},
            )
        except openai.RateLimitError as exc:
            assert exc.code == "token_limit"
            return False
        async for _ in stream:
            pass
        return True

    async with gateway.client(key.secret) as client:
        results = await asyncio.gather(*(one(client) for _ in range(10)))
    assert 1 <= sum(results) <= admitted_at_once
    ov = await settled(gateway, key.key.key_id, no_reservation)
    assert no_reservation(ov)
    assert ov.tokens.used == sum(results) * (PROMPT_TOKENS + 280) <= 1000


async def test_a_client_that_disconnects_mid_stream_leaves_no_reservation(
    gateway: Gateway,
) -> None:
    key = await gateway.create_key(token_limit=100_000)
    async with gateway.client(key.secret) as client:
        stream = await client.chat.completions.create(
            model="mock", messages=MESSAGES, stream=True, max_tokens=50,  # type: ignore[arg-type]
            extra_headers={"x-mock-mode": "slow"},
        )
        async for event in stream:
            if event.choices and event.choices[0].delta.content:
                break
        await stream.close()
    ov = await settled(gateway, key.key.key_id, no_reservation)
    assert no_reservation(ov)
    # A 200 stream that ended without usage is charged its estimate.
    assert ov.tokens.used == estimated_tokens(50, stream=True)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
async def test_a_crashed_upstream_leaves_no_reservation(gateway: Gateway, stream: bool) -> None:
    key = await gateway.create_key(token_limit=100_000)
    async with gateway.client(key.secret) as client:
        with pytest.raises((openai.APIError, openai.APIConnectionError)):
            reply = await client.chat.completions.create(
                model="mock", messages=MESSAGES, stream=stream, max_tokens=50,  # type: ignore[call-overload]
                extra_headers={"x-mock-mode": "crash"},
            )
            if stream:
                async for _ in reply:
                    pass
    ov = await settled(gateway, key.key.key_id, no_reservation)
    assert no_reservation(ov)
    assert ov.tokens.used == estimated_tokens(50, stream=stream)


async def test_an_upstream_error_releases_the_reservation(gateway: Gateway) -> None:
    key = await gateway.create_key(token_limit=100_000)
    async with gateway.client(key.secret) as client:
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(
                model="mock", messages=MESSAGES, max_tokens=50,  # type: ignore[arg-type]
                extra_headers={"x-mock-mode": "error"},
            )
    ov = await settled(gateway, key.key.key_id, no_reservation)
    assert no_reservation(ov)
    assert (ov.tokens.used, ov.lifetime_cost_micro_usd) == (0, 0)


async def test_ext_authz_denials_are_never_charged(gateway: Gateway) -> None:
    assert gateway.sidecar.access_log is not None
    before = gateway.sidecar.access_log.counts
    key = await gateway.create_key(token_limit=100)
    async with gateway.client(key.secret) as client:
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(
                model="mock", messages=MESSAGES, max_tokens=500  # type: ignore[arg-type]
            )
    async with gateway.client("sk-not-a-key") as stranger:
        with pytest.raises(openai.AuthenticationError):
            await stranger.chat.completions.create(
                model="mock", messages=MESSAGES  # type: ignore[arg-type]
            )
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        after = gateway.sidecar.access_log.counts
        if after["not_charged"] >= before["not_charged"] + 2:
            break
        await asyncio.sleep(0.05)
    after = gateway.sidecar.access_log.counts
    # Both local replies reached ext_proc, and nothing was settled for them.
    assert after["not_charged"] == before["not_charged"] + 2
    settlements = ("charge_usage", "charge_estimate", "release")
    assert [after[s] for s in settlements] == [before[s] for s in settlements]
    ov = await overview(gateway, key.key.key_id)
    assert (ov.tokens.used, ov.period_requests) == (0, 0)


