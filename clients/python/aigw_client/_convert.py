"""Typed values <-> request and response messages; shared by the sync and async clients."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, Final, TypeVar, cast

from google.protobuf.descriptor import FieldDescriptor
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
    DailyUsage,
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

# Each enum member is the proto enum value <PREFIX>_<NAME>, by name.
_PERIOD_TO_PB = {
    period: cast("keys_pb.ResetPeriod", keys_pb.ResetPeriod.Value(f"RESET_PERIOD_{period.name}"))
    for period in ResetPeriod
}
_PERIOD_FROM_PB = {int(v): k for k, v in _PERIOD_TO_PB.items()}
_STATUS_TO_PB = {
    status: cast("keys_pb.KeyStatus", keys_pb.KeyStatus.Value(f"KEY_STATUS_{status.name}"))
    for status in KeyStatus
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


# The Limits message read from its descriptor, so a new limit kind needs no code
# here: each optional int64 field is an int attribute of the same name on
# ``Limits``, each "<name>_usd" string a Decimal one (its "<name>_micro_usd"
# twin is the exact output form).
_LIMIT_FIELDS = keys_pb.Limits.DESCRIPTOR.fields
_LIMIT_FIELDS_BY_NAME = keys_pb.Limits.DESCRIPTOR.fields_by_name
_USD_LIMITS = tuple(
    f.name for f in _LIMIT_FIELDS
    if f.type == FieldDescriptor.TYPE_STRING and f.name.endswith("_usd")
)
_COUNT_LIMITS = tuple(
    f.name for f in _LIMIT_FIELDS
    if f.type == FieldDescriptor.TYPE_INT64 and not f.name.endswith("_micro_usd")
)


def _set_limit(msg: keys_pb.Limits, name: str, value: object) -> None:
    """One limit of ``Limits`` (or of an update) onto the message; None leaves it unset."""
    if value is None:
        return
    if name in _USD_LIMITS:
        assert isinstance(value, Decimal)
        setattr(msg, name, usd_text(value))
    elif name == "reset_period":
        assert isinstance(value, ResetPeriod)
        msg.reset_period = _PERIOD_TO_PB[value]
    elif name == "allowed_models":
        msg.allowed_models.extend(cast("Iterable[str]", value))
    else:
        setattr(msg, name, value)


def limits_message(limits: LimitsValue) -> keys_pb.Limits:
    msg = keys_pb.Limits()
    for name in (*_USD_LIMITS, *_COUNT_LIMITS, "reset_period", "allowed_models"):
        _set_limit(msg, name, getattr(limits, name))
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


def update_key_request(key_id: str, changes: Mapping[str, object]) -> keys_pb.UpdateKeyRequest:
    """An UpdateKeyRequest from ``update_key``'s arguments by name.

    Only the arguments given (not KEEP) go into the update mask; None clears.
    A name of a ``Limits`` field changes that limit ("limits.<name>").
    """
    req = keys_pb.UpdateKeyRequest(key_id=key_id)
    paths: list[str] = []
    for name, value in changes.items():
        if isinstance(value, Keep):
            continue
        if name in _LIMIT_FIELDS_BY_NAME:
            _set_limit(req.limits, name, value)
            paths.append(f"limits.{name}")
            continue
        paths.append(name)
        if name == "labels":
            assert isinstance(value, Mapping)
            req.labels.update(value)
        elif name == "alert_thresholds_percent":
            req.alert_thresholds_percent.extend(cast("Iterable[int]", value or ()))
        elif name == "expires_at":
            if value is not None:
                assert isinstance(value, datetime)
                req.expires_at.CopyFrom(timestamp(value))
        elif value is not None:
            setattr(req, name, value)
    req.update_mask.paths.extend(paths)
    return req


def list_keys_request(
    workspace: str, project: str, environment: str, status: KeyStatus | None,
    page_size: int, page_token: str, name_contains: str, with_usage: bool,
) -> keys_pb.ListKeysRequest:
    return keys_pb.ListKeysRequest(
        workspace=workspace, project=project, environment=environment,
        status=_STATUS_TO_PB[status] if status is not None else keys_pb.KEY_STATUS_UNSPECIFIED,
        page_size=page_size, page_token=page_token, name_contains=name_contains,
        view=keys_pb.KEY_VIEW_WITH_USAGE if with_usage else keys_pb.KEY_VIEW_BASIC,
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
    values: dict[str, Any] = {
        name: getattr(msg, name) if msg.HasField(name) else None for name in _COUNT_LIMITS
    }
    for name in _USD_LIMITS:
        micro = name.removesuffix("_usd") + "_micro_usd"
        if msg.HasField(micro):
            values[name] = usd_from_micro(getattr(msg, micro))
        elif msg.HasField(name):
            values[name] = Decimal(getattr(msg, name))
        else:
            values[name] = None
    known = {f.name for f in dataclasses.fields(LimitsValue)}
    return LimitsValue(
        reset_period=_PERIOD_FROM_PB.get(msg.reset_period, ResetPeriod.NEVER),
        allowed_models=tuple(msg.allowed_models),
        **{name: value for name, value in values.items() if name in known},
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
    return KeyPage(
        tuple(api_key(k) for k in msg.keys), msg.next_page_token,
        tuple(overview(ov) for ov in msg.overviews),
    )


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


# KeyOverview's LimitUsage fields: "<name>_micro_usd" is the CostUsage "<name>",
# any other the LimitUsage of the same name.
_USAGE_FIELDS = tuple(
    f.name for f in keys_pb.KeyOverview.DESCRIPTOR.fields
    if f.message_type is keys_pb.LimitUsage.DESCRIPTOR
)


def overview(msg: keys_pb.KeyOverview) -> KeyOverview:
    usage: dict[str, Any] = {}
    for name in _USAGE_FIELDS:
        if name.endswith("_micro_usd"):
            usage[name.removesuffix("_micro_usd")] = _cost_usage(getattr(msg, name))
        else:
            usage[name] = _limit_usage(getattr(msg, name))
    known = {f.name for f in dataclasses.fields(KeyOverview)}
    return KeyOverview(
        key=api_key(msg.key),
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
        **{name: value for name, value in usage.items() if name in known},
    )


def usage_history(msg: keys_pb.GetKeyUsageHistoryResponse) -> tuple[DailyUsage, ...]:
    return tuple(
        DailyUsage(
            day=_time(d.day).date(),
            cost_usd=usd_from_micro(d.cost_micro_usd),
            tokens=d.tokens,
            requests=d.requests,
        )
        for d in msg.days
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


# DENY_REASON_<NAME> -> DenyReason.<NAME>; a reason this client does not know is None.
_DENY_FROM_PB = {
    value.number: DenyReason[value.name.removeprefix("DENY_REASON_")]
    for value in adm_pb.DenyReason.DESCRIPTOR.values
    if value.name.removeprefix("DENY_REASON_") in DenyReason.__members__
}
# AuthorizeResponse's RateLimit fields: the Decision attribute of the same name.
_RATE_LIMIT_FIELDS = tuple(
    f.name for f in adm_pb.AuthorizeResponse.DESCRIPTOR.fields
    if f.message_type is adm_pb.RateLimit.DESCRIPTOR
)


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
        retry_after=(
            timedelta(milliseconds=msg.retry_after_ms) if msg.retry_after_ms else None
        ),
        reservation=(
            Reservation(msg.reservation.tokens, usd_from_micro(msg.reservation.cost_micro_usd))
            if msg.HasField("reservation") else None
        ),
        request_id=msg.request_id,
        **{
            name: _rate_limit(getattr(msg, name)) for name in _RATE_LIMIT_FIELDS
            if name in _DECISION_FIELDS
        },
    )


_DECISION_FIELDS = frozenset(f.name for f in dataclasses.fields(Decision))


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
