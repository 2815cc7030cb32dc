"""The built-in price table: every row against its source figure, and how it ships.

tests/data/litellm_builtin_excerpt.json is the excerpt of LiteLLM's model cost
map (the litellm wheel's model_prices_and_context_window_backup.json) holding
exactly the entries the table was generated from. Each row of builtin.yaml is
checked against it here with arithmetic of its own (per-token USD x 10^12 =
micro-USD per million tokens), not with the generator's code.
"""

from __future__ import annotations

import json
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aigw_sidecar.pricing import generate
from aigw_sidecar.pricing.builtin import builtin_table
from aigw_sidecar.pricing.table import ModelPrice, PriceTable, UnknownModelPolicy
from tests.servers import REPO

EXCERPT_PATH = REPO / "tests" / "data" / "litellm_builtin_excerpt.json"
BUILTIN_PATH = REPO / "aigw_sidecar" / "pricing" / "builtin.yaml"
EXCERPT: dict[str, Any] = json.loads(EXCERPT_PATH.read_text(), parse_float=Decimal)
SOURCE_MODELS: dict[str, dict[str, Any]] = EXCERPT["models"]
# Providers whose API takes the bare model name: the table drops their prefix.
BARE = {"openai", "anthropic", "gemini", "mistral", "deepseek", "xai"}
PER_TOKEN_TO_MICRO_PER_MILLION = Decimal(10) ** 12


def table_name(key: str, entry: dict[str, Any]) -> str:
    provider = entry["litellm_provider"]
    prefix = f"{provider}/"
    return key[len(prefix):] if provider in BARE and key.startswith(prefix) else key


def micro(per_token: Any) -> int:
    value = Decimal(per_token) * PER_TOKEN_TO_MICRO_PER_MILLION
    assert value == value.to_integral_value(), f"{per_token} is finer than a micro-USD per M"
    return int(value)


def expected_tiers(entry: dict[str, Any], base: ModelPrice) -> tuple[tuple[int, ModelPrice], ...]:
    fields = {"input_cost_per_token": "input", "output_cost_per_token": "output",
              "cache_read_input_token_cost": "cached_input",
              "cache_creation_input_token_cost": "cache_write"}
    tiers: dict[int, dict[str, int]] = {}
    for key, value in entry.items():
        match = re.fullmatch(r"(\w+?)_above_(\d+)(k?)_tokens", key)
        if match is None:
            continue
        threshold = int(match.group(2)) * (1000 if match.group(3) else 1)
        # xAI charges the higher tier from the threshold on: above threshold - 1.
        above = threshold - 1 if entry["litellm_provider"] == "xai" else threshold
        tiers.setdefault(above, {})[fields[match.group(1)]] = micro(value)
    return tuple(
        (above, ModelPrice(
            input=prices.get("input", base.input),
            output=prices.get("output", base.output),
            cached_input=prices.get("cached_input", base.cached_input),
            cache_write=prices.get("cache_write", base.cache_write),
        ))
        for above, prices in sorted(tiers.items())
    )


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return builtin_table()


ROWS = sorted(SOURCE_MODELS)


@pytest.mark.parametrize("key", ROWS)
def test_every_row_matches_its_source_figure(table: PriceTable, key: str) -> None:
    entry = SOURCE_MODELS[key]
    name = table_name(key, entry)
    row = table.models[name]
    assert row.input == micro(entry["input_cost_per_token"])
    assert row.output == micro(entry.get("output_cost_per_token", 0))
    cached = entry.get("cache_read_input_token_cost")
    assert row.cached_input == (None if cached is None else micro(cached))
    write = entry.get("cache_creation_input_token_cost")
    assert row.cache_write == (None if write is None else micro(write))
    assert row.max_output_tokens == entry.get("max_output_tokens")
    base = ModelPrice(row.input, row.output, row.cached_input, cache_write=row.cache_write)
    assert row.tiers == expected_tiers(entry, base)
    assert (row.source, row.as_of) == (EXCERPT["source"], EXCERPT["as_of"])


def test_the_table_has_exactly_the_rows_of_the_excerpt(table: PriceTable) -> None:
    names = {table_name(key, entry) for key, entry in SOURCE_MODELS.items()}
    assert len(names) == len(SOURCE_MODELS)  # no two source entries share a row
    assert set(table.models) == names
    assert table.patterns == () and table.aliases == {}


def test_the_table_names_its_source_release_and_date(table: PriceTable) -> None:
    assert re.fullmatch(r"litellm \d+\.\d+\.\d+ \(model_prices_and_context_window\.json\)",
                        table.source)
    assert (table.source, table.as_of) == (EXCERPT["source"], EXCERPT["as_of"])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", table.as_of)
    header = BUILTIN_PATH.read_text().splitlines()[:8]
    assert any(table.source.split(" (")[0] in line for line in header)


def test_unknown_models_cost_nothing_as_without_a_table(table: PriceTable) -> None:
    assert table.unknown_model is UnknownModelPolicy.ZERO
    quote = table.quote("an-unknown-model", 10**6, 10**6)
    assert (quote.cost_micro_usd, quote.known_model) == (0, False)


@pytest.mark.parametrize("provider", [
    "openai", "anthropic", "gemini", "mistral", "deepseek", "xai",
    "groq", "together_ai", "fireworks_ai", "deepinfra", "cerebras",
])
def test_every_provider_and_host_has_models(provider: str) -> None:
    assert any(e["litellm_provider"] == provider for e in SOURCE_MODELS.values())


@pytest.mark.parametrize("model", [
    "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-5", "o3", "text-embedding-3-small",
    "claude-sonnet-4-5", "claude-opus-4-5", "claude-haiku-4-5",
    "gemini-2.5-pro", "gemini-2.5-flash", "mistral-large-latest", "deepseek-v4-pro",
    "grok-4.20", "groq/openai/gpt-oss-120b",
])
def test_widely_used_models_are_priced(table: PriceTable, model: str) -> None:
    price = table.price_of(model)
    assert price is not None and price.input > 0


def test_anthropic_models_carry_their_cache_write_price(table: PriceTable) -> None:
    price = table.models["claude-sonnet-4-5"]
    assert (price.input, price.cached_input, price.cache_write) == (
        3_000_000, 300_000, 3_750_000
    )


def test_retired_models_are_in_only_where_another_row_would_misprice_them(
    table: PriceTable,
) -> None:
    for key, entry in SOURCE_MODELS.items():
        retired = entry.get("deprecation_date")
        if isinstance(retired, str) and retired <= EXCERPT["as_of"]:
            name = table_name(key, entry)
            rest = PriceTable(
                {n: p for n, p in table.models.items() if n != name},
                unknown_model=UnknownModelPolicy.ZERO,
            )
            stand_in = rest.price_of(name)
            assert stand_in is not None and stand_in != table.models[name], key


def test_the_generator_rebuilds_the_shipped_table_from_the_excerpt(tmp_path: Path) -> None:
    out = tmp_path / "builtin.yaml"
    assert generate.main(["--excerpt-in", str(EXCERPT_PATH), "-o", str(out)]) == 0
    assert out.read_text() == BUILTIN_PATH.read_text()


def test_the_table_ships_as_package_data() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "pricing/builtin.yaml" in pyproject["tool"]["setuptools"]["package-data"][
        "aigw_sidecar"]
    assert builtin_table() is builtin_table()  # parsed once per process
