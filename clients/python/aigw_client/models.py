"""Plain typed values the client takes and returns: no protobuf in its public API.

Money is ``Decimal`` USD, times are timezone-aware ``datetime`` in UTC,
durations are ``timedelta``; ``None`` means "no such limit" or "never".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum


class ResetPeriod(StrEnum):
    """When cost and token counters start again (UTC calendar boundaries)."""

    NEVER = "never"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    YEARLY = "yearly"


class KeyStatus(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"
    EXPIRED = "expired"


class DenyReason(StrEnum):
    KEY_MISSING = "key_missing"
    KEY_MALFORMED = "key_malformed"
    KEY_UNKNOWN = "key_unknown"
    KEY_DISABLED = "key_disabled"
    KEY_EXPIRED = "key_expired"
    REQUESTS_PER_MINUTE = "requests_per_minute"
    TOKEN_LIMIT = "token_limit"
    COST_LIMIT = "cost_limit"


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits of an API key; None means no limit of that kind."""

    cost_limit_usd: Decimal | None = None
    token_limit: int | None = None
    requests_per_minute: int | None = None
    reset_period: ResetPeriod = ResetPeriod.NEVER


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as the sidecar stores it (never its secret)."""

    key_id: str
    name: str
    workspace: str
    project: str
    environment: str
    labels: Mapping[str, str]
    limits: Limits
    status: KeyStatus
    enabled: bool
    legacy: bool
    masked_secret: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new API key and its secret; the secret is returned this once."""

    key: ApiKey
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class KeyPage:
    keys: tuple[ApiKey, ...]
    next_page_token: str  # empty on the last page


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One kind of limit as seen by Authorize (for x-ratelimit-* headers)."""

    limit: int
    remaining: int
    reset_after: timedelta | None  # None: the budget never resets


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to Authorize."""

    allowed: bool
    deny_reason: DenyReason | None
    message: str
    key_id: str
    workspace: str
    project: str
    environment: str
    legacy: bool
    requests: RateLimit | None
    tokens: RateLimit | None
    cost_micro_usd: RateLimit | None
    retry_after: timedelta | None  # None: retrying will not help


@dataclass(frozen=True, slots=True)
class UsageResult:
    counted: bool  # False: this request id was already counted
    period_tokens: int
    period_cost_usd: Decimal


@dataclass(frozen=True, slots=True)
class LimitUsage:
    """Usage of one count limit in the current period; ``limit`` None: unlimited."""

    limit: int | None
    used: int
    remaining: int | None


@dataclass(frozen=True, slots=True)
class CostUsage:
    """Usage of the cost limit in the current period, in USD."""

    limit_usd: Decimal | None
    used_usd: Decimal
    remaining_usd: Decimal | None


@dataclass(frozen=True, slots=True)
class KeyOverview:
    """A key's usage against each of its limits, at ``observed_at``."""

    key: ApiKey
    cost: CostUsage
    tokens: LimitUsage
    requests_per_minute: LimitUsage  # used = requests in the last 60 s
    period_start: datetime
    next_reset: datetime | None
    period_requests: int
    period_prompt_tokens: int
    period_completion_tokens: int
    lifetime_requests: int
    lifetime_prompt_tokens: int
    lifetime_completion_tokens: int
    lifetime_cost_usd: Decimal
    last_used_at: datetime | None
    observed_at: datetime


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One admin action: who (principal), what (action, key), when."""

    entry_id: str
    occurred_at: datetime
    principal: str
    action: str
    key_id: str
    name: str
    workspace: str
    detail: str


@dataclass(frozen=True, slots=True)
class AuditPage:
    entries: tuple[AuditEntry, ...]  # newest first
    next_page_token: str
