"""Loads the Lua scripts (package data), expands them from the limit kinds, registers each once.

Each ``lua/<name>.lua`` holds one decision; ``lua/_prelude.lua`` (clock, period
bounds, usage helpers) is prepended to every script so the shared arithmetic
is written once. The scripts never name a limit kind: where one must check,
count or show every kind, it says so with a marker, and this module expands
the marker from ``limits/kinds.py`` when it loads the script:

- ``@KIND_FIELDS@`` (inside an HMGET): the record fields of every kind, and
  ``@FIXED@`` the position of the first field after them;
- ``@ANY_LIMITED:<unit>[,<unit>]@`` (after ``--@declare``): a Lua expression, true
  when the key has a limit of a kind counted in one of those units;
- ``--@declare``: ``local lim_<name> = tonumber(rec[i])`` (the kind's limit, nil
  for none), ``aux_<name>`` (its window's extra record field) and the kind's
  working locals;
- ``--@each <part> limited|unlimited|all``: for each kind in the table's order,
  its window's snippet for that part (from ``lua/_windows.lua``), with the
  kind's names substituted, guarded by whether the key has the limit;
- ``DENY.<NAME>``, ``STATUS.<NAME>``, ``CODE.<NAME>``: the deny reasons and the
  reply codes of ``store/replies.py`` as string literals;
- ``@HISTORY_DAYS@``: the days of usage history a key keeps (``keys/model.py``).

So a script runs straight-line code, as if written by hand for these kinds:
nothing about the kinds is built, looked up or dispatched on each call. Scripts
are called with EVALSHA; redis-py reloads a script by itself when the server
answers NOSCRIPT (after a restart or a SCRIPT FLUSH). ``pipelined`` calls one
script for many keys in one round trip and does the same reload itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from string import Template
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from aigw_sidecar.keys.model import HISTORY_DAYS
from aigw_sidecar.limits.alerts import Budget
from aigw_sidecar.limits.kinds import LIMIT_KINDS, DenyReason, LimitKind, Unit, Window
from aigw_sidecar.store.client import StoreClient
from aigw_sidecar.store.replies import AuthorizeStatus, ScriptCode

_NAMES = (
    "authorize",
    "record_usage",
    "create_key",
    "claim",
    "release",
    "update_key",
    "delete_key",
    "read_key",
    "release_reservation",
    "rotate_key",
    "usage_history",
)
# The Lua of _windows.lua counts rolling windows of this length (WINDOW_US).
_ROLLING_WINDOW_S = 60
# Windows that keep an extra record field per kind, by its prefix.
_AUX_PREFIX = {Window.FIXED_REQUESTS: "n:"}
# The budget name (limits.alerts.Budget) a period kind's alerts carry, by unit.
_BUDGET_OF_UNIT = {Unit.MICRO_USD: Budget.COST, Unit.TOKENS: Budget.TOKENS}
_GUARDS = {
    "limited": ("if lim_$name then\n", "end\n"),
    "unlimited": ("if not lim_$name then\n", "end\n"),
    "all": ("do\n", "end\n"),
}
_EACH = re.compile(r"^([ \t]*)--@each (\w+) (\w+)[ \t]*$", re.M)
_DECLARE = re.compile(r"^[ \t]*--@declare[ \t]*$", re.M)
_ANY_LIMITED = re.compile(r"@ANY_LIMITED:([a-z_,]+)@")
_CONSTANT = re.compile(r"\b(DENY|STATUS|CODE)\.([A-Z_]+)\b")


def _lua(folder_file: str) -> str:
    folder = resources.files("aigw_sidecar.store") / "lua"
    return (folder / folder_file).read_text(encoding="utf-8")


@cache
def _snippets() -> dict[tuple[str, str], str]:
    """(window, part) -> the snippet's text, from _windows.lua."""
    found: dict[tuple[str, str], str] = {}
    for chunk in re.split(r"^--@ ", _lua("_windows.lua"), flags=re.M)[1:]:
        head, _, body = chunk.partition("\n")
        window, _, part = head.strip().partition(".")
        found[(Window(window).value, part)] = body.strip() + "\n"
    return found


def _names(kind: LimitKind) -> dict[str, str]:
    if kind.window in (Window.ROLLING_REQUESTS, Window.ROLLING_TOKENS) and (
        kind.window_s != _ROLLING_WINDOW_S
    ):
        raise ValueError(f"{kind.name}: rolling windows are {_ROLLING_WINDOW_S} s")
    return {
        "name": kind.name, "field": kind.record_field, "reason": kind.deny_reason.value,
        "unit": kind.unit.value, "window_s": str(kind.window_s),
        "budget": _BUDGET_OF_UNIT.get(kind.unit, ""), "aux": _aux_field(kind) or "",
    }


def _aux_field(kind: LimitKind) -> str | None:
    """The kind's extra record field, when its window keeps one."""
    prefix = _AUX_PREFIX.get(kind.window)
    return None if prefix is None else prefix + kind.record_field


def _record_fields() -> list[str]:
    fields = [kind.record_field for kind in LIMIT_KINDS]
    return fields + [aux for kind in LIMIT_KINDS if (aux := _aux_field(kind))]


def _declare() -> str:
    fields = _record_fields()
    lines = []
    for kind in LIMIT_KINDS:
        name = kind.name
        lines.append(f"local lim_{name} = tonumber(rec[{fields.index(kind.record_field) + 1}])")
        aux = _aux_field(kind)
        if aux is not None:
            lines.append(f"local aux_{name} = rec[{fields.index(aux) + 1}]")
        lines.append(f"local used_{name}, reset_{name}, win_{name}")
    return "".join(f"{line}\n" for line in lines)


def _any_limited(units: list[str]) -> str:
    wanted = {Unit(unit) for unit in units}
    names = [f"lim_{kind.name} ~= nil" for kind in LIMIT_KINDS if kind.unit in wanted]
    return f"({' or '.join(names)})" if names else "false"


def _each(part: str, guard: str, indent: str) -> str:
    snippets = _snippets()
    if guard not in _GUARDS:
        raise ValueError(f"--@each {part} {guard}: the guard is limited, unlimited or all")
    if not any(p == part for _w, p in snippets):
        raise ValueError(f"--@each {part}: no window has that part")
    out = []
    for kind in LIMIT_KINDS:
        snippet = snippets.get((kind.window.value, part))
        if snippet is None:
            continue
        opening, closing = _GUARDS[guard]
        body = Template(opening + snippet + closing).substitute(_names(kind))
        out.append("".join(f"{indent}{line}\n" if line else "\n" for line in body.splitlines()))
    return "".join(out)


def _constant(match: re.Match[str]) -> str:
    enums: dict[str, type[StrEnum]] = {
        "DENY": DenyReason, "STATUS": AuthorizeStatus, "CODE": ScriptCode,
    }
    return f"'{enums[match.group(1)][match.group(2)].value}'"


def expand(text: str) -> str:
    """A script's text with its markers expanded from the limit kinds (see above)."""
    fields = _record_fields()
    text = text.replace("@KIND_FIELDS@", ", ".join(f"'{f}'" for f in fields) + ",")
    text = text.replace("@FIXED@", str(len(fields) + 1))
    text = text.replace("@HISTORY_DAYS@", str(HISTORY_DAYS))
    text = _ANY_LIMITED.sub(lambda m: _any_limited(m.group(1).split(",")), text)
    text = _DECLARE.sub(lambda m: _declare(), text)
    text = _EACH.sub(lambda m: _each(m.group(2), m.group(3), m.group(1)), text)
    return _CONSTANT.sub(_constant, text)


@cache
def script_source(name: str) -> str:
    """The full text of one script: the prelude, then the script, expanded."""
    return expand(_lua("_prelude.lua") + _lua(f"{name}.lua"))


@dataclass(frozen=True, slots=True)
class Scripts:
    authorize: AsyncScript
    record_usage: AsyncScript
    create_key: AsyncScript
    claim: AsyncScript
    release: AsyncScript
    update_key: AsyncScript
    delete_key: AsyncScript
    read_key: AsyncScript
    release_reservation: AsyncScript
    rotate_key: AsyncScript
    usage_history: AsyncScript

    @classmethod
    def register(cls, redis: StoreClient) -> Scripts:
        registered: dict[str, Any] = {
            name: redis.register_script(script_source(name)) for name in _NAMES
        }
        return cls(**registered)


async def pipelined(
    redis: StoreClient, script: AsyncScript, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
) -> list[Any]:
    """One script run once per ``(keys, args)``, in one pipelined round trip; the replies in order.

    On a cluster the pipeline goes to each node its calls' slots live on, all
    at once. The calls that meet NOSCRIPT did not run, so they are sent again
    in a second round trip once the script is loaded (on every primary).
    Redis-py's own pipelined scripts would first ask SCRIPT EXISTS on every
    execute: a round trip more each time, to save one after a flush.
    """
    replies: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    for attempt in range(2):
        if not todo:
            break
        pipe = redis.pipeline(transaction=False)
        for i in todo:
            keys, args = calls[i]
            # Not pipe.evalsha: redis-py's cluster pipeline refuses that method (a script
            # may name keys of several slots, or none); each call here names the keys of
            # one API key, one hash tag, so the pipeline routes it by them like any command.
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        results = await pipe.execute(raise_on_error=False)
        unloaded = []
        for i, result in zip(todo, results, strict=True):
            if isinstance(result, NoScriptError) and attempt == 0:
                unloaded.append(i)
            elif isinstance(result, Exception):
                raise result
            else:
                replies[i] = result
        if unloaded:
            await redis.script_load(script.script)
        todo = unloaded
    return replies
