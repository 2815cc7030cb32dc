"""Micro-benchmark: looking up a model's price and quoting a request, in µs.

    .venv/bin/python -m tests.bench.pricing_lookup [--rounds 200000]

The built-in table (and a small pricing file over it, as in production with
--pricing-file) answers four kinds of names: exact (``gpt-4o``), provider-
prefixed (``openai/gpt-4o``), dated snapshots (``gpt-4o-2024-08-06`` priced as
``gpt-4o``) and unknown names. "cached" is the steady state (the table remembers
each name's lookup); "uncached" is a name's first lookup, timed on a fresh
table each time. Budget: 5 µs per lookup + quote.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from aigw_sidecar.pricing.builtin import builtin_table
from aigw_sidecar.pricing.loader import parse_table
from aigw_sidecar.pricing.table import PriceTable

BUDGET_US = 5.0
NAMES = {
    "exact": ["gpt-4o", "claude-sonnet-4-5", "gemini-2.5-pro", "grok-4.20"],
    "prefixed": ["openai/gpt-4o", "anthropic/claude-sonnet-4-5", "gemini/gemini-2.5-pro",
                 "openrouter/openai/gpt-4o-mini"],
    "dated": ["gpt-4o-2024-08-06", "claude-sonnet-4-5-20250929",
              "anthropic/claude-opus-4-5@20251101", "mistral-large-2512"],
    "unknown": ["my-model", "openai/not-a-model-2024-01-01", "a/b/c/d", "gpt-9-turbo"],
}


def _tables() -> dict[str, PriceTable]:
    over = parse_table({
        "unknown_model": "zero",
        "aliases": {"my-gpt4o-deployment": "gpt-4o"},
        "models": {"mock": {"input": "1", "output": "2"},
                   "gpt-4o-*-custom": {"input": "1", "output": "2"}},
    }, base=builtin_table())
    return {"built-in": builtin_table(), "file over built-in": over}


def _cached(table: PriceTable, names: list[str], rounds: int) -> float:
    for name in names:
        table.quote(name, 1200, 300, 200)
    start = time.perf_counter()
    for _ in range(rounds // len(names)):
        for name in names:
            table.quote(name, 1200, 300, 200)
    return (time.perf_counter() - start) / (rounds // len(names) * len(names)) * 1e6


def _uncached(table: PriceTable, names: list[str], rounds: int) -> float:
    """A first lookup: fresh tables (same prices, empty caches), timed in batches."""
    batches = max(1, rounds // 20 // len(names))
    fresh = [dataclasses.replace(table) for _ in range(batches)]
    for one in fresh:
        one._match("")  # patterns compile once per table (per reload), not per name
    start = time.perf_counter()
    for one in fresh:
        for name in names:
            one.quote(name, 1200, 300, 200)
    return (time.perf_counter() - start) / (batches * len(names)) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200_000)
    args = parser.parse_args(argv)
    worst = 0.0
    print(f"{'table':<20} {'names':<10} {'cached µs':>10} {'uncached µs':>12}")
    for label, table in _tables().items():
        for kind, names in NAMES.items():
            cached = _cached(table, names, args.rounds)
            uncached = _uncached(table, names, args.rounds)
            worst = max(worst, cached)
            print(f"{label:<20} {kind:<10} {cached:>10.2f} {uncached:>12.2f}")
    print(f"worst cached lookup + quote: {worst:.2f} µs (budget {BUDGET_US} µs): "
          f"{'ok' if worst <= BUDGET_US else 'OVER BUDGET'}")
    return 0 if worst <= BUDGET_US else 1


if __name__ == "__main__":
    raise SystemExit(main())
