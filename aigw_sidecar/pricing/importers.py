"""Price lists of others, converted to our pricing file format with exact decimals.

- LiteLLM's model cost map (``model_prices_and_context_window.json``): a JSON
  object of model name -> entry, prices in USD per token as JSON numbers
  (``2.5e-06``), read as exact decimals (never floats).
- OpenRouter's models list (``GET /api/v1/models``): ``{"data": [{"id",
  "pricing": {"prompt", "completion", "input_cache_read", "input_cache_write",
  "request", ...}, "top_provider": {"max_completion_tokens"}}]}``, prices in USD
  per token as decimal strings.

Our prices are USD per million tokens with at most six decimals (integer
micro-USD per million tokens), so a per-token price with more than twelve
decimals cannot be held exactly: it is rounded UP to the next micro-USD per
million tokens (never charge less than the list price) and reported.

What is not converted, and why (reported per model as skipped):
- models not priced per token (images, audio, video, per-second or per-query
  prices), and OpenRouter's variable-priced routers (negative prices);
- LiteLLM ``tiered_pricing`` tables and OpenRouter per-request fees, which a
  per-token price cannot express (the model would be charged too little).
Not converted but harmless: batch, flex and priority service tiers (the
standard price is kept) and LiteLLM's DeepSeek off-peak discounts (the higher
standard price is kept). Audio and image tokens count at the text price.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any

MILLION = Decimal(1_000_000)
MICRO = Decimal("0.000001")
MAX_TOKENS = 10**9

# LiteLLM providers whose own API takes the bare model name: their prefix is
# taken off (``gemini/gemini-2.5-pro`` -> ``gemini-2.5-pro``). Other prefixes
# (hosts of open models: ``groq/``, ``together_ai/``...) stay: the same open model
# has another price on every host.
FIRST_PARTY = ("openai", "anthropic", "gemini", "mistral", "deepseek", "xai", "cohere")
# Token-priced kinds of model.
TOKEN_MODES = frozenset({"chat", "completion", "responses", "embedding"})
# Providers that charge the higher tier from the threshold on (>=), not above it.
INCLUSIVE_THRESHOLD_PROVIDERS = frozenset({"xai"})

_PRICE_KEYS = {
    "input": "input_cost_per_token",
    "output": "output_cost_per_token",
    "cached_input": "cache_read_input_token_cost",
    "cache_write": "cache_creation_input_token_cost",
}
_TIER_KEY = re.compile(
    r"^(input_cost_per_token|output_cost_per_token|cache_read_input_token_cost"
    r"|cache_creation_input_token_cost)_above_(\d+)(k?)_tokens$"
)
_OURS = {v: k for k, v in _PRICE_KEYS.items()}


class PriceListError(ValueError):
    """The input is not a price list this module reads."""


@dataclass
class Converted:
    """The pricing file's data, and what could not be converted exactly."""

    data: dict[str, Any]
    skipped: dict[str, str] = field(default_factory=dict)   # model -> why
    rounded: dict[str, str] = field(default_factory=dict)   # model -> which prices

    @property
    def models(self) -> dict[str, Any]:
        models: dict[str, Any] = self.data["models"]
        return models


def decimal_of(raw: Any) -> Decimal | None:
    """An exact decimal from a JSON number (read as Decimal) or a decimal string."""
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, float):  # never guess: floats come from a lossy reader
        raise TypeError("read the JSON with parse_float=Decimal")
    try:
        value = Decimal(str(raw).strip()) if isinstance(raw, (str, int, Decimal)) else None
    except InvalidOperation:
        return None
    if value is None or not value.is_finite():
        return None
    return value


def per_million(per_token: Decimal) -> tuple[str, bool]:
    """USD per token -> USD per million tokens as our exact decimal text.

    Returns the text and whether it had to be rounded up to a micro-USD.
    """
    exact = per_token * MILLION
    rounded = exact.quantize(MICRO, rounding=ROUND_CEILING)
    return plain(rounded), rounded != exact


def plain(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros: 2.5, 10, 0.075."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def _max_tokens(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, Decimal) and raw == raw.to_integral_value():
        raw = int(raw)
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw.strip())
    if isinstance(raw, int) and 1 <= raw <= MAX_TOKENS:
        return raw
    return None


# --- LiteLLM ------------------------------------------------------------------------


def litellm_name(key: str, entry: Mapping[str, Any]) -> str:
    """The name requests use for a LiteLLM entry: first-party prefixes taken off."""
    provider = str(entry.get("litellm_provider", ""))
    if provider in FIRST_PARTY and key.startswith(provider + "/"):
        return key[len(provider) + 1:]
    return key


def litellm_skip_reason(entry: Any) -> str | None:
    """Why an entry cannot be converted to a per-token price, or None."""
    if not isinstance(entry, Mapping):
        return "not a model entry"
    mode = entry.get("mode")
    if mode is not None and mode not in TOKEN_MODES:
        return f"mode {mode} is not priced per token"
    if "tiered_pricing" in entry:
        return "tiered_pricing tables are not converted"
    if decimal_of(entry.get("input_cost_per_token")) is None:
        return "no input_cost_per_token"
    return None


def litellm_price(entry: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """One model of our file from a LiteLLM entry, and the prices rounded up."""
    rounded: list[str] = []
    price: dict[str, Any] = {}
    for ours, theirs in _PRICE_KEYS.items():
        value = decimal_of(entry.get(theirs))
        if value is None:
            if ours != "output":
                continue
            value = Decimal(0)  # embeddings: no output tokens
        price[ours], was_rounded = per_million(value)
        if was_rounded:
            rounded.append(ours)
    max_output = _max_tokens(entry.get("max_output_tokens"))
    if max_output is not None:
        price["max_output_tokens"] = max_output
    tiers: dict[int, dict[str, str]] = {}
    inclusive = entry.get("litellm_provider") in INCLUSIVE_THRESHOLD_PROVIDERS
    for key, raw in entry.items():
        match = _TIER_KEY.match(key)
        value = decimal_of(raw) if match else None
        if match is None or value is None:
            continue
        threshold = int(match.group(2)) * (1000 if match.group(3) else 1)
        above = threshold - 1 if inclusive else threshold  # counts are integers
        ours = _OURS[match.group(1)]
        tiers.setdefault(above, {})[ours], was_rounded = per_million(value)
        if was_rounded:
            rounded.append(f"{ours} above {threshold}")
    if tiers:
        price["tiers"] = [
            {"above_prompt_tokens": above, **{k: prices[k] for k in _PRICE_KEYS if k in prices}}
            for above, prices in sorted(tiers.items())
        ]
    return price, rounded


def from_litellm(
    data: Any,
    *,
    source: str = "litellm model cost map",
    as_of: str = "",
    keys: Iterable[str] | None = None,
    providers: Collection[str] | None = None,
) -> Converted:
    """Every token-priced model of LiteLLM's map (or only ``keys``), under its request name.

    When a prefixed entry (``gemini/x``) and a bare one (``x``) give the same
    name, the bare one is kept.
    """
    if not isinstance(data, Mapping) or isinstance(data.get("data"), list):
        raise PriceListError("not a LiteLLM model cost map (a JSON object of models)")
    wanted = None if keys is None else list(keys)
    converted = Converted(_file(source, as_of, "zero"))
    names: dict[str, str] = {}  # our name -> the LiteLLM key it came from
    for key in wanted if wanted is not None else list(data):
        entry = data.get(key)
        if key == "sample_spec":
            continue
        if providers is not None and (
            not isinstance(entry, Mapping) or entry.get("litellm_provider") not in providers
        ):
            continue
        reason = litellm_skip_reason(entry)
        if reason is not None or not isinstance(entry, Mapping):
            converted.skipped[key] = reason or "not a model entry"
            continue
        name = litellm_name(key, entry)
        if name in names and (names[name] == name or key != name):
            converted.skipped[key] = f"priced as {names[name]!r}"
            continue
        if name in names:  # the bare entry wins over the prefixed one seen before
            converted.skipped[names[name]] = f"priced as {key!r}"
            del converted.models[name]
            converted.rounded.pop(name, None)
        names[name] = key
        price, rounded = litellm_price(entry)
        converted.models[name] = price
        if rounded:
            converted.rounded[name] = ", ".join(rounded)
    return converted


# --- OpenRouter ---------------------------------------------------------------------


def from_openrouter(
    data: Any,
    *,
    source: str = "openrouter models API",
    as_of: str = "",
    providers: Collection[str] | None = None,
) -> Converted:
    if not isinstance(data, Mapping) or not isinstance(data.get("data"), list):
        raise PriceListError('not an OpenRouter models list ({"data": [...]})')
    converted = Converted(_file(source, as_of, "zero"))
    for item in data["data"]:
        if not isinstance(item, Mapping) or not isinstance(item.get("id"), str):
            continue
        name = item["id"]
        if providers is not None and name.split("/", 1)[0] not in providers:
            continue
        pricing = item.get("pricing")
        if not isinstance(pricing, Mapping):
            converted.skipped[name] = "no pricing"
            continue
        prompt = decimal_of(pricing.get("prompt"))
        completion = decimal_of(pricing.get("completion"))
        if prompt is None or completion is None:
            converted.skipped[name] = "no prompt or completion price"
            continue
        if prompt < 0 or completion < 0:
            converted.skipped[name] = "variable price (a router)"
            continue
        request = decimal_of(pricing.get("request"))
        if request is not None and request > 0:
            converted.skipped[name] = "a per-request fee a per-token price cannot express"
            continue
        price: dict[str, Any] = {}
        rounded: list[str] = []
        for ours, theirs in (("input", prompt), ("output", completion),
                             ("cached_input", decimal_of(pricing.get("input_cache_read"))),
                             ("cache_write", decimal_of(pricing.get("input_cache_write")))):
            if theirs is None or theirs < 0:
                continue
            price[ours], was_rounded = per_million(theirs)
            if was_rounded:
                rounded.append(ours)
        top = item.get("top_provider")
        max_output = _max_tokens(top.get("max_completion_tokens")) if isinstance(
            top, Mapping) else None
        if max_output is not None:
            price["max_output_tokens"] = max_output
        converted.models[name] = price
        if rounded:
            converted.rounded[name] = ", ".join(rounded)
    return converted


# --- either, and the file text --------------------------------------------------------


def detect(data: Any) -> str:
    """``openrouter`` or ``litellm``, or PriceListError."""
    if isinstance(data, Mapping) and isinstance(data.get("data"), list):
        return "openrouter"
    if isinstance(data, Mapping) and any(
        isinstance(v, Mapping) and "input_cost_per_token" in v for v in data.values()
    ):
        return "litellm"
    raise PriceListError("neither a LiteLLM model cost map nor an OpenRouter models list")


def convert(
    text: str,
    *,
    fmt: str = "auto",
    source: str = "",
    as_of: str = "",
    providers: Collection[str] | None = None,
) -> Converted:
    """A price list's JSON text converted; ``as_of`` defaults to today.

    ``providers``: only these (LiteLLM's ``litellm_provider``, or the part of an
    OpenRouter id before ``/``).
    """
    try:
        data = json.loads(text, parse_float=Decimal)
    except ValueError as exc:
        raise PriceListError(f"not JSON: {exc}") from None
    kind = detect(data) if fmt == "auto" else fmt
    as_of = as_of or datetime.date.today().isoformat()
    if kind == "litellm":
        return from_litellm(data, source=source or "litellm model cost map", as_of=as_of,
                            providers=providers)
    if kind == "openrouter":
        return from_openrouter(data, source=source or "openrouter models API", as_of=as_of,
                               providers=providers)
    raise PriceListError(f"unknown format {fmt!r} (litellm, openrouter or auto)")


def _file(source: str, as_of: str, unknown_model: str) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if source:
        data["source"] = source
    if as_of:
        data["as_of"] = as_of
    data["unknown_model"] = unknown_model
    data["models"] = {}
    return data


_PLAIN_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9._/-]*$")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def _key(name: str) -> str:
    if _PLAIN_KEY.match(name) and name.lower() not in _YAML_WORDS:
        return name
    return json.dumps(name)


def _flow(price: Mapping[str, Any]) -> str:
    parts = []
    for key, value in price.items():
        if key == "tiers":
            tiers = ", ".join("{" + _flow(tier) + "}" for tier in value)
            parts.append(f"tiers: [{tiers}]")
        elif isinstance(value, int):
            parts.append(f"{key}: {value}")
        else:
            parts.append(f"{key}: {json.dumps(str(value))}")
    return ", ".join(parts)


def to_yaml(
    data: Mapping[str, Any],
    *,
    header: str = "",
    sections: Mapping[str, str] | None = None,
) -> str:
    """Our pricing file as YAML: one model a line, every price quoted.

    ``sections`` maps a model name to a comment line written before it.
    """
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for key in ("source", "as_of", "unknown_model"):
        if key in data:
            lines.append(f"{key}: {json.dumps(str(data[key]))}")
    if "default" in data:
        lines.append(f"default: {{{_flow(data['default'])}}}")
    if data.get("aliases"):
        lines.append("aliases:")
        lines += [f"  {_key(k)}: {json.dumps(v)}" for k, v in data["aliases"].items()]
    lines.append("models:")
    for name, price in data["models"].items():
        if sections and name in sections:
            lines.append(f"  # {sections[name]}")
        lines.append(f"  {_key(name)}: {{{_flow(price)}}}")
    return "\n".join(lines) + "\n"
