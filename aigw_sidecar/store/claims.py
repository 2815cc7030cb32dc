"""Name and legacy-secret claims: the two-slot part of creating, renaming and deleting keys.

A key's name is unique in its workspace and a legacy secret is imported once;
both are claims in an index on another slot than the key's record, so they
are written by their own scripts, before the record (create, rename) or after
it is gone (delete). A crash between the two leaves a claim whose key does not
hold the value: it is stale and the next claim takes it over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from redis import exceptions as redis_errors

from aigw_sidecar.errors import AlreadyExists
from aigw_sidecar.store.client import StoreClient
from aigw_sidecar.store.keyspace import Keyspace
from aigw_sidecar.store.replies import ScriptCode, pairs
from aigw_sidecar.store.scripts import Scripts

# A claim younger than this may belong to a create still in flight.
STALE_CLAIM_MS = 10_000


class Claims:
    """Claims of key names (per workspace) and of legacy secrets."""

    def __init__(self, redis: StoreClient, scripts: Scripts, keyspace: Keyspace) -> None:
        self._redis = redis
        self._scripts = scripts
        self._ks = keyspace

    async def undo(
        self, ws: str, name: str, key_id: str, key_hash: str, legacy: bool
    ) -> None:
        try:
            await self._scripts.release(
                keys=[self._ks.names(ws), self._ks.name_claims(ws), self._ks.key_list(ws)],
                args=[name, key_id, "1"],
            )
            if legacy:
                await self._scripts.release(
                    keys=[self._ks.legacy, self._ks.legacy_claims], args=[key_hash, key_id, "0"]
                )
        except (redis_errors.RedisError, OSError, TimeoutError):
            pass  # a claim its key does not hold is stale and is taken over later

    async def claim_name(self, ws: str, name: str, key_id: str) -> int:
        """Claim a name; the claim's time (store ms) is returned."""
        async def holds(holder: str) -> bool | None:
            record = await self._redis.hmget(self._ks.record(holder), ["ws", "name"])
            return None if record[0] is None else record == [ws, name]

        return await self._claim(
            [self._ks.names(ws), self._ks.name_claims(ws), self._ks.key_list(ws)],
            name, key_id, holds,
            f"an API key named {name!r} already exists in workspace {ws!r}",
        )

    async def claim_legacy(self, key_hash: str, key_id: str) -> None:
        async def holds(holder: str) -> bool | None:
            held = await self._redis.hget(self._ks.record(holder), "hash")
            return None if held is None else held == key_hash

        await self._claim(
            [self._ks.legacy, self._ks.legacy_claims], key_hash, key_id, holds,
            "this legacy secret is already imported",
        )

    async def _claim(
        self, keys: list[str], field: str, key_id: str,
        holds: Callable[[str], Awaitable[bool | None]], taken_message: str,
    ) -> int:
        """Claim ``field`` for ``key_id``, taking over a stale claim; the claim's ms.

        A claim is stale when its key does not hold the value (no record, or a
        record with another name/hash: a create or delete that died half-way)
        and it is older than a create or rename takes between claim and write.
        ``holds`` answers True, False, or None when the holder has no record.
        """
        stale, orphan = "", "0"
        for _ in range(2):
            res = await self._scripts.claim(keys=keys, args=[field, key_id, stale, orphan])
            fields = pairs(res[1:])
            if ScriptCode(res[0]) is ScriptCode.OK:
                return int(fields["claimed_ms"])
            holder, age_ms = str(fields["holder"]), int(fields["age_ms"])
            if age_ms < STALE_CLAIM_MS:
                break
            held = await holds(holder)
            if held:
                break
            stale, orphan = holder, "1" if held is None else "0"
        raise AlreadyExists(taken_message)

    async def release_name(
        self, ws: str, name: str, key_id: str, *, before_ms: int | None = None
    ) -> None:
        """Give a name back; with ``before_ms``, only a claim made before then."""
        await self._scripts.release(
            keys=[self._ks.names(ws), self._ks.name_claims(ws)],
            args=[name, key_id, "0", "" if before_ms is None else before_ms],
        )
