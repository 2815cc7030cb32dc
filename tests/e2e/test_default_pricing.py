"""Cost limits with the sidecar's defaults: the built-in price table, through real Envoy.

The gateway runs with no pricing file (as ``make run`` does), so gpt-4o-mini is
priced by the built-in table: $0.15 per million prompt tokens, $0.60 per million
completion tokens, $0.075 per million cached prompt tokens, i.e. 0.15, 0.6 and
0.075 micro-USD per token. The mock upstream reports 11 prompt tokens and the
completion tokens a header asks for. Each expected cost below is worked out by hand
from those prices: one rounding per request, upwards.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator

import openai
import pytest
import pytest_asyncio

from tests.e2e.conftest import Gateway, close_gateway, open_gateway
from tests.e2e.test_usage_envoy import settled
from tests.e2e.upstream import MockUpstream

MESSAGES = [{"role": "user", "content": "Say hello"}]
MODEL = "gpt-4o-mini"
COMPLETION = {"x-mock-completion-tokens": "299"}
# 11 x 0.15 + 299 x 0.6 = 1.65 + 179.4 = 181.05 -> 182 micro-USD
COST = 182


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_request_is_charged_its_exact_cost_from_the_built_in_table(
    gateway: Gateway, stream: bool
) -> None:
    key = await gateway.create_key(cost_limit_micro_usd=1_000_000)
    async with gateway.client(key.secret) as client:
        reply = await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=300, stream=stream,  # type: ignore[call-overload]
            extra_headers=COMPLETION,
        )
        if stream:
            async for _ in reply:
                pass
    ov = await settled(gateway, key.key.key_id, lambda ov: ov.lifetime_cost_micro_usd > 0)
    assert ov.lifetime_cost_micro_usd == COST
    assert [(m.model, m.cost_micro_usd) for m in ov.per_model] == [(MODEL, COST)]
    assert ov.unpriced_requests == 0


async def test_cached_prompt_tokens_are_charged_at_the_cached_price(gateway: Gateway) -> None:
    key = await gateway.create_key(cost_limit_micro_usd=1_000_000)
    async with gateway.client(key.secret) as client:
        await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=300,  # type: ignore[arg-type]
            extra_headers={**COMPLETION, "x-mock-cached-tokens": "8"},
        )
    ov = await settled(gateway, key.key.key_id, lambda ov: ov.lifetime_cost_micro_usd > 0)
    # 3 x 0.15 + 8 x 0.075 + 299 x 0.6 = 0.45 + 0.6 + 179.4 = 180.45 -> 181
    assert ov.lifetime_cost_micro_usd == 181


async def test_the_cost_limit_answers_429_at_the_request_that_would_pass_it(
    gateway: Gateway,
) -> None:
    # Each request reserves its estimate: 7 prompt tokens (estimated) x 0.15 + 300
    # (max_tokens) x 0.6 = 181.05 -> 182. With 500: the first two fit (0 + 182,
    # 182 + 182), the third would reach 546.
    key = await gateway.create_key(cost_limit_micro_usd=500)
    async with gateway.client(key.secret) as client:
        for _ in range(2):
            await client.chat.completions.create(
                model=MODEL, messages=MESSAGES, max_tokens=300,  # type: ignore[arg-type]
                extra_headers=COMPLETION,
            )
            await settled(gateway, key.key.key_id, lambda ov: ov.open_reservations == 0)
        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(
                model=MODEL, messages=MESSAGES, max_tokens=300,  # type: ignore[arg-type]
                extra_headers=COMPLETION,
            )
    assert refused.value.code == "cost_limit"
    ov = await settled(gateway, key.key.key_id, lambda ov: ov.open_reservations == 0)
    assert ov.lifetime_cost_micro_usd == 2 * COST


@pytest_asyncio.fixture(scope="module")
async def fallback(
    valkey_url: str, upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    """A gateway with --unpriced-fallback-usd 10,30 (USD per million in, out)."""
    gw = await open_gateway(valkey_url, upstream, tmp_path_factory.mktemp("fallback"),
                            unpriced_fallback_usd="10,30")
    yield gw
    await close_gateway(gw)


@pytest.mark.parametrize("named", [True, False], ids=["named", "from-the-response"])
async def test_usage_of_a_model_without_a_price_is_charged_the_fallback_price(
    fallback: Gateway, named: bool
) -> None:
    # A key without a cost limit is not refused; its usage is still never free:
    # 11 x 10 + 5 x 30 = 260 micro-USD. Without a model in the request, the mock's
    # response names "mock", which has no price either.
    key = await fallback.create_key()
    assert fallback.sidecar.access_log is not None
    before = fallback.sidecar.access_log.counts["fallback_unpriced_model"]
    body: dict[str, object] = {"messages": MESSAGES, "max_tokens": 50}
    if named:
        body["model"] = "no-such-model"
    request = urllib.request.Request(
        f"{fallback.base_url}/v1/chat/completions", data=json.dumps(body).encode(),
        headers={"authorization": f"Bearer {key.secret}", "content-type": "application/json"},
    )
    with await asyncio.to_thread(urllib.request.urlopen, request, timeout=10) as reply:
        assert reply.status == 200
    ov = await settled(fallback, key.key.key_id, lambda ov: ov.lifetime_cost_micro_usd > 0)
    assert ov.lifetime_cost_micro_usd == 260
    assert fallback.sidecar.access_log.counts["fallback_unpriced_model"] == before + 1
