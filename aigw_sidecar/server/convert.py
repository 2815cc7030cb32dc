"""Conversions between protobuf messages and domain values, in both directions."""

from __future__ import annotations

from typing import cast

from google.protobuf.timestamp_pb2 import Timestamp

from aigw_sidecar.admission.decision import (
    Decision,
    DenyReason,
    Estimate,
    LimitState,
    UsageReport,
    UsageResult,
)
from aigw_sidecar.api.v1 import admission_pb2 as adm_pb
from aigw_sidecar.api.v1 import keys_pb2 as keys_pb
from aigw_sidecar.errors import InvalidArgument
from aigw_sidecar.keys.audit import AuditEntry
from aigw_sidecar.keys.model import (
    ApiKey,
    DailyUsage,
    KeyFilter,
    KeyOverview,
    KeyPage,
    KeySpec,
    KeyStatus,
    KeyUpdate,
    KeyView,
    validate_limit,
)
from aigw_sidecar.keys.money import format_usd, parse_usd
from aigw_sidecar.limits.alerts import BudgetEvent, KeyAlerts
from aigw_sidecar.limits.kinds import LIMIT_KINDS, Limits, Unit
from aigw_sidecar.limits.periods import ResetPeriod
from aigw_sidecar.pricing.catalog import ListedPrice

# Each deny reason is the enum value DENY_REASON_<NAME> of admission.proto.
_DENY: dict[DenyReason, str] = {reason: f"DENY_REASON_{reason.name}" for reason in DenyReason}
for _name in _DENY.values():
    adm_pb.DenyReason.Value(_name)  # fails at import when the proto lacks one
# Each domain enum member is the proto enum value <PREFIX>_<NAME>, by name.
_PERIOD_TO_PB = {
    period: cast("keys_pb.ResetPeriod", keys_pb.ResetPeriod.Value(f"RESET_PERIOD_{period.name}"))
    for period in ResetPeriod
}
_PERIOD_FROM_PB = {v: k for k, v in _PERIOD_TO_PB.items()}
_PERIOD_FROM_PB[keys_pb.RESET_PERIOD_UNSPECIFIED] = ResetPeriod.NEVER
_STATUS_TO_PB = {
    status: cast("keys_pb.KeyStatus", keys_pb.KeyStatus.Value(f"KEY_STATUS_{status.name}"))
    for status in KeyStatus
}
_STATUS_FROM_PB = {v: k for k, v in _STATUS_TO_PB.items()}
_VIEW_FROM_PB = {
    cast("keys_pb.KeyView", keys_pb.KeyView.Value(f"KEY_VIEW_{view.name}")): view
    for view in KeyView
}
_VIEW_FROM_PB[keys_pb.KEY_VIEW_UNSPECIFIED] = KeyView.BASIC
# FieldMask paths of UpdateKeyRequest -> KeyUpdate field names.
_MASK_PATHS: dict[str, set[str]] = {
    "name": {"name"},
    "project": {"project"},
    "environment": {"environment"},
    "labels": {"labels"},
    "expires_at": {"expires_at"},
    "limits": set(KeyUpdate.LIMIT_FIELDS),
    "limits.reset_period": {"reset_period"},
    "limits.allowed_models": {"allowed_models"},
    "alert_thresholds_percent": {"alert_thresholds_percent"},
    "alert_expiry_days": {"alert_expiry_days"},
    **{f"limits.{kind.attr}": {kind.name} for kind in LIMIT_KINDS},
    **{f"limits.{kind.input_field}": {kind.name} for kind in LIMIT_KINDS},
}
# The limit kinds whose input field is a USD string beside the int64 one.
_USD_KINDS = tuple(kind for kind in LIMIT_KINDS if kind.unit is Unit.MICRO_USD)


# --- admission -------------------------------------------------------------


def _rate_limit(state: LimitState | None) -> adm_pb.RateLimit:
    if state is None:
        return adm_pb.RateLimit()
    return adm_pb.RateLimit(
        limited=True,
        limit=state.limit,
        remaining=state.remaining,
        reset_ms=state.reset_ms or 0,
        resets=state.reset_ms is not None,
    )


def decision_to_proto(decision: Decision) -> adm_pb.AuthorizeResponse:
    return adm_pb.AuthorizeResponse(
        allowed=decision.allowed,
        deny_reason=_DENY[decision.deny_reason] if decision.deny_reason else None,
        message=decision.message,
        key_id=decision.key_id,
        workspace=decision.workspace,
        project=decision.project,
        environment=decision.environment,
        legacy=decision.legacy,
        retry_after_ms=decision.retry_after_ms or 0,
        reservation=(
            adm_pb.Reservation(
                tokens=decision.reservation.tokens,
                cost_micro_usd=decision.reservation.cost_micro_usd,
            )
            if decision.reservation
            else None
        ),
        **{kind.decision_field: _rate_limit(decision.state(kind)) for kind in LIMIT_KINDS},
        request_id=decision.request_id,
    )


def estimate_from_proto(request: adm_pb.AuthorizeRequest) -> Estimate | None:
    if not request.HasField("estimate"):
        return None
    msg = request.estimate
    return Estimate(
        model=msg.model,
        prompt_tokens=msg.prompt_tokens,
        max_output_tokens=msg.max_output_tokens,
        cost_micro_usd=msg.cost_micro_usd if msg.HasField("cost_micro_usd") else None,
    )


def usage_from_proto(request: adm_pb.RecordUsageRequest) -> UsageReport:
    cost = request.cost_micro_usd if request.HasField("cost_micro_usd") else None
    if request.cost_usd:
        if cost is not None:
            raise InvalidArgument("cost_usd", "set cost_usd or cost_micro_usd, not both")
        cost = parse_usd("cost_usd", request.cost_usd)
    return UsageReport(
        key_id=request.key_id,
        request_id=request.request_id,
        prompt_tokens=request.prompt_tokens,
        completion_tokens=request.completion_tokens,
        cost_micro_usd=cost,
        model=request.model,
        cached_prompt_tokens=request.cached_prompt_tokens,
    )


def usage_result_to_proto(result: UsageResult) -> adm_pb.RecordUsageResponse:
    return adm_pb.RecordUsageResponse(
        counted=result.counted,
        period_tokens=result.period_tokens,
        period_cost_micro_usd=result.period_cost_micro_usd,
        cost_micro_usd=result.cost_micro_usd,
        settled_reservation=result.settled_reservation,
    )


# --- keys --------------------------------------------------------------------


def _timestamp(ms: int | None) -> Timestamp | None:
    if ms is None:
        return None
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def _ms(field: str, ts: Timestamp) -> int:
    if not 0 <= ts.seconds <= 253402300799:  # up to 9999-12-31
        raise InvalidArgument(field, "is out of range")
    if not 0 <= ts.nanos <= 999_999_999:
        raise InvalidArgument(field, "nanos must be between 0 and 999999999")
    return int(ts.ToMilliseconds())


def limits_from_proto(msg: keys_pb.Limits, field: str = "limits") -> Limits:
    values: dict[str, int | None] = {
        kind.attr: getattr(msg, kind.attr) if msg.HasField(kind.attr) else None
        for kind in LIMIT_KINDS
    }
    for kind in _USD_KINDS:
        # Money comes as an exact USD string or as micro-USD; both must agree.
        if not msg.HasField(kind.input_field):
            # Blame the field the caller set; validate_limits names the USD one.
            validate_limit(kind, values[kind.attr], f"{field}.{kind.attr}")
            continue
        micro = parse_usd(f"{field}.{kind.input_field}", getattr(msg, kind.input_field))
        if values[kind.attr] is not None and values[kind.attr] != micro:
            raise InvalidArgument(
                f"{field}.{kind.attr}", f"disagrees with {kind.input_field}; set one of them"
            )
        values[kind.attr] = micro
    if msg.reset_period not in _PERIOD_FROM_PB:
        raise InvalidArgument(f"{field}.reset_period", f"unknown value {msg.reset_period}")
    return Limits(
        reset_period=_PERIOD_FROM_PB[msg.reset_period],
        allowed_models=tuple(msg.allowed_models),
        **values,
    )


def limits_to_proto(limits: Limits) -> keys_pb.Limits:
    msg = keys_pb.Limits(reset_period=_PERIOD_TO_PB[limits.reset_period])
    for kind in LIMIT_KINDS:
        value = limits.value(kind)
        if value is not None:
            setattr(msg, kind.attr, value)
            if kind.unit is Unit.MICRO_USD:
                setattr(msg, kind.input_field, format_usd(value))
    msg.allowed_models.extend(limits.allowed_models)
    return msg


def key_to_proto(key: ApiKey) -> keys_pb.ApiKey:
    return keys_pb.ApiKey(
        key_id=key.key_id,
        name=key.name,
        workspace=key.workspace,
        project=key.project,
        environment=key.environment,
        labels=dict(key.labels),
        limits=limits_to_proto(key.limits),
        status=_STATUS_TO_PB[key.status],
        enabled=key.enabled,
        legacy=key.legacy,
        masked_secret=key.masked_secret,
        created_at=_timestamp(key.created_at_ms),
        updated_at=_timestamp(key.updated_at_ms),
        expires_at=_timestamp(key.expires_at_ms),
        last_used_at=_timestamp(key.last_used_at_ms),
        alert_thresholds_percent=key.alerts.thresholds_percent,
        alert_expiry_days=key.alerts.expiry_days,
        previous_secret_expires_at=_timestamp(key.previous_secret_expires_at_ms),
    )


def spec_from_create(request: keys_pb.CreateKeyRequest) -> KeySpec:
    return KeySpec(
        name=request.name,
        workspace=request.workspace,
        project=request.project,
        environment=request.environment,
        labels=dict(request.labels),
        limits=limits_from_proto(request.limits),
        expires_at_ms=(
            _ms("expires_at", request.expires_at) if request.HasField("expires_at") else None
        ),
        alerts=alerts_from_proto(request),
    )


def spec_from_import(request: keys_pb.ImportLegacyKeyRequest) -> KeySpec:
    return KeySpec(
        name=request.name,
        workspace=request.workspace,
        project=request.project,
        environment=request.environment,
        labels=dict(request.labels),
    )


def filter_from_list(request: keys_pb.ListKeysRequest) -> KeyFilter:
    status = None
    if request.status:
        if request.status not in _STATUS_FROM_PB:
            raise InvalidArgument("status", f"unknown value {request.status}")
        status = _STATUS_FROM_PB[request.status]
    return KeyFilter(
        workspace=request.workspace,
        project=request.project,
        environment=request.environment,
        status=status,
        name_contains=request.name_contains,
    )


def view_from_list(request: keys_pb.ListKeysRequest) -> KeyView:
    if request.view not in _VIEW_FROM_PB:
        raise InvalidArgument("view", f"unknown value {request.view}")
    return _VIEW_FROM_PB[request.view]


def key_page_to_proto(page: KeyPage) -> keys_pb.ListKeysResponse:
    if not page.overviews:
        return keys_pb.ListKeysResponse(
            keys=[key_to_proto(k) for k in page.keys], next_page_token=page.next_page_token
        )
    # keys[i] is overviews[i].key: each key is converted once, then copied.
    overviews = [overview_to_proto(ov) for ov in page.overviews]
    return keys_pb.ListKeysResponse(
        keys=[ov.key for ov in overviews], next_page_token=page.next_page_token,
        overviews=overviews,
    )


def update_from_proto(request: keys_pb.UpdateKeyRequest) -> KeyUpdate:
    fields: set[str] = set()
    for path in request.update_mask.paths:
        if path not in _MASK_PATHS:
            # Not echoed (it may be a pasted secret); list what is accepted instead.
            raise InvalidArgument(
                "update_mask", f"unknown path; use one of {', '.join(sorted(_MASK_PATHS))}"
            )
        fields |= _MASK_PATHS[path]
    return KeyUpdate(
        fields=frozenset(fields),
        name=request.name,
        project=request.project,
        environment=request.environment,
        labels=dict(request.labels),
        limits=limits_from_proto(request.limits),
        expires_at_ms=(
            _ms("expires_at", request.expires_at) if request.HasField("expires_at") else None
        ),
        alerts=alerts_from_proto(request),
    )


def alerts_from_proto(
    request: keys_pb.CreateKeyRequest | keys_pb.UpdateKeyRequest,
) -> KeyAlerts:
    return KeyAlerts(
        thresholds_percent=tuple(request.alert_thresholds_percent),
        expiry_days=(
            request.alert_expiry_days if request.HasField("alert_expiry_days") else None
        ),
    )


def _limit_usage(limit: int | None, used: int) -> keys_pb.LimitUsage:
    if limit is None:
        return keys_pb.LimitUsage(used=used)
    return keys_pb.LimitUsage(
        limited=True, limit=limit, used=used, remaining=max(0, limit - used)
    )


def overview_to_proto(ov: KeyOverview) -> keys_pb.KeyOverview:
    limits = ov.key.limits
    return keys_pb.KeyOverview(
        key=key_to_proto(ov.key),
        **{
            kind.overview_field: _limit_usage(limits.value(kind), ov.used.get(kind.name, 0))
            for kind in LIMIT_KINDS
        },
        period_start=_timestamp(ov.period_start_ms),
        next_reset=_timestamp(ov.next_reset_ms),
        period_requests=ov.period_requests,
        period_prompt_tokens=ov.period_prompt_tokens,
        period_completion_tokens=ov.period_completion_tokens,
        lifetime_requests=ov.lifetime_requests,
        lifetime_prompt_tokens=ov.lifetime_prompt_tokens,
        lifetime_completion_tokens=ov.lifetime_completion_tokens,
        lifetime_cost_micro_usd=ov.lifetime_cost_micro_usd,
        last_used_at=_timestamp(ov.key.last_used_at_ms),
        observed_at=_timestamp(ov.observed_at_ms),
        reserved_tokens=ov.reserved_tokens,
        reserved_cost_micro_usd=ov.reserved_cost_micro_usd,
        open_reservations=ov.open_reservations,
        per_model=[
            keys_pb.ModelUsage(
                model=m.model, requests=m.requests, tokens=m.tokens,
                cost_micro_usd=m.cost_micro_usd,
            )
            for m in ov.per_model
        ],
        unpriced_requests=ov.unpriced_requests,
    )


def daily_usage_to_proto(day: DailyUsage) -> keys_pb.DailyUsage:
    return keys_pb.DailyUsage(
        day=_timestamp(day.day_start_ms),
        cost_micro_usd=day.cost_micro_usd,
        cost_usd=format_usd(day.cost_micro_usd),
        tokens=day.tokens,
        requests=day.requests,
    )


def event_to_proto(event: BudgetEvent) -> keys_pb.BudgetEvent:
    return keys_pb.BudgetEvent(
        event_id=event.event_id,
        occurred_at=_timestamp(event.occurred_at_ms or None),
        type=event.type.value,
        key_id=event.key_id,
        workspace=event.workspace,
        project=event.project,
        budget=event.budget.value if event.budget else "",
        threshold_percent=event.threshold_percent,
        used=event.used,
        limit=event.limit,
        period_start=_timestamp(event.period_start_ms if event.budget else None),
        expires_at=_timestamp(event.expires_at_ms),
        expiry_days=event.expiry_days,
        dedupe_key=event.dedupe_key,
    )


def audit_entry_to_proto(entry: AuditEntry) -> keys_pb.AuditEntry:
    event = entry.event
    return keys_pb.AuditEntry(
        entry_id=entry.entry_id,
        occurred_at=_timestamp(entry.occurred_at_ms),
        principal=event.principal,
        action=event.action.value,
        key_id=event.key_id,
        name=event.name,
        workspace=event.workspace,
        detail=event.detail,
    )


def model_price_to_proto(listed: ListedPrice) -> keys_pb.ModelPrice:
    """Prices in micro-USD per million tokens become USD per million, exact decimals."""
    price = listed.price
    return keys_pb.ModelPrice(
        model=listed.model,
        input_usd=format_usd(price.input),
        output_usd=format_usd(price.output),
        cached_input_usd="" if price.cached_input is None else format_usd(price.cached_input),
        cache_write_usd="" if price.cache_write is None else format_usd(price.cache_write),
        max_output_tokens=price.max_output_tokens or 0,
        source=listed.source,
    )
