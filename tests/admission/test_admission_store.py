"""Authorize and RecordUsage against the real store: denials, key state, legacy keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis

from aigw_sidecar.admission.decision import DenyReason, UsageReport
from aigw_sidecar.admission.service import AdmissionService
from aigw_sidecar.errors import AlreadyExists, FailedPrecondition, NotFound
from aigw_sidecar.keys import secrets
from aigw_sidecar.keys.model import KeyFilter, KeySpec, KeyUpdate, Limits
from aigw_sidecar.keys.service import KeyService
from aigw_sidecar.limits.periods import ResetPeriod
from tests.conftest import Clock
from tests.snapshots import key_names, snapshot

pytestmark = pytest.mark.cluster  # `make test-cluster` runs it on a Redis Cluster too

T0 = 1_830_000_000.0
LEGACY_SECRET = "legacy-Zq83hW2kPp0aXv9"


def _usage(key_id: str, request_id: str, tokens: int = 0, cost: int = 0) -> UsageReport:
    return UsageReport(key_id, request_id, tokens, 0, cost)


def _other_secret_for(secret: str) -> str:
    """A well-formed secret with the same key id but other random characters."""
    body = secret[: -6 - 32] + "Z" * 32
    return body + secrets._checksum(body)


Setup = Callable[[KeyService, AdmissionService, Clock], Awaitable[str]]


async def _disabled(keys: KeyService, admission: AdmissionService, clock: Clock) -> str:
    key, secret = await keys.create(KeySpec(name="d", limits=Limits(requests_per_minute=10)))
    await admission.authorize(secret)
    await admission.record_usage(_usage(key.key_id, "r1", 5, 7))
    await keys.set_enabled(key.key_id, False)
    return secret


async def _expired(keys: KeyService, admission: AdmissionService, clock: Clock) -> str:
    key, secret = await keys.create(
        KeySpec(name="e", limits=Limits(token_limit=100), expires_at_ms=int(T0 * 1000) + 100_000)
    )
    await admission.authorize(secret)
    await admission.record_usage(_usage(key.key_id, "r1", 5, 7))
    clock.set_s(T0 + 100)
    return secret


async def _rpm(keys: KeyService, admission: AdmissionService, clock: Clock) -> str:
    key, secret = await keys.create(KeySpec(name="r", limits=Limits(requests_per_minute=2)))
    await admission.authorize(secret)
    await admission.authorize(secret)
    await admission.record_usage(_usage(key.key_id, "r1", 5, 7))
    return secret


async def _tokens(keys: KeyService, admission: AdmissionService, clock: Clock) -> str:
    key, secret = await keys.create(
        KeySpec(name="t", limits=Limits(token_limit=100, requests_per_minute=10))
    )
    await admission.authorize(secret)
    await admission.record_usage(_usage(key.key_id, "r1", 100, 7))
    return secret


async def _cost(keys: KeyService, admission: AdmissionService, clock: Clock) -> str:
    key, secret = await keys.create(
        KeySpec(name="c", limits=Limits(cost_limit_micro_usd=1_000_000, requests_per_minute=10))
    )
    await admission.authorize(secret)
    await admission.record_usage(_usage(key.key_id, "r1", 5, 1_000_000))
    return secret


async def _unknown_key_id(keys: KeyService, admission: AdmissionService, clock: Clock) -> str:
    await _cost(keys, admission, clock)
    return secrets.new_secret().secret


async def _wrong_secret(keys: KeyService, admission: AdmissionService, clock: Clock) -> str:
    _key, secret = await keys.create(KeySpec(name="w", limits=Limits(requests_per_minute=10)))
    await admission.authorize(secret)
    return _other_secret_for(secret)


async def _unknown_legacy(keys: KeyService, admission: AdmissionService, clock: Clock) -> str:
    await keys.import_legacy(LEGACY_SECRET, KeySpec(name="l"))
    await admission.authorize(LEGACY_SECRET)
    return LEGACY_SECRET + "x"


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (_disabled, DenyReason.KEY_DISABLED),
        (_expired, DenyReason.KEY_EXPIRED),
        (_rpm, DenyReason.REQUESTS_PER_MINUTE),
        (_tokens, DenyReason.TOKEN_LIMIT),
        (_cost, DenyReason.COST_LIMIT),
        (_unknown_key_id, DenyReason.KEY_UNKNOWN),
        (_wrong_secret, DenyReason.KEY_UNKNOWN),
        (_unknown_legacy, DenyReason.KEY_UNKNOWN),
    ],
    ids=["disabled", "expired", "rpm", "tokens", "cost", "unknown", "wrong-secret", "legacy"],
)
async def test_a_rejected_request_leaves_every_counter_untouched(
    keys: KeyService,
    admission: AdmissionService,
    clock: Clock,
    redis_client: Redis,
    key_prefix: str,
    setup: Setup,
    reason: DenyReason,
) -> None:
    clock.set_s(T0)
    secret = await setup(keys, admission, clock)
    before = await snapshot(redis_client, key_prefix)
    assert before
    for _ in range(3):
        decision = await admission.authorize(secret)
        assert (decision.allowed, decision.deny_reason) == (False, reason)
    assert await snapshot(redis_client, key_prefix) == before


async def test_disabling_a_key_refuses_its_very_next_request(
    keys: KeyService, admission: AdmissionService
) -> None:
    key, secret = await keys.create(KeySpec(name="k"))
    assert (await admission.authorize(secret)).allowed
    await keys.set_enabled(key.key_id, False)
    decision = await admission.authorize(secret)
    assert decision.deny_reason is DenyReason.KEY_DISABLED
    assert decision.retry_after_ms is None


async def test_re_enabling_a_key_admits_its_very_next_request(
    keys: KeyService, admission: AdmissionService
) -> None:
    key, secret = await keys.create(KeySpec(name="k"))
    await keys.set_enabled(key.key_id, False)
    await keys.set_enabled(key.key_id, True)
    assert (await admission.authorize(secret)).allowed


async def test_a_key_expires_at_exactly_its_expiry_time(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    clock.set_s(T0)
    expires_ms = int(T0 * 1000) + 10_000
    _key, secret = await keys.create(KeySpec(name="k", expires_at_ms=expires_ms))
    clock.now_us = (expires_ms - 1) * 1000
    assert (await admission.authorize(secret)).allowed
    clock.now_us = expires_ms * 1000
    assert (await admission.authorize(secret)).deny_reason is DenyReason.KEY_EXPIRED


async def test_moving_the_expiry_into_the_future_admits_again(
    keys: KeyService, admission: AdmissionService, clock: Clock
) -> None:
    clock.set_s(T0)
    key, secret = await keys.create(KeySpec(name="k", expires_at_ms=int(T0 * 1000) + 10_000))
    clock.set_s(T0 + 20)
    await keys.update(
        key.key_id, KeyUpdate(frozenset({"expires_at"}), expires_at_ms=int(T0 * 1000) + 60_000)
    )
    assert (await admission.authorize(secret)).allowed


async def test_a_deleted_key_is_unknown_on_its_very_next_request(
    keys: KeyService, admission: AdmissionService
) -> None:
    key, secret = await keys.create(KeySpec(name="k"))
    assert (await admission.authorize(secret)).allowed
    await keys.delete(key.key_id)
    assert (await admission.authorize(secret)).deny_reason is DenyReason.KEY_UNKNOWN


async def test_deleting_a_key_removes_every_redis_key_of_it(
    keys: KeyService, admission: AdmissionService, redis_client: Redis, key_prefix: str
) -> None:
    key, secret = await keys.create(
        KeySpec(name="k", limits=Limits(requests_per_minute=5, token_limit=99))
    )
    await admission.authorize(secret)
    await admission.record_usage(_usage(key.key_id, "r1", 5, 5))
    assert any(key.key_id in name for name in await key_names(redis_client, key_prefix))
    await keys.delete(key.key_id)
    assert not any(key.key_id in name for name in await key_names(redis_client, key_prefix))
    for name in await key_names(redis_client, key_prefix):
        kind = await redis_client.type(name)
        if kind == "hash":
            assert key.key_id not in (await redis_client.hgetall(name)).values()
        elif kind == "zset":
            assert await redis_client.zscore(name, key.key_id) is None


async def test_a_deleted_key_cannot_be_read_used_or_deleted_again(
    keys: KeyService, admission: AdmissionService
) -> None:
    key, _secret = await keys.create(KeySpec(name="k"))
    await keys.delete(key.key_id)
    with pytest.raises(NotFound):
        await keys.get(key.key_id)
    with pytest.raises(NotFound):
        await admission.record_usage(_usage(key.key_id, "r1", 1, 1))
    with pytest.raises(NotFound):
        await keys.delete(key.key_id)


async def test_the_name_of_a_deleted_key_can_be_used_again(
    keys: KeyService, admission: AdmissionService
) -> None:
    key, _secret = await keys.create(KeySpec(name="k"))
    await keys.delete(key.key_id)
    again, secret = await keys.create(KeySpec(name="k"))
    assert again.key_id != key.key_id
    assert (await admission.authorize(secret)).allowed


async def test_a_deleted_key_leaves_the_key_list(keys: KeyService) -> None:
    gone, _ = await keys.create(KeySpec(name="gone"))
    kept, _ = await keys.create(KeySpec(name="kept"))
    await keys.delete(gone.key_id)
    listed = (await keys.list(KeyFilter())).keys
    assert [k.key_id for k in listed] == [kept.key_id]


# --- legacy keys -------------------------------------------------------------


async def test_an_imported_legacy_key_authenticates_with_its_existing_secret(
    keys: KeyService, admission: AdmissionService
) -> None:
    key = await keys.import_legacy(LEGACY_SECRET, KeySpec(name="old", workspace="acme"))
    decision = await admission.authorize(LEGACY_SECRET)
    assert decision.allowed
    assert (decision.key_id, decision.workspace, decision.legacy) == (key.key_id, "acme", True)


async def test_the_usage_of_a_legacy_key_is_counted(
    keys: KeyService, admission: AdmissionService
) -> None:
    key = await keys.import_legacy(LEGACY_SECRET, KeySpec(name="old"))
    await admission.authorize(LEGACY_SECRET)
    await admission.record_usage(UsageReport(key.key_id, "r1", 10, 5, 300))
    overview = await keys.overview(key.key_id)
    assert (overview.lifetime_requests, overview.lifetime_prompt_tokens) == (1, 10)
    assert (overview.lifetime_completion_tokens, overview.lifetime_cost_micro_usd) == (5, 300)
    assert (overview.period_tokens, overview.period_cost_micro_usd) == (15, 300)


@pytest.mark.parametrize(
    ("fields", "limits"),
    [
        ({"cost_limit"}, Limits(cost_limit_micro_usd=5)),
        ({"token_limit"}, Limits(token_limit=5)),
        ({"requests_per_minute"}, Limits(requests_per_minute=5)),
        ({"reset_period"}, Limits(reset_period=ResetPeriod.DAILY)),
        (set(KeyUpdate.LIMIT_FIELDS), Limits(token_limit=5)),
    ],
    ids=["cost", "tokens", "rpm", "reset-period", "all"],
)
async def test_setting_a_limit_on_a_legacy_key_says_to_create_a_new_key(
    keys: KeyService, fields: set[str], limits: Limits
) -> None:
    key = await keys.import_legacy(LEGACY_SECRET, KeySpec(name="old"))
    with pytest.raises(FailedPrecondition, match="create a new API key"):
        await keys.update(key.key_id, KeyUpdate(frozenset(fields), limits=limits))
    assert (await keys.get(key.key_id)).limits == Limits()


async def test_a_refused_limit_on_a_legacy_key_does_not_rename_it(keys: KeyService) -> None:
    key = await keys.import_legacy(LEGACY_SECRET, KeySpec(name="old"))
    with pytest.raises(FailedPrecondition):
        await keys.update(
            key.key_id,
            KeyUpdate(frozenset({"name", "token_limit"}), name="new", limits=Limits(token_limit=1)),
        )
    assert (await keys.get(key.key_id)).name == "old"
    await keys.create(KeySpec(name="new"))


async def test_a_legacy_key_can_be_renamed_and_disabled(
    keys: KeyService, admission: AdmissionService
) -> None:
    key = await keys.import_legacy(LEGACY_SECRET, KeySpec(name="old"))
    renamed = await keys.update(key.key_id, KeyUpdate(frozenset({"name"}), name="older"))
    assert renamed.name == "older"
    await keys.set_enabled(key.key_id, False)
    assert (await admission.authorize(LEGACY_SECRET)).deny_reason is DenyReason.KEY_DISABLED


async def test_lists_mark_legacy_keys(keys: KeyService) -> None:
    await keys.import_legacy(LEGACY_SECRET, KeySpec(name="old"))
    await keys.create(KeySpec(name="new"))
    listed = (await keys.list(KeyFilter())).keys
    assert {k.name: k.legacy for k in listed} == {"old": True, "new": False}


async def test_a_legacy_secret_can_be_imported_only_once(keys: KeyService) -> None:
    await keys.import_legacy(LEGACY_SECRET, KeySpec(name="old"))
    with pytest.raises(AlreadyExists):
        await keys.import_legacy(LEGACY_SECRET, KeySpec(name="other"))
    await keys.create(KeySpec(name="other"))  # the refused import did not keep the name


async def test_a_deleted_legacy_key_is_unknown_and_its_secret_can_be_imported_again(
    keys: KeyService, admission: AdmissionService
) -> None:
    key = await keys.import_legacy(LEGACY_SECRET, KeySpec(name="old"))
    await keys.delete(key.key_id)
    assert (await admission.authorize(LEGACY_SECRET)).deny_reason is DenyReason.KEY_UNKNOWN
    again = await keys.import_legacy(LEGACY_SECRET, KeySpec(name="old"))
    assert (await admission.authorize(LEGACY_SECRET)).key_id == again.key_id
