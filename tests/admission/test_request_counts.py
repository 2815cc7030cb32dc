"""Requests in the last minute, as the overview shows them.

A key with a requests-per-minute limit keeps the exact rolling window; a key
without one counts per second in a fixed ring of record fields (to the second,
a few bytes whatever the traffic).
"""

from __future__ import annotations

from redis.asyncio import Redis

from aigw_sidecar.admission.service import AdmissionService
from aigw_sidecar.keys.model import KeySpec, KeyUpdate, Limits
from aigw_sidecar.keys.service import KeyService
from aigw_sidecar.store.keyspace import Keyspace
from tests.conftest import Clock

T0 = 1_830_000_000  # a whole second of the store clock


async def _authorize_at(admission: AdmissionService, secret: str, clock: Clock,
                        at_s: float, n: int) -> None:
    clock.set_s(at_s)
    for _ in range(n):
        assert (await admission.authorize(secret)).allowed


async def test_a_key_without_a_limit_counts_the_requests_of_the_last_60_seconds(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    clock.set_s(T0 - 10)
    key, secret = await keys.create(KeySpec(name="free"))
    await _authorize_at(admission, secret, clock, T0 + 0.2, 3)
    await _authorize_at(admission, secret, clock, T0 + 30.5, 2)
    clock.set_s(T0 + 31)
    assert (await keys.overview(key.key_id)).used["requests_per_minute"] == 5
    clock.set_s(T0 + 59.9)
    assert (await keys.overview(key.key_id)).used["requests_per_minute"] == 5
    clock.set_s(T0 + 60.1)  # the second T0 is 60 s old: its 3 requests are out
    assert (await keys.overview(key.key_id)).used["requests_per_minute"] == 2
    clock.set_s(T0 + 500)
    assert (await keys.overview(key.key_id)).used["requests_per_minute"] == 0


async def test_the_per_second_ring_reuses_a_slot_a_minute_later_without_old_counts(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    clock.set_s(T0 - 10)
    key, secret = await keys.create(KeySpec(name="ring"))
    await _authorize_at(admission, secret, clock, T0, 4)
    await _authorize_at(admission, secret, clock, T0 + 120, 1)  # same slot, two minutes on
    assert (await keys.overview(key.key_id)).used["requests_per_minute"] == 1
    assert (await keys.overview(key.key_id)).lifetime_requests == 5


async def test_a_key_with_a_limit_counts_its_exact_rolling_window(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    clock.set_s(T0 - 10)
    key, secret = await keys.create(
        KeySpec(name="limited", limits=Limits(requests_per_minute=100))
    )
    await _authorize_at(admission, secret, clock, T0 + 0.2, 3)
    clock.set_s(T0 + 60.1)  # exactly: the requests at T0 + 0.2 are still in
    assert (await keys.overview(key.key_id)).used["requests_per_minute"] == 3
    clock.set_s(T0 + 60.3)
    assert (await keys.overview(key.key_id)).used["requests_per_minute"] == 0


async def test_a_limit_set_later_counts_the_requests_of_the_last_minute(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    clock.set_s(T0 - 10)
    key, secret = await keys.create(KeySpec(name="later"))
    await _authorize_at(admission, secret, clock, T0 + 0.2, 5)
    clock.set_s(T0 + 0.5)
    await keys.update(key.key_id, KeyUpdate(
        fields=frozenset({"requests_per_minute"}), limits=Limits(requests_per_minute=2)
    ))
    clock.set_s(T0 + 30)
    assert not (await admission.authorize(secret)).allowed  # 5 in the last minute
    clock.set_s(T0 + 60.5)  # counted to the end of their second: still in
    assert not (await admission.authorize(secret)).allowed
    clock.set_s(T0 + 61)
    assert [(await admission.authorize(secret)).allowed for _ in range(3)] == [
        True, True, False
    ]


async def test_a_limit_set_later_on_a_busy_key_seeds_at_most_the_limit(
    keys: KeyService, admission: AdmissionService, clock: Clock,
    redis_client: Redis, key_prefix: str,
) -> None:
    clock.set_s(T0 - 10)
    key, secret = await keys.create(KeySpec(name="busy"))
    await _authorize_at(admission, secret, clock, T0, 30)
    clock.set_s(T0 + 1)
    await keys.update(key.key_id, KeyUpdate(
        fields=frozenset({"requests_per_minute"}), limits=Limits(requests_per_minute=10)
    ))
    assert await redis_client.zcard(Keyspace(key_prefix).window(key.key_id)) == 10
    assert not (await admission.authorize(secret)).allowed


async def test_removing_the_limit_keeps_the_last_minutes_requests_in_the_overview(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    clock.set_s(T0 - 10)
    key, secret = await keys.create(
        KeySpec(name="unlimited-later", limits=Limits(requests_per_minute=100))
    )
    await _authorize_at(admission, secret, clock, T0, 4)
    await keys.update(key.key_id, KeyUpdate(
        fields=frozenset({"requests_per_minute"}), limits=Limits()
    ))
    await _authorize_at(admission, secret, clock, T0 + 5, 2)
    clock.set_s(T0 + 10)
    assert (await keys.overview(key.key_id)).used["requests_per_minute"] == 6
