"""Reset periods on UTC calendar boundaries.

The store computes the same bounds inside its Lua scripts from Redis ``TIME``
(see ``store/lua/_prelude.lua``); this module is the reference the tests check
the Lua against, and what the domain uses to describe a period.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum


class ResetPeriod(StrEnum):
    """When the cost and token counters start again (never requests/min)."""

    NEVER = "never"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    YEARLY = "yearly"


def _ms(dt: datetime) -> int:
    return int(dt.timestamp()) * 1000


def period_bounds(period: ResetPeriod, now_ms: int) -> tuple[int, int | None]:
    """Start (inclusive) and end (exclusive) of the period holding ``now_ms``, in ms.

    ``NEVER`` has one period starting at the epoch and no end.
    """
    if period is ResetPeriod.NEVER:
        return 0, None
    now = datetime.fromtimestamp(now_ms // 1000, tz=UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period is ResetPeriod.DAILY:
        start, end = day, day + timedelta(days=1)
    elif period is ResetPeriod.WEEKLY:
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    elif period is ResetPeriod.MONTHLY:
        start = day.replace(day=1)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else (
            start.replace(month=start.month + 1)
        )
    else:
        start = day.replace(month=1, day=1)
        end = start.replace(year=start.year + 1)
    return _ms(start), _ms(end)
