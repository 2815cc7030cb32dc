"""The scripts' replies: named codes shared with Lua, decoded into domain values.

Every script answers a status or code from the enums here (``scripts.py``
generates them into each script as the Lua tables ``STATUS``, ``CODE`` and
``DENY``), then name/value pairs; nothing is read by position beyond the
status. A name the decoder does not know is ignored, so a newer script may add
one.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from aigw_sidecar.admission.decision import (
    Decision,
    DenyReason,
    LimitState,
    Reservation,
    UsageResult,
)
from aigw_sidecar.errors import InvalidArgument
from aigw_sidecar.keys.model import DAY_MS, DailyUsage, KeyOverview, ModelUsage
from aigw_sidecar.limits.alerts import Budget, BudgetEvent, EventType
from aigw_sidecar.limits.kinds import KIND_OF_NAME
from aigw_sidecar.store.records import decode_key

_LIMIT_PREFIX = "limit:"


class AuthorizeStatus(StrEnum):
    """authorize's statuses besides a deny reason."""

    ALLOWED = "allowed"
    # The request id was already settled by a usage report: a caller error.
    ALREADY_SETTLED = "already_settled"


class ScriptCode(StrEnum):
    """The outcome codes of the key-management and usage scripts."""

    OK = "ok"
    NOT_FOUND = "not_found"  # no such key
    REPEATED = "repeated"  # record_usage: this request id was already counted
    COUNTER_CAP = "counter_cap"  # record_usage: a counter would pass 2^53-1
    LEGACY_KEY = "legacy_key"  # update_key (limits) and rotate_key refuse legacy keys
    PAST_EXPIRY = "past_expiry"  # expires_at is not in the future
    KEY_ID_TAKEN = "key_id_taken"  # create_key: a record with that key id exists
    TAKEN = "taken"  # claim: another key id holds the name or legacy secret


def pairs(flat: Sequence[Any]) -> dict[str, Any]:
    """A flat name/value list as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _authorize_fields(res: Sequence[Any]) -> tuple[dict[str, Any], dict[str, LimitState]]:
    """authorize's name/value pairs, and its 'limit:<kind>' entries (three values each)."""
    fields: dict[str, Any] = {}
    limits: dict[str, LimitState] = {}
    i, end = 1, len(res)
    while i < end:
        name = str(res[i])
        if name.startswith(_LIMIT_PREFIX):
            kind = name[len(_LIMIT_PREFIX):]
            limit, remaining, reset_ms = int(res[i + 1]), int(res[i + 2]), int(res[i + 3])
            if kind in KIND_OF_NAME:
                limits[kind] = LimitState(limit, remaining, None if reset_ms < 0 else reset_ms)
            i += 4
        else:
            fields[name] = res[i + 1]
            i += 2
    return fields, limits


def decode_authorize(res: Sequence[Any], request_id: str, model: str) -> Decision:
    """authorize's reply as a Decision (InvalidArgument for a settled request id)."""
    status = str(res[0])
    if status == AuthorizeStatus.ALREADY_SETTLED:
        raise InvalidArgument(
            "request_id", "was already settled by a usage report; give every request "
            "its own request id"
        )
    if len(res) == 1:
        return Decision.deny(DenyReason(status))
    fields, limits = _authorize_fields(res)
    allowed = status == AuthorizeStatus.ALLOWED
    reserved_tok = int(fields.get("reserved_tokens", -1))
    retry = int(fields.get("retry_after_ms", -1))
    held = allowed and (fields.get("slot_held") == 1 or reserved_tok >= 0)
    return Decision(
        allowed=allowed,
        deny_reason=None if allowed else DenyReason(status),
        key_id=str(fields["key_id"]),
        workspace=str(fields["workspace"]),
        project=str(fields["project"]),
        environment=str(fields["environment"]),
        legacy=fields["legacy"] == "1",
        limits=limits,
        retry_after_ms=None if retry < 0 else retry,
        reservation=(
            Reservation(request_id, reserved_tok, int(fields["reserved_cost"]))
            if reserved_tok >= 0 else None
        ),
        request_id=request_id if held else "",
        model=model,
    )


def decode_usage(res: Sequence[Any], key_id: str, cost_micro_usd: int) -> UsageResult:
    """A counted or repeated record_usage reply as a UsageResult."""
    code = ScriptCode(res[0])
    fields = pairs(res[1:])
    counted = code is ScriptCode.OK
    extras: dict[str, Any] = {}
    if counted:
        workspace, project = str(fields["workspace"]), str(fields["project"])
        period_start = int(fields["period_start_ms"])
        alerts = []
        for kind, amount, used, limit in fields["alerts"]:
            if kind == "expiry":
                alerts.append(BudgetEvent(
                    EventType.KEY_EXPIRING, key_id, workspace, project,
                    expires_at_ms=int(limit), expiry_days=int(amount),
                ))
            else:
                alerts.append(BudgetEvent(
                    EventType.BUDGET_THRESHOLD, key_id, workspace, project, Budget(kind),
                    threshold_percent=int(amount), used=int(used), limit=int(limit),
                    period_start_ms=period_start,
                ))
        extras = {
            "workspace": workspace, "project": project,
            "expired_reservations": int(fields["expired_reservations"]),
            "alerts": tuple(alerts),
        }
    return UsageResult(
        counted=counted,
        period_tokens=int(fields["period_tokens"]),
        period_cost_micro_usd=int(fields["period_cost"]),
        cost_micro_usd=cost_micro_usd if counted else 0,
        settled_reservation=fields.get("settled") == 1,
        **extras,
    )


def decode_overview(res: Sequence[Any]) -> KeyOverview:
    """read_key's (non-empty) reply as a KeyOverview."""
    record = pairs(res[0])
    fields = pairs(res[1:])
    n = {name: int(value) for name, value in fields.items() if name not in ("per_model", "used")}
    flat = fields["per_model"]
    per_model = tuple(sorted(
        (
            ModelUsage(str(flat[i]), int(flat[i + 1]), int(flat[i + 2]), int(flat[i + 3]))
            for i in range(0, len(flat), 4)
        ),
        key=lambda usage: (-usage.cost_micro_usd, -usage.tokens, usage.model),
    ))
    now_ms, end_ms = n["now_ms"], n["period_end_ms"]
    key = decode_key(record, now_ms)
    return KeyOverview(
        key=key,
        observed_at_ms=now_ms,
        # A budget that never resets has one period: the key's whole life.
        period_start_ms=n["period_start_ms"] if end_ms >= 0 else key.created_at_ms,
        next_reset_ms=None if end_ms < 0 else end_ms,
        period_cost_micro_usd=n["period_cost"],
        period_tokens=n["period_tokens"],
        period_requests=n["period_requests"],
        period_prompt_tokens=n["period_prompt_tokens"],
        period_completion_tokens=n["period_completion_tokens"],
        lifetime_requests=int(record.get("lt_req", 0)),
        lifetime_prompt_tokens=int(record.get("lt_pt", 0)),
        lifetime_completion_tokens=int(record.get("lt_ct", 0)),
        lifetime_cost_micro_usd=int(record.get("lt_cost", 0)),
        used={name: int(value) for name, value in pairs(fields["used"]).items()},
        reserved_tokens=n["reserved_tokens"],
        reserved_cost_micro_usd=n["reserved_cost"],
        open_reservations=n["open_reservations"],
        per_model=per_model,
        unpriced_requests=n["unpriced_requests"],
    )


def decode_history(res: Sequence[Any]) -> tuple[DailyUsage, ...]:
    """usage_history's OK reply as one DailyUsage per day, oldest first."""
    fields = pairs(res[1:])
    first = int(fields["first_day"])
    return tuple(
        DailyUsage((first + i) * DAY_MS, int(cost), int(tokens), int(requests))
        for i, (cost, tokens, requests) in enumerate(
            zip(fields["cost"], fields["tokens"], fields["requests"], strict=True)
        )
    )
