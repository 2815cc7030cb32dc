"""Budget alerts: a key crossed a share of its cost or token limit, or nears its expiry.

A key may carry alert thresholds (percentages of its cost and token limits, e.g.
80 and 100) and an expiry warning (N days before ``expires_at``). The crossing is
detected inside the RecordUsage script, atomically: a per-period marker in the
key's usage hash makes exactly one report see it, on whichever replica, once per
period (a raised limit re-arms the threshold). ``BudgetAlerts`` then appends the
event to the events stream and offers it to the sinks (the webhook).

Delivery: the stream lives on another slot than the key, so the append is a
second store call after the script. It is retried once; if it still fails (or
the process dies between the two calls) the event is logged at ERROR and is
missing from the stream: at most once on the stream, never twice. Sinks get the
event even then; the webhook retries, so a receiver may see an event twice and
dedupes on ``dedupe_key``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from aigw_sidecar.errors import InvalidArgument, StoreUnavailable

log = logging.getLogger(__name__)

MAX_THRESHOLDS = 8
MAX_THRESHOLD_PERCENT = 1000  # usage may run past the limit: 150 % is a valid alert
MAX_EXPIRY_DAYS = 3650
APPEND_RETRY_DELAY_S = 0.1


@dataclass(frozen=True, slots=True)
class KeyAlerts:
    """A key's alert settings: shares of its cost and token limits, and an expiry warning."""

    thresholds_percent: tuple[int, ...] = ()  # e.g. (80, 100); apply to both budgets
    expiry_days: int | None = None  # warn this many days before expires_at

    @property
    def any(self) -> bool:
        return bool(self.thresholds_percent) or self.expiry_days is not None


def validate_key_alerts(alerts: KeyAlerts) -> KeyAlerts:
    """Thresholds sorted and unique, each 1-1000 %; expiry days 1-3650."""
    thresholds = tuple(sorted(set(alerts.thresholds_percent)))
    if len(thresholds) > MAX_THRESHOLDS:
        raise InvalidArgument("alert_thresholds_percent", f"at most {MAX_THRESHOLDS} thresholds")
    for value in thresholds:
        if not 1 <= value <= MAX_THRESHOLD_PERCENT:
            raise InvalidArgument(
                "alert_thresholds_percent", f"each must be between 1 and {MAX_THRESHOLD_PERCENT}"
            )
    days = alerts.expiry_days
    if days is not None and not 1 <= days <= MAX_EXPIRY_DAYS:
        raise InvalidArgument("alert_expiry_days", f"must be between 1 and {MAX_EXPIRY_DAYS}")
    return KeyAlerts(thresholds, days)


class EventType(StrEnum):
    BUDGET_THRESHOLD = "budget_threshold"
    KEY_EXPIRING = "key_expiring"


class Budget(StrEnum):
    COST = "cost"  # micro-USD
    TOKENS = "tokens"


@dataclass(frozen=True, slots=True)
class BudgetEvent:
    """One crossing; ``event_id`` and ``occurred_at_ms`` come from the events stream."""

    type: EventType
    key_id: str
    workspace: str = ""
    project: str = ""
    budget: Budget | None = None  # budget_threshold: which limit
    threshold_percent: int = 0
    used: int = 0  # this period, in the budget's unit
    limit: int = 0
    period_start_ms: int = 0
    expires_at_ms: int | None = None  # key_expiring
    expiry_days: int = 0
    event_id: str = ""
    occurred_at_ms: int = 0

    @property
    def dedupe_key(self) -> str:
        """Equal for every delivery of one crossing (webhook retries included)."""
        if self.type is EventType.KEY_EXPIRING:
            return f"{self.key_id}/{self.type}/{self.expiry_days}/{self.expires_at_ms}"
        return (
            f"{self.key_id}/{self.type}/{self.budget}/{self.threshold_percent}"
            f"/{self.period_start_ms}/{self.limit}"
        )


class EventLog(Protocol):
    async def append(self, event: BudgetEvent) -> BudgetEvent: ...

    async def list(
        self, key_id: str, after: str, page_size: int
    ) -> tuple[Sequence[BudgetEvent], str]: ...


class AlertSink(Protocol):
    def offer(self, event: BudgetEvent) -> None:
        """Take the event for delivery; must return at once (never block admission)."""


class BudgetAlerts:
    """Publishes crossings: the events stream first, then every sink."""

    def __init__(self, events: EventLog, sinks: Sequence[AlertSink] = ()) -> None:
        self._events = events
        self._sinks = tuple(sinks)

    async def publish(self, crossings: Sequence[BudgetEvent]) -> None:
        for crossing in crossings:
            event = await self._append(crossing)
            log.info(
                "budget alert: %s on key %s", _describe(event), event.key_id,
                extra={"event": event.type.value, "key_id": event.key_id,
                       "dedupe_key": event.dedupe_key, "event_id": event.event_id},
            )
            for sink in self._sinks:
                sink.offer(event)

    async def _append(self, event: BudgetEvent) -> BudgetEvent:
        for attempt in (1, 2):
            try:
                return await self._events.append(event)
            except StoreUnavailable:
                if attempt == 1:
                    await asyncio.sleep(APPEND_RETRY_DELAY_S)
        log.error("budget alert NOT written to the events stream (store unavailable): %s",
                  event, extra={"dedupe_key": event.dedupe_key})
        return event


def _describe(event: BudgetEvent) -> str:
    if event.type is EventType.KEY_EXPIRING:
        return f"expires within {event.expiry_days} days"
    return f"{event.budget} at {event.threshold_percent}% ({event.used} of {event.limit})"


def with_stream_id(event: BudgetEvent, event_id: str, occurred_at_ms: int) -> BudgetEvent:
    return replace(event, event_id=event_id, occurred_at_ms=occurred_at_ms)
