"""Decisions and deny reasons: what Authorize and RecordUsage answer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aigw_sidecar.limits.alerts import BudgetEvent
from aigw_sidecar.limits.kinds import (
    KIND_OF_DECISION_FIELD,
    KIND_OF_REASON,
    LIMIT_KINDS,
    DenyReason,
    LimitKind,
    Unit,
    Window,
)

__all__ = ["DENY_MESSAGES", "Decision", "DenyReason", "Estimate", "LimitState", "Reservation",
           "UsageReport", "UsageResult"]


DENY_MESSAGES: dict[DenyReason, str] = {
    DenyReason.KEY_MISSING: "No API key was provided.",
    DenyReason.KEY_MALFORMED: "The API key is malformed.",
    DenyReason.KEY_UNKNOWN: "The API key is not valid.",
    DenyReason.KEY_DISABLED: "The API key is disabled.",
    DenyReason.KEY_EXPIRED: "The API key has expired.",
    DenyReason.MODEL_NOT_ALLOWED: "This API key may not use the model requested.",
    DenyReason.MODEL_NOT_PRICED: (
        "This API key has a cost limit and the model requested has no price."
    ),
    **{kind.deny_reason: kind.message for kind in LIMIT_KINDS},
}
_SHOWN_MODEL_CHARS = 64


@dataclass(frozen=True, slots=True)
class LimitState:
    """One kind of limit as seen by a decision (for x-ratelimit-* headers)."""

    limit: int
    remaining: int
    reset_ms: int | None  # None: never resets


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a request is expected to use, given before it runs."""

    model: str = ""
    prompt_tokens: int = 0
    max_output_tokens: int = 0
    cost_micro_usd: int | None = None  # None: priced from the model when possible

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.max_output_tokens


@dataclass(frozen=True, slots=True)
class Reservation:
    """Budget held for one admitted request until it is settled, released or expires."""

    request_id: str
    tokens: int
    cost_micro_usd: int


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one Authorize."""

    allowed: bool
    deny_reason: DenyReason | None = None
    key_id: str = ""
    workspace: str = ""
    project: str = ""
    environment: str = ""
    legacy: bool = False
    # The key's limits as this decision saw them, by LimitKind.name; a kind the
    # key has no limit of is absent.
    limits: Mapping[str, LimitState] = field(default_factory=dict)
    retry_after_ms: int | None = None  # None: retrying will not help
    reservation: Reservation | None = None  # what this request reserved, if anything
    # Admitted with a parallel-request slot or a reservation: the id that frees it.
    request_id: str = ""
    model: str = ""  # the model asked for (named in a MODEL_NOT_ALLOWED message)

    @property
    def message(self) -> str:
        if self.deny_reason is None:
            return ""
        text = DENY_MESSAGES[self.deny_reason]
        if self.deny_reason is DenyReason.MODEL_NOT_ALLOWED:
            return _model_message(self.model)
        if self.deny_reason is DenyReason.MODEL_NOT_PRICED:
            return (
                f"This API key has a cost limit, and the model '{_shown_model(self.model)}'"
                " has no price in the gateway's price table; ask an admin to price it."
            )
        kind = KIND_OF_REASON.get(self.deny_reason)
        left = self._budget_left(kind)
        if kind is not None and left:
            # The budget is not used up: this request's reservation does not fit in it.
            unit = "tokens" if kind.unit is Unit.TOKENS else "micro-USD"
            return (
                f"{text} This request's reservation (its prompt plus max_tokens, or a"
                f" default output bound when max_tokens is unset) exceeds the {left} {unit}"
                " left in the budget; send a lower max_tokens."
            )
        if kind is None:
            return text
        if self.retry_after_ms is not None:
            seconds = -(-self.retry_after_ms // 1000)
            text += f" Retry in {seconds} s."
        elif kind.window is Window.PERIOD:
            text += " The budget does not reset; ask an admin to raise the limit."
        elif kind.window is Window.ROLLING_TOKENS:
            text += " The request's estimate alone exceeds the limit; ask for fewer tokens."
        return text

    def state(self, kind: LimitKind) -> LimitState | None:
        """The key's limit of this kind as the decision saw it; None: no such limit."""
        return self.limits.get(kind.name)

    def __getattr__(self, name: str) -> LimitState | None:
        """A kind's state by its AuthorizeResponse field: ``decision.tokens_per_minute``."""
        kind = KIND_OF_DECISION_FIELD.get(name)
        if kind is None:
            raise AttributeError(name)
        return self.limits.get(kind.name)

    def _budget_left(self, kind: LimitKind | None) -> int:
        """What a budget denial left unused (0 when the budget is used up)."""
        if kind is None or kind.window is not Window.PERIOD:
            return 0
        state = self.state(kind)
        return max(state.remaining, 0) if state is not None else 0

    @staticmethod
    def deny(reason: DenyReason) -> Decision:
        return Decision(allowed=False, deny_reason=reason)


def _model_message(model: str) -> str:
    """Names the model, truncated; never a value that looks like a secret."""
    if not model:
        return (
            "This API key may only use certain models, and the request names none. "
            "Send the model in the request."
        )
    return f"The model '{_shown_model(model)}' is not allowed for this API key."


def _shown_model(model: str) -> str:
    """A model name for a message: truncated, and never a value that looks like a secret."""
    if model.startswith("sk-"):
        return "(hidden)"
    if len(model) > _SHOWN_MODEL_CHARS:
        return model[:_SHOWN_MODEL_CHARS] + "…"
    return model


@dataclass(frozen=True, slots=True)
class UsageReport:
    """What one LLM request used, reported after the response."""

    key_id: str
    request_id: str
    prompt_tokens: int
    completion_tokens: int
    cost_micro_usd: int | None  # None: priced by the sidecar from the model
    model: str = ""
    cached_prompt_tokens: int = 0
    unpriced_model: bool = False  # set by the service: the model had no price


@dataclass(frozen=True, slots=True)
class UsageResult:
    counted: bool  # False: the request id was already counted
    period_tokens: int
    period_cost_micro_usd: int
    cost_micro_usd: int = 0  # what this report charged
    settled_reservation: bool = False
    # Who used it (for metrics by workspace and project); "" when not counted.
    workspace: str = ""
    project: str = ""
    alerts: tuple[BudgetEvent, ...] = ()  # budget crossings this report caused
    expired_reservations: int = 0  # leases of the key found expired since the last report
