"""The limit kinds: one row per kind of numeric limit, and everything else reads it.

A row says what the kind is called in each place (the ``Limits`` attribute and
proto field, the update-mask name, the store's record field, the fields of
``AuthorizeResponse`` and ``KeyOverview``), which deny reason and HTTP status it
answers with, which ``x-ratelimit-*`` family shows it, what window it counts
over, its bounds, and how it renders. The store codec, update diffing, the
proto converters, the Envoy headers, the admin CLI, the client and the Lua
scripts (through a generated table, see ``store/scripts.py``) are all driven by
``LIMIT_KINDS``; none of them names a kind. To add a kind: add a ``Limits``
field and a row here, the proto fields, and, for a new window, its Lua.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from aigw_sidecar.keys.money import MAX_MICRO_USD
from aigw_sidecar.limits.periods import ResetPeriod

MAX_TOKENS = 10**15
MAX_REQUESTS_PER_MINUTE = 10**6
MAX_REQUESTS_PER_DAY = 10**9
MAX_PARALLEL_REQUESTS = 10**5


class DenyReason(StrEnum):
    """Why a request was refused; each maps to one HTTP status for proxies."""

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


class Unit(StrEnum):
    """What a kind counts."""

    MICRO_USD = "micro_usd"
    TOKENS = "tokens"
    REQUESTS = "requests"


class Window(StrEnum):
    """What a kind counts over; each window has one implementation in Lua."""

    # The key's reset period (calendar, UTC): reported usage plus open reservations.
    PERIOD = "period"
    # A rolling window of window_s seconds: requests admitted in it.
    ROLLING_REQUESTS = "rolling_requests"
    # A rolling window of window_s seconds: tokens reported in it plus open reservations.
    ROLLING_TOKENS = "rolling_tokens"
    # Requests admitted and not yet settled, released or expired.
    IN_FLIGHT = "in_flight"
    # A fixed window of window_s seconds aligned to the Unix epoch (86400: the UTC day).
    FIXED_REQUESTS = "fixed_requests"


@dataclass(frozen=True, slots=True)
class LimitKind:
    """One kind of numeric limit, named for every place it appears."""

    name: str  # the update field and mask name: "requests_per_minute"
    attr: str  # the Limits attribute and its int64 field in the Limits proto
    record_field: str  # the field of the key record in the store
    deny_reason: DenyReason
    decision_field: str  # its RateLimit field in AuthorizeResponse
    overview_field: str  # its LimitUsage field in KeyOverview
    unit: Unit
    window: Window
    maximum: int
    message: str  # the deny message (a wait, when known, is added to it)
    label: str  # its row in the overview table
    short: str  # its suffix in the keys list ("" for money)
    window_s: int = 0  # rolling and fixed windows: the length
    header_family: str = ""  # x-ratelimit-*-<family>; "" for none
    api_field: str = ""  # the input field validation errors name, when not attr
    http_status: int = 429  # a wait (or an admin) can cure it

    @property
    def input_field(self) -> str:
        return self.api_field or self.attr

    @property
    def resets_with_period(self) -> bool:
        return self.window is Window.PERIOD


LIMIT_KINDS: tuple[LimitKind, ...] = (
    # Order is the order of the checks: the first kind that refuses is the reason.
    LimitKind(
        name="cost_limit", attr="cost_limit_micro_usd", api_field="cost_limit_usd",
        record_field="cost_limit", deny_reason=DenyReason.COST_LIMIT,
        decision_field="cost_micro_usd", overview_field="cost_micro_usd",
        unit=Unit.MICRO_USD, window=Window.PERIOD, maximum=MAX_MICRO_USD,
        message="Cost limit reached for this API key.", label="cost", short="",
    ),
    LimitKind(
        name="token_limit", attr="token_limit", record_field="token_limit",
        deny_reason=DenyReason.TOKEN_LIMIT, decision_field="tokens", overview_field="tokens",
        unit=Unit.TOKENS, window=Window.PERIOD, maximum=MAX_TOKENS,
        message="Token limit reached for this API key.", label="tokens", short="tok",
        header_family="tokens",
    ),
    LimitKind(
        name="tokens_per_minute", attr="tokens_per_minute", record_field="tpm",
        deny_reason=DenyReason.TOKENS_PER_MINUTE, decision_field="tokens_per_minute",
        overview_field="tokens_per_minute", unit=Unit.TOKENS, window=Window.ROLLING_TOKENS,
        window_s=60, maximum=MAX_TOKENS,
        message="Tokens-per-minute limit reached for this API key.", label="tokens/min",
        short="tpm", header_family="tokens",
    ),
    LimitKind(
        name="requests_per_minute", attr="requests_per_minute", record_field="rpm",
        deny_reason=DenyReason.REQUESTS_PER_MINUTE, decision_field="requests",
        overview_field="requests_per_minute", unit=Unit.REQUESTS,
        window=Window.ROLLING_REQUESTS, window_s=60, maximum=MAX_REQUESTS_PER_MINUTE,
        message="Requests-per-minute limit reached for this API key.",
        label="requests/min", short="rpm", header_family="requests",
    ),
    LimitKind(
        name="requests_per_day", attr="requests_per_day", record_field="rpd",
        deny_reason=DenyReason.REQUESTS_PER_DAY, decision_field="requests_per_day",
        overview_field="requests_per_day", unit=Unit.REQUESTS, window=Window.FIXED_REQUESTS,
        window_s=86400, maximum=MAX_REQUESTS_PER_DAY,
        message="Requests-per-day limit reached for this API key.",
        label="requests/day", short="rpd", header_family="requests",
    ),
    LimitKind(
        name="max_parallel_requests", attr="max_parallel_requests", record_field="maxpar",
        deny_reason=DenyReason.PARALLEL_REQUESTS, decision_field="parallel_requests",
        overview_field="parallel_requests", unit=Unit.REQUESTS, window=Window.IN_FLIGHT,
        maximum=MAX_PARALLEL_REQUESTS,
        message="Too many requests in flight for this API key (max parallel requests reached).",
        label="in flight", short="parallel",
    ),
)
KIND_OF_NAME: Mapping[str, LimitKind] = {kind.name: kind for kind in LIMIT_KINDS}
KIND_OF_REASON: Mapping[DenyReason, LimitKind] = {kind.deny_reason: kind for kind in LIMIT_KINDS}
KIND_OF_DECISION_FIELD: Mapping[str, LimitKind] = {
    kind.decision_field: kind for kind in LIMIT_KINDS
}


@dataclass(frozen=True, slots=True)
class Limits:
    """Optional limits; None means no limit of that kind (see LIMIT_KINDS)."""

    cost_limit_micro_usd: int | None = None
    token_limit: int | None = None
    requests_per_minute: int | None = None
    reset_period: ResetPeriod = ResetPeriod.NEVER  # of the PERIOD kinds
    tokens_per_minute: int | None = None
    max_parallel_requests: int | None = None
    allowed_models: tuple[str, ...] = ()  # empty: any model
    requests_per_day: int | None = None

    def value(self, kind: LimitKind) -> int | None:
        value: int | None = getattr(self, kind.attr)
        return value

    @property
    def any(self) -> bool:
        return (
            any(self.value(kind) is not None for kind in LIMIT_KINDS)
            or self.reset_period is not ResetPeriod.NEVER
            or bool(self.allowed_models)
        )
