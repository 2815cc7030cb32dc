"""A page of keys with their usage: listing filters, the overviews' pipeline, its round trips."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

from aigw_sidecar.admission.decision import UsageReport
from aigw_sidecar.admission.service import AdmissionService
from aigw_sidecar.errors import InvalidArgument
from aigw_sidecar.keys.model import ApiKey, KeyFilter, KeySpec, KeyStatus, KeyView, Limits
from aigw_sidecar.keys.service import KeyService
from aigw_sidecar.limits.periods import ResetPeriod
from aigw_sidecar.store.client import StoreClient
from aigw_sidecar.store.keyspace import Keyspace
from aigw_sidecar.store.redis_store import RedisKeyStore
from tests.conftest import Clock
from tests.store_calls import CountingConnection as _CountingConnection

pytestmark = pytest.mark.cluster  # `make test-cluster` runs it on a Redis Cluster too

T0_MS = 1_830_000_000_000
WITH_USAGE = KeyView.WITH_USAGE
# A mix of limits, so that each overview reads what its kinds count.
LIMITS = (
    Limits(),
    Limits(cost_limit_micro_usd=5_000_000, reset_period=ResetPeriod.DAILY),
    Limits(token_limit=10_000, requests_per_minute=60, tokens_per_minute=5_000),
    Limits(max_parallel_requests=4, requests_per_day=1000, reset_period=ResetPeriod.MONTHLY),
)


async def _used_keys(
    keys: KeyService, admission: AdmissionService, n: int, **spec: Any
) -> list[ApiKey]:
    """``n`` keys with a mix of limits, each with some usage recorded."""
    made = []
    for i in range(n):
        key, secret = await keys.create(
            KeySpec(name=f"key-{i}", limits=LIMITS[i % len(LIMITS)], **spec)
        )
        for r in range(i % 3):
            await admission.authorize(secret, request_id=f"r{r}")
            await admission.record_usage(UsageReport(key.key_id, f"r{r}", 10 * i, i, 1000 * i))
        made.append(key)
    return made


async def test_a_page_with_usage_holds_each_keys_overview_as_get_key_overview_reads_it(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    clock.now_us = T0_MS * 1000
    await _used_keys(keys, admission, 9)
    page = await keys.list(KeyFilter(), 50, "", WITH_USAGE)
    assert len(page.keys) == 9 and page.next_page_token == ""
    assert page.overviews == tuple([await keys.overview(k.key_id) for k in page.keys])
    assert page.keys == tuple(ov.key for ov in page.overviews)
    assert sum(ov.period_requests for ov in page.overviews) == 9  # 0 + 1 + 2 per three keys


async def test_a_page_with_usage_lists_the_same_keys_in_the_same_order_as_a_basic_page(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    clock.now_us = T0_MS * 1000
    await _used_keys(keys, admission, 7)
    basic, with_usage = await keys.list(KeyFilter(), 3), await keys.list(
        KeyFilter(), 3, "", WITH_USAGE
    )
    assert basic.overviews == ()
    assert [k.key_id for k in with_usage.keys] == [k.key_id for k in basic.keys]
    assert with_usage.next_page_token == basic.next_page_token


async def test_paging_with_usage_returns_every_key_once_with_its_overview(
    keys: KeyService, admission: AdmissionService
) -> None:
    made = {k.key_id for k in await _used_keys(keys, admission, 8, workspace="acme")}
    seen: list[str] = []
    token = ""
    while True:
        page = await keys.list(KeyFilter(workspace="acme"), 3, token, WITH_USAGE)
        assert [ov.key.key_id for ov in page.overviews] == [k.key_id for k in page.keys]
        seen += [k.key_id for k in page.keys]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(made)


async def test_a_page_with_usage_of_no_keys_is_empty(keys: KeyService) -> None:
    page = await keys.list(KeyFilter(workspace="nobody"), 10, "", WITH_USAGE)
    assert (page.keys, page.overviews, page.next_page_token) == ((), (), "")


class _DeletingAfterListing(RedisKeyStore):
    """A real store that deletes one key right after each listing, before the overviews."""

    doomed: str = ""

    async def list_key_ids(
        self, key_filter: KeyFilter, page_size: int, page_token: str
    ) -> tuple[Sequence[str], str]:
        listed = await super().list_key_ids(key_filter, page_size, page_token)
        await self.delete_key(self.doomed)
        return listed


async def test_a_key_deleted_between_the_listing_and_the_usage_read_is_dropped_from_the_page(
    redis_client: Redis, key_prefix: str, clock: Clock
) -> None:
    store = _DeletingAfterListing(redis_client, Keyspace(key_prefix), clock_us=clock)
    keys = KeyService(store)
    made = [(await keys.create(KeySpec(name=f"k{i}")))[0] for i in range(3)]
    store.doomed = made[1].key_id
    page = await keys.list(KeyFilter(), 10, "", WITH_USAGE)
    assert [k.key_id for k in page.keys] == [made[0].key_id, made[2].key_id]
    assert [ov.key.key_id for ov in page.overviews] == [made[0].key_id, made[2].key_id]


async def test_the_store_leaves_out_the_overview_of_a_key_id_without_a_key(
    store: RedisKeyStore, keys: KeyService
) -> None:
    a, _ = await keys.create(KeySpec(name="a"))
    b, _ = await keys.create(KeySpec(name="b"))
    found = await store.overviews([b.key_id, "key_00000000000000000000", a.key_id])
    assert [ov.key.key_id for ov in found] == [b.key_id, a.key_id]
    assert await store.overviews([]) == []


async def test_filters_apply_to_a_page_with_usage(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    clock.now_us = T0_MS * 1000
    await keys.create(KeySpec(name="a", project="web", environment="prod"))
    await keys.create(KeySpec(name="b", project="web", environment="dev"))
    await keys.create(KeySpec(name="c", project="app", environment="prod"))
    off, _ = await keys.create(KeySpec(name="d", project="web", environment="prod"))
    await keys.set_enabled(off.key_id, False)

    async def names(key_filter: KeyFilter) -> list[str]:
        page = await keys.list(key_filter, 10, "", WITH_USAGE)
        assert [ov.key.name for ov in page.overviews] == [k.name for k in page.keys]
        return sorted(k.name for k in page.keys)

    assert await names(KeyFilter(project="web")) == ["a", "b", "d"]
    assert await names(KeyFilter(project="web", environment="prod")) == ["a", "d"]
    assert await names(KeyFilter(project="web", status=KeyStatus.ENABLED)) == ["a", "b"]


async def test_name_contains_matches_a_substring_of_the_name_ignoring_case(
    keys: KeyService,
) -> None:
    for name in ("Billing Prod", "billing-dev", "search", "PROD mirror"):
        await keys.create(KeySpec(name=name))

    async def names(text: str, view: KeyView = KeyView.BASIC) -> list[str]:
        return sorted(k.name for k in (await keys.list(KeyFilter(name_contains=text), 10, "",
                                                       view)).keys)

    assert await names("BILLING") == ["Billing Prod", "billing-dev"]
    assert await names("prod") == ["Billing Prod", "PROD mirror"]
    assert await names("prod", WITH_USAGE) == ["Billing Prod", "PROD mirror"]
    assert await names("g p") == ["Billing Prod"]
    assert await names("nothing like it") == []
    assert len(await names("")) == 4


async def test_name_contains_pages_through_a_long_listing_without_skipping(
    keys: KeyService,
) -> None:
    wanted = set()
    for i in range(10):
        key, _ = await keys.create(KeySpec(name=f"{'team' if i % 3 else 'solo'}-{i}"))
        if i % 3:
            wanted.add(key.key_id)
    seen: set[str] = set()
    token = ""
    while True:
        page = await keys.list(KeyFilter(name_contains="TEAM"), 2, token, WITH_USAGE)
        seen |= {k.key_id for k in page.keys}
        token = page.next_page_token
        if not token:
            break
    assert seen == wanted


async def test_a_name_filter_longer_than_any_name_is_invalid(keys: KeyService) -> None:
    with pytest.raises(InvalidArgument) as err:
        await keys.list(KeyFilter(name_contains="x" * 129))
    assert err.value.field == "name_contains"


async def test_after_a_script_flush_a_page_with_usage_loads_the_script_and_reads_every_key(
    keys: KeyService, admission: AdmissionService, redis_client: StoreClient, clock: Clock
) -> None:
    clock.now_us = T0_MS * 1000
    await _used_keys(keys, admission, 5)
    await redis_client.script_flush()
    page = await keys.list(KeyFilter(), 10, "", WITH_USAGE)
    assert len(page.overviews) == 5
    assert page.overviews == tuple([await keys.overview(k.key_id) for k in page.keys])


@pytest.fixture
async def counting_store(
    store_url: str, key_prefix: str, clock: Clock
) -> AsyncIterator[RedisKeyStore]:
    client = Redis.from_url(store_url, decode_responses=True, connection_class=_CountingConnection)
    yield RedisKeyStore(client, Keyspace(key_prefix), clock_us=clock)
    await client.aclose()


@pytest.fixture
def counting_keys(counting_store: RedisKeyStore) -> KeyService:
    return KeyService(counting_store)


async def _round_trips(call: Awaitable[Any]) -> int:
    before = _CountingConnection.writes
    await call
    return _CountingConnection.writes - before


@pytest.mark.single_node  # counts the writes to one server
async def test_the_overviews_of_a_page_cost_one_round_trip_however_many_keys_it_holds(
    counting_keys: KeyService, counting_store: RedisKeyStore, admission: AdmissionService
) -> None:
    await _used_keys(counting_keys, admission, 60, project="web")
    await counting_keys.list(KeyFilter(), 50, "", WITH_USAGE)  # connected, script loaded
    for key_filter in (KeyFilter(), KeyFilter(project="web"), KeyFilter(name_contains="KEY")):
        finding = await _round_trips(counting_store.list_key_ids(key_filter, 50, ""))
        page = await _round_trips(counting_keys.list(key_filter, 50, "", WITH_USAGE))
        assert page == finding + 1
    # The workspace index, the workspace's keys, their key ids; then the overviews.
    assert await _round_trips(counting_keys.list(KeyFilter(), 50, "", WITH_USAGE)) == 4
    # The store clock, the workspace index, the workspace's keys, their records.
    assert await _round_trips(counting_keys.list(KeyFilter(), 50)) == 4


@pytest.mark.single_node  # counts the commands sent to one server
async def test_a_page_without_filters_reads_only_the_records_it_returns(
    counting_keys: KeyService,
) -> None:
    for i in range(30):
        await counting_keys.create(KeySpec(name=f"k{i}"))
    before = _CountingConnection.commands
    page = await counting_keys.list(KeyFilter(), 20)
    assert len(page.keys) == 20
    # TIME, ZRANGEBYLEX (workspaces), ZRANGE (their keys), then one HGETALL per key.
    assert _CountingConnection.commands - before == 3 + 20
    before = _CountingConnection.commands
    page = await counting_keys.list(KeyFilter(), 20, "", WITH_USAGE)
    assert len(page.overviews) == 20
    # ZRANGEBYLEX, ZRANGE, then per key an HMGET of its key id and its read_key.
    assert _CountingConnection.commands - before == 2 + 2 * 20
