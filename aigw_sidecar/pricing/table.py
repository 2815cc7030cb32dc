"""Price tables, model-name lookup and the one rounding rule.

Prices are USD per million tokens, written as exact decimals in the pricing
file and held as integer micro-USD per million tokens. The cost of a request is

    ceil( (uncached_input * input + cached_input * cached_input_price
           + cache_write * cache_write_price + output * output_price) / 1_000_000 )

micro-USD, computed in integers: exact, and rounded up to the next micro-USD
once per request, so a request is never charged less than it cost. A model may
have long-context tiers: when the prompt has more tokens than a tier's
threshold, every token of the request is charged that tier's prices.

Lookup of a model name, in one table: the exact name; an alias; the glob
patterns in file order; then the bare name (provider prefixes such as
``openai/`` or ``openrouter/anthropic/`` taken off one by one) and the name
without a snapshot date (``gpt-4o-2024-08-06`` -> ``gpt-4o``,
``claude-sonnet-4-5-20250929`` -> ``claude-sonnet-4-5``), exact names first.
A pricing file's table is searched before the built-in table under it
(``fallback``), so the file overrides the built-in prices model by model.
Results are cached per table (a reload builds a new table, so a new cache).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from aigw_sidecar.errors import InvalidArgument

TOKENS_PER_PRICE_UNIT = 1_000_000
# Distinct model names whose lookup result a table remembers; past it, names
# are looked up every time (a client sending random names cannot grow memory).
LOOKUP_CACHE_SIZE = 4096
# An alias may name another alias; a chain longer than this is refused at load.
MAX_ALIAS_DEPTH = 8


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
    # Writing the prompt cache (Anthropic's cache_creation_input_tokens, part of
    # the prompt). None: cache writes cost the input price. Usage reports carry no
    # cache-write count yet, so this is stored and used only when one does.
    cache_write: int | None = None
    # Long-context tiers, ascending: (threshold, prices) where a request whose
    # prompt has MORE tokens than the threshold is charged those prices in full.
    tiers: tuple[tuple[int, ModelPrice], ...] = ()
    # Provenance, for people: not part of the price.
    source: str | None = field(default=None, compare=False)
    as_of: str | None = field(default=None, compare=False)

    def tier_for(self, prompt_tokens: int) -> ModelPrice:
        """The prices a request with this many prompt tokens is charged."""
        price = self
        for above, tier in self.tiers:
            if prompt_tokens > above:
                price = tier
        return price

    def cost_micro_usd(
        self,
        input_tokens: int,
        output_tokens: int,
        cached_tokens: int,
        cache_write_tokens: int = 0,
    ) -> int:
        """The cost in micro-USD, rounded up once.

        ``cached_tokens`` (read from the cache) and ``cache_write_tokens`` (written
        to it) are parts of ``input_tokens``; together they count at most once.
        """
        # Plain comparisons rather than min() and friends: this runs for every
        # priced request (tests/bench/pricing_lookup.py).
        price = self.tier_for(input_tokens) if self.tiers else self
        cached = cached_tokens if cached_tokens < input_tokens else input_tokens
        cached_price = price.cached_input
        if cached_price is None:
            cached_price = price.input
        scaled = (
            (input_tokens - cached) * price.input
            + cached * cached_price
            + output_tokens * price.output
        )
        if cache_write_tokens > 0:
            rest = input_tokens - cached
            written = cache_write_tokens if cache_write_tokens < rest else rest
            write_price = price.input if price.cache_write is None else price.cache_write
            scaled += written * (write_price - price.input)
        return -(-scaled // TOKENS_PER_PRICE_UNIT)


class PriceQuote(NamedTuple):
    """The cost of one request and whether its model was known.

    A named tuple: made for every priced request, and a frozen dataclass
    costs several times more to build.
    """

    cost_micro_usd: int
    known_model: bool


# Snapshot dates at the end of a model name: -2024-08-06, -20250929, @20250929,
# and the four-digit forms -0613 (month, day) and -2512 (year, month).
_DATED = re.compile(
    r"(?:-\d{4}-\d{2}-\d{2}|[-@]20\d{6}|-(?:0[1-9]|1[0-2])[0-3]\d|-2\d(?:0[1-9]|1[0-2]))\Z"
)


def bare_names(model: str) -> Iterator[str]:
    """The names a model may be priced under, most specific first (without ``model``).

    ``openrouter/openai/gpt-4o-2024-08-06`` gives ``openai/gpt-4o-2024-08-06``,
    ``gpt-4o-2024-08-06``, then the undated ``openrouter/openai/gpt-4o``,
    ``openai/gpt-4o`` and ``gpt-4o``.
    """
    if len(model) > 256:  # no real model name; bounds the work on hostile input
        return
    names = [model]
    rest = model
    while "/" in rest:
        rest = rest.split("/", 1)[1]
        if rest:
            names.append(rest)
    yield from names[1:]
    if model[-1:].isdigit():  # every date form ends in a digit
        match = _DATED.search(model)
        if match is not None and match.start() > 0:
            cut = len(model) - match.start()
            for name in names:
                if len(name) > cut:
                    yield name[:-cut]


_MISSING = object()


@dataclass(frozen=True, slots=True)
class PriceTable:
    """A table of model prices; see the module docstring for the lookup order."""

    models: Mapping[str, ModelPrice] = field(default_factory=dict)
    patterns: tuple[tuple[str, ModelPrice], ...] = ()
    default: ModelPrice | None = None
    unknown_model: UnknownModelPolicy = UnknownModelPolicy.REFUSE
    # Deployment names and other spellings: name -> the model it is priced as.
    aliases: Mapping[str, str] = field(default_factory=dict)
    # The table under this one (the built-in table under a pricing file).
    fallback: PriceTable | None = None
    # Where the prices come from and when they were taken, for people.
    source: str = field(default="", compare=False)
    as_of: str = field(default="", compare=False)
    _cache: dict[str, ModelPrice | None] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    _matchers: list[tuple[Callable[[str], re.Match[str] | None], ModelPrice]] = field(
        default_factory=list, init=False, compare=False, repr=False
    )

    def price_of(self, model: str) -> ModelPrice | None:
        cached = self._cache.get(model, _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        price = self._lookup(model)
        if len(self._cache) < LOOKUP_CACHE_SIZE:
            self._cache[model] = price
        return price

    def _lookup(self, model: str) -> ModelPrice | None:
        model = self._resolve_alias(model)
        names: list[str] | None = None  # the bare names, made once when needed
        table: PriceTable | None = self
        while table is not None:
            price = table.models.get(model)
            if price is None and table.patterns:
                price = table._match(model)
            if price is None:
                if names is None:
                    names = list(bare_names(model))
                price = table._own_bare_price(names)
            if price is not None:
                return price
            table = table.fallback
        return None

    def _resolve_alias(self, model: str) -> str:
        for _ in range(MAX_ALIAS_DEPTH):
            table: PriceTable | None = self
            target = None
            while table is not None and target is None:
                target = table.aliases.get(model)
                table = table.fallback
            if target is None:
                return model
            model = target
        return model

    def _own_bare_price(self, names: list[str]) -> ModelPrice | None:
        for name in names:
            price = self.models.get(name)
            if price is None and self.patterns:
                price = self._match(name)
            if price is not None:
                return price
        return None

    def _match(self, name: str) -> ModelPrice | None:
        """The price of the first pattern (in file order) that matches ``name``."""
        matchers = self._matchers
        if not matchers:  # compiled once per table
            matchers.extend(
                (re.compile(fnmatch.translate(pattern)).match, price)
                for pattern, price in self.patterns
            )
        for match, price in matchers:
            if match(name) is not None:
                return price
        return None

    def quote(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cached_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> PriceQuote:
        price = self.price_of(model)
        if price is not None:
            cost = price.cost_micro_usd(
                input_tokens, output_tokens, cached_tokens, cache_write_tokens
            )
            return PriceQuote(cost, True)
        if self.unknown_model is UnknownModelPolicy.ZERO:
            return PriceQuote(0, False)
        if self.unknown_model is UnknownModelPolicy.DEFAULT and self.default is not None:
            return PriceQuote(
                self.default.cost_micro_usd(
                    input_tokens, output_tokens, cached_tokens, cache_write_tokens
                ),
                False,
            )
        raise InvalidArgument("model", f"no price for model {model[:128]!r} in the pricing table")

    # --- for the start-up log and the CLI ----------------------------------------

    def layers(self) -> Iterator[PriceTable]:
        table: PriceTable | None = self
        while table is not None:
            yield table
            table = table.fallback

    def model_count(self) -> int:
        """Distinct model names priced exactly, over every layer."""
        names: set[str] = set()
        for table in self.layers():
            names.update(table.models)
        return len(names)

    def is_empty(self) -> bool:
        """True when no model has a price and unknown models are not charged a default."""
        return not any(table.models or table.patterns for table in self.layers()) and (
            self.unknown_model is not UnknownModelPolicy.DEFAULT
        )

    def describe(self) -> str:
        """One line for the log: models, patterns, aliases, sources and dates, policy."""
        parts = []
        for table in self.layers():
            text = table.source or "pricing table"
            if table.as_of:
                text += f" as of {table.as_of}"
            counts = f"{len(table.models)} models"
            if table.patterns:
                counts += f", {len(table.patterns)} patterns"
            if table.aliases:
                counts += f", {len(table.aliases)} aliases"
            parts.append(f"{text} ({counts})")
        return (
            f"{self.model_count()} models: " + " over ".join(parts)
            + f"; unknown models: {self.unknown_model.value}"
        )
