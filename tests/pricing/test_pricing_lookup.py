"""Model names as they really arrive, aliases, a pricing file over the built-in table,
long-context tiers, cache-write prices, and the table in force at start-up.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1 import admission_pb2_grpc, keys_pb2_grpc
from aigw_sidecar.api.v1 import keys_pb2 as kpb
from aigw_sidecar.bootstrap import load_pricing, start
from aigw_sidecar.errors import InvalidArgument
from aigw_sidecar.pricing import table as table_module
from aigw_sidecar.pricing.builtin import builtin_table
from aigw_sidecar.pricing.loader import PricingFile, load_table, parse_table
from aigw_sidecar.pricing.table import ModelPrice, PriceTable, UnknownModelPolicy, bare_names
from aigw_sidecar.settings import Settings, parse_settings

GPT_4O = ModelPrice(2_500_000, 10_000_000, 1_250_000)
CLAUDE = ModelPrice(3_000_000, 15_000_000, 300_000, cache_write=3_750_000)


def _table(**sections: Any) -> PriceTable:
    return parse_table({
        "unknown_model": "zero",
        "models": {
            "gpt-4o": {"input": "2.50", "output": "10", "cached_input": "1.25"},
            "gpt-4o-2024-05-13": {"input": "5", "output": "15"},
            "claude-sonnet-4-5": {"input": "3", "output": "15", "cached_input": "0.30",
                                  "cache_write": "3.75"},
            "groq/openai/gpt-oss-120b": {"input": "0.15", "output": "0.60"},
        },
        **sections,
    })


# --- names as they arrive -----------------------------------------------------------


@pytest.mark.parametrize("model", [
    "openai/gpt-4o", "azure/gpt-4o", "openrouter/openai/gpt-4o",
    "gpt-4o-2024-08-06", "openai/gpt-4o-2024-11-20",
])
def test_provider_prefixes_and_dated_snapshots_are_priced_as_the_bare_model(
    model: str,
) -> None:
    assert _table().price_of(model) == GPT_4O


@pytest.mark.parametrize("model", [
    "claude-sonnet-4-5-20250929", "anthropic/claude-sonnet-4-5", "claude-sonnet-4-5@20250929",
    "anthropic/claude-sonnet-4-5-20250929",
])
def test_anthropic_spellings_are_priced_as_the_bare_model(model: str) -> None:
    assert _table().price_of(model) == CLAUDE


def test_a_snapshot_listed_itself_keeps_its_own_price() -> None:
    assert _table().price_of("gpt-4o-2024-05-13") == ModelPrice(5_000_000, 15_000_000)
    assert _table().price_of("openai/gpt-4o-2024-05-13") == ModelPrice(5_000_000, 15_000_000)


def test_a_host_prefixed_name_is_priced_exactly_but_not_from_its_bare_part() -> None:
    assert _table().price_of("groq/openai/gpt-oss-120b") == ModelPrice(150_000, 600_000)
    assert _table().price_of("openai/gpt-oss-120b") is None  # which host? alias it


@pytest.mark.parametrize("model", [
    "gpt-4o-mini", "gpt-4", "gpt-4o-latest", "gpt-4o-2024", "gpt-4o-1399", "mystery",
    "gpt-4o/", "/gpt-4o-x", "",
])
def test_names_that_are_not_a_listed_model_stay_unknown(model: str) -> None:
    assert _table().price_of(model) is None


@pytest.mark.parametrize(("model", "expected"), [
    ("gpt-4-0613", ["gpt-4"]),
    ("mistral-large-2512", ["mistral-large"]),
    ("grok-4.20-0309", ["grok-4.20"]),
    ("a/b/c-20250101", ["b/c-20250101", "c-20250101", "a/b/c", "b/c", "c"]),
    ("qwen3-235b-a22b-instruct-2507", ["qwen3-235b-a22b-instruct"]),
    ("gpt-4o-2024", []),
    ("o3", []),
])
def test_the_names_a_model_may_be_priced_under(model: str, expected: list[str]) -> None:
    assert list(bare_names(model)) == expected


def test_the_built_in_table_prices_names_as_gateways_send_them() -> None:
    table = builtin_table()
    assert table.price_of("openai/gpt-4o") == table.models["gpt-4o"]
    assert table.price_of("gemini/gemini-2.5-pro") == table.models["gemini-2.5-pro"]
    assert table.price_of("anthropic/claude-opus-4-5-20251101") is not None
    # Listed itself at another price than gpt-4o.
    assert table.price_of("gpt-4o-2024-05-13") != table.models["gpt-4o"]


# --- aliases --------------------------------------------------------------------------


def test_an_alias_is_priced_as_its_model_even_in_the_table_under() -> None:
    top = parse_table({"aliases": {"my-gpt4o-deployment": "gpt-4o", "prod-chat": "openai/gpt-4o"},
                       "models": {}}, base=_table())
    assert top.price_of("my-gpt4o-deployment") == GPT_4O
    assert top.price_of("prod-chat") == GPT_4O


def test_an_alias_may_name_another_alias() -> None:
    table = _table(aliases={"a": "b", "b": "gpt-4o"})
    assert table.price_of("a") == GPT_4O


def test_an_alias_to_an_unknown_model_is_unknown() -> None:
    table = _table(aliases={"a": "nothing"})
    assert table.price_of("a") is None
    assert table.quote("a", 10, 10).known_model is False


@pytest.mark.parametrize(("aliases", "field"), [
    ({"a": "a"}, "p.aliases['a']"),
    ({"a": "b", "b": "a"}, "p.aliases['a']"),
    ({"a": 5}, "p.aliases['a']"),
    ({"a": ""}, "p.aliases['a']"),
    (["a"], "p.aliases"),
    ({f"a{i}": f"a{i + 1}" for i in range(10)}, "p.aliases['a0']"),
])
def test_bad_aliases_are_refused_naming_the_entry(aliases: Any, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_table({"aliases": aliases, "models": {}}, "p")
    assert err.value.field == field


# --- a pricing file over the built-in table -----------------------------------------


def test_a_file_overrides_the_table_under_it_model_by_model() -> None:
    top = parse_table({
        "unknown_model": "refuse",
        "models": {"gpt-4o": {"input": "2", "output": "8"}},
    }, base=_table())
    assert top.price_of("gpt-4o") == ModelPrice(2_000_000, 8_000_000)
    assert top.price_of("gpt-4o-2024-08-06") == ModelPrice(2_000_000, 8_000_000)
    assert top.price_of("claude-sonnet-4-5") == CLAUDE  # from the table under
    with pytest.raises(InvalidArgument):  # the file's policy is the one in force
        top.quote("mystery", 1, 1)


def test_a_pattern_of_the_file_wins_over_an_exact_name_of_the_table_under() -> None:
    top = parse_table({"models": {"gpt-4o-*": {"input": "1", "output": "1"}}}, base=_table())
    assert top.price_of("gpt-4o-2024-05-13") == ModelPrice(1_000_000, 1_000_000)


def test_a_pricing_file_reload_keeps_the_table_under_it(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text('models: {m: {input: "1", output: "0"}}\n')
    pricing = PricingFile(path, _table())
    path.write_text('models: {m: {input: "2", output: "0"}}\n')
    assert pricing.reload()
    assert pricing.table is not None and pricing.table.price_of("m") == ModelPrice(2_000_000, 0)
    assert pricing.table.price_of("gpt-4o") == GPT_4O


def test_without_a_file_the_base_table_is_in_force_and_nothing_reloads() -> None:
    pricing = PricingFile(None, _table())
    assert pricing.table is not None and pricing.table.price_of("gpt-4o") == GPT_4O
    assert not pricing.reload() and not pricing.reload_if_changed()


# --- long-context tiers --------------------------------------------------------------

TIERED = {"models": {"g": {
    "input": "1.25", "output": "10", "cached_input": "0.125", "max_output_tokens": 65536,
    "tiers": [{"above_prompt_tokens": 200000, "input": "2.50", "output": "15"}],
}}}


def test_a_long_prompt_is_charged_the_tier_prices_for_the_whole_request() -> None:
    price = parse_table(TIERED).models["g"]
    assert price.cost_micro_usd(200_000, 1000, 0) == 250_000 + 10_000
    assert price.cost_micro_usd(200_001, 1000, 0) == -(-(200_001 * 2_500_000
                                                         + 1000 * 15_000_000) // 10**6)


def test_a_tier_keeps_the_prices_it_does_not_list() -> None:
    price = parse_table(TIERED).models["g"]
    assert price.tiers == ((200_000, ModelPrice(2_500_000, 15_000_000, 125_000)),)
    # cached tokens above the threshold: still the model's cached price
    assert price.cost_micro_usd(300_000, 0, 100_000) == (200_000 * 2_500_000
                                                         + 100_000 * 125_000) // 10**6


def test_the_highest_tier_crossed_applies() -> None:
    price = parse_table({"models": {"m": {"input": "1", "output": "1", "tiers": [
        {"above_prompt_tokens": 100, "input": "3"}, {"above_prompt_tokens": 10, "input": "2"},
    ]}}}).models["m"]
    assert [price.tier_for(n).input for n in (10, 11, 100, 101)] == [
        1_000_000, 2_000_000, 2_000_000, 3_000_000]


def test_an_estimate_is_quoted_at_the_tier_of_its_prompt() -> None:
    table = parse_table(TIERED)
    assert table.quote("g", 300_000, 0).cost_micro_usd == 750_000


@pytest.mark.parametrize(("tiers", "field"), [
    ("cheap", "p.models['g'].tiers"),
    ([{"input": "1"}], "p.models['g'].tiers[0]"),
    ([{"above_prompt_tokens": -1}], "p.models['g'].tiers[0].above_prompt_tokens"),
    ([{"above_prompt_tokens": 1, "max_output_tokens": 5}], "p.models['g'].tiers[0]"),
    ([{"above_prompt_tokens": 1}, {"above_prompt_tokens": 1}], "p.models['g'].tiers[1]"),
    ([{"above_prompt_tokens": 1, "input": "x"}], "p.models['g'].tiers[0].input"),
])
def test_bad_tiers_are_refused_naming_the_entry(tiers: Any, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_table({"models": {"g": {"input": "1", "output": "1", "tiers": tiers}}}, "p")
    assert err.value.field == field


# --- cache writes ----------------------------------------------------------------------


def test_cache_write_tokens_are_charged_the_cache_write_price() -> None:
    # 1000 prompt tokens: 200 read from the cache, 300 written to it, 500 plain.
    cost = CLAUDE.cost_micro_usd(1000, 100, 200, cache_write_tokens=300)
    assert cost == -(-(500 * 3_000_000 + 200 * 300_000 + 300 * 3_750_000
                       + 100 * 15_000_000) // 10**6)


def test_without_a_cache_write_price_writes_cost_the_input_price() -> None:
    assert GPT_4O.cost_micro_usd(1000, 0, 0, cache_write_tokens=400) == 2500


def test_cache_reads_and_writes_together_count_at_most_the_prompt() -> None:
    assert CLAUDE.cost_micro_usd(100, 0, 80, cache_write_tokens=80) == -(
        -(80 * 300_000 + 20 * 3_750_000) // 10**6)


def test_usage_reports_carry_no_cache_write_count_so_the_price_is_only_stored() -> None:
    assert CLAUDE.cost_micro_usd(1000, 0, 0) == 3000  # all at the input price
    assert _table().quote("claude-sonnet-4-5", 1000, 0, 0, 1000).cost_micro_usd == 3750


# --- provenance -----------------------------------------------------------------------


def test_source_and_as_of_apply_to_every_model_unless_a_model_has_its_own(
    tmp_path: Path,
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "source: our contract\nas_of: 2026-11-01\n"
        "models:\n"
        '  a: {input: "1", output: "1"}\n'
        '  b: {input: "1", output: "1", source: "a quote", as_of: "2026-10-01"}\n'
    )
    table = load_table(path)
    assert (table.source, table.as_of) == ("our contract", "2026-11-01")
    assert (table.models["a"].source, table.models["a"].as_of) == ("our contract", "2026-11-01")
    assert (table.models["b"].source, table.models["b"].as_of) == ("a quote", "2026-10-01")
    assert table.models["a"] == table.models["b"]  # provenance is not part of the price


def test_a_file_without_a_source_is_named_by_its_path(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text('models: {a: {input: "1", output: "1"}}\n')
    assert load_table(path).source == f"pricing file {path}"


def test_a_yaml_date_is_read_as_its_iso_text() -> None:
    data = yaml.safe_load("as_of: 2026-11-20\nmodels: {}")
    assert isinstance(data["as_of"], datetime.date)
    assert parse_table(data).as_of == "2026-11-20"


# --- the lookup cache -------------------------------------------------------------------


def test_lookups_are_cached_per_table_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(table_module, "LOOKUP_CACHE_SIZE", 3)
    table = _table()
    for name in ("openai/gpt-4o", "a", "b", "c", "d"):
        table.price_of(name)
    assert list(table._cache) == ["openai/gpt-4o", "a", "b"]
    calls = []
    monkeypatch.setattr(PriceTable, "_lookup", lambda self, m: calls.append(m))
    assert table.price_of("openai/gpt-4o") == GPT_4O and calls == []
    table.price_of("d")
    assert calls == ["d"]  # past the bound: looked up every time


def test_the_cache_does_not_make_tables_unequal() -> None:
    one, two = _table(), _table()
    one.price_of("gpt-4o-2024-08-06")
    assert one == two


# --- the table in force at start-up ------------------------------------------------------


def test_the_built_in_table_is_on_by_default_and_off_with_no_default_pricing() -> None:
    assert parse_settings([], env={}).default_pricing is True
    assert parse_settings(["--no-default-pricing"], env={}).default_pricing is False
    assert parse_settings([], env={"AIGW_DEFAULT_PRICING": "false"}).default_pricing is False
    assert parse_settings(["--default-pricing", "false"], env={}).default_pricing is False


def test_start_up_logs_the_table_in_force(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="aigw_sidecar"):
        pricing = load_pricing(Settings())
    assert pricing is not None and pricing.table is builtin_table()
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("pricing:"))
    table = builtin_table()
    assert f"{len(table.models)} models" in line
    assert table.source in line and f"as of {table.as_of}" in line
    assert "unknown models: zero" in line
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_start_up_logs_a_pricing_file_over_the_built_in_table(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text('source: contract\nmodels: {gpt-4o: {input: "2", output: "8"}}\n')
    with caplog.at_level(logging.INFO, logger="aigw_sidecar"):
        pricing = load_pricing(Settings(pricing_file=str(path)))
    assert pricing is not None and pricing.table is not None
    assert pricing.table.fallback is builtin_table()
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("pricing:"))
    assert "contract (1 models) over litellm" in line and "unknown models: refuse" in line


@pytest.mark.parametrize("with_empty_file", [False, True])
def test_start_up_warns_when_no_table_prices_anything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, with_empty_file: bool
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("models: {}\n")
    settings = Settings(default_pricing=False, pricing_file=str(path) if with_empty_file else "")
    with caplog.at_level(logging.INFO, logger="aigw_sidecar"):
        pricing = load_pricing(settings)
    assert (pricing is None) is not with_empty_file
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "NO PRICE TABLE" in warnings[0]


def test_an_empty_table_is_empty_unless_unknown_models_pay_a_default() -> None:
    assert PriceTable().is_empty()
    assert not parse_table({"unknown_model": "default", "default": {"input": "1", "output": "1"}}
                           ).is_empty()
    assert not builtin_table().is_empty()
    assert PriceTable(fallback=builtin_table()).describe().endswith("unknown models: refuse")
    assert PriceTable(unknown_model=UnknownModelPolicy.ZERO).model_count() == 0


async def test_a_sidecar_without_a_pricing_file_prices_usage_by_the_built_in_table(
    valkey_url: str, key_prefix: str, tmp_path: Path
) -> None:
    sidecar = await start(Settings(
        listen="127.0.0.1:0", redis_url=valkey_url, key_prefix=key_prefix,
        data_dir=tmp_path, shutdown_grace_s=1.0,
    ))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
            created = await keys_pb2_grpc.KeyManagementStub(channel).CreateKey(
                kpb.CreateKeyRequest(name="builtin", limits=kpb.Limits(cost_limit_micro_usd=5000))
            )
            stub = admission_pb2_grpc.AdmissionStub(channel)
            reply = await stub.RecordUsage(adm.RecordUsageRequest(
                key_id=created.key.key_id, request_id="r1", model="openai/gpt-4o-2024-08-06",
                prompt_tokens=1000, completion_tokens=100,
            ))
            # 1000 x 2.50 + 100 x 10 USD per million tokens: the cost limit can fire.
            assert (reply.cost_micro_usd, reply.period_cost_micro_usd) == (3500, 3500)
            await stub.RecordUsage(adm.RecordUsageRequest(
                key_id=created.key.key_id, request_id="r2", model="gpt-4o",
                prompt_tokens=1000, completion_tokens=100,
            ))
            denied = await stub.Authorize(adm.AuthorizeRequest(secret=created.secret))
            assert denied.deny_reason == adm.DENY_REASON_COST_LIMIT
    finally:
        await sidecar.stop()


def test_the_readme_pricing_example_loads_and_prices_as_documented() -> None:
    from tests.servers import REPO

    readme = (REPO / "docs" / "accounting.md").read_text()
    section = readme[readme.index("## Pricing"):]
    block = section[section.index("```yaml") + len("```yaml"):section.index("```\n\n")]
    table = parse_table(yaml.safe_load(block), base=builtin_table())
    # gpt-4o itself is not in the example: the built-in price
    assert table.price_of("my-gpt4o-deployment") == builtin_table().models["gpt-4o"]
    assert table.price_of("gpt-4o-2024-08-06") == ModelPrice(2_500_000, 10_000_000)
    assert table.quote("gemini-2.5-pro", 300_000, 0).cost_micro_usd == 750_000
    assert table.price_of("claude-sonnet-4-5-20250929") == CLAUDE


def test_the_example_pricing_file_aliases_a_deployment() -> None:
    from tests.servers import REPO

    table = load_table(REPO / "clients" / "pricing" / "example-pricing.yaml", builtin_table())
    assert table.price_of("my-gpt4o-deployment") == table.price_of("gpt-4o")
    assert table.source == "example values"
