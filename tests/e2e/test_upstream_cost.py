"""--trust-upstream-cost: the cost an upstream reports is charged instead of the table's.

Off by default (tests/e2e/test_default_pricing.py charges the table's price). On, a
request is charged OpenRouter's ``usage.cost`` or LiteLLM's ``x-litellm-response-cost``
header when the upstream sends one, and the table's price when it sends neither.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.e2e.conftest import Gateway, close_gateway, open_gateway
from tests.e2e.test_usage_envoy import settled
from tests.e2e.upstream import MockUpstream

MESSAGES = [{"role": "user", "content": "Say hello"}]


@pytest_asyncio.fixture(scope="module")
async def trusting(
    valkey_url: str, upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    gw = await open_gateway(valkey_url, upstream, tmp_path_factory.mktemp("trusting"),
                            trust_upstream_cost=True)
    yield gw
    await close_gateway(gw)


@pytest.mark.parametrize(("headers", "cost"), [
    ({"x-mock-usage-cost": "0.00123"}, 1230),  # OpenRouter: usage.cost, USD
    ({"x-mock-cost-header": "0.000456"}, 456),  # LiteLLM: x-litellm-response-cost
    # Neither: the table's price, 11 x 0.15 + 5 x 0.6 = 4.65 -> 5 micro-USD.
    ({}, 5),
], ids=["usage-cost", "cost-header", "none"])
async def test_a_trusted_upstream_cost_is_charged(
    trusting: Gateway, headers: dict[str, str], cost: int
) -> None:
    key = await trusting.create_key(cost_limit_micro_usd=1_000_000)
    async with trusting.client(key.secret) as client:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=50,  # type: ignore[arg-type]
            extra_headers={**headers, "accept-encoding": "identity"},
        )
    ov = await settled(trusting, key.key.key_id, lambda ov: ov.lifetime_cost_micro_usd > 0)
    assert ov.lifetime_cost_micro_usd == cost


async def test_an_upstream_cost_is_ignored_by_default(gateway: Gateway) -> None:
    key = await gateway.create_key(cost_limit_micro_usd=1_000_000)
    async with gateway.client(key.secret) as client:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=50,  # type: ignore[arg-type]
            extra_headers={"x-mock-usage-cost": "0.5", "x-mock-cost-header": "0.5"},
        )
    ov = await settled(gateway, key.key.key_id, lambda ov: ov.lifetime_cost_micro_usd > 0)
    assert ov.lifetime_cost_micro_usd == 5
