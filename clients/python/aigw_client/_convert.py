"""Typed values <-> request and response messages; shared by the sync and async clients."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Final, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from aigw_client._api.v1 import admission_pb2 as adm_pb
from aigw_client._api.v1 import keys_pb2 as keys_pb
from aigw_client.models import (
    ApiKey,
    AuditEntry,
    AuditPage,
    Budget,
    BudgetEvent,
    BudgetEventType,
    CostUsage,
    CreatedKey,
    Decision,
    DenyReason,
    Estimate,
    EventPage,
    KeyOverview,
    KeyPage,
    KeyStatus,
    LimitUsage,
    ModelPrice,
    ModelUsage,
    PricePage,
    RateLimit,
    Reservation,
    ResetPeriod,
    RotatedKey,
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


def micro_from_usd(amount: Decimal, name: str) -> int:
    """Exact micro-USD; more than 6 decimals is refused rather than rounded."""
    micro = amount * _MICRO
    if micro != micro.to_integral_value():
        raise ValueError(f"{name}: at most 6 decimal places (micro-USD)")
    return int(micro)


def whole_seconds(duration: timedelta, name: str) -> int:
    if duration % timedelta(seconds=1):
        raise ValueError(f"{name}: whole seconds only")
    return int(duration.total_seconds())


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
    if limits.tokens_per_minute is not None:
        msg.tokens_per_minute = limits.tokens_per_minute
    if limits.max_parallel_requests is not None:
        msg.max_parallel_requests = limits.max_parallel_requests
    msg.allowed_models.extend(limits.allowed_models)
    return msg


def create_key_request(
    name: str,
    workspace: str,
    project: str,
    environment: str,
    labels: Mapping[str, str] | None,
    limits: LimitsValue | None,
    expires_at: datetime | None,
    alert_thresholds_percent: Sequence[int] = (),
    alert_expiry_days: int | None = None,
) -> keys_pb.CreateKeyRequest:
    req = keys_pb.CreateKeyRequest(
        name=name, workspace=workspace, project=project, environment=environment,
        labels=dict(labels or {}), alert_thresholds_percent=list(alert_thresholds_percent),
    )
    if alert_expiry_days is not None:
        req.alert_expiry_days = alert_expiry_days
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
    tokens_per_minute: int | Keep | None = KEEP,
    max_parallel_requests: int | Keep | None = KEEP,
    allowed_models: Sequence[str] | Keep | None = KEEP,
    alert_thresholds_percent: Sequence[int] | Keep | None = KEEP,
    alert_expiry_days: int | Keep | None = KEEP,
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
    if not isinstance(tokens_per_minute, Keep):
        if tokens_per_minute is not None:
            req.limits.tokens_per_minute = tokens_per_minute
        paths.append("limits.tokens_per_minute")
    if not isinstance(max_parallel_requests, Keep):
        if max_parallel_requests is not None:
            req.limits.max_parallel_requests = max_parallel_requests
        paths.append("limits.max_parallel_requests")
    if not isinstance(allowed_models, Keep):
        req.limits.allowed_models.extend(allowed_models or ())
        paths.append("limits.allowed_models")
    if not isinstance(alert_thresholds_percent, Keep):
        req.alert_thresholds_percent.extend(alert_thresholds_percent or ())
        paths.append("alert_thresholds_percent")
    if not isinstance(alert_expiry_days, Keep):
        if alert_expiry_days is not None:
            req.alert_expiry_days = alert_expiry_days
        paths.append("alert_expiry_days")
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


def authorize_request(
    secret: str, request_id: str, model: str, estimate: Estimate | None
) -> adm_pb.AuthorizeRequest:
    req = adm_pb.AuthorizeRequest(secret=secret, request_id=request_id, model=model)
    if estimate is not None:
        req.estimate.model = estimate.model
        req.estimate.prompt_tokens = estimate.prompt_tokens
        req.estimate.max_output_tokens = estimate.max_output_tokens
        if estimate.cost_usd is not None:
            req.estimate.cost_micro_usd = micro_from_usd(estimate.cost_usd, "estimate.cost_usd")
    return req


def record_usage_request(
    key_id: str, request_id: str, prompt_tokens: int, completion_tokens: int,
    cost_usd: Decimal | None, model: str = "", cached_prompt_tokens: int = 0,
) -> adm_pb.RecordUsageRequest:
    """Without ``cost_usd`` the sidecar prices the report from its pricing table."""
    return adm_pb.RecordUsageRequest(
        key_id=key_id, request_id=request_id, prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=usd_text(cost_usd) if cost_usd is not None else "",
        model=model, cached_prompt_tokens=cached_prompt_tokens,
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
        tokens_per_minute=(
            msg.tokens_per_minute if msg.HasField("tokens_per_minute") else None
        ),
        max_parallel_requests=(
            msg.max_parallel_requests if msg.HasField("max_parallel_requests") else None
        ),
        allowed_models=tuple(msg.allowed_models),
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
        alert_thresholds_percent=tuple(msg.alert_thresholds_percent),
        alert_expiry_days=(
            msg.alert_expiry_days if msg.HasField("alert_expiry_days") else None
        ),
        previous_secret_expires_at=_opt_time(msg, "previous_secret_expires_at"),
    )


def created_key(msg: keys_pb.CreateKeyResponse) -> CreatedKey:
    return CreatedKey(key=api_key(msg.key), secret=msg.secret)


def rotated_key(msg: keys_pb.RotateKeySecretResponse) -> RotatedKey:
    return RotatedKey(key=api_key(msg.key), secret=msg.secret)


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
        reserved_tokens=msg.reserved_tokens,
        reserved_cost_usd=usd_from_micro(msg.reserved_cost_micro_usd),
        open_reservations=msg.open_reservations,
        per_model=tuple(
            ModelUsage(m.model, m.requests, m.tokens, usd_from_micro(m.cost_micro_usd))
            for m in msg.per_model
        ),
        unpriced_requests=msg.unpriced_requests,
        tokens_per_minute=_limit_usage(msg.tokens_per_minute),
        parallel_requests=_limit_usage(msg.parallel_requests),
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
    adm_pb.DENY_REASON_TOKENS_PER_MINUTE: DenyReason.TOKENS_PER_MINUTE,
    adm_pb.DENY_REASON_PARALLEL_REQUESTS: DenyReason.PARALLEL_REQUESTS,
    adm_pb.DENY_REASON_MODEL_NOT_ALLOWED: DenyReason.MODEL_NOT_ALLOWED,
    adm_pb.DENY_REASON_MODEL_NOT_PRICED: DenyReason.MODEL_NOT_PRICED,
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
        tokens_per_minute=_rate_limit(msg.tokens_per_minute),
        parallel_requests=_rate_limit(msg.parallel_requests),
        reservation=(
            Reservation(msg.reservation.tokens, usd_from_micro(msg.reservation.cost_micro_usd))
            if msg.HasField("reservation") else None
        ),
        request_id=msg.request_id,
    )


def usage_result(msg: adm_pb.RecordUsageResponse) -> UsageResult:
    return UsageResult(
        counted=msg.counted,
        period_tokens=msg.period_tokens,
        period_cost_usd=usd_from_micro(msg.period_cost_micro_usd),
        cost_usd=usd_from_micro(msg.cost_micro_usd),
        settled_reservation=msg.settled_reservation,
    )


_Known = TypeVar("_Known", BudgetEventType, Budget)


def _known(kind: type[_Known], value: str) -> _Known | str:
    """The enum member, or the string itself when this client does not know it yet."""
    try:
        return kind(value)
    except ValueError:
        return value


def budget_event(msg: keys_pb.BudgetEvent) -> BudgetEvent:
    budget = _known(Budget, msg.budget) if msg.budget else None
    scale = usd_from_micro if budget is Budget.COST else Decimal
    return BudgetEvent(
        event_id=msg.event_id,
        occurred_at=_time(msg.occurred_at),
        type=_known(BudgetEventType, msg.type),
        key_id=msg.key_id,
        workspace=msg.workspace,
        project=msg.project,
        budget=budget,
        threshold_percent=msg.threshold_percent or None,
        used=scale(msg.used),
        limit=scale(msg.limit),
        period_start=_opt_time(msg, "period_start"),
        expires_at=_opt_time(msg, "expires_at"),
        expiry_days=msg.expiry_days or None,
        dedupe_key=msg.dedupe_key,
    )


def event_page(msg: keys_pb.ListEventsResponse) -> EventPage:
    return EventPage(tuple(budget_event(e) for e in msg.events), msg.next_cursor)


def _usd_or_none(text: str) -> Decimal | None:
    return Decimal(text) if text else None


def model_price(msg: keys_pb.ModelPrice) -> ModelPrice:
    return ModelPrice(
        model=msg.model,
        input_usd=Decimal(msg.input_usd),
        output_usd=Decimal(msg.output_usd),
        cached_input_usd=_usd_or_none(msg.cached_input_usd),
        cache_write_usd=_usd_or_none(msg.cache_write_usd),
        max_output_tokens=msg.max_output_tokens or None,
        source=msg.source,
    )


def price_page(msg: keys_pb.ListModelPricesResponse) -> PricePage:
    return PricePage(tuple(model_price(p) for p in msg.prices), msg.next_page_token, msg.table)
