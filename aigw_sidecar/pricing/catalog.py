"""The price table in force, as admins read it: listed by name, looked up by name.

Pure code over ``PriceTable``; the KeyManagement servicer and ``aigw-admin pricing``
show what it returns. A name listed by several layers (a pricing file over the
built-in table) shows the first layer's price, the one requests are charged.
"""

from __future__ import annotations

from dataclasses import dataclass

from aigw_sidecar.errors import InvalidArgument
from aigw_sidecar.keys import secrets
from aigw_sidecar.keys.model import MODEL_NAME_RE, validate_page_size
from aigw_sidecar.pricing.table import ModelPrice, PriceTable

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class ListedPrice:
    model: str  # the table's name or glob pattern
    price: ModelPrice
    source: str  # the layer's source and date, "" when it names none


def _source(table: PriceTable, price: ModelPrice) -> str:
    source = price.source or table.source
    as_of = price.as_of or table.as_of
    return f"{source} as of {as_of}" if source and as_of else source


def listed(table: PriceTable | None, contains: str = "") -> list[ListedPrice]:
    """Every model and pattern of the table, by name, the first layer winning."""
    out: dict[str, ListedPrice] = {}
    for layer in table.layers() if table is not None else ():
        entries = [*layer.models.items(), *layer.patterns]
        for name, price in entries:
            if name not in out and contains in name:
                out[name] = ListedPrice(name, price, _source(layer, price))
    return [out[name] for name in sorted(out)]


def page(
    prices: list[ListedPrice], page_size: int, page_token: str
) -> tuple[list[ListedPrice], str]:
    """One page after ``page_token`` (the last name of the previous page)."""
    size = validate_page_size(page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    rest = [p for p in prices if p.model > page_token] if page_token else prices
    chosen = rest[:size]
    return chosen, chosen[-1].model if len(rest) > size else ""


def lookup(table: PriceTable | None, model: str) -> ListedPrice | None:
    """What ``model`` is priced as (aliases, prefixes and dates resolved), or None."""
    if not MODEL_NAME_RE.match(model):
        raise InvalidArgument("model", "must be 1-128 printable ASCII characters without spaces")
    if secrets.looks_like_ours(model):
        raise InvalidArgument("model", "must not be an API key secret")
    if table is None:
        return None
    price = table.price_of(model)
    if price is None:
        return None
    for layer in table.layers():
        for name, candidate in (*layer.models.items(), *layer.patterns):
            if candidate is price:
                return ListedPrice(name, price, _source(layer, price))
    return ListedPrice(model, price, _source(table, price))
