"""Key management against the real store: names, listing, updates and the overview."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from aigw_sidecar.admission.decision import UsageReport
from aigw_sidecar.admission.service import AdmissionService
from aigw_sidecar.errors import AlreadyExists, InvalidArgument
from aigw_sidecar.keys.model import (
    ApiKey,
    KeyFilter,
    KeyPage,
    KeySpec,
    KeyStatus,
    KeyUpdate,
    Limits,
)
from aigw_sidecar.keys.service import KeyService
from aigw_sidecar.limits.periods import ResetPeriod
from tests.conftest import Clock
from tests.snapshots import snapshot

pytestmark = pytest.mark.cluster  # `make test-cluster` runs it on a Redis Cluster too

T0_MS = 1_830_000_000_000


async def _list_all(keys: KeyService, key_filter: KeyFilter, page_size: int) -> list[ApiKey]:
    listed: list[ApiKey] = []
    token = ""
    for _ in range(1000):
        listing = await keys.list(key_filter, page_size, token)
        page, token = listing.keys, listing.next_page_token
        assert len(page) <= page_size
        listed.extend(page)
        if not token:
            return listed
    raise AssertionError("the listing never ended")


async def test_a_duplicate_name_in_one_workspace_already_exists(keys: KeyService) -> None:
    await keys.create(KeySpec(name="prod", workspace="acme"))
    with pytest.raises(AlreadyExists, match="'prod'"):
        await keys.create(KeySpec(name="prod", workspace="acme"))


async def test_a_refused_duplicate_leaves_the_store_as_it_was(
    keys: KeyService, redis_client: Redis, key_prefix: str
) -> None:
    await keys.create(KeySpec(name="prod", workspace="acme"))
    before = await snapshot(redis_client, key_prefix)
    with pytest.raises(AlreadyExists):
        await keys.create(KeySpec(name="prod", workspace="acme"))
    assert await snapshot(redis_client, key_prefix) == before


async def test_names_are_compared_after_trimming_spaces(keys: KeyService) -> None:
    await keys.create(KeySpec(name="prod"))
    with pytest.raises(AlreadyExists):
        await keys.create(KeySpec(name="  prod "))


async def test_the_same_name_in_another_workspace_is_fine(keys: KeyService) -> None:
    a, _ = await keys.create(KeySpec(name="prod", workspace="acme"))
    b, _ = await keys.create(KeySpec(name="prod", workspace="globex"))
    assert (a.workspace, b.workspace) == ("acme", "globex")


async def test_an_unnamed_workspace_is_the_default_workspace(keys: KeyService) -> None:
    key, _ = await keys.create(KeySpec(name="k", workspace=""))
    assert key.workspace == "default"


async def test_renaming_to_a_taken_name_already_exists_and_keeps_both_names(
    keys: KeyService,
) -> None:
    a, _ = await keys.create(KeySpec(name="a"))
    await keys.create(KeySpec(name="b"))
    with pytest.raises(AlreadyExists):
        await keys.update(a.key_id, KeyUpdate(frozenset({"name"}), name="b"))
    assert (await keys.get(a.key_id)).name == "a"


async def test_renaming_frees_the_old_name(keys: KeyService) -> None:
    a, _ = await keys.create(KeySpec(name="a"))
    await keys.update(a.key_id, KeyUpdate(frozenset({"name"}), name="renamed"))
    await keys.create(KeySpec(name="a"))
    with pytest.raises(AlreadyExists):
        await keys.create(KeySpec(name="renamed"))


@pytest.mark.parametrize("page_size", [1, 3, 7, 50])
async def test_paging_through_a_list_returns_every_key_once(
    keys: KeyService, page_size: int
) -> None:
    created = set()
    for ws in ("acme", "globex", "initech"):
        for i in range(6):
            key, _ = await keys.create(KeySpec(name=f"k{i}", workspace=ws))
            created.add(key.key_id)
    listed = await _list_all(keys, KeyFilter(), page_size)
    assert len(listed) == len(created)
    assert {k.key_id for k in listed} == created


async def test_paging_within_one_workspace_returns_only_its_keys(keys: KeyService) -> None:
    mine = set()
    for i in range(7):
        mine.add((await keys.create(KeySpec(name=f"k{i}", workspace="acme")))[0].key_id)
        await keys.create(KeySpec(name=f"k{i}", workspace="globex"))
    listed = await _list_all(keys, KeyFilter(workspace="acme"), 2)
    assert [k.key_id for k in listed if k.workspace == "acme"] == [k.key_id for k in listed]
    assert {k.key_id for k in listed} == mine and len(listed) == 7


async def test_an_empty_list_has_no_next_page(keys: KeyService) -> None:
    assert await keys.list(KeyFilter()) == KeyPage((), "")


async def test_the_default_page_size_is_fifty(keys: KeyService) -> None:
    for i in range(51):
        await keys.create(KeySpec(name=f"k{i}"))
    page = await keys.list(KeyFilter())
    assert len(page.keys) == 50 and page.next_page_token


async def test_lists_filter_by_project_and_environment(keys: KeyService) -> None:
    await keys.create(KeySpec(name="a", project="web", environment="prod"))
    await keys.create(KeySpec(name="b", project="web", environment="dev"))
    await keys.create(KeySpec(name="c", project="app", environment="prod"))
    by_project = await _list_all(keys, KeyFilter(project="web"), 10)
    by_env = await _list_all(keys, KeyFilter(environment="prod"), 10)
    both = await _list_all(keys, KeyFilter(project="web", environment="prod"), 10)
    assert sorted(k.name for k in by_project) == ["a", "b"]
    assert sorted(k.name for k in by_env) == ["a", "c"]
    assert [k.name for k in both] == ["a"]


async def test_lists_filter_by_status(keys: KeyService, clock: Clock) -> None:
    clock.now_us = T0_MS * 1000
    await keys.create(KeySpec(name="on"))
    off, _ = await keys.create(KeySpec(name="off"))
    await keys.set_enabled(off.key_id, False)
    await keys.create(KeySpec(name="old", expires_at_ms=T0_MS + 1000))
    clock.now_us = (T0_MS + 1000) * 1000
    names = {
        status: [k.name for k in await _list_all(keys, KeyFilter(status=status), 10)]
        for status in KeyStatus
    }
    assert names == {
        KeyStatus.ENABLED: ["on"], KeyStatus.DISABLED: ["off"], KeyStatus.EXPIRED: ["old"]
    }


async def test_paging_with_a_filter_skips_nothing(keys: KeyService) -> None:
    wanted = set()
    for i in range(12):
        key, _ = await keys.create(KeySpec(name=f"k{i}", environment="prod" if i % 3 else "dev"))
        if i % 3:
            wanted.add(key.key_id)
    listed = await _list_all(keys, KeyFilter(environment="prod"), 3)
    assert len(listed) == len(wanted)
    assert {k.key_id for k in listed} == wanted


async def test_a_page_token_that_was_not_issued_is_invalid(keys: KeyService) -> None:
    with pytest.raises(InvalidArgument) as err:
        await keys.list(KeyFilter(), 10, "not-a-token")
    assert err.value.field == "page_token"


async def test_an_update_changes_the_limits(keys: KeyService) -> None:
    key, _ = await keys.create(KeySpec(name="k", limits=Limits(token_limit=5)))
    updated = await keys.update(
        key.key_id,
        KeyUpdate(
            KeyUpdate.LIMIT_FIELDS,
            limits=Limits(
                cost_limit_micro_usd=2_500_000, requests_per_minute=60,
                reset_period=ResetPeriod.MONTHLY,
            ),
        ),
    )
    assert updated.limits == Limits(
        cost_limit_micro_usd=2_500_000, requests_per_minute=60, reset_period=ResetPeriod.MONTHLY
    )


async def test_an_update_leaves_the_fields_outside_its_mask_alone(keys: KeyService) -> None:
    key, _ = await keys.create(
        KeySpec(name="k", project="web", labels={"team": "a"}, limits=Limits(token_limit=5))
    )
    updated = await keys.update(
        key.key_id,
        KeyUpdate(frozenset({"requests_per_minute"}), limits=Limits(requests_per_minute=9)),
    )
    assert updated.limits == Limits(token_limit=5, requests_per_minute=9)
    assert (updated.name, updated.project, dict(updated.labels)) == ("k", "web", {"team": "a"})


async def test_an_update_changes_name_project_environment_and_labels(keys: KeyService) -> None:
    key, _ = await keys.create(KeySpec(name="k", labels={"team": "a"}))
    updated = await keys.update(
        key.key_id,
        KeyUpdate(
            frozenset({"name", "project", "environment", "labels"}),
            name="k2", project="web", environment="prod", labels={"owner": "b"},
        ),
    )
    assert (updated.name, updated.project, updated.environment) == ("k2", "web", "prod")
    assert dict(updated.labels) == {"owner": "b"}
    assert updated.updated_at_ms >= key.updated_at_ms


async def test_an_update_sets_and_clears_the_expiration(keys: KeyService, clock: Clock) -> None:
    clock.now_us = T0_MS * 1000
    key, _ = await keys.create(KeySpec(name="k"))
    later = await keys.update(
        key.key_id, KeyUpdate(frozenset({"expires_at"}), expires_at_ms=T0_MS + 5000)
    )
    assert later.expires_at_ms == T0_MS + 5000
    never = await keys.update(key.key_id, KeyUpdate(frozenset({"expires_at"})))
    assert never.expires_at_ms is None


async def test_an_expiration_in_the_past_is_refused_on_update(
    keys: KeyService, clock: Clock
) -> None:
    clock.now_us = T0_MS * 1000
    key, _ = await keys.create(KeySpec(name="k"))
    with pytest.raises(InvalidArgument) as err:
        await keys.update(key.key_id, KeyUpdate(frozenset({"expires_at"}), expires_at_ms=T0_MS))
    assert err.value.field == "expires_at"


async def test_a_new_key_reads_back_as_created(keys: KeyService, clock: Clock) -> None:
    clock.now_us = T0_MS * 1000
    key, secret = await keys.create(
        KeySpec(
            name="k", workspace="acme", project="web", environment="prod",
            labels={"team": "ml"}, limits=Limits(cost_limit_micro_usd=25_000_000),
            expires_at_ms=T0_MS + 86_400_000,
        )
    )
    assert await keys.get(key.key_id) == key
    assert (key.status, key.enabled, key.legacy) == (KeyStatus.ENABLED, True, False)
    assert key.masked_secret == f"sk-aigw-…{secret[-4:]}"
    assert (key.created_at_ms, key.last_used_at_ms) == (T0_MS, None)


async def test_the_overview_counts_requests_tokens_and_cost(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    clock.now_us = T0_MS * 1000
    key, secret = await keys.create(
        KeySpec(
            name="k",
            limits=Limits(
                cost_limit_micro_usd=1000, token_limit=500, requests_per_minute=10,
                reset_period=ResetPeriod.DAILY,
            ),
        )
    )
    for i in range(3):
        await admission.authorize(secret)
        await admission.record_usage(UsageReport(key.key_id, f"r{i}", 20, 10, 100))
    ov = await keys.overview(key.key_id)
    assert (ov.period_requests, ov.lifetime_requests, ov.used["requests_per_minute"]) == (3, 3, 3)
    assert (ov.period_tokens, ov.period_cost_micro_usd) == (90, 300)
    assert (ov.lifetime_prompt_tokens, ov.lifetime_completion_tokens) == (60, 30)
    assert ov.lifetime_cost_micro_usd == 300
    assert ov.key.last_used_at_ms == T0_MS
    assert ov.observed_at_ms == T0_MS


async def test_the_lifetime_totals_survive_a_period_reset(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    clock.now_us = T0_MS * 1000
    key, secret = await keys.create(
        KeySpec(name="k", limits=Limits(token_limit=500, reset_period=ResetPeriod.DAILY))
    )
    await admission.authorize(secret)
    await admission.record_usage(UsageReport(key.key_id, "r1", 20, 10, 100))
    clock.now_us = (T0_MS + 86_400_000) * 1000
    ov = await keys.overview(key.key_id)
    assert (ov.period_tokens, ov.period_requests, ov.period_cost_micro_usd) == (0, 0, 0)
    assert (ov.lifetime_requests, ov.lifetime_prompt_tokens, ov.lifetime_cost_micro_usd) == (
        1, 20, 100
    )


async def test_a_budget_that_never_resets_has_its_period_start_at_creation(
    keys: KeyService, clock: Clock
) -> None:
    clock.now_us = T0_MS * 1000
    key, _ = await keys.create(KeySpec(name="k", limits=Limits(token_limit=5)))
    clock.now_us = (T0_MS + 10_000) * 1000
    ov = await keys.overview(key.key_id)
    assert (ov.period_start_ms, ov.next_reset_ms) == (T0_MS, None)


async def test_a_refused_legacy_import_leaves_the_store_as_it_was(
    keys: KeyService, redis_client: Redis, key_prefix: str
) -> None:
    await keys.import_legacy("legacy-abc-123", KeySpec(name="old", workspace="acme"))
    before = await snapshot(redis_client, key_prefix)
    with pytest.raises(AlreadyExists):
        await keys.import_legacy("legacy-abc-123", KeySpec(name="old", workspace="globex"))
    assert await snapshot(redis_client, key_prefix) == before


async def test_a_create_refused_for_a_past_expiry_leaves_the_store_as_it_was(
    keys: KeyService, clock: Clock, redis_client: Redis, key_prefix: str
) -> None:
    clock.now_us = T0_MS * 1000
    await keys.create(KeySpec(name="k"))
    before = await snapshot(redis_client, key_prefix)
    with pytest.raises(InvalidArgument) as err:
        await keys.create(KeySpec(name="n", workspace="fresh", expires_at_ms=T0_MS))
    assert err.value.field == "expires_at"
    assert await snapshot(redis_client, key_prefix) == before


async def test_concurrent_creates_of_one_name_make_exactly_one_key(
    keys: KeyService, redis_client: Redis, key_prefix: str
) -> None:
    results = await asyncio.gather(
        *(keys.create(KeySpec(name="race")) for _ in range(10)), return_exceptions=True
    )
    made = [r for r in results if not isinstance(r, BaseException)]
    assert len(made) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if isinstance(r, BaseException))
    listed = (await keys.list(KeyFilter())).keys
    assert [k.key_id for k in listed] == [made[0][0].key_id]
