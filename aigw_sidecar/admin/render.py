"""Human output of aigw-admin: aligned tables and summaries; JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TextIO

from google.protobuf import json_format
from google.protobuf.message import Message

from aigw_sidecar.api.v1 import keys_pb2 as keys_pb
from aigw_sidecar.limits.kinds import LIMIT_KINDS, LimitKind, Unit, Window

_MICRO = Decimal(1_000_000)
SECRET_WARNING = (
    "Store this secret now: it is shown only this once and cannot be recovered "
    "(only its hash is kept)."
)


def to_json(message: Message) -> str:
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return json.dumps(data, indent=2, sort_keys=False)


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [header, *rows]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def usd(micro: int) -> str:
    amount = (Decimal(micro) / _MICRO).quantize(Decimal("0.01")) if micro else Decimal(0)
    return f"${amount:,}" if micro % 10_000 == 0 else f"${Decimal(micro) / _MICRO:,}"


def count(n: int) -> str:
    for size, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "k")):
        if n >= size:
            text = f"{n / size:.1f}".rstrip("0").rstrip(".")
            return f"{text}{suffix}"
    return str(n)


def plural(n: int, noun: str) -> str:
    """``1 request``, ``2 requests``, ``1.5k requests``: the count as ``count`` writes it."""
    return f"{count(n)} {noun}" + ("" if n == 1 else "s")


def _period(value: int) -> str:
    return keys_pb.ResetPeriod.Name(value).removeprefix("RESET_PERIOD_").lower()


def _status(value: int) -> str:
    return keys_pb.KeyStatus.Name(value).removeprefix("KEY_STATUS_").lower()


def limits_text(key: keys_pb.ApiKey) -> str:
    lim = key.limits
    parts = [
        _amount(kind, getattr(lim, kind.attr)) for kind in LIMIT_KINDS if lim.HasField(kind.attr)
    ]
    if lim.allowed_models:
        parts.append(f"{len(lim.allowed_models)} model" + ("s" if len(lim.allowed_models) > 1
                                                             else ""))
    if not parts:
        return "-"
    period = _period(lim.reset_period)
    return " · ".join(parts) + ("" if period in ("never", "unspecified") else f" /{period}")


def _amount(kind: LimitKind, value: int, *, limit: int | None = None) -> str:
    """``$5.00``, ``1.5k tok``; with a limit ``$1.00/$5.00``, ``300/1.5k tok``."""
    fmt = usd if kind.unit is Unit.MICRO_USD else count
    text = fmt(value) if limit is None else f"{fmt(value)}/{fmt(limit)}"
    return f"{text} {kind.short}" if kind.short else text


def usage_text(ov: keys_pb.KeyOverview | None) -> str:
    """The period's usage of the budget kinds (cost, tokens), against their limits."""
    if ov is None:
        return "-"
    parts = []
    for kind in LIMIT_KINDS:
        if kind.window is Window.PERIOD:
            usage = getattr(ov, kind.overview_field)
            parts.append(_amount(kind, usage.used, limit=usage.limit if usage.limited else None))
    return " · ".join(parts)


def _time(ts: Any, present: bool = True) -> str:
    if not present:
        return "never"
    when: datetime = ts.ToDatetime(tzinfo=UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _in(ts: Any, now: Any) -> str:
    seconds = max(0, ts.seconds - now.seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"in {days}d {hours}h"
    if hours:
        return f"in {hours}h {minutes}m"
    return f"in {minutes}m"


def keys_table(
    keys: Sequence[keys_pb.ApiKey], overviews: Sequence[keys_pb.KeyOverview] = ()
) -> str:
    """The keys, one a row; USAGE from their overviews ('-' for a key without one)."""
    by_key = {ov.key.key_id: ov for ov in overviews}
    rows = [
        [
            k.name,
            k.key_id,
            k.masked_secret,
            _status(k.status),
            "yes" if k.legacy else "no",
            limits_text(k),
            usage_text(by_key.get(k.key_id)),
        ]
        for k in keys
    ]
    return table(rows, ["NAME", "KEY ID", "KEY", "STATUS", "LEGACY", "LIMITS", "USAGE"])


def key_details(key: keys_pb.ApiKey) -> str:
    rows = [
        ["name", key.name],
        ["key id", key.key_id],
        ["key", key.masked_secret],
        ["status", _status(key.status)],
        ["legacy", "yes" if key.legacy else "no"],
        ["workspace", key.workspace],
        ["project", key.project or "-"],
        ["environment", key.environment or "-"],
        ["labels", ", ".join(f"{k}={v}" for k, v in sorted(key.labels.items())) or "-"],
        ["limits", limits_text(key)],
        ["models", ", ".join(key.limits.allowed_models) or "any"],
        ["created", _time(key.created_at)],
        ["expires", _time(key.expires_at, key.HasField("expires_at"))],
        ["last used", _time(key.last_used_at, key.HasField("last_used_at"))],
    ]
    if key.HasField("previous_secret_expires_at"):
        rows.append(["previous secret", f"works until {_time(key.previous_secret_expires_at)}"])
    return table(rows, ["FIELD", "VALUE"]).split("\n", 1)[1]


def _usage_row(label: str, usage: keys_pb.LimitUsage, fmt: Callable[[int], str]) -> list[str]:
    if not usage.limited:
        return [label, fmt(usage.used), "no limit", "-", "-"]
    pct = f"{100 * usage.used / usage.limit:.0f}%" if usage.limit else "-"
    return [label, fmt(usage.used), fmt(usage.limit), fmt(usage.remaining), pct]


def overview(ov: keys_pb.KeyOverview) -> str:
    key = ov.key
    # The numbers as the keys list writes them: usd() for money, count() for the rest.
    rows = [
        _usage_row(
            kind.label, getattr(ov, kind.overview_field),
            usd if kind.unit is Unit.MICRO_USD else count,
        )
        for kind in LIMIT_KINDS
    ]
    prompt, completion = ov.period_prompt_tokens, ov.period_completion_tokens
    lifetime_tokens = ov.lifetime_prompt_tokens + ov.lifetime_completion_tokens
    period = _period(key.limits.reset_period)
    if ov.HasField("next_reset"):
        reset = f"{_time(ov.next_reset)} ({_in(ov.next_reset, ov.observed_at)})"
    else:
        reset = "never (budgets do not reset)"
    lines = [
        f"{key.name}  {key.key_id}  {key.masked_secret}  {_status(key.status)}"
        + ("  legacy" if key.legacy else ""),
        "",
        table(rows, ["KIND", "USED", "LIMIT", "REMAINING", "USED %"]),
        "",
        f"reset period   {period}",
        f"period start   {_time(ov.period_start)}",
        f"next reset     {reset}",
        f"this period    {plural(ov.period_requests, 'request')}, {count(prompt)} prompt + "
        f"{count(completion)} completion " + ("token" if prompt + completion == 1 else "tokens"),
        f"lifetime       {plural(ov.lifetime_requests, 'request')}, "
        f"{plural(lifetime_tokens, 'token')}, {usd(ov.lifetime_cost_micro_usd)}",
        f"last used      {_time(ov.last_used_at, ov.HasField('last_used_at'))}",
        f"models         {', '.join(key.limits.allowed_models) or 'any'}",
    ]
    return "\n".join(lines)


def history_table(days: Sequence[keys_pb.DailyUsage]) -> str:
    """Usage per UTC day, oldest first, and the total of the days shown."""
    rows = [
        [d.day.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d"), str(d.requests), str(d.tokens),
         usd(d.cost_micro_usd)]
        for d in days
    ]
    rows.append([
        "total", str(sum(d.requests for d in days)), str(sum(d.tokens for d in days)),
        usd(sum(d.cost_micro_usd for d in days)),
    ])
    return table(rows, ["DAY (UTC)", "REQUESTS", "TOKENS", "COST"])


def audit_table(entries: Sequence[keys_pb.AuditEntry]) -> str:
    rows = [
        [_time(e.occurred_at), e.principal, e.action, e.key_id, e.name, e.detail or "-"]
        for e in entries
    ]
    return table(rows, ["TIME", "PRINCIPAL", "ACTION", "KEY ID", "NAME", "DETAIL"])


def prices_table(prices: Sequence[keys_pb.ModelPrice]) -> str:
    """Model prices, USD per million tokens as the table holds them (exact)."""
    rows = [
        [p.model, p.input_usd, p.output_usd, p.cached_input_usd or "-",
         p.cache_write_usd or "-", str(p.max_output_tokens or "-"), p.source or "-"]
        for p in prices
    ]
    header = ["MODEL", "INPUT $/M", "OUTPUT $/M", "CACHED $/M", "CACHE WRITE $/M",
              "MAX OUTPUT", "SOURCE"]
    return table(rows, header)


def event_line(event: keys_pb.BudgetEvent) -> str:
    """One budget event for people: time, type, key, where, what."""
    where = event.workspace + (f"/{event.project}" if event.project else "")
    if event.type == "key_expiring":
        what = (f"expires {_time(event.expires_at)} "
                f"(warning {plural(event.expiry_days, 'day')} ahead)")
    else:
        fmt = usd if event.budget == "cost" else count
        what = (f"{event.budget} at {event.threshold_percent}%: "
                f"{fmt(event.used)} of {fmt(event.limit)}")
    return "  ".join([_time(event.occurred_at), event.type, event.key_id, where, what])


def to_json_line(message: Message) -> str:
    return json.dumps(json_format.MessageToDict(message, preserving_proto_field_name=True))


def _page(text: str, what: str, next_page_token: str, out: TextIO, err: TextIO) -> None:
    """One page of a list: its table (or "no ..."), then how to ask for the next."""
    if text:
        print(text, file=out)
    else:
        print(f"no {what}", file=err)
    if next_page_token:
        print(f"more: --page-token {next_page_token}", file=err)


def human(response: Message, out: TextIO, err: TextIO) -> None:
    """Print a response for people; messages without a view print as JSON."""
    if isinstance(response, keys_pb.CreateKeyResponse | keys_pb.RotateKeySecretResponse):
        print(key_details(response.key), file=out)
        print(f"\nsecret: {response.secret}", file=out)
        print(f"\nWARNING: {SECRET_WARNING}", file=err)
    elif isinstance(response, keys_pb.ListKeysResponse):
        _page(keys_table(response.keys, response.overviews) if response.keys else "", "keys",
              response.next_page_token, out, err)
    elif isinstance(response, keys_pb.GetKeyOverviewResponse):
        print(overview(response.overview), file=out)
    elif isinstance(response, keys_pb.GetKeyUsageHistoryResponse):
        print(history_table(response.days), file=out)
    elif isinstance(response, keys_pb.ListEventsResponse):
        for event in response.events:
            print(event_line(event), file=out)
        if not response.events:
            print("no events", file=err)
        print(f"next: --after {response.next_cursor}", file=err)
    elif isinstance(response, keys_pb.ListAuditEntriesResponse):
        _page(audit_table(response.entries) if response.entries else "", "audit entries",
              response.next_page_token, out, err)
    elif isinstance(response, keys_pb.ListModelPricesResponse):
        print(f"table: {response.table}", file=err)
        _page(prices_table(response.prices) if response.prices else "", "prices",
              response.next_page_token, out, err)
    elif isinstance(response, keys_pb.GetModelPriceResponse):
        if response.priced:
            print(prices_table([response.price]), file=out)
        else:
            print(f"no price: an unknown model is charged as '{response.unknown_model}' says "
                  "(a key with a cost limit refuses it: model_not_priced)", file=out)
    elif response.DESCRIPTOR.fields_by_name.get("key") is not None and response.HasField("key"):
        print(key_details(response.key), file=out)  # type: ignore[attr-defined]
    elif not response.ListFields():
        print("done", file=out)
    else:
        print(to_json(response), file=out)
