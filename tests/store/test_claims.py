"""Unique names and legacy secrets across slots: claims, renames and stale claims."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from aigw_sidecar.admission.service import AdmissionService
from aigw_sidecar.errors import AlreadyExists
from aigw_sidecar.keys.model import KeyFilter, KeySpec, KeyUpdate
from aigw_sidecar.keys.service import KeyService
from aigw_sidecar.store.claims import Claims
from aigw_sidecar.store.keyspace import Keyspace
from aigw_sidecar.store.redis_store import RedisKeyStore
from aigw_sidecar.store.scripts import Scripts


def _rename(name: str) -> KeyUpdate:
    return KeyUpdate(fields=frozenset({"name"}), name=name)


async def test_two_renames_at_once_leave_exactly_the_final_name_claimed(
    keys: KeyService, redis_client: Redis, key_prefix: str
) -> None:
    key, _ = await keys.create(KeySpec(name="x"))
    await asyncio.gather(
        keys.update(key.key_id, _rename("a")), keys.update(key.key_id, _rename("b"))
    )
    final = (await keys.get(key.key_id)).name
    index = await redis_client.hgetall(Keyspace(key_prefix).names("default"))
    assert index == {final: key.key_id}
    freed = "b" if final == "a" else "a"
    other, _ = await keys.create(KeySpec(name=freed))  # the losing name is free again
    assert other.name == freed


async def test_the_same_legacy_secret_imported_twice_at_once_leaves_one_working_key(
    keys: KeyService, admission: AdmissionService
) -> None:
    secret = "sk-legacy-0123456789abcdef"
    results = await asyncio.gather(
        keys.import_legacy(secret, KeySpec(name="one")),
        keys.import_legacy(secret, KeySpec(name="two")),
        return_exceptions=True,
    )
    imported = [r for r in results if not isinstance(r, BaseException)]
    assert len(imported) == 1
    assert [type(r) for r in results if isinstance(r, BaseException)] == [AlreadyExists]
    decision = await admission.authorize(secret)
    assert decision.allowed and decision.key_id == imported[0].key_id


async def test_a_young_claim_without_its_key_is_not_taken_over(
    keys: KeyService, redis_client: Redis, key_prefix: str
) -> None:
    ks = Keyspace(key_prefix)
    # A create still in flight: the name is claimed, the record not written yet.
    await redis_client.hset(ks.names("default"), "busy", "key_00000000000000000000")
    now_ms = int((await redis_client.time())[0]) * 1000
    await redis_client.hset(ks.name_claims("default"), "busy", str(now_ms))
    with pytest.raises(AlreadyExists):
        await keys.create(KeySpec(name="busy"))


async def test_an_old_claim_whose_key_does_not_hold_the_name_is_taken_over(
    keys: KeyService, redis_client: Redis, key_prefix: str
) -> None:
    ks = Keyspace(key_prefix)
    holder, _ = await keys.create(KeySpec(name="renamed-away"))
    # A rename that died before releasing the old name, long ago.
    await redis_client.hset(ks.names("default"), "old-name", holder.key_id)
    await redis_client.hset(ks.name_claims("default"), "old-name", "1000")
    key, _ = await keys.create(KeySpec(name="old-name"))
    assert (await redis_client.hget(ks.names("default"), "old-name")) == key.key_id
    with pytest.raises(AlreadyExists):
        await keys.create(KeySpec(name="renamed-away"))  # still held by its key


async def test_taking_over_a_stale_name_keeps_its_old_holder_listed(
    keys: KeyService, redis_client: Redis, key_prefix: str
) -> None:
    ks = Keyspace(key_prefix)
    renamed, _ = await keys.create(KeySpec(name="a"))
    await keys.update(renamed.key_id, _rename("b"))
    # The rename's release of "a" never happened, long ago.
    await redis_client.hset(ks.names("default"), "a", renamed.key_id)
    await redis_client.hset(ks.name_claims("default"), "a", "1000")
    newcomer, _ = await keys.create(KeySpec(name="a"))
    listed = (await keys.list(KeyFilter(workspace="default"))).keys
    assert {k.key_id: k.name for k in listed} == {renamed.key_id: "b", newcomer.key_id: "a"}


async def test_a_late_release_from_an_earlier_rename_spares_the_name_taken_again(
    store: RedisKeyStore, keys: KeyService, redis_client: Redis, key_prefix: str
) -> None:
    ks = Keyspace(key_prefix)
    key, _ = await keys.create(KeySpec(name="a"))
    await keys.update(key.key_id, _rename("b"))
    first_rename_claimed = int(await redis_client.hget(ks.name_claims("default"), "b"))
    await asyncio.sleep(0.01)
    await keys.update(key.key_id, _rename("a"))  # and back
    # The first rename's release of "a", arriving late, must not free it.
    claims = Claims(redis_client, Scripts.register(redis_client), ks)
    await claims.release_name("default", "a", key.key_id, before_ms=first_rename_claimed)
    assert await redis_client.hget(ks.names("default"), "a") == key.key_id
    with pytest.raises(AlreadyExists):
        await keys.create(KeySpec(name="a"))
