"""Loads a pricing file (YAML or JSON) and reloads it when it changes.

File format (YAML shown; the same keys in JSON)::

    # USD per million tokens, exact decimals
    unknown_model: refuse        # refuse | zero | default
    default: {input: "1.00", output: "2.00"}
    models:
      gpt-4o-mini: {input: "0.15", output: "0.60", cached_input: "0.075",
                    max_output_tokens: 16384}   # optional: the model's output cap
      "gpt-4o-*":  {input: "2.50", output: "10.00"}   # glob patterns allowed

A file that fails to parse is reported and the previous table stays in force.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from aigw_sidecar.errors import InvalidArgument
from aigw_sidecar.keys.money import parse_usd
from aigw_sidecar.pricing.table import ModelPrice, PriceTable, UnknownModelPolicy

log = logging.getLogger(__name__)


def _price(where: str, raw: Any) -> ModelPrice:
    if not isinstance(raw, Mapping):
        raise InvalidArgument(where, "must be a mapping with input and output prices")
    unknown = set(raw) - {"input", "output", "cached_input", "max_output_tokens"}
    if unknown:
        raise InvalidArgument(where, f"unknown fields {sorted(unknown)}")
    max_output = raw.get("max_output_tokens")
    if max_output is not None and (
        isinstance(max_output, bool) or not isinstance(max_output, int)
        or not 1 <= max_output <= 10**9
    ):
        raise InvalidArgument(f"{where}.max_output_tokens", "must be an integer from 1 to 10^9")
    try:
        values = {
            k: parse_usd(f"{where}.{k}", str(v)) for k, v in raw.items()
            if k != "max_output_tokens"
        }
        return ModelPrice(
            input=values["input"],
            output=values["output"],
            cached_input=values.get("cached_input"),
            max_output_tokens=max_output,
        )
    except KeyError as missing:
        raise InvalidArgument(where, f"{missing.args[0]} price is required") from None


def parse_table(data: Any, source: str = "pricing") -> PriceTable:
    """A PriceTable from parsed YAML/JSON, or InvalidArgument naming the bad entry."""
    if not isinstance(data, Mapping):
        raise InvalidArgument(source, "must be a mapping with a 'models' section")
    extra = set(data) - {"models", "default", "unknown_model"}
    if extra:
        raise InvalidArgument(source, f"unknown sections {sorted(extra)}")
    try:
        policy = UnknownModelPolicy(str(data.get("unknown_model", "refuse")))
    except ValueError:
        raise InvalidArgument(
            f"{source}.unknown_model", "must be refuse, zero or default"
        ) from None
    default = _price(f"{source}.default", data["default"]) if "default" in data else None
    if policy is UnknownModelPolicy.DEFAULT and default is None:
        raise InvalidArgument(f"{source}.default", "is required when unknown_model is default")
    models: dict[str, ModelPrice] = {}
    patterns: list[tuple[str, ModelPrice]] = []
    raw_models = data.get("models") or {}
    if not isinstance(raw_models, Mapping):
        raise InvalidArgument(f"{source}.models", "must map model names to prices")
    for name, raw in raw_models.items():
        price = _price(f"{source}.models[{name!r}]", raw)
        if any(ch in str(name) for ch in "*?["):
            patterns.append((str(name), price))
        else:
            models[str(name)] = price
    return PriceTable(models, tuple(patterns), default, policy)


def load_table(path: Path) -> PriceTable:
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    return parse_table(data, path.name)


def _signature(path: Path) -> tuple[int, int, int]:
    # Size and inode too: a file truncated and rewritten within one timestamp
    # tick (or swapped in by rename) keeps its mtime, and the half-written
    # state seen in between must not hide the finished one.
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


class PricingFile:
    """The table of one file, reloaded when it changes (mtime, size or inode)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._signature = _signature(path)
        self.table = load_table(path)

    def reload(self) -> bool:
        """Reload now (SIGHUP)."""
        return self.reload_if_changed(force=True)

    def reload_if_changed(self, *, force: bool = False) -> bool:
        """Reload after a change; on a broken file keep the old table and log why."""
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
            self.table = load_table(self._path)
        except (InvalidArgument, ValueError, yaml.YAMLError, OSError) as exc:
            log.error("pricing file %s rejected, keeping the previous table: %s",
                      self._path, exc)
            return False
        log.info("pricing file %s reloaded (%d models, %d patterns)",
                 self._path, len(self.table.models), len(self.table.patterns))
        return True
