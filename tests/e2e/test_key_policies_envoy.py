"""Key policies through Envoy: model allow-lists, tokens per minute, parallel requests, rotation.

Real Envoy with the shipped config, the mock upstream and the official ``openai``
SDK (no retries). Usage and freed slots arrive through the access log after the
response, so every check of them polls the overview (bounded) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import openai
import pytest

from aigw_sidecar.api.v1 import keys_pb2
from tests.e2e.conftest import Gateway
from tests.e2e.upstream import PROMPT_TOKENS, WORDS

MESSAGES = [{"role": "user", "content": "Say hello"}]
SETTLE_TIMEOUT_S = 10.0


async def create_key(gateway: Gateway, limits: keys_pb2.Limits) -> keys_pb2.CreateKeyResponse:
    reply: keys_pb2.CreateKeyResponse = await gateway.keys.CreateKey(keys_pb2.CreateKeyRequest(
        name=f"policy-{uuid.uuid4().hex[:12]}", project="chat", limits=limits))
    return reply


async def overview_when(
    gateway: Gateway, key_id: str, done: Callable[[keys_pb2.KeyOverview], bool]
) -> keys_pb2.KeyOverview:
    """The overview once ``done`` holds, or the last one read after the timeout."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        reply = await gateway.keys.GetKeyOverview(keys_pb2.GetKeyOverviewRequest(key_id=key_id))
        ov: keys_pb2.KeyOverview = reply.overview
        if done(ov) or time.monotonic() > deadline:
            return ov
        await asyncio.sleep(0.05)


def error_code(exc: openai.APIStatusError) -> str:
    return str(exc.response.json()["error"]["code"])


async def test_a_model_off_the_allow_list_is_refused_with_403_naming_it(
    gateway: Gateway,
) -> None:
    key = await create_key(gateway, keys_pb2.Limits(allowed_models=["mock", "mock-*"]))
    async with gateway.client(key.secret) as client:
        reply = await client.chat.completions.create(
            model="mock-mini", messages=MESSAGES  # type: ignore[arg-type]
        )
        assert reply.choices[0].message.content == "".join(WORDS)
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES  # type: ignore[arg-type]
            )
    assert caught.value.status_code == 403
    assert "gpt-4o" in caught.value.message
    assert error_code(caught.value) == "model_not_allowed"
    assert b"gpt-4o" not in gateway.upstream.last().body  # never went upstream


async def test_a_full_tokens_per_minute_window_is_a_rate_limit_with_retry_after(
    gateway: Gateway,
) -> None:
    key = await create_key(gateway, keys_pb2.Limits(tokens_per_minute=100))
    key_id = key.key.key_id
    async with gateway.client(key.secret) as client:
        # The upstream reports 11 + 100 tokens, recorded through the access log: the
        # window is full. (max_tokens: without one the estimate alone, prompt plus
        # the default output bound, would not fit in 100 tokens per minute.)
        await client.chat.completions.create(
            model="mock", messages=MESSAGES, max_tokens=50,  # type: ignore[arg-type]
            extra_headers={"x-mock-completion-tokens": "100"},
        )
        used = PROMPT_TOKENS + 100
        ov = await overview_when(gateway, key_id, lambda ov: ov.tokens_per_minute.used == used)
        assert ov.tokens_per_minute.used == used
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(
                model="mock", messages=MESSAGES, max_tokens=50  # type: ignore[arg-type]
            )
    exc = caught.value
    assert error_code(exc) == "tokens_per_minute"
    assert 1 <= float(exc.response.headers["retry-after"]) <= 60
    assert exc.response.headers["x-ratelimit-limit-tokens"] == "100"
    assert exc.response.headers["x-ratelimit-remaining-tokens"] == "0"


async def test_a_second_concurrent_stream_is_refused_until_the_first_one_ends(
    gateway: Gateway,
) -> None:
    key = await create_key(gateway, keys_pb2.Limits(max_parallel_requests=1))
    key_id = key.key.key_id
    async with gateway.client(key.secret) as client:
        first = await client.chat.completions.create(
            model="mock", messages=MESSAGES, stream=True,  # type: ignore[arg-type]
            extra_headers={"x-mock-mode": "slow"},  # chunks 0.5 s apart
        )
        chunks = first.__aiter__()
        await chunks.__anext__()  # admitted and streaming: it holds the one slot
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(
                model="mock", messages=MESSAGES, stream=True  # type: ignore[arg-type]
            )
        assert error_code(caught.value) == "parallel_requests"
        assert caught.value.response.headers["retry-after"] == "1"
        text = "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
        assert text == "".join(WORDS)
        # The access log's settlement (after the stream ends) frees the slot.
        ov = await overview_when(gateway, key_id, lambda ov: ov.parallel_requests.used == 0)
        assert ov.parallel_requests.used == 0
        again = await client.chat.completions.create(
            model="mock", messages=MESSAGES, stream=True  # type: ignore[arg-type]
        )
        assert "".join([c.choices[0].delta.content or "" async for c in again if c.choices])


async def test_a_rotated_out_secret_works_in_its_grace_period_and_is_unknown_after(
    gateway: Gateway,
) -> None:
    key = await create_key(gateway, keys_pb2.Limits())
    rotated: keys_pb2.RotateKeySecretResponse = await gateway.keys.RotateKeySecret(
        keys_pb2.RotateKeySecretRequest(key_id=key.key.key_id, grace_period_s=5))
    grace_ends = rotated.key.previous_secret_expires_at.ToDatetime(tzinfo=UTC)
    async with gateway.client(key.secret) as old, gateway.client(rotated.secret) as new:
        await old.chat.completions.create(model="mock", messages=MESSAGES)  # type: ignore[arg-type]
        assert datetime.now(UTC) < grace_ends, "the machine was too slow to test the grace"
        await new.chat.completions.create(model="mock", messages=MESSAGES)  # type: ignore[arg-type]
        await asyncio.sleep(max(0.0, (grace_ends - datetime.now(UTC)).total_seconds()) + 0.5)
        with pytest.raises(openai.AuthenticationError) as caught:
            await old.chat.completions.create(
                model="mock", messages=MESSAGES  # type: ignore[arg-type]
            )
        assert error_code(caught.value) == "key_unknown"
        await new.chat.completions.create(model="mock", messages=MESSAGES)  # type: ignore[arg-type]
