"""API keys as values: limits, specs for create and update, and their validation.

Validation lives here so that every entry point (gRPC, Envoy, CLI) refuses the
same input with the same message naming the field.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from aigw_sidecar.errors import InvalidArgument
from aigw_sidecar.keys import secrets
from aigw_sidecar.limits.alerts import KeyAlerts, validate_key_alerts
from aigw_sidecar.limits.kinds import LIMIT_KINDS, LimitKind
from aigw_sidecar.limits.kinds import Limits as Limits

DEFAULT_WORKSPACE = "default"
MAX_ALLOWED_MODELS = 64
MAX_LABELS = 32
# An allowed-models entry: a model name, or a pattern where '*' matches any run of
# characters. Other glob characters are refused rather than taken literally.
_MODEL_PATTERN_RE = re.compile(r"^[\x21-\x7e]{1,128}\Z")
_GLOB_ONLY_STAR = frozenset("?[]")
_IDENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_LABEL_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9._/-]{0,62}\Z")
_MAX_NAME = 128
_MAX_LABEL_VALUE = 256
# Days of daily usage a key keeps (the store drops older days), so the most a
# history read can show; and what it shows when the caller names no number.
HISTORY_DAYS = 100
DEFAULT_HISTORY_DAYS = 30
DAY_MS = 86_400_000


class KeyStatus(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as stored (never its secret)."""

    key_id: str
    name: str
    workspace: str
    project: str
    environment: str
    labels: Mapping[str, str]
    limits: Limits
    enabled: bool
    legacy: bool
    masked_secret: str
    created_at_ms: int
    updated_at_ms: int
    expires_at_ms: int | None
    last_used_at_ms: int | None
    status: KeyStatus  # as of the store's clock when the key was read
    alerts: KeyAlerts = field(default_factory=KeyAlerts)  # budget alerts
    # During a rotation's grace period: when the previous secret stops working.
    previous_secret_expires_at_ms: int | None = None


def key_status(enabled: bool, expires_at_ms: int | None, now_ms: int) -> KeyStatus:
    """Disabled wins over expired; expired is derived from the clock."""
    if not enabled:
        return KeyStatus.DISABLED
    if expires_at_ms is not None and expires_at_ms <= now_ms:
        return KeyStatus.EXPIRED
    return KeyStatus.ENABLED


@dataclass(frozen=True, slots=True)
class KeyOverview:
    """A key's usage against each of its limits, read at one instant of the store clock."""

    key: ApiKey
    observed_at_ms: int
    period_start_ms: int
    next_reset_ms: int | None
    period_cost_micro_usd: int
    period_tokens: int
    period_requests: int
    period_prompt_tokens: int
    period_completion_tokens: int
    lifetime_requests: int
    lifetime_prompt_tokens: int
    lifetime_completion_tokens: int
    lifetime_cost_micro_usd: int
    # What each limit kind counts right now, by LimitKind.name (whether or not the
    # key has a limit of that kind): the period's cost and tokens, requests in the
    # last minute, tokens in the last minute plus reserved in flight, slots held.
    used: Mapping[str, int] = field(default_factory=dict)
    reserved_tokens: int = 0  # held by requests in flight, not yet settled
    reserved_cost_micro_usd: int = 0
    open_reservations: int = 0
    per_model: tuple[ModelUsage, ...] = ()  # this period, most expensive first
    unpriced_requests: int = 0  # reports whose model had no price


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """Usage of one model in the current period."""

    model: str
    requests: int
    tokens: int
    cost_micro_usd: int


@dataclass(frozen=True, slots=True)
class DailyUsage:
    """What a key's counted usage reports added on one UTC day."""

    day_start_ms: int  # 00:00 UTC of the day
    cost_micro_usd: int
    tokens: int  # prompt + completion
    requests: int  # usage reports counted (each request id once)


@dataclass(frozen=True, slots=True)
class KeyFilter:
    """Filters of a key listing; empty strings and None match anything."""

    workspace: str = ""
    project: str = ""
    environment: str = ""
    status: KeyStatus | None = None
    name_contains: str = ""  # a substring of the name, ignoring case

    @property
    def narrows(self) -> bool:
        """Whether some key of the workspace(s) may not match."""
        return bool(
            self.project or self.environment or self.name_contains or self.status is not None
        )

    def matches(self, key: ApiKey) -> bool:
        return self.admits(key.name, key.project, key.environment, key.status)

    def admits(self, name: str, project: str, environment: str, status: KeyStatus) -> bool:
        """``matches`` on the only fields it reads (a store may have them before a key)."""
        return (
            (not self.project or project == self.project)
            and (not self.environment or environment == self.environment)
            and (self.status is None or status is self.status)
            and (not self.name_contains or self.name_contains.casefold() in name.casefold())
        )


class KeyView(StrEnum):
    """What a listing returns for each key."""

    BASIC = "basic"
    WITH_USAGE = "with_usage"  # the key's overview too


@dataclass(frozen=True, slots=True)
class KeyPage:
    """One page of a key listing."""

    keys: tuple[ApiKey, ...]
    next_page_token: str  # empty on the last page
    # With KeyView.WITH_USAGE: the overview of keys[i] at index i (its key is keys[i]).
    overviews: tuple[KeyOverview, ...] = ()


@dataclass(frozen=True, slots=True)
class KeySpec:
    """What an admin chose for a new key (validated)."""

    name: str
    workspace: str = DEFAULT_WORKSPACE
    project: str = ""
    environment: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    expires_at_ms: int | None = None
    alerts: KeyAlerts = field(default_factory=KeyAlerts)


@dataclass(frozen=True, slots=True)
class KeyUpdate:
    """A partial update: only the fields named in ``fields`` change.

    Field names: name, project, environment, labels, expires_at,
    alert_thresholds_percent, alert_expiry_days, and LIMIT_FIELDS (the name of
    every limit kind, reset_period and allowed_models).
    """

    fields: frozenset[str]
    name: str = ""
    project: str = ""
    environment: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    expires_at_ms: int | None = None
    # Changed when 'alert_thresholds_percent' or 'alert_expiry_days' is in fields.
    alerts: KeyAlerts = field(default_factory=KeyAlerts)

    LIMIT_FIELDS = frozenset(
        {kind.name for kind in LIMIT_KINDS} | {"reset_period", "allowed_models"}
    )

    @property
    def touches_limits(self) -> bool:
        return bool(self.fields & self.LIMIT_FIELDS)


def validate_key_id(key_id: str) -> str:
    """A key id as named in a request, or InvalidArgument on ``key_id``."""
    if not key_id:
        raise InvalidArgument("key_id", "is required")
    if not secrets.is_valid_key_id(key_id):
        raise InvalidArgument("key_id", "is not a key id (key_ followed by 20 characters)")
    return key_id


def validate_page_size(page_size: int, default: int, maximum: int) -> int:
    """The page size a listing uses: ``default`` for 0, else 1..maximum."""
    if page_size < 0:
        raise InvalidArgument("page_size", "must not be negative")
    if page_size > maximum:
        raise InvalidArgument("page_size", f"must be at most {maximum}")
    return page_size or default


def validate_history_days(days: int) -> int:
    """The days a history read covers: DEFAULT_HISTORY_DAYS for 0, else 1..HISTORY_DAYS."""
    if days == 0:
        return DEFAULT_HISTORY_DAYS
    if not 1 <= days <= HISTORY_DAYS:
        raise InvalidArgument(
            "days", f"must be between 1 and {HISTORY_DAYS} (0: {DEFAULT_HISTORY_DAYS})"
        )
    return days


# A model name: printable ASCII without spaces (what providers use).
MODEL_NAME_RE = re.compile(r"^[\x21-\x7e]{1,128}\Z")


def validate_name(value: str, field_name: str = "name") -> str:
    name = value.strip()
    if not name:
        raise InvalidArgument(field_name, "is required")
    if len(name) > _MAX_NAME:
        raise InvalidArgument(field_name, f"must be at most {_MAX_NAME} characters")
    if any(not ch.isprintable() for ch in name):
        raise InvalidArgument(field_name, "must not contain control characters")
    return name


def validate_name_contains(value: str, field_name: str = "name_contains") -> str:
    """A name filter: any text up to the length of a name (empty: no filter)."""
    if len(value) > _MAX_NAME:
        raise InvalidArgument(field_name, f"must be at most {_MAX_NAME} characters")
    return value


def validate_workspace(value: str, field_name: str = "workspace") -> str:
    if not value:
        return DEFAULT_WORKSPACE
    return validate_ident(value, field_name)


def validate_ident(value: str, field_name: str, *, optional: bool = False) -> str:
    """Workspace, project and environment: ``[A-Za-z0-9][A-Za-z0-9._-]{0,63}``."""
    if optional and value == "":
        return ""
    if not _IDENT_RE.match(value):
        raise InvalidArgument(
            field_name, "must be 1-64 characters of letters, digits, '.', '_' or '-'"
        )
    return value


def validate_labels(labels: Mapping[str, str], field_name: str = "labels") -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(field_name, f"at most {MAX_LABELS} labels")
    for key, val in labels.items():
        if not _LABEL_KEY_RE.match(key):
            # The bad key is not echoed: it may be a secret pasted into the wrong field.
            raise InvalidArgument(
                field_name,
                "label keys are 1-63 characters of a-z, 0-9, '.', '_', '/' or '-'",
            )
        if len(val) > _MAX_LABEL_VALUE or any(not ch.isprintable() for ch in val):
            raise InvalidArgument(
                f"{field_name}[{key!r}]",
                f"label values are at most {_MAX_LABEL_VALUE} printable characters",
            )
    return dict(labels)


def validate_limit(kind: LimitKind, value: int | None, field_name: str) -> None:
    """A limit of ``kind``: unset, or 1..kind.maximum; InvalidArgument on ``field_name``."""
    _check_positive(field_name, value, kind.maximum)


def validate_limits(limits: Limits, field_prefix: str = "limits") -> Limits:
    for kind in LIMIT_KINDS:
        validate_limit(kind, limits.value(kind), f"{field_prefix}.{kind.input_field}")
    models = validate_allowed_models(limits.allowed_models, f"{field_prefix}.allowed_models")
    if models == limits.allowed_models:
        return limits
    return replace(limits, allowed_models=models)


def validate_allowed_models(
    patterns: tuple[str, ...], field_name: str = "limits.allowed_models"
) -> tuple[str, ...]:
    """Model names or ``*`` patterns, duplicates dropped, order kept."""
    if len(patterns) > MAX_ALLOWED_MODELS:
        raise InvalidArgument(field_name, f"at most {MAX_ALLOWED_MODELS} entries")
    for i, pattern in enumerate(patterns):
        # Entries are not echoed: one may be a secret pasted into the wrong field.
        if not _MODEL_PATTERN_RE.match(pattern):
            raise InvalidArgument(
                f"{field_name}[{i}]", "must be 1-128 printable ASCII characters without spaces"
            )
        if _GLOB_ONLY_STAR.intersection(pattern):
            raise InvalidArgument(
                f"{field_name}[{i}]", "only '*' is a wildcard ('?', '[' and ']' are refused)"
            )
        if pattern.startswith("sk-"):
            raise InvalidArgument(f"{field_name}[{i}]", "must not be an API key secret")
    return tuple(dict.fromkeys(patterns))


def model_allowed(model: str, patterns: tuple[str, ...]) -> bool:
    """The rule authorize.lua applies (kept here for tests and documentation)."""
    if not patterns:
        return True
    return any(fnmatch.fnmatchcase(model, pattern) for pattern in patterns) if model else False


def _check_positive(field_name: str, value: int | None, maximum: int) -> None:
    if value is None:
        return
    if value <= 0:
        raise InvalidArgument(field_name, "must be positive (leave it unset for no limit)")
    if value > maximum:
        raise InvalidArgument(field_name, f"must be at most {maximum}")


def validate_spec(spec: KeySpec) -> KeySpec:
    """A copy of ``spec`` with normalised values, or InvalidArgument."""
    return KeySpec(
        name=validate_name(spec.name),
        workspace=validate_workspace(spec.workspace),
        project=validate_ident(spec.project, "project", optional=True),
        environment=validate_ident(spec.environment, "environment", optional=True),
        labels=validate_labels(spec.labels),
        limits=validate_limits(spec.limits),
        expires_at_ms=spec.expires_at_ms,
        alerts=validate_key_alerts(spec.alerts),
    )


def validate_update(update: KeyUpdate) -> KeyUpdate:
    return KeyUpdate(
        fields=update.fields,
        name=validate_name(update.name) if "name" in update.fields else "",
        project=validate_ident(update.project, "project", optional=True),
        environment=validate_ident(update.environment, "environment", optional=True),
        labels=validate_labels(update.labels),
        limits=validate_limits(update.limits),
        expires_at_ms=update.expires_at_ms,
        alerts=validate_key_alerts(update.alerts),
    )
