"""RedisKeyStore: API keys and admission counters in Redis, one script per decision.

Admission (authorize, record_usage) is one EVALSHA on the key's own slot.
Key management spans two slots (the key's and its workspace's name index), so
create, rename and delete are short sequences of single-slot scripts ordered so
that a crash half-way leaves nothing a user can see: a name claim whose key
record does not exist is stale and is taken over by the next create.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from aigw_sidecar.admission.decision import Decision, UsageReport, UsageResult
from aigw_sidecar.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from aigw_sidecar.keys.model import ApiKey, DailyUsage, KeyFilter, KeyOverview, KeySpec, KeyUpdate
from aigw_sidecar.keys.service import LEGACY_LIMITS_MESSAGE, LEGACY_ROTATION_MESSAGE
from aigw_sidecar.store.claims import Claims
from aigw_sidecar.store.client import StoreClient
from aigw_sidecar.store.errors import store_errors
from aigw_sidecar.store.keyspace import Keyspace
from aigw_sidecar.store.listing import KeyListing
from aigw_sidecar.store.multiplexed import MultiplexedScripts
from aigw_sidecar.store.records import new_record, text, update_diff
from aigw_sidecar.store.replies import (
    ScriptCode,
    decode_authorize,
    decode_history,
    decode_overview,
    decode_usage,
    pairs,
)
from aigw_sidecar.store.scripts import Scripts, pipelined, script_source

DEFAULT_DEDUPE_MS = 24 * 3600 * 1000
DEFAULT_LEASE_MS = 10 * 60 * 1000

# The admission scripts: one per decision on the hot path.
_HOT_SCRIPTS = ("authorize", "record_usage", "release_reservation")


class RedisKeyStore:
    """The store port of both the admission and the key-management services."""

    def __init__(
        self,
        redis: StoreClient,
        keyspace: Keyspace | None = None,
        *,
        dedupe_ms: int = DEFAULT_DEDUPE_MS,
        lease_ms: int = DEFAULT_LEASE_MS,
        clock_us: Callable[[], int | None] = lambda: None,
        multiplexed: MultiplexedScripts | None = None,
    ) -> None:
        """Args:
        clock_us: an explicit store time for tests (µs); None means Redis TIME.
        multiplexed: the shared pipelined connection for the admission scripts
            (authorize, record_usage, release_reservation); None: the pooled client.
        """
        self._redis = redis
        self._ks = keyspace or Keyspace()
        self._scripts = Scripts.register(redis)
        self._multiplexed = multiplexed
        self._shas = (
            {name: multiplexed.register(script_source(name)) for name in _HOT_SCRIPTS}
            if multiplexed is not None
            else {}
        )
        self._dedupe_ms = dedupe_ms
        self._lease_ms = lease_ms
        self._clock_us = clock_us
        self._claims = Claims(redis, self._scripts, self._ks)
        self._listing = KeyListing(redis, self._ks, self._now_ms)

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """One admission script, over the multiplexed connection when there is one."""
        if self._multiplexed is not None:
            return await self._multiplexed.evalsha(self._shas[name], keys, args)
        return await getattr(self._scripts, name)(keys=keys, args=args)

    def _now_arg(self) -> str:
        now = self._clock_us()
        return "" if now is None else str(now)

    async def ping(self) -> bool:
        async with store_errors():
            return bool(await self._redis.ping())

    # --- admission -----------------------------------------------------------

    async def authorize(
        self,
        key_id: str,
        key_hash: str,
        request_id: str = "",
        tokens: int | None = None,
        cost_micro_usd: int | None = None,
        model: str = "",
        model_unpriced: bool = False,
    ) -> Decision:
        # A key with max parallel requests holds a slot under the request id.
        async with store_errors():
            res = await self._run(
                "authorize",
                keys=self._ks.admission_keys(key_id),
                args=[
                    key_hash,
                    self._now_arg(),
                    request_id,
                    text(tokens),
                    text(cost_micro_usd),
                    self._lease_ms,
                    model,
                    "1" if model_unpriced else "",
                ],
            )
        return decode_authorize(res, request_id, model)

    async def resolve_legacy(self, key_hash: str) -> str | None:
        async with store_errors():
            key_id = await self._redis.hget(self._ks.legacy, key_hash)
        return None if key_id is None else str(key_id)

    async def pin_deployment_settings(self) -> None:
        """Check that every replica uses this one's lease and dedupe times, or fail.

        The first replica to start on a key prefix pins them in the store; a replica
        with other values would expire shared state early (a parallel slot freed
        while its request runs, a retried report counted twice), so it refuses:
        FailedPrecondition naming the values.
        """
        wanted = {
            "reservation_ttl_ms": str(self._lease_ms), "usage_dedupe_ms": str(self._dedupe_ms)
        }
        async with store_errors():
            for name, value in wanted.items():
                await self._redis.hsetnx(self._ks.deployment, name, value)
            raw = await self._redis.hgetall(self._ks.deployment)
        pinned = {_str(k): _str(v) for k, v in raw.items()}
        differ = [
            f"{name} is {pinned.get(name)} in the store, {value} here"
            for name, value in wanted.items() if pinned.get(name) != value
        ]
        if differ:
            raise FailedPrecondition(
                "replicas must share --reservation-ttl-s and --usage-dedupe-s: "
                + "; ".join(differ) + f". To change them, stop every replica, delete the "
                f"store key {self._ks.deployment}, and start them all with the new values"
            )

    async def record_usage(self, report: UsageReport) -> UsageResult:
        kid = report.key_id
        async with store_errors():
            res = await self._run(
                "record_usage",
                keys=[
                    self._ks.record(kid),
                    self._ks.usage(kid),
                    self._ks.seen(kid),
                    self._ks.lease(kid),
                    self._ks.lease_amounts(kid),
                    self._ks.token_window(kid),
                    self._ks.slots(kid),
                    self._ks.history(kid),
                ],
                args=[
                    report.request_id,
                    report.prompt_tokens,
                    report.completion_tokens,
                    report.cost_micro_usd or 0,
                    self._now_arg(),
                    self._dedupe_ms,
                    report.model,
                    "1" if report.unpriced_model else "0",
                ],
            )
        code = ScriptCode(res[0])
        if code is ScriptCode.NOT_FOUND:
            raise NotFound("no API key with that key_id")
        if code is ScriptCode.COUNTER_CAP:
            raise FailedPrecondition(
                "usage: this report would take the key's token or cost counters past "
                "2^53-1; nothing was recorded"
            )
        return decode_usage(res, kid, report.cost_micro_usd or 0)

    async def release_reservation(self, key_id: str, request_id: str) -> bool:
        async with store_errors():
            res = await self._run(
                "release_reservation",
                keys=[self._ks.record(key_id), self._ks.lease(key_id),
                      self._ks.lease_amounts(key_id), self._ks.slots(key_id)],
                args=[request_id, self._now_arg()],
            )
        if ScriptCode(res[0]) is ScriptCode.NOT_FOUND:
            raise NotFound("no API key with that key_id")
        return bool(pairs(res[1:])["released"] == 1)

    # --- key management ------------------------------------------------------

    async def create_key(
        self, spec: KeySpec, key_id: str, key_hash: str, masked: str, *, legacy: bool
    ) -> ApiKey:
        ws = spec.workspace
        async with store_errors():
            # Refusals that need the store come before its first write, so a refused
            # create leaves no trace (not even its workspace in the index). The
            # script checks the expiry again, atomically.
            if spec.expires_at_ms is not None and spec.expires_at_ms <= await self._now_ms():
                raise InvalidArgument("expires_at", "must be in the future")
            if legacy:
                await self._claims.claim_legacy(key_hash, key_id)
            try:
                await self._redis.zadd(self._ks.workspaces, {ws: 0})
                await self._claims.claim_name(ws, spec.name, key_id)
                fields = new_record(spec, key_id, key_hash, masked, legacy)
                args: list[str] = [self._now_arg(), text(spec.expires_at_ms)]
                for item in fields.items():
                    args.extend(item)
                res = await self._scripts.create_key(keys=[self._ks.record(key_id)], args=args)
                code = ScriptCode(res[0])
                if code is ScriptCode.PAST_EXPIRY:
                    raise InvalidArgument("expires_at", "must be in the future")
                if code is ScriptCode.KEY_ID_TAKEN:
                    raise AlreadyExists("key id collision; try again")
            except BaseException:
                await asyncio.shield(self._claims.undo(ws, spec.name, key_id, key_hash, legacy))
                raise
            return await self.get_key(key_id)

    async def list_keys(
        self, key_filter: KeyFilter, page_size: int, page_token: str
    ) -> tuple[Sequence[ApiKey], str]:
        return await self._listing.list_keys(key_filter, page_size, page_token)

    async def list_key_ids(
        self, key_filter: KeyFilter, page_size: int, page_token: str
    ) -> tuple[Sequence[str], str]:
        return await self._listing.list_key_ids(key_filter, page_size, page_token)

    async def _now_ms(self) -> int:
        override = self._clock_us()
        if override is not None:
            return override // 1000
        seconds, micros = await self._redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def get_key(self, key_id: str) -> ApiKey:
        return (await self.overview(key_id)).key

    async def overview(self, key_id: str) -> KeyOverview:
        async with store_errors():
            res = await self._scripts.read_key(
                keys=self._ks.admission_keys(key_id), args=[self._now_arg()]
            )
        if not res:
            raise NotFound("no API key with that key_id")
        return decode_overview(res)

    async def usage_history(self, key_id: str, days: int) -> tuple[DailyUsage, ...]:
        async with store_errors():
            res = await self._scripts.usage_history(
                keys=[self._ks.record(key_id), self._ks.history(key_id)],
                args=[self._now_arg(), days],
            )
        if ScriptCode(res[0]) is ScriptCode.NOT_FOUND:
            raise NotFound("no API key with that key_id")
        return decode_history(res)

    async def overviews(self, key_ids: Sequence[str]) -> list[KeyOverview]:
        """The overviews of these keys, read_key for each in one pipelined round trip."""
        now = self._now_arg()
        async with store_errors():
            replies = await pipelined(
                self._redis, self._scripts.read_key,
                [(self._ks.admission_keys(kid), [now]) for kid in key_ids],
            )
        return [decode_overview(res) for res in replies if res]  # {}: deleted meanwhile

    async def update_key(self, key_id: str, update: KeyUpdate) -> ApiKey:
        sets, clears, setting_limits = update_diff(update)
        expires = "-"
        if "expires_at" in update.fields:
            expires = text(update.expires_at_ms)

        async with store_errors():
            rename_in: str | None = None  # the workspace, while a new name is claimed
            claimed_ms = 0
            if "name" in update.fields:
                ws, old_name = await self._redis.hmget(self._ks.record(key_id), ["ws", "name"])
                if ws is None:
                    raise NotFound("no API key with that key_id")
                if old_name != update.name:
                    claimed_ms = await self._claims.claim_name(str(ws), update.name, key_id)
                    rename_in = str(ws)
            args: list[Any] = [self._now_arg(), "1" if setting_limits else "0", expires, len(sets)]
            for item in sets.items():
                args.extend(item)
            args.extend(clears)
            try:
                res = await self._scripts.update_key(
                    keys=[self._ks.record(key_id), self._ks.window(key_id)], args=args
                )
                code, replaced_name = ScriptCode(res[0]), str(res[2] or "")
            except BaseException:
                if rename_in:
                    await asyncio.shield(self._claims.release_name(rename_in, update.name, key_id))
                raise
            if code is not ScriptCode.OK and rename_in:
                await self._claims.release_name(rename_in, update.name, key_id)
            if code is ScriptCode.NOT_FOUND:
                raise NotFound("no API key with that key_id")
            if code is ScriptCode.LEGACY_KEY:
                raise FailedPrecondition(LEGACY_LIMITS_MESSAGE)
            if code is ScriptCode.PAST_EXPIRY:
                raise InvalidArgument("expires_at", "must be in the future")
            if rename_in and replaced_name != update.name:
                # The name the script replaced: with two renames at once, the one
                # the other rename set, not the one read before claiming.
                await self._claims.release_name(
                    rename_in, replaced_name, key_id, before_ms=claimed_ms
                )
        return await self.get_key(key_id)

    async def rotate_secret(
        self, key_id: str, key_hash: str, masked: str, grace_ms: int
    ) -> ApiKey:
        async with store_errors():
            res = await self._scripts.rotate_key(
                keys=[self._ks.record(key_id)],
                args=[self._now_arg(), key_hash, masked, grace_ms],
            )
        code = ScriptCode(res[0])
        if code is ScriptCode.NOT_FOUND:
            raise NotFound("no API key with that key_id")
        if code is ScriptCode.LEGACY_KEY:
            raise FailedPrecondition(LEGACY_ROTATION_MESSAGE)
        return await self.get_key(key_id)

    async def set_enabled(self, key_id: str, enabled: bool) -> ApiKey:
        async with store_errors():
            res = await self._scripts.update_key(
                keys=[self._ks.record(key_id), self._ks.window(key_id)],
                args=[self._now_arg(), "0", "-", 1, "enabled", "1" if enabled else "0"],
            )
        if ScriptCode(res[0]) is ScriptCode.NOT_FOUND:
            raise NotFound("no API key with that key_id")
        return await self.get_key(key_id)

    async def delete_key(self, key_id: str) -> None:
        kid = key_id
        async with store_errors():
            res = await self._scripts.delete_key(keys=self._ks.all_keys(kid))
            if ScriptCode(res[0]) is ScriptCode.NOT_FOUND:
                raise NotFound("no API key with that key_id")
            gone = pairs(res[1:])
            await self._claims.undo(
                str(gone["workspace"]), str(gone["name"]), kid, str(gone["key_hash"]),
                gone["legacy"] == "1",
            )


def _str(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
