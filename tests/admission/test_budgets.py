"""Token and cost budgets per reset period, and RecordUsage counted once per request id."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from aigw_sidecar.admission.decision import DenyReason, Estimate, UsageReport
from aigw_sidecar.admission.service import AdmissionService
from aigw_sidecar.keys.model import KeySpec, KeyUpdate, Limits
from aigw_sidecar.keys.service import KeyService
from aigw_sidecar.limits.periods import ResetPeriod, period_bounds
from tests.conftest import Clock

pytestmark = pytest.mark.cluster  # `make test-cluster` runs it on a Redis Cluster too


def ms(year: int, month: int, day: int, hour: int = 0) -> int:
    return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp()) * 1000


NOW = ms(2028, 2, 29, 15)  # a leap day, 15:00 UTC


def _at(clock: Clock, at_ms: int) -> None:
    clock.now_us = at_ms * 1000


async def _key(keys: KeyService, clock: Clock, limits: Limits) -> tuple[str, str]:
    _at(clock, NOW)
    key, secret = await keys.create(KeySpec(name="b", limits=limits))
    return key.key_id, secret


def _report(key_id: str, request_id: str, tokens: int = 0, cost: int = 0) -> UsageReport:
    return UsageReport(key_id, request_id, tokens, 0, cost)


@pytest.mark.parametrize(
    ("limits", "usage", "reason"),
    [
        (Limits(token_limit=100, reset_period=ResetPeriod.DAILY), (100, 0), DenyReason.TOKEN_LIMIT),
        (Limits(cost_limit_micro_usd=500, reset_period=ResetPeriod.DAILY), (0, 500),
         DenyReason.COST_LIMIT),
    ],
    ids=["tokens", "cost"],
)
async def test_a_used_up_budget_refuses_the_next_request_until_the_next_reset(
    keys: KeyService,
    admission: AdmissionService,
    clock: Clock,
    limits: Limits,
    usage: tuple[int, int],
    reason: DenyReason,
) -> None:
    key_id, secret = await _key(keys, clock, limits)
    assert (await admission.authorize(secret)).allowed
    await admission.record_usage(_report(key_id, "r1", *usage))
    decision = await admission.authorize(secret)
    assert (decision.allowed, decision.deny_reason) == (False, reason)
    assert decision.retry_after_ms == ms(2028, 3, 1) - NOW
    assert "Retry in 32400 s" in decision.message


async def test_a_budget_not_yet_used_up_admits_and_reports_what_is_left(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    key_id, secret = await _key(keys, clock, Limits(token_limit=100, cost_limit_micro_usd=50))
    await admission.record_usage(_report(key_id, "r1", 99, 49))
    decision = await admission.authorize(secret)
    assert decision.allowed
    assert decision.tokens is not None and decision.cost_micro_usd is not None
    assert (decision.tokens.remaining, decision.cost_micro_usd.remaining) == (1, 1)


async def test_a_report_beyond_the_budget_is_counted_in_full(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    key_id, _secret = await _key(keys, clock, Limits(token_limit=100))
    result = await admission.record_usage(_report(key_id, "r1", 250, 0))
    assert result.period_tokens == 250
    overview = await keys.overview(key_id)
    assert overview.period_tokens == 250


async def test_a_budget_that_never_resets_gives_no_retry_time(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    key_id, secret = await _key(keys, clock, Limits(token_limit=10))
    await admission.record_usage(_report(key_id, "r1", 10))
    decision = await admission.authorize(secret)
    assert decision.deny_reason is DenyReason.TOKEN_LIMIT
    assert decision.retry_after_ms is None
    assert decision.tokens is not None and decision.tokens.reset_ms is None
    assert "does not reset" in decision.message


async def test_a_budget_that_never_resets_is_still_used_up_years_later(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    key_id, secret = await _key(keys, clock, Limits(cost_limit_micro_usd=10))
    await admission.record_usage(_report(key_id, "r1", cost=10))
    _at(clock, ms(2035, 1, 1))
    assert (await admission.authorize(secret)).deny_reason is DenyReason.COST_LIMIT


@pytest.mark.parametrize(
    "period", [ResetPeriod.DAILY, ResetPeriod.WEEKLY, ResetPeriod.MONTHLY, ResetPeriod.YEARLY]
)
async def test_the_next_period_admits_again(
    keys: KeyService, admission: AdmissionService, clock: Clock, period: ResetPeriod
) -> None:
    key_id, secret = await _key(keys, clock, Limits(token_limit=10, reset_period=period))
    await admission.record_usage(_report(key_id, "r1", 10))
    _start, end = period_bounds(period, NOW)
    assert end is not None
    _at(clock, end - 1)
    assert (await admission.authorize(secret)).deny_reason is DenyReason.TOKEN_LIMIT
    _at(clock, end)
    assert (await admission.authorize(secret)).allowed
    assert (await keys.overview(key_id)).period_tokens == 0


@pytest.mark.parametrize(
    "period", [ResetPeriod.DAILY, ResetPeriod.WEEKLY, ResetPeriod.MONTHLY, ResetPeriod.YEARLY]
)
async def test_a_new_key_is_never_reset_before_the_end_of_its_first_period(
    keys: KeyService,
    admission: AdmissionService,
    clock: Clock,
    redis_client: Redis,
    key_prefix: str,
    period: ResetPeriod,
) -> None:
    key_id, secret = await _key(keys, clock, Limits(token_limit=10, reset_period=period))
    await admission.authorize(secret)
    await admission.record_usage(_report(key_id, "r1", 10))
    _start, end = period_bounds(period, NOW)
    assert end is not None
    for at in (NOW + 1, NOW + 3_600_000, end - 1):
        if at < end:
            _at(clock, at)
            assert (await admission.authorize(secret)).deny_reason is DenyReason.TOKEN_LIMIT
    # The counters outlive the period in real time too: their TTL reaches past its end.
    ttl_ms = await redis_client.pttl(f"{key_prefix}:usage:{{{key_id}}}")
    assert ttl_ms > end - NOW - 60_000


async def test_changing_the_reset_period_starts_a_clean_period(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    key_id, secret = await _key(
        keys, clock, Limits(token_limit=10, reset_period=ResetPeriod.MONTHLY)
    )
    await admission.record_usage(_report(key_id, "r1", 10))
    await keys.update(
        key_id,
        KeyUpdate(frozenset({"reset_period"}), limits=Limits(reset_period=ResetPeriod.WEEKLY)),
    )
    assert (await admission.authorize(secret)).allowed
    overview = await keys.overview(key_id)
    assert (overview.period_tokens, overview.next_reset_ms) == (0, ms(2028, 3, 6))


async def test_setting_the_same_reset_period_again_keeps_the_usage(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    key_id, secret = await _key(keys, clock, Limits(token_limit=10, reset_period=ResetPeriod.DAILY))
    await admission.record_usage(_report(key_id, "r1", 10))
    await keys.update(
        key_id,
        KeyUpdate(frozenset({"reset_period"}), limits=Limits(reset_period=ResetPeriod.DAILY)),
    )
    assert (await admission.authorize(secret)).deny_reason is DenyReason.TOKEN_LIMIT


async def test_raising_a_limit_admits_at_once_without_resetting_the_usage(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    key_id, secret = await _key(keys, clock, Limits(token_limit=10))
    await admission.record_usage(_report(key_id, "r1", 10))
    await keys.update(key_id, KeyUpdate(frozenset({"token_limit"}), limits=Limits(token_limit=20)))
    decision = await admission.authorize(secret)
    assert decision.allowed
    assert decision.tokens is not None and decision.tokens.remaining == 10


async def test_clearing_a_limit_admits_at_once(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    key_id, secret = await _key(keys, clock, Limits(cost_limit_micro_usd=10))
    await admission.record_usage(_report(key_id, "r1", cost=10))
    await keys.update(key_id, KeyUpdate(frozenset({"cost_limit"}), limits=Limits()))
    decision = await admission.authorize(secret)
    assert decision.allowed and decision.cost_micro_usd is None


# --- RecordUsage counted once per request id --------------------------------


async def test_a_retried_report_is_counted_once(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    key_id, _secret = await _key(keys, clock, Limits(token_limit=1000))
    first = await admission.record_usage(_report(key_id, "req-1", 10, 3))
    again = await admission.record_usage(_report(key_id, "req-1", 10, 3))
    assert (first.counted, again.counted) == (True, False)
    assert (again.period_tokens, again.period_cost_micro_usd) == (10, 3)
    overview = await keys.overview(key_id)
    assert (overview.lifetime_prompt_tokens, overview.lifetime_cost_micro_usd) == (10, 3)


async def test_concurrent_retries_of_one_report_are_counted_once(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    key_id, _secret = await _key(keys, clock, Limits(token_limit=1000))
    results = await asyncio.gather(
        *(admission.record_usage(_report(key_id, "req-1", 10, 3)) for _ in range(50))
    )
    assert sum(r.counted for r in results) == 1
    assert (await keys.overview(key_id)).period_tokens == 10


async def test_distinct_request_ids_are_each_counted(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    key_id, _secret = await _key(keys, clock, Limits(token_limit=1000))
    await asyncio.gather(
        *(admission.record_usage(_report(key_id, f"req-{i}", 1, 1)) for i in range(40))
    )
    overview = await keys.overview(key_id)
    assert (overview.period_tokens, overview.period_cost_micro_usd) == (40, 40)


async def test_a_retry_after_the_period_rolled_over_is_not_counted_in_the_new_period(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    key_id, _secret = await _key(
        keys, clock, Limits(token_limit=10, reset_period=ResetPeriod.DAILY)
    )
    await admission.record_usage(_report(key_id, "req-1", 7))
    _at(clock, ms(2028, 3, 1))
    assert not (await admission.record_usage(_report(key_id, "req-1", 7))).counted
    assert (await keys.overview(key_id)).period_tokens == 0


async def test_a_report_splits_prompt_and_completion_tokens_in_the_overview(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    key_id, _secret = await _key(keys, clock, Limits())
    await admission.record_usage(UsageReport(key_id, "r1", 30, 12, 99))
    overview = await keys.overview(key_id)
    assert (overview.period_prompt_tokens, overview.period_completion_tokens) == (30, 12)
    assert (overview.period_tokens, overview.period_cost_micro_usd) == (42, 99)


async def test_a_request_admitted_before_a_reset_and_settled_after_it_counts_in_the_new_period(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    # The documented rule: usage belongs to the period in which it is reported. The
    # reservation leaves the old period's budget; the usage lands in the new one.
    key_id, secret = await _key(
        keys, clock, Limits(token_limit=1000, reset_period=ResetPeriod.DAILY)
    )
    _start, end = period_bounds(ResetPeriod.DAILY, NOW)
    assert end is not None
    _at(clock, end - 100)  # 23:59:59.900
    for i in range(10):
        decision = await admission.authorize(
            secret, f"r{i}", Estimate(prompt_tokens=50, max_output_tokens=50)
        )
        assert decision.allowed
    assert (await keys.overview(key_id)).reserved_tokens == 1000
    _at(clock, end + 100)  # 00:00:00.100, the next day
    for i in range(10):
        await admission.record_usage(_report(key_id, f"r{i}", 100))
    overview = await keys.overview(key_id)
    assert (overview.period_tokens, overview.reserved_tokens) == (1000, 0)
    assert overview.period_start_ms == end
    assert (await admission.authorize(secret)).deny_reason is DenyReason.TOKEN_LIMIT
