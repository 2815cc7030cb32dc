"""Loads a pricing file (YAML or JSON) and reloads it when it changes.

File format (YAML shown; the same keys in JSON)::

    # USD per million tokens, exact decimals
    source: "our contract, 2026"   # optional: where the prices come from
    as_of: "2026-11-01"            # optional: when they were taken
    unknown_model: refuse          # refuse | zero | default
    default: {input: "1.00", output: "2.00"}
    aliases:                       # deployment names -> the model they are priced as
      my-gpt4o-deployment: gpt-4o
    models:
      gpt-4o-mini: {input: "0.15", output: "0.60", cached_input: "0.075",
                    cache_write: "0.15",          # optional: prompt-cache writes
                    max_output_tokens: 16384}     # optional: the model's output cap
      gemini-2.5-pro: {input: "1.25", output: "10", cached_input: "0.125",
                       # optional: a prompt of more than 200000 tokens is charged
                       # these prices for the whole request (unlisted ones: the base)
                       tiers: [{above_prompt_tokens: 200000, input: "2.50", output: "15"}]}
      "gpt-4o-*":  {input: "2.50", output: "10.00"}   # glob patterns allowed

A model may also carry its own ``source`` and ``as_of``. A file that fails to
parse is reported and the previous table stays in force. The built-in table
(``builtin.yaml`` in this package) is in the same format; a pricing file is
searched first and the built-in table under it, model by model.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from aigw_sidecar.errors import InvalidArgument
from aigw_sidecar.keys.money import parse_usd
from aigw_sidecar.pricing.table import (
    MAX_ALIAS_DEPTH,
    ModelPrice,
    PriceTable,
    UnknownModelPolicy,
)

log = logging.getLogger(__name__)

_PRICES = ("input", "output", "cached_input", "cache_write")
_MODEL_FIELDS = {*_PRICES, "max_output_tokens", "tiers", "source", "as_of"}
_SECTIONS = {"models", "default", "unknown_model", "aliases", "source", "as_of"}
_MAX_TOKENS = 10**9


def _text(where: str, raw: Any) -> str:
    """A source or as-of text; YAML reads an unquoted 2026-11-20 as a date."""
    if isinstance(raw, datetime.date):
        return raw.isoformat()
    if not isinstance(raw, str) or len(raw) > 200:
        raise InvalidArgument(where, "must be a text of at most 200 characters")
    return raw


def _count(where: str, raw: Any, low: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= _MAX_TOKENS:
        raise InvalidArgument(where, f"must be an integer from {low} to 10^9")
    return raw


def _usd(where: str, raw: Any) -> int:
    if raw is None or isinstance(raw, bool):
        raise InvalidArgument(where, "is not a decimal USD amount")
    return parse_usd(where, str(raw), plain=False)


def _tiers(where: str, raw: Any, base: ModelPrice) -> tuple[tuple[int, ModelPrice], ...]:
    if not isinstance(raw, list):
        raise InvalidArgument(where, "must be a list of {above_prompt_tokens, prices}")
    tiers: dict[int, ModelPrice] = {}
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidArgument(at, "must be a mapping with above_prompt_tokens and prices")
        unknown = set(item) - {"above_prompt_tokens", *_PRICES}
        if unknown:
            raise InvalidArgument(at, f"unknown fields {sorted(unknown)}")
        if "above_prompt_tokens" not in item:
            raise InvalidArgument(at, "above_prompt_tokens is required")
        above = _count(f"{at}.above_prompt_tokens", item["above_prompt_tokens"], 0)
        if above in tiers:
            raise InvalidArgument(at, f"a second tier above {above} prompt tokens")
        values = {k: _usd(f"{at}.{k}", item[k]) for k in _PRICES if k in item}
        # A price the tier does not list stays the model's own.
        tiers[above] = ModelPrice(
            input=values.get("input", base.input),
            output=values.get("output", base.output),
            cached_input=values.get("cached_input", base.cached_input),
            cache_write=values.get("cache_write", base.cache_write),
        )
    return tuple(sorted(tiers.items()))


def _price(where: str, raw: Any, source: str = "", as_of: str = "") -> ModelPrice:
    if not isinstance(raw, Mapping):
        raise InvalidArgument(where, "must be a mapping with input and output prices")
    unknown = set(raw) - _MODEL_FIELDS
    if unknown:
        raise InvalidArgument(where, f"unknown fields {sorted(unknown)}")
    max_output = raw.get("max_output_tokens")
    if max_output is not None:
        _count(f"{where}.max_output_tokens", max_output, 1)
    for required in ("input", "output"):
        if required not in raw:
            raise InvalidArgument(where, f"{required} price is required")
    values = {k: _usd(f"{where}.{k}", raw[k]) for k in _PRICES if k in raw}
    price = ModelPrice(
        input=values["input"],
        output=values["output"],
        cached_input=values.get("cached_input"),
        max_output_tokens=max_output,
        cache_write=values.get("cache_write"),
        source=_text(f"{where}.source", raw["source"]) if "source" in raw else source or None,
        as_of=_text(f"{where}.as_of", raw["as_of"]) if "as_of" in raw else as_of or None,
    )
    if "tiers" in raw:
        tiers = _tiers(f"{where}.tiers", raw["tiers"], price)
        price = ModelPrice(
            price.input, price.output, price.cached_input, price.max_output_tokens,
            price.cache_write, tiers, price.source, price.as_of,
        )
    return price


def _aliases(where: str, raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidArgument(where, "must map names to the model they are priced as")
    aliases: dict[str, str] = {}
    for name, target in raw.items():
        if not isinstance(target, str) or not target or str(name) == target:
            raise InvalidArgument(f"{where}[{name!r}]", "must name another model")
        aliases[str(name)] = target
    for name in aliases:
        seen, current = {name}, name
        for _ in range(MAX_ALIAS_DEPTH):
            current = aliases.get(current, "")
            if not current:
                break
            if current in seen:
                raise InvalidArgument(f"{where}[{name!r}]", "is part of a loop of aliases")
            seen.add(current)
        else:
            raise InvalidArgument(
                f"{where}[{name!r}]", f"goes through more than {MAX_ALIAS_DEPTH} aliases"
            )
    return aliases


def parse_table(
    data: Any, source: str = "pricing", *, base: PriceTable | None = None
) -> PriceTable:
    """A PriceTable from parsed YAML/JSON, or InvalidArgument naming the bad entry.

    ``source`` names the file in errors; ``base`` is the table searched after
    this one (the built-in table).
    """
    if not isinstance(data, Mapping):
        raise InvalidArgument(source, "must be a mapping with a 'models' section")
    extra = set(data) - _SECTIONS
    if extra:
        raise InvalidArgument(source, f"unknown sections {sorted(extra)}")
    try:
        policy = UnknownModelPolicy(str(data.get("unknown_model", "refuse")))
    except ValueError:
        raise InvalidArgument(
            f"{source}.unknown_model", "must be refuse, zero or default"
        ) from None
    origin = _text(f"{source}.source", data["source"]) if "source" in data else ""
    as_of = _text(f"{source}.as_of", data["as_of"]) if "as_of" in data else ""
    default = _price(f"{source}.default", data["default"]) if "default" in data else None
    if policy is UnknownModelPolicy.DEFAULT and default is None:
        raise InvalidArgument(f"{source}.default", "is required when unknown_model is default")
    models: dict[str, ModelPrice] = {}
    patterns: list[tuple[str, ModelPrice]] = []
    raw_models = data.get("models") or {}
    if not isinstance(raw_models, Mapping):
        raise InvalidArgument(f"{source}.models", "must map model names to prices")
    for name, raw in raw_models.items():
        price = _price(f"{source}.models[{name!r}]", raw, origin, as_of)
        if any(ch in str(name) for ch in "*?["):
            patterns.append((str(name), price))
        else:
            models[str(name)] = price
    aliases = _aliases(f"{source}.aliases", data.get("aliases"))
    return PriceTable(
        models, tuple(patterns), default, policy, aliases, base, origin, as_of
    )


def read_data(path: Path) -> Any:
    """A pricing file's parsed content: JSON (numbers as exact decimals) or YAML."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text, parse_float=Decimal)
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506


def load_table(path: Path, base: PriceTable | None = None) -> PriceTable:
    table = parse_table(read_data(path), path.name, base=base)
    return table if table.source else replace(table, source=f"pricing file {path}")


# What loading a pricing file may raise (a bad entry, bad JSON or YAML, no file).
LOAD_ERRORS = (InvalidArgument, ValueError, yaml.YAMLError, OSError)


def _signature(path: Path) -> tuple[int, int, int]:
    # Size and inode too: a file truncated and rewritten within one timestamp
    # tick (or swapped in by rename) keeps its mtime, and the half-written
    # state seen in between must not hide the finished one.
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


class PricingFile:
    """The price table in force: a pricing file over the built-in table.

    The file is reloaded when it changes (mtime, size or inode). Without a file
    (``path`` None) the table is ``base`` alone and nothing is ever reloaded.
    """

    def __init__(self, path: Path | None, base: PriceTable | None = None) -> None:
        self._path = path
        self._base = base
        self._signature = _signature(path) if path is not None else (0, 0, 0)
        self.table: PriceTable | None = load_table(path, base) if path is not None else base

    @property
    def path(self) -> Path | None:
        return self._path

    def reload(self) -> bool:
        """Reload now (SIGHUP)."""
        return self.reload_if_changed(force=True)

    def reload_if_changed(self, *, force: bool = False) -> bool:
        """Reload after a change; on a broken file keep the old table and log why."""
        if self._path is None:
            return False
        try:
            signature = _signature(self._path)
        except OSError as exc:
            log.warning("pricing file %s unreadable, keeping the previous table: %s",
                        self._path, exc)
            return False
        if signature == self._signature and not force:
            return False
        self._signature = signature
        try:
            table = load_table(self._path, self._base)
        except LOAD_ERRORS as exc:
            log.error("pricing file %s rejected, keeping the previous table: %s",
                      self._path, exc)
            return False
        self.table = table
        log.info("pricing file %s reloaded: %s", self._path, table.describe())
        return True
