"""Usage bars and daily charts as inline SVG, and the numbers they show.

Sizes are SVG attributes (``width`` of a ``rect``), never ``style``: the
Content-Security-Policy allows no inline style. Colours come from classes in
console.css. Every chart has a text alternative (``role="img"`` and a label).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from aigw_sidecar.admin.render import count, usd
from aigw_sidecar.api.v1 import keys_pb2 as keys_pb
from aigw_sidecar.limits.kinds import LimitKind, Unit
from aigw_sidecar.server.console.markup import Markup, el, join

WARN_PERCENT = 80


def counted(n: int, noun: str) -> str:
    """``1 request``, ``12,000 tokens`` (``noun`` is the plural)."""
    return f"{n:,} {noun.removesuffix('s') if n == 1 else noun}"


def amount(kind: LimitKind, value: int) -> str:
    """Exact: ``$1.25``, ``12,000 tokens``, ``3 requests``."""
    if kind.unit is Unit.MICRO_USD:
        return usd(value)
    return counted(value, kind.unit.value)


def short_amount(kind: LimitKind, value: int) -> str:
    """Compact, for the keys list: ``$1.25``, ``12k``."""
    return usd(value) if kind.unit is Unit.MICRO_USD else count(value)


def percent(usage: keys_pb.LimitUsage) -> float:
    return 100.0 * usage.used / usage.limit if usage.limited and usage.limit else 0.0


def level(pct: float) -> str:
    if pct >= 100:
        return "full"
    return "warn" if pct >= WARN_PERCENT else "ok"


def usage_bar(kind: LimitKind, usage: keys_pb.LimitUsage, *, compact: bool = False) -> Markup:
    """A bar of used against limit, labelled with the exact numbers."""
    pct = percent(usage)
    fmt = short_amount if compact else amount
    text = f"{fmt(kind, usage.used)} of {fmt(kind, usage.limit)}"
    width = f"{min(pct, 100.0):.1f}"
    bar = el(
        "svg",
        el("rect", class_="track", x="0", y="0", width="100", height="8", rx="4"),
        el("rect", class_=f"fill {level(pct)}", x="0", y="0", width=width, height="8", rx="4"),
        class_="bar", viewBox="0 0 100 8", preserveAspectRatio="none", role="img",
        aria_label=f"{kind.label}: {text} ({pct:.0f}%)",
    )
    return el(
        "div",
        el("span", kind.label, class_="bar-label"),
        el("span", text, class_="bar-text"),
        bar,
        class_="usage",
    )


def day_text(day_s: int) -> str:
    return datetime.fromtimestamp(day_s, UTC).strftime("%Y-%m-%d")


def daily_chart(
    title: str, days: Sequence[tuple[int, int]], fmt: Callable[[int], str]
) -> Markup:
    """Bars of (day start, value), oldest first, with the peak and the first and last day."""
    # About the size it is drawn at in a third of a laptop screen, so the text stays legible.
    width, height, top, bottom = 320, 140, 16, 18
    peak = max((value for _day, value in days), default=0)
    total = sum(value for _day, value in days)
    slot = width / max(len(days), 1)
    bars = []
    for i, (day, value) in enumerate(days):
        h = 0.0 if not peak else (height - top - bottom) * value / peak
        bars.append(el(
            "rect",
            el("title", f"{day_text(day)}: {fmt(value)}"),
            class_="day", x=f"{i * slot + slot * 0.15:.1f}", y=f"{height - bottom - h:.1f}",
            width=f"{slot * 0.7:.1f}", height=f"{max(h, 0.0):.1f}",
        ))
    labels = []
    if days:
        labels = [
            el("text", day_text(days[0][0]), x="0", y=str(height - 4), class_="axis"),
            el("text", day_text(days[-1][0]), x=str(width), y=str(height - 4),
               class_="axis", text_anchor="end"),
        ]
    summary = f"{title}: {fmt(total)} in {len(days)} days, at most {fmt(peak)} a day"
    return el(
        "figure",
        el("figcaption", title, " ", el("span", f"total {fmt(total)}", class_="muted")),
        el(
            "svg",
            el("line", x1="0", x2=str(width), y1=str(height - bottom),
               y2=str(height - bottom), class_="baseline"),
            el("text", f"max {fmt(peak)}", x="0", y="10", class_="axis"),
            join(bars), join(labels),
            class_="chart", viewBox=f"0 0 {width} {height}", role="img", aria_label=summary,
        ),
        class_="chart-box",
    )
