"""Price tables and the one rounding rule.

Prices are USD per million tokens, written as exact decimals in the pricing
file and held as integer micro-USD per million tokens. The cost of a request is

    ceil( (uncached_input * input + cached_input * cached_input_price
           + output * output_price) / 1_000_000 )   micro-USD

computed in integers: exact, and rounded up to the next micro-USD once per
request, so a request is never charged less than it cost.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from aigw_sidecar.errors import InvalidArgument

TOKENS_PER_PRICE_UNIT = 1_000_000


class UnknownModelPolicy(StrEnum):
    """What to charge for a model the table does not list."""

    REFUSE = "refuse"    # RecordUsage fails with INVALID_ARGUMENT naming the model
    ZERO = "zero"        # charge nothing (tokens are still counted)
    DEFAULT = "default"  # charge the table's default price


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Micro-USD per million tokens."""

    input: int
    output: int
    cached_input: int | None = None  # None: cached input costs the input price
    # The model's own cap on output tokens: what a request without max_tokens may
    # use at most, so what its reservation holds. None: not known.
    max_output_tokens: int | None = None

    def cost_micro_usd(self, input_tokens: int, output_tokens: int, cached_tokens: int) -> int:
        cached = min(cached_tokens, input_tokens)
        cached_price = self.input if self.cached_input is None else self.cached_input
        scaled = (
            (input_tokens - cached) * self.input
            + cached * cached_price
            + output_tokens * self.output
        )
        return -(-scaled // TOKENS_PER_PRICE_UNIT)


@dataclass(frozen=True, slots=True)
class PriceQuote:
    """The cost of one request and whether its model was known."""

    cost_micro_usd: int
    known_model: bool


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Exact model names first, then glob patterns (``gpt-4o-*``) in file order."""

    models: Mapping[str, ModelPrice] = field(default_factory=dict)
    patterns: tuple[tuple[str, ModelPrice], ...] = ()
    default: ModelPrice | None = None
    unknown_model: UnknownModelPolicy = UnknownModelPolicy.REFUSE

    def price_of(self, model: str) -> ModelPrice | None:
        price = self.models.get(model)
        if price is not None:
            return price
        for pattern, candidate in self.patterns:
            if fnmatch.fnmatchcase(model, pattern):
                return candidate
        return None

    def quote(
        self, model: str, input_tokens: int, output_tokens: int, cached_tokens: int = 0
    ) -> PriceQuote:
        price = self.price_of(model)
        if price is not None:
            cost = price.cost_micro_usd(input_tokens, output_tokens, cached_tokens)
            return PriceQuote(cost, True)
        if self.unknown_model is UnknownModelPolicy.ZERO:
            return PriceQuote(0, False)
        if self.unknown_model is UnknownModelPolicy.DEFAULT and self.default is not None:
            return PriceQuote(
                self.default.cost_micro_usd(input_tokens, output_tokens, cached_tokens), False
            )
        raise InvalidArgument("model", f"no price for model {model[:128]!r} in the pricing table")
