"""`aigw-sidecar pricing import`: LiteLLM's cost map and OpenRouter's models list.

tests/data/litellm_sample.json is a verbatim excerpt of LiteLLM's
model_prices_and_context_window.json (litellm 1.110.2), numbers as LiteLLM
writes them (``2.5e-06``). tests/data/openrouter_sample.json has the shape of
OpenRouter's GET /api/v1/models (prices: USD per token as decimal strings).
"""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from aigw_sidecar.cli import main as cli_main
from aigw_sidecar.pricing.importers import (
    PriceListError,
    convert,
    from_litellm,
    per_million,
    to_yaml,
)
from aigw_sidecar.pricing.loader import load_table, parse_table
from aigw_sidecar.pricing.table import ModelPrice, UnknownModelPolicy
from tests.servers import REPO

DATA = REPO / "tests" / "data"
LITELLM = (DATA / "litellm_sample.json").read_text()
OPENROUTER = (DATA / "openrouter_sample.json").read_text()


# --- exact decimals ---------------------------------------------------------------------


@pytest.mark.parametrize(("per_token", "text"), [
    ("2.5e-06", "2.5"), ("1e-05", "10"), ("7.5e-08", "0.075"), ("5e-09", "0.005"),
    ("1.25e-07", "0.125"), ("0", "0"), ("0.000004951", "4.951"), ("3E-7", "0.3"),
])
def test_per_token_prices_become_exact_per_million_prices(per_token: str, text: str) -> None:
    assert per_million(Decimal(per_token)) == (text, False)


def test_a_price_finer_than_a_micro_usd_per_million_is_rounded_up_and_reported() -> None:
    assert per_million(Decimal("1.0000000000001e-06")) == ("1.000001", True)


def test_floats_are_refused_so_a_lossy_reader_cannot_slip_in() -> None:
    with pytest.raises(TypeError):
        from_litellm({"m": {"input_cost_per_token": 2.5e-06, "mode": "chat"}})


def test_float_arithmetic_would_have_been_wrong_here() -> None:
    # The reason for Decimal: gpt-4.1-mini's 4e-07 USD per token times a million
    # is 0.39999999999999997 in binary floating point, not 0.4.
    assert 4e-07 * 1_000_000 != 0.4
    assert per_million(Decimal("4e-07")) == ("0.4", False)


# --- LiteLLM --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def litellm() -> dict[str, dict[str, object]]:
    return convert(LITELLM, as_of="2026-11-20").models


def test_litellm_chat_models_are_converted_with_cache_prices_and_output_caps(
    litellm: dict[str, dict[str, object]],
) -> None:
    assert litellm["gpt-4o"] == {"input": "2.5", "output": "10", "cached_input": "1.25",
                                 "max_output_tokens": 16384}
    assert litellm["claude-sonnet-4-5"] == {
        "input": "3", "output": "15", "cached_input": "0.3", "cache_write": "3.75",
        "max_output_tokens": 64000,
    }


def test_first_party_prefixes_are_dropped_and_host_prefixes_kept(
    litellm: dict[str, dict[str, object]],
) -> None:
    assert "gemini-2.5-pro" in litellm and "gemini/gemini-2.5-pro" not in litellm
    assert "mistral-large-latest" in litellm and "grok-4.20" in litellm
    assert "groq/openai/gpt-oss-120b" in litellm


def test_a_bare_entry_wins_over_its_prefixed_twin() -> None:
    converted = convert(LITELLM)
    assert "deepseek-v4-flash" in converted.models
    assert converted.skipped["deepseek/deepseek-v4-flash"] == "priced as 'deepseek-v4-flash'"


def test_long_context_prices_become_tiers_xai_from_the_threshold_on(
    litellm: dict[str, dict[str, object]],
) -> None:
    assert litellm["gemini-2.5-pro"]["tiers"] == [
        {"above_prompt_tokens": 200000, "input": "2.5", "output": "15", "cached_input": "0.25"}
    ]
    [tier] = litellm["grok-4.20"]["tiers"]  # type: ignore[misc]
    assert tier["above_prompt_tokens"] == 199999


def test_embeddings_have_no_output_price(litellm: dict[str, dict[str, object]]) -> None:
    assert litellm["text-embedding-3-small"] == {"input": "0.02", "output": "0"}


def test_what_a_token_price_cannot_express_is_skipped_with_the_reason() -> None:
    converted = convert(LITELLM)
    assert converted.skipped["gpt-image-1"] == "mode image_generation is not priced per token"
    assert converted.skipped["dashscope/qwen-flash"] == "tiered_pricing tables are not converted"
    assert "sample_spec" not in converted.models and "sample_spec" not in converted.skipped
    assert converted.rounded == {}


def test_the_litellm_import_loads_as_a_pricing_file(tmp_path: Path) -> None:
    converted = convert(LITELLM, source="litellm 1.110.2", as_of="2026-11-20")
    path = tmp_path / "p.yaml"
    path.write_text(to_yaml(converted.data))
    table = load_table(path)
    assert (table.source, table.as_of, table.unknown_model) == (
        "litellm 1.110.2", "2026-11-20", UnknownModelPolicy.ZERO)
    assert table.price_of("gpt-4o") == ModelPrice(2_500_000, 10_000_000, 1_250_000, 16384)
    assert table.price_of("gemini/gemini-2.5-pro") is not None
    assert table.quote("gemini-2.5-pro", 300_000, 0).cost_micro_usd == 750_000


def test_only_the_providers_asked_for() -> None:
    converted = convert(LITELLM, providers={"anthropic", "gemini"})
    assert sorted(converted.models) == ["claude-sonnet-4-5", "gemini-2.5-pro"]


# --- OpenRouter --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openrouter() -> dict[str, dict[str, object]]:
    return convert(OPENROUTER, as_of="2026-11-20").models


def test_openrouter_models_keep_their_ids_and_exact_prices(
    openrouter: dict[str, dict[str, object]],
) -> None:
    assert openrouter["openai/gpt-4o"] == {"input": "2.5", "output": "10",
                                           "cached_input": "1.25", "max_output_tokens": 16384}
    assert openrouter["anthropic/claude-sonnet-4.5"] == {
        "input": "3", "output": "15", "cached_input": "0.3", "cache_write": "3.75",
        "max_output_tokens": 64000,
    }
    assert openrouter["meta-llama/llama-3.3-70b-instruct:free"] == {"input": "0", "output": "0"}
    assert openrouter["deepseek/deepseek-chat-v3.1"]["input"] == "0.2"


def test_routers_and_per_request_fees_are_skipped() -> None:
    converted = convert(OPENROUTER)
    assert converted.skipped == {
        "perplexity/sonar": "a per-request fee a per-token price cannot express",
        "openrouter/auto": "variable price (a router)",
    }


def test_the_openrouter_import_prices_requests_sent_to_openrouter(tmp_path: Path) -> None:
    path = tmp_path / "or.yaml"
    path.write_text(to_yaml(convert(OPENROUTER).data))
    table = load_table(path)
    assert table.price_of("openai/gpt-4o") == ModelPrice(2_500_000, 10_000_000, 1_250_000, 16384)
    assert table.price_of("meta-llama/llama-3.3-70b-instruct:free") == ModelPrice(0, 0)


# --- detection, errors, the YAML text --------------------------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    ("not json", "not JSON"),
    ("[1, 2]", "neither"),
    ('{"data": "x"}', "neither"),
    ('{"a": {"b": 1}}', "neither"),
])
def test_what_is_not_a_price_list_is_refused(text: str, message: str) -> None:
    with pytest.raises(PriceListError, match=message):
        convert(text)


def test_a_forced_format_that_does_not_fit_is_refused() -> None:
    with pytest.raises(PriceListError, match="OpenRouter"):
        convert(LITELLM, fmt="openrouter")
    with pytest.raises(PriceListError, match="LiteLLM"):
        convert(OPENROUTER, fmt="litellm")


def test_names_yaml_would_misread_are_quoted() -> None:
    data = {"models": {"yes": {"input": "1", "output": "1"},
                       "ft:gpt-4o:org::x": {"input": "1", "output": "1"},
                       "2024": {"input": "1", "output": "1"}}}
    text = to_yaml(data)
    assert set(yaml.safe_load(text)["models"]) == {"yes", "ft:gpt-4o:org::x", "2024"}
    assert parse_table(yaml.safe_load(text)).models.keys() == data["models"].keys()


# --- the command ------------------------------------------------------------------------------


def test_the_import_command_writes_a_loadable_file_and_reports_what_it_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pricing.yaml"
    code = cli_main(["pricing", "import", str(DATA / "litellm_sample.json"), "-o", str(out),
                     "--source", "litellm 1.110.2", "--as-of", "2026-11-20"])
    assert code == 0
    err = capsys.readouterr().err
    assert "models written" in err and "tiered_pricing tables are not converted" in err
    table = load_table(out)
    assert table.source == "litellm 1.110.2" and table.price_of("gpt-4o") is not None
    assert out.read_text().startswith("# Generated by `aigw-sidecar pricing import`")


def test_the_import_command_reads_stdin_and_writes_stdout() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aigw_sidecar.cli", "pricing", "import", "-",
         "--unknown-model", "refuse"],
        input=OPENROUTER, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert data["unknown_model"] == "refuse" and "openai/gpt-4o" in data["models"]


def test_the_import_command_refuses_what_it_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hello": "world"}))
    assert cli_main(["pricing", "import", str(bad)]) == 1
    assert "neither a LiteLLM" in capsys.readouterr().err


def test_the_show_command_tells_what_a_model_is_priced_as(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text('aliases: {prod: gpt-4o}\nmodels: {gpt-4o: {input: "2", output: "8"}}\n')
    assert cli_main(["pricing", "show", "--pricing-file", str(path), "prod",
                     "anthropic/claude-sonnet-4-5", "mystery"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("prod: input 2, output 8")
    assert out[2].startswith("anthropic/claude-sonnet-4-5: input 3, output 15")
    assert out[3] == "mystery: unknown (refuse)"
    assert cli_main(["pricing", "show", "--no-default-pricing"]) == 0
    assert "no price table" in capsys.readouterr().out
