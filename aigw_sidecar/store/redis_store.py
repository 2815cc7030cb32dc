"""RedisKeyStore: API keys and admission counters in Redis, one script per decision.

Admission (authorize, record_usage) is one EVALSHA on the key's own slot.
Key management spans two slots (the key's and its workspace's name index), so
create, rename and delete are short sequences of single-slot scripts ordered so
that a crash half-way leaves nothing a user can see: a name claim whose key
record does not exist is stale and is taken over by the next create.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_errors

from aigw_sidecar.admission.decision import (
    Decision,
    DenyReason,
    LimitState,
    Reservation,
    UsageReport,
    UsageResult,
)
from aigw_sidecar.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    StoreUnavailable,
)
from aigw_sidecar.keys.model import (
    ApiKey,
    KeyFilter,
    KeyOverview,
    KeySpec,
    KeyUpdate,
    Limits,
    ModelUsage,
    key_status,
)
from aigw_sidecar.keys.service import LEGACY_LIMITS_MESSAGE, LEGACY_ROTATION_MESSAGE
from aigw_sidecar.limits.alerts import Budget, BudgetEvent, EventType, KeyAlerts
from aigw_sidecar.limits.periods import ResetPeriod
from aigw_sidecar.store.client import StoreClient
from aigw_sidecar.store.keyspace import Keyspace
from aigw_sidecar.store.multiplexed import MultiplexedScripts
from aigw_sidecar.store.scripts import Scripts, script_source

# A name claim younger than this may belong to a create still in flight.
STALE_CLAIM_MS = 10_000
DEFAULT_DEDUPE_MS = 24 * 3600 * 1000
DEFAULT_LEASE_MS = 10 * 60 * 1000
_LIST_BATCH = 200
_LIST_MAX_SCANNED = 5000

# The admission scripts: one per decision on the hot path.
_HOT_SCRIPTS = ("authorize", "record_usage", "release_reservation")
_DENY_CODES = {
    3: DenyReason.KEY_UNKNOWN,
    4: DenyReason.KEY_DISABLED,
    5: DenyReason.KEY_EXPIRED,
    6: DenyReason.REQUESTS_PER_MINUTE,
    7: DenyReason.TOKEN_LIMIT,
    8: DenyReason.COST_LIMIT,
    9: DenyReason.TOKENS_PER_MINUTE,
    10: DenyReason.PARALLEL_REQUESTS,
    11: DenyReason.MODEL_NOT_ALLOWED,
    13: DenyReason.MODEL_NOT_PRICED,
}
# KeyUpdate field -> record field, for the plain string fields.
_TEXT_FIELDS = {"name": "name", "project": "proj", "environment": "env"}


@dataclass(frozen=True, slots=True)
class _Cursor:
    workspace: str
    score: int
    key_id: str

    def encode(self) -> str:
        raw = json.dumps([self.workspace, self.score, self.key_id]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> _Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            workspace, score, key_id = json.loads(raw)
            if not (isinstance(workspace, str) and isinstance(score, int)):
                raise ValueError(token)
            return cls(workspace, score, str(key_id))
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            raise InvalidArgument("page_token", "is not a token from ListKeys") from None


def _opt_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    return int(value)


def decode_key(fields: dict[str, str], now_ms: int) -> ApiKey:
    """A record hash (as returned by HGETALL) as an ApiKey."""
    enabled = fields.get("enabled") == "1"
    expires_at_ms = _opt_int(fields.get("expires_at"))
    return ApiKey(
        key_id=fields["kid"],
        name=fields.get("name", ""),
        workspace=fields.get("ws", ""),
        project=fields.get("proj", ""),
        environment=fields.get("env", ""),
        labels=json.loads(fields.get("labels") or "{}"),
        limits=Limits(
            cost_limit_micro_usd=_opt_int(fields.get("cost_limit")),
            token_limit=_opt_int(fields.get("token_limit")),
            requests_per_minute=_opt_int(fields.get("rpm")),
            reset_period=ResetPeriod(fields.get("period") or "never"),
            tokens_per_minute=_opt_int(fields.get("tpm")),
            max_parallel_requests=_opt_int(fields.get("maxpar")),
            allowed_models=tuple(filter(None, (fields.get("models") or "").split("\n"))),
        ),
        enabled=enabled,
        legacy=fields.get("legacy") == "1",
        masked_secret=fields.get("masked", ""),
        created_at_ms=int(fields.get("created_at", 0)),
        updated_at_ms=int(fields.get("updated_at", 0)),
        expires_at_ms=expires_at_ms,
        last_used_at_ms=_opt_int(fields.get("last_used_at")),
        status=key_status(enabled, expires_at_ms, now_ms),
        alerts=_decode_alerts(fields),
        previous_secret_expires_at_ms=_grace_end(fields.get("prev_until"), now_ms),
    )


def _grace_end(prev_until: str | None, now_ms: int) -> int | None:
    """When the previous secret of a rotation stops, while it still works."""
    end = _opt_int(prev_until)
    return end if end is not None and end > now_ms else None


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _limit_state(limit: int, remaining: int, reset_ms: int) -> LimitState | None:
    if limit < 0:
        return None
    return LimitState(limit=limit, remaining=remaining, reset_ms=None if reset_ms < 0 else reset_ms)


def _limit_fields(limits: Limits) -> dict[str, str]:
    return {
        "cost_limit": _text(limits.cost_limit_micro_usd),
        "token_limit": _text(limits.token_limit),
        "rpm": _text(limits.requests_per_minute),
        "period": limits.reset_period.value,
        "tpm": _text(limits.tokens_per_minute),
        "maxpar": _text(limits.max_parallel_requests),
        # Validated model patterns hold no whitespace, so a newline separates them.
        "models": "\n".join(limits.allowed_models),
    }


def _text(value: int | None) -> str:
    return "" if value is None else str(value)


def _alert_fields(alerts: KeyAlerts) -> dict[str, tuple[str, str]]:
    """KeyUpdate field name -> (record field, value); "" clears."""
    return {
        "alert_thresholds_percent": (
            "alert_pct", ",".join(str(p) for p in alerts.thresholds_percent)
        ),
        "alert_expiry_days": ("alert_exp_days", _text(alerts.expiry_days)),
    }


def _decode_alerts(fields: dict[str, str]) -> KeyAlerts:
    text = fields.get("alert_pct") or ""
    return KeyAlerts(
        thresholds_percent=tuple(int(p) for p in text.split(",") if p),
        expiry_days=_opt_int(fields.get("alert_exp_days")),
    )


def _usage_extras(key_id: str, tail: Sequence[Any]) -> dict[str, Any]:
    """The tail of a counted record_usage reply: who, swept leases, budget alerts."""
    if not tail:  # a repeated request id: nothing happened
        return {}
    workspace, project = str(tail[0]), str(tail[1])
    swept, period_start, raw = int(tail[2]), int(tail[3]), tail[4]
    alerts = []
    for kind, amount, used, limit in raw:
        if kind == "expiry":
            alerts.append(BudgetEvent(
                EventType.KEY_EXPIRING, key_id, workspace, project,
                expires_at_ms=int(limit), expiry_days=int(amount),
            ))
        else:
            alerts.append(BudgetEvent(
                EventType.BUDGET_THRESHOLD, key_id, workspace, project, Budget(kind),
                threshold_percent=int(amount), used=int(used), limit=int(limit),
                period_start_ms=int(period_start),
            ))
    return {
        "workspace": workspace,
        "project": project,
        "expired_reservations": int(swept),
        "alerts": tuple(alerts),
    }


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

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """One admission script, over the multiplexed connection when there is one."""
        if self._multiplexed is not None:
            return await self._multiplexed.evalsha(self._shas[name], keys, args)
        return await getattr(self._scripts, name)(keys=keys, args=args)

    def _now_arg(self) -> str:
        now = self._clock_us()
        return "" if now is None else str(now)

    async def ping(self) -> bool:
        async with _store_errors():
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
        async with _store_errors():
            res = await self._run(
                "authorize",
                keys=self._ks.admission_keys(key_id),
                args=[
                    key_hash,
                    self._now_arg(),
                    request_id,
                    _text(tokens),
                    _text(cost_micro_usd),
                    self._lease_ms,
                    model,
                    "1" if model_unpriced else "",
                ],
            )
        code = int(res[0])
        if code == 3:
            return Decision.deny(DenyReason.KEY_UNKNOWN)
        if code == 12:
            raise InvalidArgument(
                "request_id", "was already settled by a usage report; give every request "
                "its own request id"
            )
        identity: dict[str, Any] = {
            "key_id": res[1],
            "workspace": res[2],
            "project": res[3] or "",
            "environment": res[4] or "",
            "legacy": res[5] == "1",
        }
        if code in (4, 5, 11, 13):
            return Decision(
                allowed=False, deny_reason=_DENY_CODES[code], model=model, **identity
            )
        (rpm, rpm_left, rpm_reset, tok, tok_left, cost, cost_left, budget_reset, retry,
         reserved_tok, reserved_cost, tpm, tpm_left, tpm_reset, par, par_left,
         slot_held) = (int(v) for v in res[6:23])
        return Decision(
            tokens_per_minute=_limit_state(tpm, tpm_left, tpm_reset),
            # Slots never reset on a schedule: no reset time.
            parallel_requests=_limit_state(par, par_left, -1),
            request_id=request_id if code == 0 and (slot_held or reserved_tok >= 0) else "",
            reservation=(
                Reservation(request_id, reserved_tok, reserved_cost) if reserved_tok >= 0 else None
            ),
            allowed=code == 0,
            deny_reason=_DENY_CODES.get(code),
            requests=_limit_state(rpm, rpm_left, rpm_reset),
            tokens=_limit_state(tok, tok_left, budget_reset),
            cost_micro_usd=_limit_state(cost, cost_left, budget_reset),
            retry_after_ms=None if retry < 0 else retry,
            **identity,
        )

    async def resolve_legacy(self, key_hash: str) -> str | None:
        async with _store_errors():
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
        async with _store_errors():
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
        async with _store_errors():
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
        code, tokens, cost, settled = res[:4]
        if code == 0:
            raise NotFound("no API key with that key_id")
        if code == 3:
            raise FailedPrecondition(
                "usage: this report would take the key's token or cost counters past "
                "2^53-1; nothing was recorded"
            )
        return UsageResult(
            **_usage_extras(kid, res[4:]),
            counted=code == 1,
            period_tokens=int(tokens),
            period_cost_micro_usd=int(cost),
            cost_micro_usd=(report.cost_micro_usd or 0) if code == 1 else 0,
            settled_reservation=settled == 1,
        )

    async def release_reservation(self, key_id: str, request_id: str) -> bool:
        async with _store_errors():
            res = await self._run(
                "release_reservation",
                keys=[self._ks.record(key_id), self._ks.lease(key_id),
                      self._ks.lease_amounts(key_id), self._ks.slots(key_id)],
                args=[request_id, self._now_arg()],
            )
        if int(res) < 0:
            raise NotFound("no API key with that key_id")
        return int(res) == 1

    # --- key management ------------------------------------------------------

    async def create_key(
        self, spec: KeySpec, key_id: str, key_hash: str, masked: str, *, legacy: bool
    ) -> ApiKey:
        ws = spec.workspace
        async with _store_errors():
            # Refusals that need the store come before its first write, so a refused
            # create leaves no trace (not even its workspace in the index). The
            # script checks the expiry again, atomically.
            if spec.expires_at_ms is not None and spec.expires_at_ms <= await self._now_ms():
                raise InvalidArgument("expires_at", "must be in the future")
            if legacy:
                await self._claim_legacy(key_hash, key_id)
            try:
                await self._redis.zadd(self._ks.workspaces, {ws: 0})
                await self._claim_name(ws, spec.name, key_id)
                fields = {
                    "kid": key_id,
                    "name": spec.name,
                    "ws": ws,
                    "proj": spec.project,
                    "env": spec.environment,
                    "labels": json.dumps(dict(spec.labels), sort_keys=True),
                    **_limit_fields(spec.limits),
                    "epoch": "0",
                    "enabled": "1",
                    "legacy": "1" if legacy else "0",
                    "hash": key_hash,
                    "masked": masked,
                    **{f: v for f, v in _alert_fields(spec.alerts).values() if v},
                }
                args: list[str] = [self._now_arg(), _text(spec.expires_at_ms)]
                for item in fields.items():
                    args.extend(item)
                code, _now_ms = await self._scripts.create_key(
                    keys=[self._ks.record(key_id)], args=args
                )
                if code == 2:
                    raise InvalidArgument("expires_at", "must be in the future")
                if code == 0:
                    raise AlreadyExists("key id collision; try again")
            except BaseException:
                await asyncio.shield(self._undo_claims(ws, spec.name, key_id, key_hash, legacy))
                raise
            return await self.get_key(key_id)

    async def _undo_claims(
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

    async def _claim_name(self, ws: str, name: str, key_id: str) -> int:
        """Claim a name; the claim's time (store ms) is returned."""
        async def holds(holder: str) -> bool | None:
            record = await self._redis.hmget(self._ks.record(holder), ["ws", "name"])
            return None if record[0] is None else record == [ws, name]

        return await self._claim(
            [self._ks.names(ws), self._ks.name_claims(ws), self._ks.key_list(ws)],
            name, key_id, holds,
            f"an API key named {name!r} already exists in workspace {ws!r}",
        )

    async def _claim_legacy(self, key_hash: str, key_id: str) -> None:
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
            if int(res[0]) == 1:
                return int(res[2])
            holder, age_ms = str(res[1]), int(res[2])
            if age_ms < STALE_CLAIM_MS:
                break
            held = await holds(holder)
            if held:
                break
            stale, orphan = holder, "1" if held is None else "0"
        raise AlreadyExists(taken_message)

    async def get_key(self, key_id: str) -> ApiKey:
        return (await self.overview(key_id)).key

    async def overview(self, key_id: str) -> KeyOverview:
        async with _store_errors():
            res = await self._scripts.read_key(
                keys=self._ks.admission_keys(key_id), args=[self._now_arg()]
            )
        if not res:
            raise NotFound("no API key with that key_id")
        fields = _pairs(res[0])
        (now_ms, start_ms, end_ms, tokens, cost, requests, pt, ct, in_window,
         rsv_tok, rsv_cost, rsv_count) = (int(v) for v in res[1:13])
        flat_models, unpriced = res[13], int(res[14])
        tokens_last_minute, in_flight = int(res[15]), int(res[16])
        per_model = tuple(sorted(
            (
                ModelUsage(str(flat_models[i]), int(flat_models[i + 1]),
                           int(flat_models[i + 2]), int(flat_models[i + 3]))
                for i in range(0, len(flat_models), 4)
            ),
            key=lambda usage: (-usage.cost_micro_usd, -usage.tokens, usage.model),
        ))
        key = decode_key(fields, now_ms)
        return KeyOverview(
            key=key,
            observed_at_ms=now_ms,
            # A budget that never resets has one period: the key's whole life.
            period_start_ms=start_ms if end_ms >= 0 else key.created_at_ms,
            next_reset_ms=None if end_ms < 0 else end_ms,
            period_cost_micro_usd=cost,
            period_tokens=tokens,
            period_requests=requests,
            period_prompt_tokens=pt,
            period_completion_tokens=ct,
            requests_last_minute=in_window,
            lifetime_requests=int(fields.get("lt_req", 0)),
            lifetime_prompt_tokens=int(fields.get("lt_pt", 0)),
            lifetime_completion_tokens=int(fields.get("lt_ct", 0)),
            lifetime_cost_micro_usd=int(fields.get("lt_cost", 0)),
            tokens_last_minute=tokens_last_minute + rsv_tok,
            requests_in_flight=in_flight,
            reserved_tokens=rsv_tok,
            reserved_cost_micro_usd=rsv_cost,
            open_reservations=rsv_count,
            per_model=per_model,
            unpriced_requests=unpriced,
        )

    async def update_key(self, key_id: str, update: KeyUpdate) -> ApiKey:
        sets: dict[str, str] = {}
        clears: list[str] = []
        for name in update.fields & _TEXT_FIELDS.keys():
            sets[_TEXT_FIELDS[name]] = getattr(update, name)
        if "labels" in update.fields:
            sets["labels"] = json.dumps(dict(update.labels), sort_keys=True)
        limit_values = _limit_fields(update.limits)
        setting_limits = False
        for name, record_field in (
            ("cost_limit", "cost_limit"),
            ("token_limit", "token_limit"),
            ("requests_per_minute", "rpm"),
            ("reset_period", "period"),
            ("tokens_per_minute", "tpm"),
            ("max_parallel_requests", "maxpar"),
            ("allowed_models", "models"),
        ):
            if name not in update.fields:
                continue
            value = limit_values[record_field]
            if value in ("", "never") and record_field != "period":
                clears.append(record_field)
            else:
                sets[record_field] = value
                setting_limits = setting_limits or value != "never"
        for name, (record_field, value) in _alert_fields(update.alerts).items():
            if name in update.fields:
                if value:
                    sets[record_field] = value
                else:
                    clears.append(record_field)
        expires = "-"
        if "expires_at" in update.fields:
            expires = _text(update.expires_at_ms)

        async with _store_errors():
            rename_in: str | None = None  # the workspace, while a new name is claimed
            claimed_ms = 0
            if "name" in update.fields:
                ws, old_name = await self._redis.hmget(self._ks.record(key_id), ["ws", "name"])
                if ws is None:
                    raise NotFound("no API key with that key_id")
                if old_name != update.name:
                    claimed_ms = await self._claim_name(str(ws), update.name, key_id)
                    rename_in = str(ws)
            args: list[Any] = [self._now_arg(), "1" if setting_limits else "0", expires, len(sets)]
            for item in sets.items():
                args.extend(item)
            args.extend(clears)
            try:
                res = await self._scripts.update_key(
                    keys=[self._ks.record(key_id), self._ks.window(key_id)], args=args
                )
                code, replaced_name = int(res[0]), str(res[2] or "")
            except BaseException:
                if rename_in:
                    await asyncio.shield(self._release_name(rename_in, update.name, key_id))
                raise
            if code != 1 and rename_in:
                await self._release_name(rename_in, update.name, key_id)
            if code == 0:
                raise NotFound("no API key with that key_id")
            if code == 2:
                raise FailedPrecondition(LEGACY_LIMITS_MESSAGE)
            if code == 3:
                raise InvalidArgument("expires_at", "must be in the future")
            if rename_in and replaced_name != update.name:
                # The name the script replaced: with two renames at once, the one
                # the other rename set, not the one read before claiming.
                await self._release_name(rename_in, replaced_name, key_id, before_ms=claimed_ms)
        return await self.get_key(key_id)

    async def rotate_secret(
        self, key_id: str, key_hash: str, masked: str, grace_ms: int
    ) -> ApiKey:
        async with _store_errors():
            res = await self._scripts.rotate_key(
                keys=[self._ks.record(key_id)],
                args=[self._now_arg(), key_hash, masked, grace_ms],
            )
        code = int(res[0])
        if code == 0:
            raise NotFound("no API key with that key_id")
        if code == 2:
            raise FailedPrecondition(LEGACY_ROTATION_MESSAGE)
        return await self.get_key(key_id)

    async def _release_name(
        self, ws: str, name: str, key_id: str, *, before_ms: int | None = None
    ) -> None:
        """Give a name back; with ``before_ms``, only a claim made before then."""
        await self._scripts.release(
            keys=[self._ks.names(ws), self._ks.name_claims(ws)],
            args=[name, key_id, "0", "" if before_ms is None else before_ms],
        )

    async def set_enabled(self, key_id: str, enabled: bool) -> ApiKey:
        async with _store_errors():
            res = await self._scripts.update_key(
                keys=[self._ks.record(key_id), self._ks.window(key_id)],
                args=[self._now_arg(), "0", "-", 1, "enabled", "1" if enabled else "0"],
            )
        if int(res[0]) == 0:
            raise NotFound("no API key with that key_id")
        return await self.get_key(key_id)

    async def delete_key(self, key_id: str) -> None:
        kid = key_id
        async with _store_errors():
            res = await self._scripts.delete_key(keys=self._ks.all_keys(kid))
            if int(res[0]) == 0:
                raise NotFound("no API key with that key_id")
            ws, name, key_hash, legacy = str(res[1]), str(res[2]), str(res[3]), res[4] == "1"
            await self._undo_claims(ws, name, kid, key_hash, legacy)

    async def list_keys(
        self, key_filter: KeyFilter, page_size: int, page_token: str
    ) -> tuple[Sequence[ApiKey], str]:
        cursor = _Cursor.decode(page_token) if page_token else None
        found: list[ApiKey] = []
        scanned = 0
        async with _store_errors():
            now_ms = await self._now_ms()
            async for ws in self._workspaces(key_filter.workspace, cursor):
                after = cursor if cursor and cursor.workspace == ws else None
                async for key, score in self._keys_of(ws, after, now_ms):
                    scanned += 1
                    if key_filter.matches(key):
                        found.append(key)
                    if len(found) == page_size or scanned >= _LIST_MAX_SCANNED:
                        return found, _Cursor(ws, score, key.key_id).encode()
        return found, ""

    async def _now_ms(self) -> int:
        override = self._clock_us()
        if override is not None:
            return override // 1000
        seconds, micros = await self._redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def _workspaces(self, only: str, cursor: _Cursor | None) -> AsyncIterator[str]:
        if only:
            if cursor is None or cursor.workspace == only:
                yield only
            return
        low = f"[{cursor.workspace}" if cursor else "-"
        while True:
            batch = [
                str(ws)
                for ws in await self._redis.zrangebylex(
                    self._ks.workspaces, low, "+", 0, _LIST_BATCH
                )
            ]
            for ws in batch:
                yield ws
            if len(batch) < _LIST_BATCH:
                return
            low = f"({batch[-1]}"

    async def _keys_of(
        self, ws: str, after: _Cursor | None, now_ms: int
    ) -> AsyncIterator[tuple[ApiKey, int]]:
        low: int | str = after.score if after else "-inf"
        offset = 0
        while True:
            batch = await self._redis.zrange(
                self._ks.key_list(ws), low, "+inf", byscore=True, offset=offset,
                num=_LIST_BATCH, withscores=True,
            )
            entries = [(str(item[0]), int(item[1])) for item in batch]
            if after:
                # Equal scores are ordered by member, so (score, key id) is a total order.
                entries = [e for e in entries if (e[1], e[0]) > (after.score, after.key_id)]
            pipe = self._redis.pipeline(transaction=False)
            for kid, _ in entries:
                pipe.hgetall(self._ks.record(kid))
            records = await pipe.execute() if entries else []
            for (_kid, score), fields in zip(entries, records, strict=True):
                if fields:  # a key deleted meanwhile leaves no record
                    yield decode_key(fields, now_ms), score
            if len(batch) < _LIST_BATCH:
                return
            offset += len(batch)


def _str(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


@asynccontextmanager
async def _store_errors() -> AsyncIterator[None]:
    """Redis connection trouble becomes StoreUnavailable; nothing else is hidden."""
    try:
        yield
    except (redis_errors.ConnectionError, redis_errors.TimeoutError,
            redis_errors.BusyLoadingError, redis_errors.ClusterDownError,
            redis_errors.TryAgainError, redis_errors.RedisClusterException,
            TimeoutError, OSError) as exc:
        raise StoreUnavailable("the key store is unavailable; try again") from exc

