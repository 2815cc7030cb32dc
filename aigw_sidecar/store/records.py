"""The key record codec: an ApiKey as the fields of its Redis hash, and back.

One record field per value; limit kinds use ``LimitKind.record_field``. Empty
or absent means "not set". Nothing here talks to Redis.
"""

from __future__ import annotations

import json
from typing import Any

from aigw_sidecar.keys.model import (
    ApiKey,
    KeyFilter,
    KeySpec,
    KeyStatus,
    KeyUpdate,
    key_status,
)
from aigw_sidecar.limits.alerts import KeyAlerts
from aigw_sidecar.limits.kinds import LIMIT_KINDS, Limits
from aigw_sidecar.limits.periods import ResetPeriod

# KeyUpdate field -> record field, for the plain string fields.
TEXT_FIELDS = {"name": "name", "project": "proj", "environment": "env"}
# KeyUpdate field -> record field, for the limits that are not a limit kind.
_POLICY_FIELDS = {"reset_period": "period", "allowed_models": "models"}


def opt_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    return int(value)


def text(value: int | None) -> str:
    return "" if value is None else str(value)


def decode_key(fields: dict[str, str], now_ms: int) -> ApiKey:
    """A record hash (as returned by HGETALL) as an ApiKey."""
    enabled = fields.get("enabled") == "1"
    expires_at_ms = opt_int(fields.get("expires_at"))
    return ApiKey(
        key_id=fields["kid"],
        name=fields.get("name", ""),
        workspace=fields.get("ws", ""),
        project=fields.get("proj", ""),
        environment=fields.get("env", ""),
        labels=json.loads(fields.get("labels") or "{}"),
        limits=decode_limits(fields),
        enabled=enabled,
        legacy=fields.get("legacy") == "1",
        masked_secret=fields.get("masked", ""),
        created_at_ms=int(fields.get("created_at", 0)),
        updated_at_ms=int(fields.get("updated_at", 0)),
        expires_at_ms=expires_at_ms,
        last_used_at_ms=opt_int(fields.get("last_used_at")),
        status=key_status(enabled, expires_at_ms, now_ms),
        alerts=_decode_alerts(fields),
        previous_secret_expires_at_ms=_grace_end(fields.get("prev_until"), now_ms),
    )


def filter_fields(key_filter: KeyFilter) -> tuple[str, ...]:
    """The record fields ``filtered_fields`` needs for what this filter checks."""
    checked = {
        "name": key_filter.name_contains, "project": key_filter.project,
        "environment": key_filter.environment,
    }
    fields = [TEXT_FIELDS[name] for name, value in checked.items() if value]
    if key_filter.status is not None:
        fields += ["enabled", "expires_at"]
    return tuple(fields)


def filtered_fields(fields: dict[str, str], now_ms: int) -> tuple[str, str, str, KeyStatus]:
    """What ``KeyFilter.admits`` reads (name, project, environment, status).

    From a whole record, or from the fields ``filter_fields`` names: a field the
    filter does not check may be absent.
    """
    enabled = fields.get("enabled") == "1"
    return (
        fields.get("name", ""), fields.get("proj", ""), fields.get("env", ""),
        key_status(enabled, opt_int(fields.get("expires_at")), now_ms),
    )


def decode_limits(fields: dict[str, str]) -> Limits:
    values: dict[str, Any] = {
        kind.attr: opt_int(fields.get(kind.record_field)) for kind in LIMIT_KINDS
    }
    return Limits(
        reset_period=ResetPeriod(fields.get("period") or "never"),
        allowed_models=tuple(filter(None, (fields.get("models") or "").split("\n"))),
        **values,
    )


def _limit_items(limits: Limits) -> dict[str, tuple[str, str]]:
    items = {
        kind.name: (kind.record_field, text(limits.value(kind))) for kind in LIMIT_KINDS
    }
    items["reset_period"] = (_POLICY_FIELDS["reset_period"], limits.reset_period.value)
    # Validated model patterns hold no whitespace, so a newline separates them.
    items["allowed_models"] = (_POLICY_FIELDS["allowed_models"], "\n".join(limits.allowed_models))
    return items


def new_record(
    spec: KeySpec, key_id: str, key_hash: str, masked: str, legacy: bool
) -> dict[str, str]:
    """The fields of a new key's record (create_key adds the times)."""
    return {
        "kid": key_id,
        "name": spec.name,
        "ws": spec.workspace,
        "proj": spec.project,
        "env": spec.environment,
        "labels": json.dumps(dict(spec.labels), sort_keys=True),
        **dict(_limit_items(spec.limits).values()),
        "epoch": "0",
        "enabled": "1",
        "legacy": "1" if legacy else "0",
        "hash": key_hash,
        "masked": masked,
        **{f: v for f, v in _alert_fields(spec.alerts).values() if v},
    }


def update_diff(update: KeyUpdate) -> tuple[dict[str, str], list[str], bool]:
    """The record fields an update sets and clears, and whether it sets limits."""
    sets: dict[str, str] = {}
    clears: list[str] = []
    for name in update.fields & TEXT_FIELDS.keys():
        sets[TEXT_FIELDS[name]] = getattr(update, name)
    if "labels" in update.fields:
        sets["labels"] = json.dumps(dict(update.labels), sort_keys=True)
    setting_limits = False
    for name, (record_field, value) in _limit_items(update.limits).items():
        if name not in update.fields:
            continue
        if name == "reset_period":
            sets[record_field] = value
            setting_limits = setting_limits or value != ResetPeriod.NEVER.value
        elif value == "":
            clears.append(record_field)
        else:
            sets[record_field] = value
            setting_limits = True
    for name, (record_field, value) in _alert_fields(update.alerts).items():
        if name in update.fields:
            if value:
                sets[record_field] = value
            else:
                clears.append(record_field)
    return sets, clears, setting_limits


def _grace_end(prev_until: str | None, now_ms: int) -> int | None:
    """When the previous secret of a rotation stops, while it still works."""
    end = opt_int(prev_until)
    return end if end is not None and end > now_ms else None


def _alert_fields(alerts: KeyAlerts) -> dict[str, tuple[str, str]]:
    """KeyUpdate field name -> (record field, value); "" clears."""
    return {
        "alert_thresholds_percent": (
            "alert_pct", ",".join(str(p) for p in alerts.thresholds_percent)
        ),
        "alert_expiry_days": ("alert_exp_days", text(alerts.expiry_days)),
    }


def _decode_alerts(fields: dict[str, str]) -> KeyAlerts:
    raw = fields.get("alert_pct") or ""
    return KeyAlerts(
        thresholds_percent=tuple(int(p) for p in raw.split(",") if p),
        expiry_days=opt_int(fields.get("alert_exp_days")),
    )
