"""The built-in price table shipped in this package (``builtin.yaml``).

Generated from LiteLLM's model cost map by ``aigw_sidecar.pricing.generate``;
see that module for what it holds. It is in force unless the sidecar runs with
``--no-default-pricing``; a ``--pricing-file`` is searched before it.
"""

from __future__ import annotations

import functools
from importlib import resources

import yaml

from aigw_sidecar.pricing.loader import parse_table
from aigw_sidecar.pricing.table import PriceTable

RESOURCE = "builtin.yaml"


@functools.cache
def builtin_table() -> PriceTable:
    """The built-in table, parsed once per process."""
    text = resources.files(__package__).joinpath(RESOURCE).read_text(encoding="utf-8")
    data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    return parse_table(data, RESOURCE)
