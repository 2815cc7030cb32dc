"""Requests per minute is a true rolling window (now - 60 s, now] on the store clock."""

from __future__ import annotations

import pytest

from aigw_sidecar.admission.decision import DenyReason
from aigw_sidecar.admission.service import AdmissionService
from aigw_sidecar.keys.model import KeySpec, Limits
from aigw_sidecar.keys.service import KeyService
from tests.conftest import Clock

pytestmark = pytest.mark.cluster  # `make test-cluster` runs it on a Redis Cluster too

T0 = 1_830_000_000.0  # 2027-12-28, an arbitrary instant of the store clock
N = 5


async def _key(keys: KeyService, clock: Clock, rpm: int = N) -> str:
    clock.set_s(T0 - 3600)
    _key, secret = await keys.create(KeySpec(name="w", limits=Limits(requests_per_minute=rpm)))
    return secret


async def _burst(
    admission: AdmissionService, secret: str, clock: Clock, at_s: float, n: int
) -> list[bool]:
    clock.set_s(at_s)
    return [(await admission.authorize(secret)).allowed for _ in range(n)]


async def test_the_limit_admits_exactly_n_requests_at_one_instant(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    secret = await _key(keys, clock)
    assert await _burst(admission, secret, clock, T0, N + 2) == [True] * N + [False, False]


async def test_a_full_window_still_refuses_at_59_9_seconds(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    secret = await _key(keys, clock)
    await _burst(admission, secret, clock, T0, N)
    assert await _burst(admission, secret, clock, T0 + 59.9, 1) == [False]


async def test_a_refusal_in_a_full_window_names_requests_per_minute_and_when_to_retry(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    secret = await _key(keys, clock)
    await _burst(admission, secret, clock, T0, N)
    clock.set_s(T0 + 59.9)
    decision = await admission.authorize(secret)
    assert decision.deny_reason is DenyReason.REQUESTS_PER_MINUTE
    assert decision.retry_after_ms == 100


async def test_a_request_admitted_at_t_leaves_the_window_at_exactly_t_plus_60_s(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    secret = await _key(keys, clock)
    await _burst(admission, secret, clock, T0, N)
    clock.now_us = round((T0 + 60) * 1_000_000) - 1
    assert not (await admission.authorize(secret)).allowed
    assert await _burst(admission, secret, clock, T0 + 60.0, N + 1) == [True] * N + [False]


async def test_a_burst_on_either_side_of_a_minute_boundary_is_refused(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    # Fixed one-minute buckets would admit both batches: 59.9 s and 60.1 s
    # lie in different minutes, but in one 60-second window.
    base = 1_830_000_000.0 - (1_830_000_000 % 60)
    secret = await _key(keys, clock)
    assert await _burst(admission, secret, clock, base + 59.9, N) == [True] * N
    assert await _burst(admission, secret, clock, base + 60.1, N) == [False] * N


async def test_the_window_is_not_anchored_at_the_first_request(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    secret = await _key(keys, clock)
    await _burst(admission, secret, clock, T0, 2)
    await _burst(admission, secret, clock, T0 + 30, N - 2)
    # At T0 + 60 the first two left; the other three stay until T0 + 90.
    assert await _burst(admission, secret, clock, T0 + 60, 3) == [True, True, False]
    assert await _burst(admission, secret, clock, T0 + 89.999, 1) == [False]
    assert await _burst(admission, secret, clock, T0 + 90, 3) == [True, True, True]


async def test_refused_requests_do_not_take_room_in_the_window(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    secret = await _key(keys, clock)
    await _burst(admission, secret, clock, T0, N)
    await _burst(admission, secret, clock, T0 + 30, 20)
    assert await _burst(admission, secret, clock, T0 + 60, N) == [True] * N


async def test_an_admitted_request_reports_the_requests_left_in_the_window(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    secret = await _key(keys, clock)
    clock.set_s(T0)
    first = await admission.authorize(secret)
    assert first.requests is not None
    assert (first.requests.limit, first.requests.remaining) == (N, N - 1)
    assert first.requests.reset_ms == 60_000


async def test_the_overview_counts_the_requests_of_the_last_60_seconds(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    secret = await _key(keys, clock)
    await _burst(admission, secret, clock, T0, 2)
    await _burst(admission, secret, clock, T0 + 30, 1)
    key_id = (await admission.authorize(secret)).key_id
    clock.set_s(T0 + 60)
    overview = await keys.overview(key_id)
    assert overview.used["requests_per_minute"] == 2
