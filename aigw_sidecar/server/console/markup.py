"""HTML built from Python values, escaped by construction.

``el("td", key.name)`` escapes every text child and attribute value with
``html.escape``; only a ``Markup`` (what ``el`` itself returns, or a constant
written here) passes through unescaped. Pages are built from ``el`` calls, never
by formatting user data into a string of HTML, so a key named
``<img src=x onerror=alert(1)>`` shows as text. No element gets an inline
``style`` or event handler attribute: the Content-Security-Policy forbids both.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from urllib.parse import quote, urlencode

_VOID = frozenset({"br", "hr", "img", "input", "link", "meta"})


class Markup(str):
    """Text that is already HTML (escaped or constant)."""

    __slots__ = ()


def esc(value: object) -> Markup:
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def _children(children: Iterable[object]) -> Iterable[Markup]:
    for child in children:
        if child is None or child is False:
            continue
        if isinstance(child, str | int):
            yield esc(child)
        else:
            yield from _children(child)  # type: ignore[arg-type]


def join(*children: object) -> Markup:
    return Markup("".join(_children(children)))


def el(tag: str, /, *children: object, **attrs: object) -> Markup:
    """An element; ``class_`` is ``class``, ``aria_label`` is ``aria-label``.

    True renders a bare attribute, None or False leaves it out.
    """
    parts = [tag]
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        attr = key.rstrip("_").replace("_", "-")
        parts.append(attr if value is True else f'{attr}="{esc(value)}"')
    opening = f"<{' '.join(parts)}>"
    if tag in _VOID:
        return Markup(opening)
    return Markup(f"{opening}{join(*children)}</{tag}>")


def path_part(value: str) -> str:
    """One URL path segment (a key id is already safe; this keeps it so)."""
    return quote(value, safe="")


def href(path: str, **query: str) -> str:
    """A path with the query parameters that are set."""
    kept = {name: value for name, value in query.items() if value}
    return f"{path}?{urlencode(kept)}" if kept else path
