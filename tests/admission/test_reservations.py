"""Budget reservations: estimates held as leases, settled, released or expired.

Store-level tests run once per real server kind (Valkey, redis-server) with the
store clock pinned; the guarantee under concurrency is also driven over gRPC,
and across two ``aigw-sidecar serve`` processes pricing with the example file.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from aigw_sidecar.admission.decision import DenyReason, Estimate, Reservation, UsageReport
from aigw_sidecar.admission.service import AdmissionService
from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1 import admission_pb2_grpc
from aigw_sidecar.api.v1 import keys_pb2 as kpb
from aigw_sidecar.keys.model import KeySpec, Limits, ModelUsage
from aigw_sidecar.keys.service import KeyService
from aigw_sidecar.pricing.loader import load_table
from aigw_sidecar.pricing.table import ModelPrice, PriceTable, UnknownModelPolicy
from aigw_sidecar.store.keyspace import Keyspace
from aigw_sidecar.store.redis_store import DEFAULT_LEASE_MS, RedisKeyStore
from tests.conftest import Clock, Stubs
from tests.servers import REPO, SidecarProcess, replicas
from tests.snapshots import key_names, snapshot

NOW_MS = 1_900_000_000_000
EXAMPLE_PRICING = REPO / "clients" / "pricing" / "example-pricing.yaml"


@pytest.fixture
def now(clock: Clock) -> Clock:
    clock.now_us = NOW_MS * 1000
    return clock


async def _key(keys: KeyService, limits: Limits, name: str = "k") -> tuple[str, str]:
    key, secret = await keys.create(KeySpec(name=name, limits=limits))
    return key.key_id, secret


def _tokens(n: int) -> Estimate:
    return Estimate(prompt_tokens=n)


def _usage(key_id: str, request_id: str, tokens: int = 0, cost: int = 0) -> UsageReport:
    return UsageReport(key_id, request_id, tokens, 0, cost)


def _past_the_lease(clock: Clock) -> None:
    clock.now_us = (NOW_MS + DEFAULT_LEASE_MS) * 1000


# --- reserving ---------------------------------------------------------------


async def test_an_admitted_estimate_is_reserved_and_returned_with_the_decision(
    keys: KeyService, admission: AdmissionService, now: Clock
) -> None:
    _, secret = await _key(keys, Limits(token_limit=1000, cost_limit_micro_usd=500))
    decision = await admission.authorize(
        secret, "r1", Estimate(prompt_tokens=30, max_output_tokens=70, cost_micro_usd=40)
    )
    assert decision.reservation == Reservation("r1", 100, 40)
    assert decision.tokens is not None and decision.tokens.remaining == 900


async def test_the_overview_shows_reserved_amounts_apart_from_settled_usage(
    keys: KeyService, admission: AdmissionService, store: RedisKeyStore, now: Clock
) -> None:
    key_id, secret = await _key(keys, Limits(token_limit=1000, cost_limit_micro_usd=500))
    await admission.authorize(secret, "r1", Estimate(prompt_tokens=100, cost_micro_usd=40))
    await admission.authorize(secret, "r2", Estimate(prompt_tokens=50, cost_micro_usd=10))
    await admission.record_usage(_usage(key_id, "r2", 20, 5))
    ov = await store.overview(key_id)
    assert (ov.period_tokens, ov.period_cost_micro_usd) == (20, 5)
    assert (ov.reserved_tokens, ov.reserved_cost_micro_usd, ov.open_reservations) == (100, 40, 1)


async def test_a_request_is_admitted_only_when_usage_reservations_and_its_estimate_fit(
    keys: KeyService, admission: AdmissionService, now: Clock
) -> None:
    key_id, secret = await _key(keys, Limits(token_limit=100))
    await admission.record_usage(_usage(key_id, "earlier", 10))
    assert (await admission.authorize(secret, "r1", _tokens(50))).allowed
    refused = await admission.authorize(secret, "r2", _tokens(41))
    assert (refused.allowed, refused.deny_reason) == (False, DenyReason.TOKEN_LIMIT)
    assert (await admission.authorize(secret, "r3", _tokens(40))).allowed


async def test_a_cost_estimate_that_does_not_fit_is_refused_for_the_cost_limit(
    keys: KeyService, admission: AdmissionService, now: Clock
) -> None:
    _, secret = await _key(keys, Limits(token_limit=10_000, cost_limit_micro_usd=100))
    assert (await admission.authorize(secret, "r1", Estimate(cost_micro_usd=70))).allowed
    refused = await admission.authorize(secret, "r2", Estimate(cost_micro_usd=31))
    assert refused.deny_reason == DenyReason.COST_LIMIT


async def test_an_estimate_larger_than_the_whole_budget_is_refused(
    keys: KeyService, admission: AdmissionService, now: Clock
) -> None:
    _, secret = await _key(keys, Limits(token_limit=100))
    decision = await admission.authorize(secret, "r1", _tokens(101))
    assert decision.deny_reason == DenyReason.TOKEN_LIMIT


async def test_a_zero_estimate_is_refused_once_the_budget_is_used_up(
    keys: KeyService, admission: AdmissionService, now: Clock
) -> None:
    key_id, secret = await _key(keys, Limits(token_limit=100, cost_limit_micro_usd=1000))
    await admission.record_usage(_usage(key_id, "earlier", 100))
    decision = await admission.authorize(secret, "r1", Estimate(cost_micro_usd=5))
    assert decision.deny_reason == DenyReason.TOKEN_LIMIT


async def test_the_same_request_id_authorizing_twice_replaces_its_reservation(
    keys: KeyService, admission: AdmissionService, store: RedisKeyStore, now: Clock
) -> None:
    key_id, secret = await _key(keys, Limits(token_limit=100))
    assert (await admission.authorize(secret, "r1", _tokens(60))).allowed
    assert (await admission.authorize(secret, "r1", _tokens(80))).allowed
    ov = await store.overview(key_id)
    assert (ov.reserved_tokens, ov.open_reservations) == (80, 1)


async def test_a_key_without_a_token_or_cost_limit_reserves_nothing(
    keys: KeyService, admission: AdmissionService, store: RedisKeyStore, now: Clock
) -> None:
    key_id, secret = await _key(keys, Limits(requests_per_minute=10))
    decision = await admission.authorize(secret, "r1", _tokens(500))
    assert decision.allowed and decision.reservation is None
    assert (await store.overview(key_id)).open_reservations == 0


async def test_requests_without_an_estimate_are_refused_only_when_usage_and_reservations_reach_the_limit(  # noqa: E501
    keys: KeyService, admission: AdmissionService, now: Clock
) -> None:
    key_id, secret = await _key(keys, Limits(token_limit=100))
    await admission.record_usage(_usage(key_id, "earlier", 40))
    assert (await admission.authorize(secret, "r1", _tokens(59))).allowed
    assert (await admission.authorize(secret)).allowed  # 99 of 100 held
    assert (await admission.authorize(secret, "r2", _tokens(1))).allowed
    decision = await admission.authorize(secret)
    assert (decision.allowed, decision.deny_reason) == (False, DenyReason.TOKEN_LIMIT)


async def test_a_denied_request_with_an_estimate_changes_no_counter(
    keys: KeyService, admission: AdmissionService, redis_client: Redis, key_prefix: str,
    now: Clock,
) -> None:
    _, secret = await _key(keys, Limits(token_limit=100, requests_per_minute=10))
    assert (await admission.authorize(secret, "r1", _tokens(90))).allowed
    before = await snapshot(redis_client, key_prefix)
    assert not (await admission.authorize(secret, "r2", _tokens(20))).allowed
    assert not (await admission.authorize(secret, "r1-again", _tokens(11))).allowed
    assert await snapshot(redis_client, key_prefix) == before


async def test_a_denied_re_authorization_keeps_the_earlier_reservation_of_that_request(
    keys: KeyService, admission: AdmissionService, store: RedisKeyStore, now: Clock
) -> None:
    key_id, secret = await _key(keys, Limits(token_limit=100))
    assert (await admission.authorize(secret, "r1", _tokens(60))).allowed
    assert not (await admission.authorize(secret, "r1", _tokens(101))).allowed
    assert (await store.overview(key_id)).reserved_tokens == 60


# --- settling ----------------------------------------------------------------


async def test_settling_charges_the_actual_usage_and_releases_the_rest(
    keys: KeyService, admission: AdmissionService, store: RedisKeyStore, now: Clock
) -> None:
    key_id, secret = await _key(keys, Limits(token_limit=1000, cost_limit_micro_usd=500))
    await admission.authorize(secret, "r1", Estimate(prompt_tokens=300, cost_micro_usd=200))
    result = await admission.record_usage(_usage(key_id, "r1", 120, 70))
    assert (result.counted, result.settled_reservation) == (True, True)
    ov = await store.overview(key_id)
    assert (ov.period_tokens, ov.period_cost_micro_usd) == (120, 70)
    assert (ov.reserved_tokens, ov.reserved_cost_micro_usd, ov.open_reservations) == (0, 0, 0)


async def test_a_settle_above_the_estimate_charges_the_actual_usage(
    keys: KeyService, admission: AdmissionService, store: RedisKeyStore, now: Clock
) -> None:
    key_id, secret = await _key(keys, Limits(token_limit=1000))
    await admission.authorize(secret, "r1", _tokens(100))
    await admission.record_usage(_usage(key_id, "r1", 250))
    ov = await store.overview(key_id)
    assert (ov.period_tokens, ov.reserved_tokens) == (250, 0)


async def test_a_retried_settle_counts_once(
    keys: KeyService, admission: AdmissionService, store: RedisKeyStore, now: Clock
) -> None:
    key_id, secret = await _key(keys, Limits(token_limit=1000))
    await admission.authorize(secret, "r1", _tokens(100))
    first = await admission.record_usage(_usage(key_id, "r1", 40))
    retry = await admission.record_usage(_usage(key_id, "r1", 40))
    assert (first.counted, retry.counted, retry.settled_reservation) == (True, False, False)
    assert (retry.period_tokens, retry.cost_micro_usd) == (40, 0)
    assert (await store.overview(key_id)).period_tokens == 40


async def test_concurrent_retries_of_one_settle_count_once(
    keys: KeyService, admission: AdmissionService, store: RedisKeyStore, now: Clock
) -> None:
    key_id, secret = await _key(keys, Limits(token_limit=1000))
    await admission.authorize(secret, "r1", _tokens(100))
    results = await asyncio.gather(
        *(admission.record_usage(_usage(key_id, "r1", 40)) for _ in range(20))
    )
    assert [r.settled_reservation for r in results].count(True) == 1
    assert [r.counted for r in results].count(True) == 1
    ov = await store.overview(key_id)
    assert (ov.period_tokens, ov.reserved_tokens) == (40, 0)


async def test_usage_reported_without_a_reservation_is_counted_and_settles_nothing(
    keys: KeyService, admission: AdmissionService, now: Clock
) -> None:
    key_id, secret = await _key(keys, Limits(token_limit=1000))
    await admission.authorize(secret)
    result = await admission.record_usage(_usage(key_id, "r1", 40))
    assert (result.counted, result.settled_reservation, result.period_tokens) == (True, False, 40)


# --- leases ------------------------------------------------------------------


async def test_an_expired_lease_no_longer_counts_even_before_any_sweep(
    keys: KeyService, admission: AdmissionService, store: RedisKeyStore,
    redis_client: Redis, key_prefix: str, now: Clock,
) -> None:
    key_id, secret = await _key(keys, Limits(token_limit=100))
    assert (await admission.authorize(secret, "r1", _tokens(100))).allowed
    assert not (await admission.authorize(secret)).allowed
    _past_the_lease(now)
    ov = await store.overview(key_id)
    assert (ov.reserved_tokens, ov.open_reservations) == (0, 0)
    # Not swept yet: the stored total still holds it, and it is ignored anyway.
    assert await redis_client.hget(Keyspace(key_prefix).record(key_id), "rsv_tok") == "100"
    assert (await admission.authorize(secret, "r2", _tokens(100))).allowed


async def test_a_lease_counts_until_the_last_millisecond_before_it_ends(
    keys: KeyService, admission: AdmissionService, now: Clock
) -> None:
    _, secret = await _key(keys, Limits(token_limit=100))
    await admission.authorize(secret, "r1", _tokens(100))
    now.now_us = (NOW_MS + DEFAULT_LEASE_MS - 1) * 1000
    assert not (await admission.authorize(secret)).allowed


async def test_a_denial_held_only_by_reservations_says_when_the_first_lease_ends(
    keys: KeyService, admission: AdmissionService, now: Clock
) -> None:
    _, secret = await _key(keys, Limits(token_limit=100))
    await admission.authorize(secret, "r1", _tokens(100))
    decision = await admission.authorize(secret)
    assert decision.retry_after_ms == DEFAULT_LEASE_MS


async def test_a_settle_after_the_lease_expired_still_charges_the_actual_usage_once(
    keys: KeyService, admission: AdmissionService, store: RedisKeyStore,
    redis_client: Redis, key_prefix: str, now: Clock,
) -> None:
    key_id, secret = await _key(keys, Limits(token_limit=1000))
    await admission.authorize(secret, "r1", _tokens(100))
    _past_the_lease(now)
    late = await admission.record_usage(_usage(key_id, "r1", 70))
    retry = await admission.record_usage(_usage(key_id, "r1", 70))
    assert (late.counted, late.settled_reservation, retry.counted) == (True, False, False)
    ov = await store.overview(key_id)
    assert (ov.period_tokens, ov.reserved_tokens) == (70, 0)
    assert await redis_client.hget(Keyspace(key_prefix).record(key_id), "rsv_tok") == "0"


async def test_release_gives_the_reservation_back_at_once(
    keys: KeyService, admission: AdmissionService, store: RedisKeyStore, now: Clock
) -> None:
    key_id, secret = await _key(keys, Limits(token_limit=100))
    await admission.authorize(secret, "r1", _tokens(100))
    assert await admission.release_reservation(key_id, "r1")
    ov = await store.overview(key_id)
    assert (ov.reserved_tokens, ov.open_reservations, ov.period_tokens) == (0, 0, 0)
    assert (await admission.authorize(secret, "r2", _tokens(100))).allowed


async def test_a_second_release_of_the_same_request_releases_nothing(
    keys: KeyService, admission: AdmissionService, now: Clock
) -> None:
    key_id, secret = await _key(keys, Limits(token_limit=100))
    await admission.authorize(secret, "r1", _tokens(10))
    assert await admission.release_reservation(key_id, "r1")
    assert not await admission.release_reservation(key_id, "r1")


@pytest.mark.parametrize("closed_by", ["settle", "expiry", "never-reserved"])
async def test_release_of_a_reservation_no_longer_open_releases_nothing(
    keys: KeyService, admission: AdmissionService, store: RedisKeyStore, now: Clock,
    closed_by: str,
) -> None:
    key_id, secret = await _key(keys, Limits(token_limit=100))
    if closed_by != "never-reserved":
        await admission.authorize(secret, "r1", _tokens(10))
    if closed_by == "settle":
        await admission.record_usage(_usage(key_id, "r1", 5))
    elif closed_by == "expiry":
        _past_the_lease(now)
    assert not await admission.release_reservation(key_id, "r1")
    assert (await store.overview(key_id)).period_tokens == (5 if closed_by == "settle" else 0)


async def test_a_settle_after_a_release_still_charges_the_actual_usage(
    keys: KeyService, admission: AdmissionService, store: RedisKeyStore, now: Clock
) -> None:
    key_id, secret = await _key(keys, Limits(token_limit=100))
    await admission.authorize(secret, "r1", _tokens(50))
    await admission.release_reservation(key_id, "r1")
    result = await admission.record_usage(_usage(key_id, "r1", 30))
    assert (result.counted, result.settled_reservation, result.period_tokens) == (True, False, 30)


async def test_deleting_a_key_removes_its_lease_keys_too(
    keys: KeyService, admission: AdmissionService, redis_client: Redis, key_prefix: str,
    now: Clock,
) -> None:
    key_id, secret = await _key(keys, Limits(token_limit=100))
    await admission.authorize(secret, "r1", _tokens(10))
    ks = Keyspace(key_prefix)
    assert await redis_client.exists(ks.lease(key_id), ks.lease_amounts(key_id)) == 2
    await keys.delete(key_id)
    assert [name for name in await key_names(redis_client, key_prefix) if key_id in name] == []


# --- per model ---------------------------------------------------------------

PRICES = PriceTable(
    {"small": ModelPrice(input=1_000_000, output=2_000_000)},  # 1 and 2 USD per M tokens
    unknown_model=UnknownModelPolicy.ZERO,
)


@pytest.fixture
def priced(store: RedisKeyStore) -> AdmissionService:
    return AdmissionService(store, lambda: PRICES)


async def test_an_estimate_with_a_model_is_priced_from_the_pricing_table(
    keys: KeyService, priced: AdmissionService, now: Clock
) -> None:
    _, secret = await _key(keys, Limits(cost_limit_micro_usd=10_000))
    decision = await priced.authorize(
        secret, "r1", Estimate(model="small", prompt_tokens=1000, max_output_tokens=500)
    )
    assert decision.reservation == Reservation("r1", 1500, 2000)


async def test_an_explicit_cost_estimate_wins_over_pricing(
    keys: KeyService, priced: AdmissionService, now: Clock
) -> None:
    _, secret = await _key(keys, Limits(cost_limit_micro_usd=10_000))
    decision = await priced.authorize(
        secret, "r1", Estimate(model="small", prompt_tokens=1000, cost_micro_usd=7)
    )
    assert decision.reservation == Reservation("r1", 1000, 7)


async def test_an_estimate_for_a_model_the_sidecar_cannot_price_reserves_tokens_only(
    keys: KeyService, store: RedisKeyStore, now: Clock
) -> None:
    # Only when refusing unpriced models is turned off (--refuse-unpriced-models false).
    lenient = AdmissionService(store, lambda: PriceTable({}), refuse_unpriced_models=False)
    _, secret = await _key(keys, Limits(token_limit=10_000, cost_limit_micro_usd=10))
    decision = await lenient.authorize(secret, "r1", Estimate(model="odd", prompt_tokens=100))
    assert decision.reservation == Reservation("r1", 100, 0)


async def test_a_key_with_a_cost_limit_refuses_a_model_without_a_price(
    keys: KeyService, store: RedisKeyStore, now: Clock
) -> None:
    # A cost limit cannot hold for a model nobody can price: refused, not charged $0.
    service = AdmissionService(store, lambda: PriceTable({}))
    _, secret = await _key(keys, Limits(token_limit=10_000, cost_limit_micro_usd=10))
    decision = await service.authorize(secret, "r1", Estimate(model="odd", prompt_tokens=100))
    assert decision.deny_reason is DenyReason.MODEL_NOT_PRICED
    assert "'odd'" in decision.message and decision.reservation is None
    assert (await service.authorize(secret, model="odd")).deny_reason is (
        DenyReason.MODEL_NOT_PRICED
    )
    # No model named, or a key without a cost limit: nothing to refuse.
    assert (await service.authorize(secret)).allowed
    _, free = await _key(keys, Limits(token_limit=10_000), name="free")
    assert (await service.authorize(free, "r2", Estimate(model="odd", prompt_tokens=1))).allowed


async def test_the_overview_splits_usage_per_model_and_counts_unpriced_requests(
    keys: KeyService, priced: AdmissionService, store: RedisKeyStore, now: Clock
) -> None:
    key_id, _ = await _key(keys, Limits())
    await priced.record_usage(UsageReport(key_id, "r1", 1000, 500, None, model="small"))
    await priced.record_usage(UsageReport(key_id, "r2", 10, 0, None, model="small"))
    await priced.record_usage(UsageReport(key_id, "r3", 7, 3, None, model="mystery"))
    await priced.record_usage(UsageReport(key_id, "r4", 1, 1, 99))  # no model
    ov = await store.overview(key_id)
    assert ov.per_model == (ModelUsage("small", 2, 1510, 2010), ModelUsage("mystery", 1, 10, 0))
    assert ov.unpriced_requests == 1
    assert (ov.period_tokens, ov.period_cost_micro_usd) == (1522, 2109)


async def test_a_reported_cost_is_charged_as_is_and_the_model_is_not_unpriced(
    keys: KeyService, priced: AdmissionService, store: RedisKeyStore, now: Clock
) -> None:
    key_id, _ = await _key(keys, Limits())
    result = await priced.record_usage(UsageReport(key_id, "r1", 10, 10, 5, model="mystery"))
    ov = await store.overview(key_id)
    assert (result.cost_micro_usd, ov.unpriced_requests) == (5, 0)
    assert ov.per_model == (ModelUsage("mystery", 1, 20, 5),)


# --- the guarantee under concurrency -----------------------------------------

TOKEN_BUDGET = 1_000
COST_BUDGET = 1_500


async def _one_request(
    admission: AdmissionService, secret: str, key_id: str, rng: random.Random, i: int
) -> bool:
    est_tokens, est_cost = rng.randint(20, 120), rng.randint(10, 200)
    used_tokens, used_cost = rng.randint(0, est_tokens), rng.randint(0, est_cost)
    decision = await admission.authorize(
        secret, f"r{i}", Estimate(prompt_tokens=est_tokens, cost_micro_usd=est_cost)
    )
    if decision.allowed:
        await admission.record_usage(_usage(key_id, f"r{i}", used_tokens, used_cost))
    return decision.allowed


async def test_concurrent_requests_with_estimates_never_push_settled_usage_past_the_limits(
    keys: KeyService, admission: AdmissionService, store: RedisKeyStore
) -> None:
    key_id, secret = await _key(
        keys, Limits(token_limit=TOKEN_BUDGET, cost_limit_micro_usd=COST_BUDGET)
    )
    rng = random.Random(5)
    admitted = await asyncio.gather(
        *(_one_request(admission, secret, key_id, rng, i) for i in range(90))
    )
    ov = await store.overview(key_id)
    assert ov.period_tokens <= TOKEN_BUDGET and ov.period_cost_micro_usd <= COST_BUDGET
    assert 0 < sum(admitted) < len(admitted)
    assert (ov.reserved_tokens, ov.reserved_cost_micro_usd, ov.open_reservations) == (0, 0, 0)


async def _grpc_request(
    stub: admission_pb2_grpc.AdmissionStub, secret: str, key_id: str, rng: random.Random,
    request_id: str, model: str = "",
) -> bool:
    prompt, max_out = rng.randint(10, 80), rng.randint(10, 80)
    estimate = adm.Estimate(model=model, prompt_tokens=prompt, max_output_tokens=max_out)
    used_prompt, used_out = rng.randint(0, prompt), rng.randint(0, max_out)
    if not model:
        estimate.cost_micro_usd = prompt + max_out
    reply = await stub.Authorize(
        adm.AuthorizeRequest(secret=secret, request_id=request_id, estimate=estimate), timeout=30
    )
    if reply.allowed:
        usage = adm.RecordUsageRequest(
            key_id=key_id, request_id=request_id, prompt_tokens=used_prompt,
            completion_tokens=used_out, model=model, cached_prompt_tokens=used_prompt // 2,
        )
        if not model:
            usage.cost_micro_usd = used_prompt + used_out
        await stub.RecordUsage(usage, timeout=30)
    return reply.allowed


async def test_concurrent_requests_over_grpc_never_push_settled_usage_past_the_limits(
    grpc_stubs: Stubs,
) -> None:
    created = await grpc_stubs.keys.CreateKey(kpb.CreateKeyRequest(
        name="burst", limits=kpb.Limits(token_limit=TOKEN_BUDGET, cost_limit_micro_usd=800)
    ))
    rng = random.Random(7)
    admitted = await asyncio.gather(*(
        _grpc_request(grpc_stubs.admission, created.secret, created.key.key_id, rng, f"g{i}")
        for i in range(100)
    ))
    reply = await grpc_stubs.keys.GetKeyOverview(
        kpb.GetKeyOverviewRequest(key_id=created.key.key_id)
    )
    ov = reply.overview
    assert ov.tokens.used <= TOKEN_BUDGET and ov.cost_micro_usd.used <= 800
    assert 0 < sum(admitted) < len(admitted)
    assert (ov.reserved_tokens, ov.open_reservations) == (0, 0)


async def test_over_grpc_a_reservation_shows_in_the_overview_until_it_is_released(
    grpc_stubs: Stubs,
) -> None:
    created = await grpc_stubs.keys.CreateKey(
        kpb.CreateKeyRequest(name="rsv", limits=kpb.Limits(token_limit=1000))
    )
    key_id = created.key.key_id
    reply = await grpc_stubs.admission.Authorize(adm.AuthorizeRequest(
        secret=created.secret, request_id="g1",
        estimate=adm.Estimate(prompt_tokens=100, max_output_tokens=50, cost_micro_usd=9),
    ))
    assert (reply.reservation.tokens, reply.reservation.cost_micro_usd) == (150, 9)
    ov = (await grpc_stubs.keys.GetKeyOverview(kpb.GetKeyOverviewRequest(key_id=key_id))).overview
    assert (ov.tokens.used, ov.reserved_tokens, ov.reserved_cost_micro_usd) == (0, 150, 9)
    assert ov.open_reservations == 1
    released = await grpc_stubs.admission.ReleaseReservation(
        adm.ReleaseReservationRequest(key_id=key_id, request_id="g1")
    )
    ov = (await grpc_stubs.keys.GetKeyOverview(kpb.GetKeyOverviewRequest(key_id=key_id))).overview
    assert released.released and (ov.reserved_tokens, ov.open_reservations) == (0, 0)


@pytest.fixture(scope="module")
def two_priced_sidecars(
    valkey_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SidecarProcess, SidecarProcess]]:
    logs = tmp_path_factory.mktemp("reservations")
    prefix = f"rsv{uuid.uuid4().hex[:8]}"
    flags = ["--pricing-file", str(EXAMPLE_PRICING)]
    first = SidecarProcess(valkey_url, prefix, flags, log_path=logs / "a.log")
    second = SidecarProcess(valkey_url, prefix, flags, log_path=logs / "b.log")
    try:
        yield first.start(), second.start()
    finally:
        first.stop()
        second.stop()


async def test_two_processes_pricing_estimates_never_push_settled_usage_past_the_limits(
    two_priced_sidecars: tuple[SidecarProcess, SidecarProcess],
) -> None:
    cost_budget = 5_000  # micro-USD: about nine gpt-4o estimates of up to 160 tokens
    async with replicas(*two_priced_sidecars) as (one, two):
        created = await one.keys.CreateKey(kpb.CreateKeyRequest(
            name="shared-burst",
            limits=kpb.Limits(token_limit=TOKEN_BUDGET, cost_limit_micro_usd=cost_budget),
        ), timeout=10)
        stubs = [one.admission, two.admission]
        rng = random.Random(11)
        admitted = await asyncio.gather(*(
            _grpc_request(stubs[i % 2], created.secret, created.key.key_id, rng, f"p{i}",
                          model="gpt-4o")
            for i in range(100)
        ))
        reply = await two.keys.GetKeyOverview(
            kpb.GetKeyOverviewRequest(key_id=created.key.key_id), timeout=10
        )
    ov = reply.overview
    assert ov.tokens.used <= TOKEN_BUDGET and ov.cost_micro_usd.used <= cost_budget
    assert 0 < sum(admitted) < len(admitted)
    assert ov.cost_micro_usd.used > 0 and [m.model for m in ov.per_model] == ["gpt-4o"]
    assert (ov.reserved_cost_micro_usd, ov.open_reservations, ov.unpriced_requests) == (0, 0, 0)


def test_the_example_pricing_file_prices_the_model_of_the_burst() -> None:
    assert load_table(Path(EXAMPLE_PRICING)).price_of("gpt-4o") is not None
