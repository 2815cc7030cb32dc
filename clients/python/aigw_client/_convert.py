"""Typed values <-> request and response messages; shared by the sync and async clients."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Final

from google.protobuf.timestamp_pb2 import Timestamp

from aigw_client._api.v1 import admission_pb2 as adm_pb
from aigw_client._api.v1 import keys_pb2 as keys_pb
from aigw_client.models import (
    ApiKey,
    AuditEntry,
    AuditPage,
    CostUsage,
    CreatedKey,
    Decision,
    DenyReason,
    KeyOverview,
    KeyPage,
    KeyStatus,
    LimitUsage,
    RateLimit,
    ResetPeriod,
    UsageResult,
)
from aigw_client.models import Limits as LimitsValue

_MICRO = Decimal(1_000_000)


class Keep(Enum):
    """The "leave unchanged" marker of ``update_key`` (None there means "clear")."""

    KEEP = "keep"


KEEP: Final = Keep.KEEP

_PERIOD_TO_PB = {
    ResetPeriod.NEVER: keys_pb.RESET_PERIOD_NEVER,
    ResetPeriod.DAILY: keys_pb.RESET_PERIOD_DAILY,
    ResetPeriod.WEEKLY: keys_pb.RESET_PERIOD_WEEKLY,
    ResetPeriod.MONTHLY: keys_pb.RESET_PERIOD_MONTHLY,
    ResetPeriod.YEARLY: keys_pb.RESET_PERIOD_YEARLY,
}
_PERIOD_FROM_PB = {int(v): k for k, v in _PERIOD_TO_PB.items()}
_STATUS_TO_PB = {
    KeyStatus.ENABLED: keys_pb.KEY_STATUS_ENABLED,
    KeyStatus.DISABLED: keys_pb.KEY_STATUS_DISABLED,
    KeyStatus.EXPIRED: keys_pb.KEY_STATUS_EXPIRED,
}
_STATUS_FROM_PB = {int(v): k for k, v in _STATUS_TO_PB.items()}


def usd_text(amount: Decimal) -> str:
    return format(amount, "f")


def usd_from_micro(micro_usd: int) -> Decimal:
    return (Decimal(micro_usd) / _MICRO).normalize() if micro_usd else Decimal(0)


def timestamp(when: datetime) -> Timestamp:
    if when.tzinfo is None:
        raise ValueError("use a timezone-aware datetime (e.g. datetime.now(UTC))")
    ts = Timestamp()
    ts.FromDatetime(when.astimezone(UTC))
    return ts


def _time(msg: Timestamp) -> datetime:
    return msg.ToDatetime(tzinfo=UTC)


def _opt_time(parent: object, name: str) -> datetime | None:
    if not parent.HasField(name):  # type: ignore[attr-defined]
        return None
    return _time(getattr(parent, name))


# --- requests ------------------------------------------------------------------


def limits_message(limits: LimitsValue) -> keys_pb.Limits:
    msg = keys_pb.Limits(reset_period=_PERIOD_TO_PB[limits.reset_period])
    if limits.cost_limit_usd is not None:
        msg.cost_limit_usd = usd_text(limits.cost_limit_usd)
    if limits.token_limit is not None:
        msg.token_limit = limits.token_limit
    if limits.requests_per_minute is not None:
        msg.requests_per_minute = limits.requests_per_minute
    return msg


def create_key_request(
    name: str,
    workspace: str,
    project: str,
    environment: str,
    labels: Mapping[str, str] | None,
    limits: LimitsValue | None,
    expires_at: datetime | None,
) -> keys_pb.CreateKeyRequest:
    req = keys_pb.CreateKeyRequest(
        name=name, workspace=workspace, project=project, environment=environment,
        labels=dict(labels or {}),
    )
    if limits is not None:
        req.limits.CopyFrom(limits_message(limits))
    if expires_at is not None:
        req.expires_at.CopyFrom(timestamp(expires_at))
    return req


def update_key_request(
    key_id: str,
    *,
    name: str | Keep,
    project: str | Keep,
    environment: str | Keep,
    labels: Mapping[str, str] | Keep,
    cost_limit_usd: Decimal | Keep | None,
    token_limit: int | Keep | None,
    requests_per_minute: int | Keep | None,
    reset_period: ResetPeriod | Keep,
    expires_at: datetime | Keep | None,
) -> keys_pb.UpdateKeyRequest:
    """Only the arguments given (not KEEP) go into the update mask; None clears."""
    req = keys_pb.UpdateKeyRequest(key_id=key_id)
    paths: list[str] = []
    if not isinstance(name, Keep):
        req.name = name
        paths.append("name")
    if not isinstance(project, Keep):
        req.project = project
        paths.append("project")
    if not isinstance(environment, Keep):
        req.environment = environment
        paths.append("environment")
    if not isinstance(labels, Keep):
        req.labels.update(labels)
        paths.append("labels")
    if not isinstance(cost_limit_usd, Keep):
        if cost_limit_usd is not None:
            req.limits.cost_limit_usd = usd_text(cost_limit_usd)
        paths.append("limits.cost_limit_usd")
    if not isinstance(token_limit, Keep):
        if token_limit is not None:
            req.limits.token_limit = token_limit
        paths.append("limits.token_limit")
    if not isinstance(requests_per_minute, Keep):
        if requests_per_minute is not None:
            req.limits.requests_per_minute = requests_per_minute
        paths.append("limits.requests_per_minute")
    if not isinstance(reset_period, Keep):
        req.limits.reset_period = _PERIOD_TO_PB[reset_period]
        paths.append("limits.reset_period")
    if not isinstance(expires_at, Keep):
        if expires_at is not None:
            req.expires_at.CopyFrom(timestamp(expires_at))
        paths.append("expires_at")
    req.update_mask.paths.extend(paths)
    return req


def list_keys_request(
    workspace: str, project: str, environment: str, status: KeyStatus | None,
    page_size: int, page_token: str,
) -> keys_pb.ListKeysRequest:
    return keys_pb.ListKeysRequest(
        workspace=workspace, project=project, environment=environment,
        status=_STATUS_TO_PB[status] if status is not None else keys_pb.KEY_STATUS_UNSPECIFIED,
        page_size=page_size, page_token=page_token,
    )


def record_usage_request(
    key_id: str, request_id: str, prompt_tokens: int, completion_tokens: int,
    cost_usd: Decimal | None,
) -> adm_pb.RecordUsageRequest:
    return adm_pb.RecordUsageRequest(
        key_id=key_id, request_id=request_id, prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=usd_text(cost_usd) if cost_usd is not None else "",
    )


# --- responses -----------------------------------------------------------------


def limits_value(msg: keys_pb.Limits) -> LimitsValue:
    cost: Decimal | None = None
    if msg.HasField("cost_limit_micro_usd"):
        cost = usd_from_micro(msg.cost_limit_micro_usd)
    elif msg.HasField("cost_limit_usd"):
        cost = Decimal(msg.cost_limit_usd)
    return LimitsValue(
        cost_limit_usd=cost,
        token_limit=msg.token_limit if msg.HasField("token_limit") else None,
        requests_per_minute=(
            msg.requests_per_minute if msg.HasField("requests_per_minute") else None
        ),
        reset_period=_PERIOD_FROM_PB.get(msg.reset_period, ResetPeriod.NEVER),
    )


def api_key(msg: keys_pb.ApiKey) -> ApiKey:
    return ApiKey(
        key_id=msg.key_id,
        name=msg.name,
        workspace=msg.workspace,
        project=msg.project,
        environment=msg.environment,
        labels=dict(msg.labels),
        limits=limits_value(msg.limits),
        status=_STATUS_FROM_PB.get(msg.status, KeyStatus.ENABLED),
        enabled=msg.enabled,
        legacy=msg.legacy,
        masked_secret=msg.masked_secret,
        created_at=_time(msg.created_at),
        updated_at=_time(msg.updated_at),
        expires_at=_opt_time(msg, "expires_at"),
        last_used_at=_opt_time(msg, "last_used_at"),
    )


def created_key(msg: keys_pb.CreateKeyResponse) -> CreatedKey:
    return CreatedKey(key=api_key(msg.key), secret=msg.secret)


def key_page(msg: keys_pb.ListKeysResponse) -> KeyPage:
    return KeyPage(tuple(api_key(k) for k in msg.keys), msg.next_page_token)


def _limit_usage(msg: keys_pb.LimitUsage) -> LimitUsage:
    if not msg.limited:
        return LimitUsage(limit=None, used=msg.used, remaining=None)
    return LimitUsage(limit=msg.limit, used=msg.used, remaining=msg.remaining)


def _cost_usage(msg: keys_pb.LimitUsage) -> CostUsage:
    if not msg.limited:
        return CostUsage(None, usd_from_micro(msg.used), None)
    return CostUsage(
        usd_from_micro(msg.limit), usd_from_micro(msg.used), usd_from_micro(msg.remaining)
    )


def overview(msg: keys_pb.KeyOverview) -> KeyOverview:
    return KeyOverview(
        key=api_key(msg.key),
        cost=_cost_usage(msg.cost_micro_usd),
        tokens=_limit_usage(msg.tokens),
        requests_per_minute=_limit_usage(msg.requests_per_minute),
        period_start=_time(msg.period_start),
        next_reset=_opt_time(msg, "next_reset"),
        period_requests=msg.period_requests,
        period_prompt_tokens=msg.period_prompt_tokens,
        period_completion_tokens=msg.period_completion_tokens,
        lifetime_requests=msg.lifetime_requests,
        lifetime_prompt_tokens=msg.lifetime_prompt_tokens,
        lifetime_completion_tokens=msg.lifetime_completion_tokens,
        lifetime_cost_usd=usd_from_micro(msg.lifetime_cost_micro_usd),
        last_used_at=_opt_time(msg, "last_used_at"),
        observed_at=_time(msg.observed_at),
    )


def audit_page(msg: keys_pb.ListAuditEntriesResponse) -> AuditPage:
    return AuditPage(
        tuple(
            AuditEntry(
                entry_id=e.entry_id,
                occurred_at=_time(e.occurred_at),
                principal=e.principal,
                action=e.action,
                key_id=e.key_id,
                name=e.name,
                workspace=e.workspace,
                detail=e.detail,
            )
            for e in msg.entries
        ),
        msg.next_page_token,
    )


_DENY_FROM_PB = {
    adm_pb.DENY_REASON_KEY_MISSING: DenyReason.KEY_MISSING,
    adm_pb.DENY_REASON_KEY_MALFORMED: DenyReason.KEY_MALFORMED,
    adm_pb.DENY_REASON_KEY_UNKNOWN: DenyReason.KEY_UNKNOWN,
    adm_pb.DENY_REASON_KEY_DISABLED: DenyReason.KEY_DISABLED,
    adm_pb.DENY_REASON_KEY_EXPIRED: DenyReason.KEY_EXPIRED,
    adm_pb.DENY_REASON_REQUESTS_PER_MINUTE: DenyReason.REQUESTS_PER_MINUTE,
    adm_pb.DENY_REASON_TOKEN_LIMIT: DenyReason.TOKEN_LIMIT,
    adm_pb.DENY_REASON_COST_LIMIT: DenyReason.COST_LIMIT,
}


def _rate_limit(msg: adm_pb.RateLimit) -> RateLimit | None:
    if not msg.limited:
        return None
    reset = timedelta(milliseconds=msg.reset_ms) if msg.resets else None
    return RateLimit(limit=msg.limit, remaining=msg.remaining, reset_after=reset)


def decision(msg: adm_pb.AuthorizeResponse) -> Decision:
    return Decision(
        allowed=msg.allowed,
        deny_reason=_DENY_FROM_PB.get(msg.deny_reason),
        message=msg.message,
        key_id=msg.key_id,
        workspace=msg.workspace,
        project=msg.project,
        environment=msg.environment,
        legacy=msg.legacy,
        requests=_rate_limit(msg.requests),
        tokens=_rate_limit(msg.tokens),
        cost_micro_usd=_rate_limit(msg.cost_micro_usd),
        retry_after=(
            timedelta(milliseconds=msg.retry_after_ms) if msg.retry_after_ms else None
        ),
    )


def usage_result(msg: adm_pb.RecordUsageResponse) -> UsageResult:
    return UsageResult(
        counted=msg.counted,
        period_tokens=msg.period_tokens,
        period_cost_usd=usd_from_micro(msg.period_cost_micro_usd),
    )
