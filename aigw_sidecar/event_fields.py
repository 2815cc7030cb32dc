"""A budget event as flat string fields: the events stream's entry and the webhook's body.

``encode_event`` gives the fields both carry (the store's ``<prefix>:events``
stream entry, and the webhook's JSON body with the event id and time added), so
a consumer of either reads the same names. No secret is ever one of them.

The domain's own form of ``BudgetEvent`` (``limits/alerts.py``) is its natural
home; until that file takes it, this module is where the store and the transport
both find it, without either importing the other.
"""

from __future__ import annotations

from collections.abc import Mapping

from aigw_sidecar.limits.alerts import Budget, BudgetEvent, EventType


def encode_event(event: BudgetEvent) -> dict[str, str]:
    """The fields of an event, without its id and time (the stream gives both)."""
    fields = {
        "type": event.type.value,
        "key_id": event.key_id,
        "workspace": event.workspace,
        "project": event.project,
        "dedupe_key": event.dedupe_key,
    }
    if event.type is EventType.BUDGET_THRESHOLD and event.budget is not None:
        fields.update(
            budget=event.budget.value,
            threshold_percent=str(event.threshold_percent),
            used=str(event.used),
            limit=str(event.limit),
            period_start_ms=str(event.period_start_ms),
        )
    if event.type is EventType.KEY_EXPIRING:
        fields.update(expires_at_ms=str(event.expires_at_ms), expiry_days=str(event.expiry_days))
    return fields


def decode_event(
    fields: Mapping[str, str], event_id: str = "", occurred_at_ms: int = 0
) -> BudgetEvent:
    """The event ``encode_event`` gave ``fields`` for; missing fields take their defaults."""

    def number(name: str) -> int:
        return int(fields.get(name) or 0)

    budget = fields.get("budget")
    return BudgetEvent(
        type=EventType(fields.get("type", EventType.BUDGET_THRESHOLD.value)),
        key_id=fields.get("key_id", ""),
        workspace=fields.get("workspace", ""),
        project=fields.get("project", ""),
        budget=Budget(budget) if budget else None,
        threshold_percent=number("threshold_percent"),
        used=number("used"),
        limit=number("limit"),
        period_start_ms=number("period_start_ms"),
        expires_at_ms=number("expires_at_ms") if fields.get("expires_at_ms") else None,
        expiry_days=number("expiry_days"),
        event_id=event_id,
        occurred_at_ms=occurred_at_ms,
    )
