"""The page shell and the small pieces every page uses (fields, buttons, times, notices).

One stylesheet and one script, both from ``/console/static/``; no inline script
or style. Every POST form carries the session's CSRF token (``post_form``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aigw_sidecar.api.v1 import keys_pb2 as keys_pb
from aigw_sidecar.server.console.markup import Markup, el, join, path_part

PREFIX = "/console"
STATIC = f"{PREFIX}/static"
CSRF_FIELD = "csrf_token"
NAV = (("keys", "API keys", f"{PREFIX}/keys"), ("audit", "Audit log", f"{PREFIX}/audit"),
       ("events", "Budget events", f"{PREFIX}/events"))


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who looks at a page, and what its forms need."""

    principal: str  # "" on the login page
    csrf_token: str
    can_log_out: bool  # a session started by a login (admin tokens configured)


def key_path(key_id: str, action: str = "") -> str:
    base = f"{PREFIX}/keys/{path_part(key_id)}"
    return f"{base}/{action}" if action else base


def post_form(viewer: Viewer, action: str, *children: object, **attrs: object) -> Markup:
    return el(
        "form",
        el("input", type="hidden", name=CSRF_FIELD, value=viewer.csrf_token),
        *children,
        method="post", action=action, **attrs,
    )


def page(title: str, body: Markup, viewer: Viewer, section: str = "") -> str:
    nav = el("nav", [
        el("a", label, href=url, aria_current="page" if name == section else None)
        for name, label, url in NAV
    ], aria_label="Main") if viewer.principal else ""
    who: Markup | str = ""
    if viewer.principal:
        who = el(
            "div",
            el("span", viewer.principal, class_="principal", title="Signed in as"),
            post_form(viewer, f"{PREFIX}/logout", el("button", "Log out", class_="link"))
            if viewer.can_log_out else "",
            class_="who",
        )
    head = el(
        "head",
        Markup('<meta charset="utf-8">'),
        el("meta", name="viewport", content="width=device-width, initial-scale=1"),
        el("title", f"{title} · aigw-sidecar console"),
        el("link", rel="icon", href="data:,"),
        el("link", rel="stylesheet", href=f"{STATIC}/console.css"),
        el("script", src=f"{STATIC}/console.js", defer=True),
    )
    body_el = el(
        "body",
        el("a", "Skip to content", href="#main", class_="skip"),
        el("header", el(
            "div",
            el("a", "aigw-sidecar", el("span", "console"), href=f"{PREFIX}/keys",
               class_="brand"),
            nav, who, class_="wrap bar-top",
        ), class_="top"),
        el("main", body, id="main", class_="wrap"),
    )
    return "<!doctype html>\n" + el("html", head, body_el, lang="en")


def notice(text: str, kind: str = "info") -> Markup:
    role = "alert" if kind == "error" else "status"
    return el("div", text, class_=f"notice {kind}", role=role)


def field_id(name: str) -> str:
    return "f-" + name.replace(".", "-").replace("_", "-")


def field(
    name: str, label: str, control: Markup, *, hint: str = "", error: str = "",
    required: bool = False,
) -> Markup:
    """A labelled control with its hint and its error (announced with the control)."""
    fid = field_id(name)
    return el(
        "div",
        el("label", label, el("span", " (required)", class_="req") if required else None,
           for_=fid),
        control,
        el("p", hint, id=f"{fid}-hint", class_="hint") if hint else None,
        el("p", error, id=f"{fid}-error", class_="error") if error else None,
        class_="field" + (" has-error" if error else ""),
    )


def described_by(name: str, *, hint: bool, error: bool) -> str | None:
    fid = field_id(name)
    ids = [f"{fid}-hint"] if hint else []
    ids += [f"{fid}-error"] if error else []
    return " ".join(ids) or None


def text_input(name: str, value: str, *, hint: bool = False, error: str = "",
               **attrs: Any) -> Markup:
    attrs.setdefault("type", "text")
    return el(
        "input", name=name, id=field_id(name), value=value,
        aria_invalid="true" if error else None,
        aria_describedby=described_by(name, hint=hint, error=bool(error)), **attrs,
    )


def select(name: str, choices: list[tuple[str, str]], chosen: str, **attrs: Any) -> Markup:
    return el("select", [
        el("option", label, value=value, selected=value == chosen) for value, label in choices
    ], name=name, id=field_id(name), **attrs)


def when(ts: Any, present: bool = True, never: str = "never") -> str:
    if not present:
        return never
    moment: datetime = ts.ToDatetime(tzinfo=UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def status_name(key: keys_pb.ApiKey) -> str:
    return keys_pb.KeyStatus.Name(key.status).removeprefix("KEY_STATUS_").lower()


def badges(key: keys_pb.ApiKey) -> Markup:
    status = status_name(key)
    return join(
        el("span", "legacy", class_="badge legacy") if key.legacy else None,
        el("span", status, class_=f"badge {status}") if status != "enabled" else None,
    )


def toggle(viewer: Viewer, key: keys_pb.ApiKey, back_to: str) -> Markup:
    """The enable/disable switch: a one-button form (console.js posts it in place)."""
    action = "disable" if key.enabled else "enable"
    return post_form(
        viewer, key_path(key.key_id, action),
        el("input", type="hidden", name="return", value=back_to),
        el(
            "button",
            el("span", class_="knob", aria_hidden="true"),
            el("span", "On" if key.enabled else "Off", class_="switch-text"),
            type="submit", class_="switch", role="switch",
            aria_checked="true" if key.enabled else "false",
            aria_label=f"Enabled: {key.name}",
        ),
        class_="toggle-form",
    )
