"""Generates the built-in price table (builtin.yaml) from LiteLLM's model cost map.

The source is ``model_prices_and_context_window.json``, which the ``litellm``
wheel on PyPI ships as ``litellm/model_prices_and_context_window_backup.json``
(litellm is not a dependency: the wheel is only read)::

    pip download litellm==1.110.2 --no-deps -d /tmp/litellm
    python -m aigw_sidecar.pricing.generate /tmp/litellm/litellm-1.110.2-*.whl \\
        --released 2026-11-20

``--released`` is the date that litellm version was published on PyPI: the
table's as-of date. It writes ``aigw_sidecar/pricing/builtin.yaml`` and
``tests/data/litellm_builtin_excerpt.json``, the source entries of exactly the
models in the table, against which the tests check every row. Given that
excerpt instead of the wheel (``--excerpt-in``), it writes the same table:
the test suite checks that too.

What is in the table: the current token-priced models (chat, completion,
responses, embedding) of OpenAI, Anthropic, Google Gemini, Mistral, DeepSeek
and xAI, under the names their APIs take; and popular open models (Llama 3.1
8B, 3.3 and 4, gpt-oss, Qwen3, DeepSeek V3/V4/R1, Kimi K2/K3, GLM 4/5, Gemma 3/4) on Groq,
Together AI, Fireworks AI, DeepInfra and Cerebras, under LiteLLM's host-prefixed
names (``groq/openai/gpt-oss-120b``; alias the name your clients send). Left
out: models retired before the release date (LiteLLM's ``deprecation_date``)
unless the table would price them as another model at another price,
fine-tuning bases (``ft:``), models with no token price or a price of 0, models
that also charge per call, second or audio/image token (realtime, audio,
image, search, deep research, computer use), and ``tiered_pricing`` tables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import zipfile
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from aigw_sidecar.pricing.importers import (
    decimal_of,
    from_litellm,
    litellm_name,
    litellm_price,
    litellm_skip_reason,
    to_yaml,
)
from aigw_sidecar.pricing.table import bare_names

PACKAGE_DIR = Path(__file__).resolve().parent
BUILTIN_PATH = PACKAGE_DIR / "builtin.yaml"
EXCERPT_PATH = PACKAGE_DIR.parent.parent / "tests" / "data" / "litellm_builtin_excerpt.json"
WHEEL_MEMBER = "litellm/model_prices_and_context_window_backup.json"

PROVIDERS = ("openai", "anthropic", "gemini", "mistral", "deepseek", "xai")
HOSTS = ("groq", "together_ai", "fireworks_ai", "deepinfra", "cerebras")
# The current generations of the popular open families, not third-party fine-tunes.
OPEN_FAMILIES = re.compile(
    r"llama-?(v?3[.p-]?3|-?4|v?3[.p-]?1-8b)|llama4|gpt-oss|qwen-?3|deepseek-(v3|v4|r1)"
    r"|kimi-k[23]|glm-?[45]|gemma-?[34]",
    re.IGNORECASE,
)
NOT_OPEN_ORIGINALS = re.compile(
    r"distill|draft|dobby|cogito|hermes|dolphin|phind|snorkel", re.IGNORECASE
)
# Priced by more than their tokens, or not by text tokens at all.
EXCLUDED_NAMES = re.compile(
    r"audio|realtime|tts|transcri|image|(^|[-/])live|lyria|robotics|computer-use"
    r"|deep-research|search|guard",
    re.IGNORECASE,
)


def read_source(path: Path) -> tuple[str, Any]:
    """The JSON text of the cost map in a litellm wheel (or a JSON file), parsed exactly."""
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            text = wheel.read(WHEEL_MEMBER).decode("utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    return text, json.loads(text, parse_float=_Number)


class _Number(Decimal):
    """An exact decimal that remembers how the source wrote it (``2.5e-06``)."""

    text: str

    def __new__(cls, text: str) -> _Number:
        number = super().__new__(cls, text)
        number.text = text
        return number


def wheel_version(path: Path) -> str | None:
    match = re.match(r"litellm-([^-]+)-", path.name)
    return match.group(1) if match else None


def selected(key: str, entry: Any, released: str, *, retired_too: bool = False) -> bool:
    """Whether a LiteLLM entry goes into the built-in table."""
    if litellm_skip_reason(entry) is not None or key.startswith("ft:"):
        return False
    assert isinstance(entry, Mapping)
    provider = entry.get("litellm_provider")
    if provider in PROVIDERS:
        pass
    elif provider in HOSTS:
        if entry.get("mode") not in (None, "chat") or not OPEN_FAMILIES.search(key):
            return False
        if NOT_OPEN_ORIGINALS.search(key):
            return False
    else:
        return False
    if entry.get("mode") is None or EXCLUDED_NAMES.search(key):
        return False
    if not retired_too and is_retired(entry, released):
        return False
    prices = [decimal_of(entry.get(k)) or 0 for k in ("input_cost_per_token",
                                                       "output_cost_per_token")]
    return any(price > 0 for price in prices)


def is_retired(entry: Mapping[str, Any], released: str) -> bool:
    retired = entry.get("deprecation_date")
    return isinstance(retired, str) and retired <= released


def _mispriced_if_left_out(
    data: Mapping[str, Any], keys: list[str], released: str
) -> list[str]:
    """Retired snapshots that the table would price as another model, at another price.

    A retired ``gpt-4o-2024-05-13`` left out would be priced as ``gpt-4o``: it
    stays in, at its own price, in case it is still served.
    """
    prices = {litellm_name(k, data[k]): litellm_price(data[k])[0] for k in keys}
    chosen = set(keys)
    extra = []
    for key, entry in data.items():
        if key in chosen or not selected(key, entry, released, retired_too=True):
            continue
        name = litellm_name(key, entry)
        if name in prices:
            continue
        own = litellm_price(entry)[0]
        stand_in = next((prices[n] for n in bare_names(name) if n in prices), None)
        if stand_in is not None and stand_in != own:
            extra.append(key)
    return extra


def build(data: Mapping[str, Any], version: str, released: str) -> tuple[str, dict[str, Any]]:
    """The built-in table's YAML text and the excerpt of its source entries."""
    source = f"litellm {version} (model_prices_and_context_window.json)"
    order = {name: i for i, name in enumerate((*PROVIDERS, *HOSTS))}
    keys = [key for key, entry in data.items() if selected(key, entry, released)]
    chosen = {*keys, *_mispriced_if_left_out(data, keys, released)}
    keys = [key for key in data if key in chosen]  # source order
    keys.sort(key=lambda k: order[data[k]["litellm_provider"]])  # stable: source order within
    converted = from_litellm(data, source=source, as_of=released, keys=keys)
    if converted.rounded:
        raise SystemExit(f"prices finer than a micro-USD per million: {converted.rounded}")
    kept = [k for k in keys if k not in converted.skipped]
    sections: dict[str, str] = {}
    counts: dict[str, int] = {}
    for key in kept:
        provider = data[key]["litellm_provider"]
        counts[provider] = counts.get(provider, 0) + 1
    seen: set[str] = set()
    for key in kept:
        provider = data[key]["litellm_provider"]
        if provider not in seen:
            seen.add(provider)
            sections[litellm_name(key, data[key])] = (
                f"--- {provider}: {counts[provider]} models, {source}, as of {released} ---"
            )
    header = (
        "The built-in price table of aigw-sidecar: USD per million tokens.\n"
        "GENERATED by `python -m aigw_sidecar.pricing.generate` from LiteLLM's model\n"
        f"cost map as shipped in the litellm {version} wheel (published {released}).\n"
        "Do not edit: regenerate, or override models in your --pricing-file.\n"
        "Every row is checked against tests/data/litellm_builtin_excerpt.json.\n"
        "Host-prefixed names (groq/..., together_ai/...) are open models on that\n"
        "host: alias the name your clients send (aliases: in your pricing file)."
    )
    text = to_yaml(converted.data, header=header, sections=sections)
    excerpt = {
        "source": source,
        "as_of": released,
        "models": {key: _relevant(data[key]) for key in kept},
    }
    return text, excerpt


_RELEVANT = re.compile(
    r"^(litellm_provider|mode|deprecation_date|max_output_tokens"
    r"|(input_cost_per_token|output_cost_per_token|cache_read_input_token_cost"
    r"|cache_creation_input_token_cost)(_above_\d+k?_tokens)?)$"
)


def _relevant(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a source entry that the table is made of (and selected by)."""
    return {k: v for k, v in entry.items() if _RELEVANT.match(k)}


def _json_text(value: Any) -> str:
    def default(obj: Any) -> Any:
        if isinstance(obj, Decimal):
            return _Raw(getattr(obj, "text", str(obj)))
        raise TypeError(type(obj))

    text = json.dumps(value, indent=2, default=default, ensure_ascii=False)
    # Numbers are written as the source wrote them.
    return re.sub(r'"\\u0000RAW:([^"]*)"', r"\1", text) + "\n"


class _Raw(str):
    def __new__(cls, text: str) -> _Raw:
        return super().__new__(cls, "\u0000RAW:" + text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aigw_sidecar.pricing.generate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("source", type=Path, nargs="?",
                        help="a litellm wheel, or its model_prices_and_context_window.json")
    parser.add_argument("--excerpt-in", type=Path,
                        help="regenerate from a committed excerpt instead of the source")
    parser.add_argument("--version", help="the litellm version (default: from the wheel name)")
    parser.add_argument("--released", help="the litellm release date, YYYY-MM-DD")
    parser.add_argument("-o", "--output", type=Path, default=BUILTIN_PATH)
    parser.add_argument("--excerpt", type=Path, default=EXCERPT_PATH)
    args = parser.parse_args(argv)
    digest = ""
    if args.excerpt_in is not None:
        excerpt = json.loads(args.excerpt_in.read_text(encoding="utf-8"), parse_float=_Number)
        data = excerpt["models"]
        version = args.version or excerpt["source"].split()[1]
        released = args.released or excerpt["as_of"]
    elif args.source is not None:
        raw, data = read_source(args.source)
        digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()
        version = args.version or wheel_version(args.source)
        released = args.released
    else:
        parser.error("give a litellm wheel or JSON file, or --excerpt-in")
    if not version or not released or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", released):
        parser.error("--version (unless in the wheel's name) and --released YYYY-MM-DD")
    text, excerpt = build(data, version, released)
    args.output.write_text(text, encoding="utf-8")
    if args.excerpt_in is None:
        excerpt = {
            "source": excerpt["source"],
            "as_of": excerpt["as_of"],
            "file": f"{WHEEL_MEMBER} of the litellm {version} wheel",
            "sha256": digest,
            "models": excerpt["models"],
        }
        args.excerpt.parent.mkdir(parents=True, exist_ok=True)
        args.excerpt.write_text(_json_text(excerpt), encoding="utf-8")
    print(f"{args.output}: {len(excerpt['models'])} models", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
