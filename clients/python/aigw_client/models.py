"""Plain typed values the client takes and returns: no protobuf in its public API.

Money is ``Decimal`` USD, times are timezone-aware ``datetime`` in UTC,
durations are ``timedelta``; ``None`` means "no such limit" or "never".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
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
    TOKENS_PER_MINUTE = "tokens_per_minute"
    PARALLEL_REQUESTS = "parallel_requests"
    MODEL_NOT_ALLOWED = "model_not_allowed"
    MODEL_NOT_PRICED = "model_not_priced"
    REQUESTS_PER_DAY = "requests_per_day"


class BudgetEventType(StrEnum):
    BUDGET_THRESHOLD = "budget_threshold"  # usage crossed a threshold of a limit
    KEY_EXPIRING = "key_expiring"  # the key expires within its alert_expiry_days


class Budget(StrEnum):
    """Which limit a ``budget_threshold`` event is about."""

    COST = "cost"
    TOKENS = "tokens"


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits of an API key; None means no limit of that kind."""

    cost_limit_usd: Decimal | None = None
    token_limit: int | None = None
    requests_per_minute: int | None = None
    reset_period: ResetPeriod = ResetPeriod.NEVER
    tokens_per_minute: int | None = None  # rolling 60 s, reported tokens + estimates in flight
    max_parallel_requests: int | None = None  # requests in flight at once
    allowed_models: tuple[str, ...] = ()  # names or '*' patterns; empty: any model
    requests_per_day: int | None = None  # per UTC day (00:00 to 00:00 UTC)


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
    # Budget alerts: percentages of the cost and token limits, and days before expires_at.
    alert_thresholds_percent: tuple[int, ...] = ()
    alert_expiry_days: int | None = None
    # Set during a rotation's grace period: the previous secret works until then.
    previous_secret_expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new API key and its secret; the secret is returned this once."""

    key: ApiKey
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class RotatedKey:
    """A key after ``rotate_key_secret``: its new secret, returned this once.

    The previous secret keeps working until ``key.previous_secret_expires_at``
    (None: it stopped at once).
    """

    key: ApiKey
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class KeyPage:
    keys: tuple[ApiKey, ...]
    next_page_token: str  # empty on the last page
    # With ``list_keys(with_usage=True)``: the overview of keys[i] at index i.
    overviews: tuple[KeyOverview, ...] = ()


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One kind of limit as seen by Authorize (for x-ratelimit-* headers)."""

    limit: int
    remaining: int
    reset_after: timedelta | None  # None: the budget never resets


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a request may use, reserved by Authorize against token and cost limits.

    Reserves ``prompt_tokens + max_output_tokens`` tokens, and ``cost_usd`` (at most
    6 decimals) or, when None, the sidecar's price of ``model``.
    """

    model: str = ""
    prompt_tokens: int = 0
    max_output_tokens: int = 0
    cost_usd: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Reservation:
    """What an admitted request holds until RecordUsage or ReleaseReservation settles it."""

    tokens: int
    cost_usd: Decimal


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
    tokens_per_minute: RateLimit | None = None  # reset_after: until the oldest tokens leave
    parallel_requests: RateLimit | None = None  # limit and free slots; never resets
    reservation: Reservation | None = None  # None: nothing reserved
    # Set when a reservation or parallel slot is held: the id RecordUsage or
    # release_reservation frees it with (the one given, or one the sidecar made).
    request_id: str = ""
    requests_per_day: RateLimit | None = None  # reset_after: until 00:00 UTC


@dataclass(frozen=True, slots=True)
class UsageResult:
    counted: bool  # False: this request id was already counted
    period_tokens: int
    period_cost_usd: Decimal
    cost_usd: Decimal = Decimal(0)  # what this report charged (priced by the sidecar if unset)
    settled_reservation: bool = False  # an open reservation of this request was settled


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
class ModelUsage:
    """The period's usage reported for one model (``(other)`` pools the rest)."""

    model: str
    requests: int
    tokens: int
    cost_usd: Decimal


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
    # Held right now by requests in flight (expired leases excluded); not in ``used``.
    reserved_tokens: int
    reserved_cost_usd: Decimal
    open_reservations: int
    per_model: tuple[ModelUsage, ...]  # most expensive first
    unpriced_requests: int  # reports of the period whose model had no price
    tokens_per_minute: LimitUsage  # used = tokens in the last 60 s (estimates included)
    parallel_requests: LimitUsage  # used = requests in flight
    requests_per_day: LimitUsage  # used = requests admitted this UTC day


@dataclass(frozen=True, slots=True)
class DailyUsage:
    """What a key's counted usage reports added on one UTC day."""

    day: date  # the UTC day
    cost_usd: Decimal
    tokens: int  # prompt + completion
    requests: int  # usage reports counted (each request id once), not admissions


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


@dataclass(frozen=True, slots=True)
class BudgetEvent:
    """A budget alert: a threshold crossed (once per period) or an expiry warning.

    ``used`` and ``limit`` are in the budget's unit: USD for ``Budget.COST``,
    tokens (whole numbers) for ``Budget.TOKENS``. A type or budget this client
    does not know yet is kept as its string.
    """

    event_id: str  # ordered by time
    occurred_at: datetime
    type: BudgetEventType | str
    key_id: str
    workspace: str
    project: str
    budget: Budget | str | None  # budget_threshold only
    threshold_percent: int | None
    used: Decimal
    limit: Decimal
    period_start: datetime | None
    expires_at: datetime | None  # key_expiring only
    expiry_days: int | None
    dedupe_key: str  # equal for every delivery of one crossing


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One model's prices in the sidecar's table, USD per million tokens (exact)."""

    model: str  # the table's name or glob pattern
    input_usd: Decimal
    output_usd: Decimal
    cached_input_usd: Decimal | None  # None: the input price
    cache_write_usd: Decimal | None  # None: not listed
    max_output_tokens: int | None  # None: not known
    source: str


@dataclass(frozen=True, slots=True)
class PricePage:
    prices: tuple[ModelPrice, ...]  # by name
    next_page_token: str  # "" on the last page
    table: str  # the table in force, as the sidecar logs it


@dataclass(frozen=True, slots=True)
class EventPage:
    events: tuple[BudgetEvent, ...]  # oldest first
    next_cursor: str  # pass as ``after``; unchanged when nothing is new
