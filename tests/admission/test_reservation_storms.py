"""Storms of reserve / settle / release / expire against a model of the budget.

Hypothesis draws (seeded, derandomized) interleavings of estimates, settles,
retried settles, explicit releases, plain requests and clock jumps past the
lease; after every step the store must agree with a plain Python model: the
period counters are exactly the sum of settled usage, the reserved totals and
the open-reservation count are exactly what the open leases hold, and every
decision is the one the model predicts. At the end every lease is closed or
expired, the stored totals are back to zero, and the key admits again.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from aigw_sidecar.admission.decision import DenyReason, Estimate, UsageReport
from aigw_sidecar.admission.service import AdmissionService
from aigw_sidecar.errors import InvalidArgument
from aigw_sidecar.keys.model import KeySpec, Limits
from aigw_sidecar.keys.service import KeyService
from aigw_sidecar.store.keyspace import Keyspace
from aigw_sidecar.store.redis_store import RedisKeyStore
from tests.conftest import Clock

pytestmark = pytest.mark.cluster  # `make test-cluster` runs it on a Redis Cluster too

LEASE_MS = 5_000
TOKEN_LIMIT = 2_000
COST_LIMIT = 3_000
START_MS = 1_900_000_000_000
REQUEST_IDS = [f"req-{i}" for i in range(4)]
_names = itertools.count()


@dataclass
class BudgetModel:
    """What the store should hold: settled usage and the leases of the requests."""

    now_ms: int
    tokens: int = 0
    cost: int = 0
    leases: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # tokens, cost, end
    settled: set[str] = field(default_factory=set)

    def open_leases(self, *, besides: str = "") -> list[tuple[int, int, int]]:
        return [
            lease for rid, lease in self.leases.items()
            if lease[2] > self.now_ms and rid != besides
        ]

    def reserved(self, *, besides: str = "") -> tuple[int, int]:
        leases = self.open_leases(besides=besides)
        return sum(t for t, _, _ in leases), sum(c for _, c, _ in leases)

    def refusal(self, est: tuple[int, int] | None, besides: str = "") -> DenyReason | None:
        """The deny reason the store must give (cost is checked before tokens)."""
        rsv_tok, rsv_cost = self.reserved(besides=besides)
        for reason, used, limit, wanted in (
            (DenyReason.COST_LIMIT, self.cost + rsv_cost, COST_LIMIT, est and est[1]),
            (DenyReason.TOKEN_LIMIT, self.tokens + rsv_tok, TOKEN_LIMIT, est and est[0]),
        ):
            if used >= limit or (est is not None and used + int(wanted or 0) > limit):
                return reason
        return None


_reserve = st.tuples(
    st.just("reserve"), st.sampled_from(REQUEST_IDS),
    st.integers(0, 500), st.integers(0, 700),
)
_settle = st.tuples(
    st.just("settle"), st.sampled_from(REQUEST_IDS),
    st.integers(0, 300), st.integers(0, 400),
)
_fill = st.tuples(st.just("fill"), st.sampled_from(REQUEST_IDS))  # reserve all that is left
_zero = st.tuples(st.just("reserve"), st.sampled_from(REQUEST_IDS), st.just(0), st.just(0))
_release = st.tuples(st.just("release"), st.sampled_from(REQUEST_IDS))
# Time passes a little, or every open lease expires at once.
_tick = st.tuples(st.just("advance"), st.integers(0, LEASE_MS - 1))
_expire = st.tuples(st.just("advance"), st.just(LEASE_MS))
_plain = st.tuples(st.just("plain"))
STEPS = st.lists(
    st.one_of(_reserve, _reserve, _fill, _zero, _settle, _settle, _release, _tick, _expire,
              _plain),
    min_size=1, max_size=40,
)


async def _assert_store_matches(store: RedisKeyStore, key_id: str, model: BudgetModel) -> None:
    ov = await store.overview(key_id)
    rsv_tok, rsv_cost = model.reserved()
    assert (ov.period_tokens, ov.period_cost_micro_usd) == (model.tokens, model.cost)
    assert (ov.reserved_tokens, ov.reserved_cost_micro_usd) == (rsv_tok, rsv_cost)
    assert ov.open_reservations == len(model.open_leases())


async def _step(
    admission: AdmissionService, secret: str, key_id: str, model: BudgetModel,
    clock: Clock, step: tuple[object, ...],
) -> None:
    kind = step[0]
    if kind == "advance":
        model.now_ms += int(step[1])  # type: ignore[call-overload]
        clock.now_us = model.now_ms * 1000
    elif kind == "fill":
        rid = str(step[1])
        rsv_tok, rsv_cost = model.reserved(besides=rid)
        rest = (max(0, TOKEN_LIMIT - model.tokens - rsv_tok),
                max(0, COST_LIMIT - model.cost - rsv_cost))
        await _step(admission, secret, key_id, model, clock, ("reserve", rid, *rest))
    elif kind == "plain":
        decision = await admission.authorize(secret)
        assert decision.deny_reason == model.refusal(None)
    elif kind == "reserve":
        _, rid, est_tok, est_cost = step
        assert isinstance(rid, str) and isinstance(est_tok, int) and isinstance(est_cost, int)
        if rid in model.settled:
            # A settled request id is a caller error: refused, nothing written.
            with pytest.raises(InvalidArgument, match="request_id"):
                await admission.authorize(
                    secret, rid, Estimate(prompt_tokens=est_tok, cost_micro_usd=est_cost)
                )
            return
        decision = await admission.authorize(
            secret, rid, Estimate(prompt_tokens=est_tok, cost_micro_usd=est_cost)
        )
        assert decision.deny_reason == model.refusal((est_tok, est_cost), besides=rid)
        if decision.allowed:
            model.leases[rid] = (est_tok, est_cost, model.now_ms + LEASE_MS)
    elif kind == "settle":
        _, rid, tokens, cost = step
        assert isinstance(rid, str) and isinstance(tokens, int) and isinstance(cost, int)
        result = await admission.record_usage(UsageReport(key_id, rid, tokens, 0, cost))
        assert result.counted == (rid not in model.settled)
        if result.counted:
            was_open = rid in model.leases and model.leases[rid][2] > model.now_ms
            assert result.settled_reservation == was_open
            model.leases.pop(rid, None)
            model.settled.add(rid)
            model.tokens += tokens
            model.cost += cost
    else:
        rid = str(step[1])
        released = await admission.release_reservation(key_id, rid)
        assert released == (rid in model.leases and model.leases[rid][2] > model.now_ms)
        model.leases.pop(rid, None)


@settings(
    max_examples=60, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=STEPS)
async def test_storms_keep_the_counters_equal_to_the_settled_usage_and_leak_no_reservation(
    redis_client: Redis, key_prefix: str, clock: Clock, steps: list[tuple[object, ...]]
) -> None:
    store = RedisKeyStore(
        redis_client, Keyspace(key_prefix), lease_ms=LEASE_MS, clock_us=clock
    )
    keys, admission = KeyService(store), AdmissionService(store)
    model = BudgetModel(now_ms=START_MS)
    clock.now_us = START_MS * 1000
    key, secret = await keys.create(KeySpec(
        name=f"storm-{next(_names)}",
        limits=Limits(token_limit=TOKEN_LIMIT, cost_limit_micro_usd=COST_LIMIT),
    ))
    for step in steps:
        await _step(admission, secret, key.key_id, model, clock, step)
        await _assert_store_matches(store, key.key_id, model)

    # Every lease expires: nothing stays reserved, in the overview or in the record.
    await _step(admission, secret, key.key_id, model, clock, ("advance", LEASE_MS))
    await _assert_store_matches(store, key.key_id, model)
    assert not await admission.release_reservation(key.key_id, "sweep")  # sweeps every lease
    record = Keyspace(key_prefix).record(key.key_id)
    assert await redis_client.hmget(record, ["rsv_tok", "rsv_cost"]) in (
        ["0", "0"], [None, None]
    )
    assert not await redis_client.exists(
        Keyspace(key_prefix).lease(key.key_id), Keyspace(key_prefix).lease_amounts(key.key_id)
    )
    # No lock-out: whatever budget settled usage left is available to one request.
    left_tok, left_cost = TOKEN_LIMIT - model.tokens, COST_LIMIT - model.cost
    if left_tok > 0 and left_cost > 0:
        decision = await admission.authorize(
            secret, "after", Estimate(prompt_tokens=left_tok, cost_micro_usd=left_cost)
        )
        assert decision.allowed
