"""The console's pages: each a function from protobuf messages to escaped markup.

No page calls anything; ``routes.py`` makes the calls and hands the replies here.
Limits are listed from ``LIMIT_KINDS`` (label, unit, overview field), never by
name, so a new kind shows everywhere with no change here.
"""

from __future__ import annotations

from collections.abc import Sequence

from aigw_sidecar.admin.render import SECRET_WARNING, count, usd
from aigw_sidecar.api.v1 import keys_pb2 as keys_pb
from aigw_sidecar.limits.kinds import LIMIT_KINDS, LimitKind, Unit
from aigw_sidecar.server.console.calls import KeyPage
from aigw_sidecar.server.console.charts import (
    amount,
    counted,
    daily_chart,
    percent,
    usage_bar,
)
from aigw_sidecar.server.console.forms import (
    GENERAL,
    MAIN_KINDS,
    RESET_PERIOD,
    KeyForm,
    input_name,
    kind_hint,
    kind_title,
    period_choices,
    toggle_name,
)
from aigw_sidecar.server.console.layout import (
    PREFIX,
    Viewer,
    badges,
    field,
    field_id,
    key_path,
    notice,
    post_form,
    select,
    text_input,
    toggle,
    when,
)
from aigw_sidecar.server.console.markup import Markup, el, href, join

STATUS_CHOICES = [("", "Any status")] + [
    (v.name, v.name.removeprefix("KEY_STATUS_").capitalize())
    for v in keys_pb.KeyStatus.DESCRIPTOR.values if v.number != 0
]
GRACE_CHOICES = [("0", "None: the current secret stops at once"), ("3600", "1 hour"),
                 ("86400", "24 hours"), ("604800", "7 days"), ("2592000", "30 days")]


def _dash(text: str) -> str:
    return text or "—"


# --- keys list --------------------------------------------------------------------------


def key_usage(key: keys_pb.ApiKey, overview: keys_pb.KeyOverview | None) -> Markup:
    """A bar per limit the key has; legacy keys have none."""
    if key.legacy:
        return el("span", "legacy — no limits", class_="muted")
    limited = [kind for kind in LIMIT_KINDS if key.limits.HasField(kind.attr)]
    if not limited:
        return el("span", "no limits", class_="muted")
    if overview is None:
        return join([
            el("div", f"{kind.label}: {amount(kind, getattr(key.limits, kind.attr))}")
            for kind in limited
        ])
    return join([
        usage_bar(kind, getattr(overview, kind.overview_field), compact=True) for kind in limited
    ])


def keys_list(
    viewer: Viewer, keys_page: KeyPage, filters: dict[str, str], back_to: str, message: str
) -> Markup:
    rows = [_key_row(viewer, key, keys_page.overviews.get(key.key_id), back_to)
            for key in keys_page.keys]
    table = el(
        "table",
        el("caption", "API keys", class_="visually-hidden"),
        el("thead", el("tr", [el("th", h, scope="col") for h in (
            "Name", "Key", "Enabled", "Workspace / project / environment", "Usage",
            "Expires", "Last used", "Actions")])),
        el("tbody", rows),
        class_="keys",
    ) if rows else el("p", "No API keys match.", class_="empty")
    pager = []
    if filters.get("page_token"):
        pager.append(el("a", "First page", href=href(f"{PREFIX}/keys", **{
            k: v for k, v in filters.items() if k != "page_token"}), class_="button secondary"))
    if keys_page.next_page_token:
        pager.append(el("a", "Next page", href=href(f"{PREFIX}/keys", **{
            **filters, "page_token": keys_page.next_page_token}), class_="button secondary"))
    return join(
        el("div", el("h1", "API keys"),
           el("a", "Create API key", href=f"{PREFIX}/keys/new", class_="button primary"),
           class_="page-head"),
        notice(message) if message else None,
        _filters(filters),
        table,
        el("nav", pager, class_="pager", aria_label="Pages") if pager else None,
    )


def _filters(filters: dict[str, str]) -> Markup:
    def box(name: str, label: str, placeholder: str = "") -> Markup:
        return el("div", el("label", label, for_=field_id(name)),
                  text_input(name, filters.get(name, ""), placeholder=placeholder or None),
                  class_="field")

    return el(
        "form",
        box("name", "Search by name", "name contains…"),
        box("workspace", "Workspace"),
        box("project", "Project"),
        box("environment", "Environment"),
        el("div", el("label", "Status", for_=field_id("status")),
           select("status", STATUS_CHOICES, filters.get("status", "")), class_="field"),
        el("div", el("button", "Filter", type="submit", class_="button secondary"),
           el("a", "Clear", href=f"{PREFIX}/keys", class_="link"), class_="filter-actions"),
        method="get", action=f"{PREFIX}/keys", class_="filters", role="search",
    )


def _key_row(
    viewer: Viewer, key: keys_pb.ApiKey, overview: keys_pb.KeyOverview | None, back_to: str
) -> Markup:
    actions = [el("a", "Overview", href=key_path(key.key_id))]
    if key.legacy:
        actions.append(el("a", "Replace", href=key_path(key.key_id, "replace")))
    else:
        actions.append(el("a", "Rotate", href=key_path(key.key_id, "rotate")))
    actions.append(el("a", "Delete", href=key_path(key.key_id, "delete"), class_="danger"))
    scope = el("div", el("span", key.workspace), el("span", _dash(key.project)),
               el("span", _dash(key.environment)), class_="scope")
    return el(
        "tr",
        el("td", el("a", key.name, href=key_path(key.key_id), class_="key-name"), badges(key),
           data_label="Name", class_="name"),
        el("td", el("code", key.masked_secret), data_label="Key"),
        el("td", toggle(viewer, key, back_to), data_label="Enabled"),
        el("td", scope, data_label="Scope"),
        el("td", key_usage(key, overview), data_label="Usage", class_="usage-cell"),
        el("td", when(key.expires_at, key.HasField("expires_at")), data_label="Expires"),
        el("td", when(key.last_used_at, key.HasField("last_used_at")), data_label="Last used"),
        el("td", el("div", actions, class_="actions"), data_label="Actions"),
        id=f"key-{key.key_id}",
    )


# --- create / replace -------------------------------------------------------------------


def _limit_row(kind: LimitKind, form: KeyForm) -> Markup:
    name = input_name(kind)
    fid = field_id(name)
    error = form.errors.get(name, "")
    decimal = kind.unit is Unit.MICRO_USD
    example = {Unit.MICRO_USD: "e.g. 25.00", Unit.TOKENS: "e.g. 100000"}.get(kind.unit, "e.g. 60")
    return el(
        "div",
        el("div",
           el("input", type="checkbox", name=toggle_name(kind), id=f"{fid}-on",
              checked=form.checked(toggle_name(kind)), data_toggles=fid,
              data_resets="1" if kind.resets_with_period else None),
           el("label", kind_title(kind), for_=f"{fid}-on"),
           class_="toggle-line"),
        el("label", f"{kind_title(kind)}: value", for_=fid, class_="visually-hidden"),
        text_input(
            name, form.value(name), hint=True, error=error,
            inputmode="decimal" if decimal else "numeric",
            placeholder=example, autocomplete="off",
        ),
        el("p", kind_hint(kind), id=f"{fid}-hint", class_="hint"),
        el("p", error, id=f"{fid}-error", class_="error") if error else None,
        class_="limit field" + (" has-error" if error else ""),
    )


def key_form(
    viewer: Viewer, form: KeyForm, *, action: str, title: str, intro: Markup | None = None,
    submit: str = "Create API key", workspace_fixed: bool = False,
) -> Markup:
    err = form.errors

    def text(name: str, label: str, hint: str = "", required: bool = False,
             **attrs: object) -> Markup:
        return field(name, label, text_input(name, form.value(name), hint=bool(hint),
                                             error=err.get(name, ""), required=required,
                                             **attrs),
                     hint=hint, error=err.get(name, ""), required=required)

    main = [_limit_row(kind, form) for kind in LIMIT_KINDS if kind.name in MAIN_KINDS]
    advanced = [_limit_row(kind, form) for kind in LIMIT_KINDS if kind.name not in MAIN_KINDS]
    labels_error = err.get("labels", "")
    models_error = err.get("limits.allowed_models", "")
    period_error = err.get(RESET_PERIOD, "")
    workspace = (
        el("input", type="hidden", name="workspace", value=form.value("workspace"))
        if workspace_fixed else
        text("workspace", "Workspace", "Empty: default.", autocomplete="off")
    )
    return join(
        el("h1", title),
        intro,
        notice(err[GENERAL], "error") if GENERAL in err else None,
        notice("Check the fields marked below.", "error")
        if err and GENERAL not in err else None,
        post_form(
            viewer, action,
            el("fieldset",
               el("legend", "Key"),
               text("name", "Name", "A unique label for the key in its workspace.",
                    required=True, autocomplete="off", maxlength="200"),
               workspace,
               el("div", text("project", "Project", autocomplete="off"),
                  text("environment", "Environment", "e.g. production, staging.",
                       autocomplete="off"), class_="pair"),
               field("labels", "Labels", el(
                   "textarea", form.value("labels"), name="labels", id=field_id("labels"),
                   rows="2", aria_describedby=f"{field_id('labels')}-hint",
                   aria_invalid="true" if labels_error else None,
               ), hint="key=value, one per line.", error=labels_error)),
            el("fieldset",
               el("legend", "Limits (optional)"),
               el("p", "When a limit is reached, requests with this key are refused with "
                       "429 Too Many Requests.", class_="hint"),
               main,
               field(RESET_PERIOD, "Reset limit period", select(
                   RESET_PERIOD, period_choices(), form.value(RESET_PERIOD, "RESET_PERIOD_NEVER"),
                   aria_describedby=f"{field_id(RESET_PERIOD)}-hint", data_period="1",
               ), hint="When the cost and token counters start again (UTC). Applies only when "
                       "a cost or token limit is on; requests/min always uses a rolling "
                       "60-second window.", error=period_error),
               field("expires_at", "Expiration", text_input(
                   "expires_at", form.value("expires_at"), type="date", hint=True,
                   error=err.get("expires_at", ""),
               ), hint="Optional; default: never expires. The key stops working at 00:00 UTC "
                       "after this date.", error=err.get("expires_at", ""))),
            el("details",
               el("summary", "Advanced"),
               advanced,
               field("limits.allowed_models", "Allowed models", el(
                   "textarea", form.value("limits.allowed_models"),
                   name="limits.allowed_models", id=field_id("limits.allowed_models"), rows="2",
                   aria_describedby=f"{field_id('limits.allowed_models')}-hint",
                   aria_invalid="true" if models_error else None,
               ), hint="One per line or comma-separated; '*' matches any run of characters "
                       "(gpt-4o-*). Empty: any model.", error=models_error),
               el("div",
                  text("alert_thresholds_percent", "Alert thresholds (%)",
                       "Budget events when the cost or token usage crosses these, e.g. 80, 100.",
                       inputmode="numeric", autocomplete="off"),
                  text("alert_expiry_days", "Expiry warning (days)",
                       "An event this many days before the key expires.",
                       inputmode="numeric", autocomplete="off"),
                  class_="pair"),
               class_="advanced", open=_advanced_open(form, advanced_names=[
                   input_name(kind) for kind in LIMIT_KINDS if kind.name not in MAIN_KINDS])),
            el("div", el("button", submit, type="submit", class_="button primary"),
               el("a", "Cancel", href=f"{PREFIX}/keys", class_="button secondary"),
               class_="form-actions"),
            class_="key-form", novalidate=True,
        ),
    )


def _advanced_open(form: KeyForm, advanced_names: list[str]) -> bool:
    names = [*advanced_names, "limits.allowed_models", "alert_thresholds_percent",
             "alert_expiry_days"]
    return any(form.errors.get(n) or form.value(n) for n in names)


def secret_shown(
    viewer: Viewer, key: keys_pb.ApiKey, secret: str, *, title: str, after: Markup | None = None
) -> Markup:
    """The secret, this once: a copy button, the warning, and where to go next."""
    return join(
        el("h1", title),
        el("div", el("strong", "Copy the secret now. "), SECRET_WARNING, class_="notice warning",
           role="alert"),
        el("div",
           el("label", f"Secret of {key.name}", for_="secret", class_="secret-label"),
           el("div",
              el("input", id="secret", value=secret, readonly=True, class_="secret",
                 spellcheck="false", autocomplete="off", aria_describedby="secret-hint"),
              el("button", "Copy", type="button", class_="button primary copy",
                 data_copy="secret", hidden=True),
              class_="secret-line"),
           el("p", "Select the field and copy it if your browser has no Copy button. Leaving "
                   "or reloading this page loses it.", id="secret-hint", class_="hint"),
           el("p", "", class_="copied", role="status", aria_live="polite"),
           class_="secret-box"),
        el("dl", el("dt", "Name"), el("dd", key.name), el("dt", "Key id"),
           el("dd", el("code", key.key_id)), el("dt", "Key"),
           el("dd", el("code", key.masked_secret)), class_="facts"),
        after,
        el("p", el("a", "Back to API keys", href=f"{PREFIX}/keys", class_="button secondary"),
           el("a", "Overview", href=key_path(key.key_id), class_="link")),
    )


REPLACE_STEPS = (
    "Go to API keys in the console.",
    "Create a new API key and configure the limits you need.",
    "Update every integration and environment variable to use the new key.",
    "Disable, then delete, the legacy key once all consumers have switched.",
)


def replace_steps(current: int) -> Markup:
    return el("ol", [
        el("li", step, class_="done" if i < current else "current" if i == current else None,
           aria_current="step" if i == current else None)
        for i, step in enumerate(REPLACE_STEPS, start=1)
    ], class_="steps")


def replace_intro(legacy: keys_pb.ApiKey) -> Markup:
    return join(
        el("p", "Legacy keys keep working but have no cost, token or rate limits. To get them, "
                "create a new key for the same consumers and retire ",
           el("strong", legacy.name), " (", el("code", legacy.masked_secret), ")."),
        replace_steps(2),
    )


def replace_after(viewer: Viewer, legacy: keys_pb.ApiKey) -> Markup:
    return join(
        replace_steps(3),
        el("p", "Update your integrations and environment variables to the secret above. "
                "Then, once nothing uses ", el("strong", legacy.name), " any more:"),
        post_form(
            viewer, key_path(legacy.key_id, "replace/disable"),
            el("button", f"Disable legacy key {legacy.name}", type="submit",
               class_="button danger-outline"),
            class_="inline",
        ) if legacy.enabled else el("p", "The legacy key is already disabled.", class_="muted"),
    )


# --- overview ---------------------------------------------------------------------------


def overview(
    viewer: Viewer, ov: keys_pb.KeyOverview, history: dict[int, list[keys_pb.DailyUsage]] | None
) -> Markup:
    key = ov.key
    rows = []
    for kind in LIMIT_KINDS:
        usage = getattr(ov, kind.overview_field)
        if usage.limited:
            rows.append(el(
                "tr", el("th", kind.label, scope="row"), el("td", usage_bar(kind, usage)),
                el("td", amount(kind, usage.used)), el("td", amount(kind, usage.limit)),
                el("td", amount(kind, usage.remaining)), el("td", f"{percent(usage):.0f}%"),
            ))
        else:
            rows.append(el(
                "tr", el("th", kind.label, scope="row"), el("td", "no limit", class_="muted"),
                el("td", amount(kind, usage.used)), el("td", "—"), el("td", "—"), el("td", "—"),
            ))
    limits_table = el(
        "table",
        el("caption", "Usage against limits", class_="visually-hidden"),
        el("thead", el("tr", [el("th", h, scope="col") for h in (
            "Limit", el("span", "Bar", class_="visually-hidden"), "Used", "Limit",
            "Remaining", "Used %")])),
        el("tbody", rows), class_="usage-table",
    )
    period = keys_pb.ResetPeriod.Name(key.limits.reset_period).removeprefix("RESET_PERIOD_")
    next_reset = (when(ov.next_reset) if ov.HasField("next_reset")
                  else "never (the cost and token budgets do not reset)")
    facts = el(
        "dl",
        el("dt", "Current period"),
        el("dd", f"{when(ov.period_start)} → {next_reset}"),
        el("dt", "Reset period"), el("dd", period.lower() if period != "UNSPECIFIED" else "never"),
        el("dt", "Requests in the last 60 s"), el("dd", f"{ov.requests_per_minute.used:,}"),
        el("dt", "Reservations in flight"),
        el("dd", f"{ov.open_reservations:,} holding {counted(ov.reserved_tokens, 'tokens')} "
                 f"and {usd(ov.reserved_cost_micro_usd)}"),
        el("dt", "This period"),
        el("dd", f"{counted(ov.period_requests, 'requests')}, {ov.period_prompt_tokens:,} "
                 f"prompt + {ov.period_completion_tokens:,} completion tokens"),
        el("dt", "Lifetime"),
        el("dd", f"{counted(ov.lifetime_requests, 'requests')}, "
                 f"{counted(ov.lifetime_prompt_tokens + ov.lifetime_completion_tokens, 'tokens')}"
                 f", {usd(ov.lifetime_cost_micro_usd)}"),
        el("dt", "Unpriced requests"), el("dd", f"{ov.unpriced_requests:,}"),
        el("dt", "Observed"), el("dd", when(ov.observed_at)),
        class_="facts",
    )
    models = el("p", "No usage reported in this period.", class_="muted")
    if ov.per_model:
        models = el("table", el("caption", "Per model", class_="visually-hidden"),
                    el("thead", el("tr", [el("th", h, scope="col") for h in (
                        "Model", "Requests", "Tokens", "Cost")])),
            el("tbody", [el("tr", el("th", m.model, scope="row"), el("td", f"{m.requests:,}"),
                            el("td", f"{m.tokens:,}"), el("td", usd(m.cost_micro_usd)))
                         for m in ov.per_model]), class_="models")
    limits_section: Markup = (
        el("section", el("h2", "Limits"), el("p", "Legacy key: no limits. Replace it with a new "
                                                  "key to set cost, token and rate limits.",
                                             class_="muted"),
           el("a", "Replace this legacy key", href=key_path(key.key_id, "replace"),
              class_="button primary"))
        if key.legacy else el("section", el("h2", "Usage against limits"), limits_table, facts)
    )
    return join(
        el("div", el("h1", key.name, " ", badges(key)), _key_actions(viewer, key),
           class_="page-head"),
        _key_facts(key),
        limits_section,
        el("section", el("h2", "Usage this period"), facts) if key.legacy else None,
        el("section", el("h2", "Models this period"), models),
        _history(history) if history else None,
        el("p", el("a", "Audit log of this key", href=href(f"{PREFIX}/audit", key_id=key.key_id)),
           " · ", el("a", "Budget events of this key",
                     href=href(f"{PREFIX}/events", key_id=key.key_id))),
    )


def _key_actions(viewer: Viewer, key: keys_pb.ApiKey) -> Markup:
    change = (el("a", "Replace", href=key_path(key.key_id, "replace"), class_="button secondary")
              if key.legacy else
              el("a", "Rotate", href=key_path(key.key_id, "rotate"), class_="button secondary"))
    return el("div", toggle(viewer, key, key_path(key.key_id)), change,
              el("a", "Delete", href=key_path(key.key_id, "delete"),
                 class_="button danger-outline"),
              class_="actions")


def _key_facts(key: keys_pb.ApiKey) -> Markup:
    labels = ", ".join(f"{k}={v}" for k, v in sorted(key.labels.items()))
    alerts = ", ".join(f"{p}%" for p in key.alert_thresholds_percent)
    return el(
        "dl",
        el("dt", "Key"), el("dd", el("code", key.masked_secret)),
        el("dt", "Key id"), el("dd", el("code", key.key_id)),
        el("dt", "Workspace"), el("dd", key.workspace),
        el("dt", "Project"), el("dd", _dash(key.project)),
        el("dt", "Environment"), el("dd", _dash(key.environment)),
        el("dt", "Labels"), el("dd", _dash(labels)),
        el("dt", "Allowed models"), el("dd", ", ".join(key.limits.allowed_models) or "any"),
        el("dt", "Alerts"), el("dd", _dash(alerts)),
        el("dt", "Created"), el("dd", when(key.created_at)),
        el("dt", "Expires"), el("dd", when(key.expires_at, key.HasField("expires_at"))),
        el("dt", "Last used"), el("dd", when(key.last_used_at, key.HasField("last_used_at"))),
        join(el("dt", "Previous secret"),
             el("dd", f"works until {when(key.previous_secret_expires_at)}"))
        if key.HasField("previous_secret_expires_at") else None,
        class_="facts key-facts",
    )


def _day_s(day: keys_pb.DailyUsage) -> int:
    return day.day.seconds  # the UTC day's start


def _history(history: dict[int, list[keys_pb.DailyUsage]]) -> Markup:
    sections = []
    for days, usage in sorted(history.items()):
        sections.append(el(
            "div",
            el("h3", f"Last {days} days"),
            el("div",
               daily_chart("Cost per day", [(_day_s(d), d.cost_micro_usd) for d in usage], usd),
               daily_chart("Tokens per day", [(_day_s(d), d.tokens) for d in usage], count),
               daily_chart("Requests per day", [(_day_s(d), d.requests) for d in usage], count),
               class_="charts"),
        ))
    return el("section", el("h2", "Usage history (UTC days)"), sections)


# --- delete, rotate ---------------------------------------------------------------------


def delete_confirm(
    viewer: Viewer, key: keys_pb.ApiKey, error: str, message: str, *, replaced: bool = False
) -> Markup:
    return join(
        el("h1", "Delete API key ", el("q", key.name)),
        replace_steps(4) if replaced else None,
        notice(message) if message else None,
        el("div",
           el("p", el("strong", "Deleting an API key is permanent and cannot be undone. "),
              "Requests with its secret are refused at once (unknown key), and its usage "
              "counters are deleted with it. Make sure the key is not in use before deleting "
              "it; to stop it for now, disable it instead."),
           class_="notice warning"),
        el("dl", el("dt", "Name"), el("dd", key.name), el("dt", "Key"),
           el("dd", el("code", key.masked_secret)), el("dt", "Key id"),
           el("dd", el("code", key.key_id)), el("dt", "Status"), el("dd", badges(key) or "enabled"),
           class_="facts"),
        post_form(
            viewer, key_path(key.key_id, "delete"),
            field("confirm_name", f"Type the key's name ({key.name}) to confirm",
                  text_input("confirm_name", "", error=error, autocomplete="off",
                             spellcheck="false", data_expect=key.name, required=True),
                  error=error),
            el("div",
               el("button", "Delete this key permanently", type="submit", class_="button danger",
                  data_confirm_button="1"),
               el("a", "Cancel", href=key_path(key.key_id), class_="button secondary"),
               class_="form-actions"),
            class_="delete-form",
        ),
    )


def rotate_confirm(viewer: Viewer, key: keys_pb.ApiKey, error: str) -> Markup:
    return join(
        el("h1", "Rotate the secret of ", el("q", key.name)),
        notice(error, "error") if error else None,
        el("p", "A new secret replaces the current one (", el("code", key.masked_secret),
           "). The key id, limits and usage stay. Integrations that use the current secret stop "
           "working when the grace period ends."),
        post_form(
            viewer, key_path(key.key_id, "rotate"),
            el("input", type="hidden", name="current", value=key.masked_secret),
            field("grace_period_s", "Grace period for the current secret",
                  select("grace_period_s", GRACE_CHOICES, "0")),
            el("div", el("button", "Rotate secret", type="submit", class_="button primary"),
               el("a", "Cancel", href=key_path(key.key_id), class_="button secondary"),
               class_="form-actions"),
        ),
    )


# --- audit, events ----------------------------------------------------------------------


def _key_filter(action: str, key_id: str, error: str) -> Markup:
    return el(
        "form",
        field("key_id", "Key id", text_input("key_id", key_id, error=error, placeholder="key_…",
                                             autocomplete="off"), error=error),
        el("div", el("button", "Filter", type="submit", class_="button secondary"),
           el("a", "Clear", href=action, class_="link"), class_="filter-actions"),
        method="get", action=action, class_="filters", role="search",
    )


def audit_log(
    entries: Sequence[keys_pb.AuditEntry], key_id: str, error: str, next_token: str
) -> Markup:
    rows = [el("tr", el("td", when(e.occurred_at), data_label="Time"),
               el("td", e.principal, data_label="Who"), el("td", e.action, data_label="Action"),
               el("td", el("a", e.name or e.key_id, href=key_path(e.key_id)) if e.key_id else "—",
                  data_label="Key"),
               el("td", el("code", e.key_id), data_label="Key id"),
               el("td", _dash(e.detail), data_label="Detail"))
            for e in entries]
    table = el("table", el("thead", el("tr", [el("th", h, scope="col") for h in (
        "Time", "Who", "Action", "Key", "Key id", "Detail")])), el("tbody", rows),
        class_="log") if rows else el("p", "No audit entries.", class_="empty")
    more = el("nav", el("a", "Older entries", href=href(
        f"{PREFIX}/audit", key_id=key_id, page_token=next_token), class_="button secondary"),
        class_="pager", aria_label="Pages") if next_token else None
    return join(el("h1", "Audit log"),
                el("p", "Every admin action, newest first. Never holds a secret.", class_="muted"),
                _key_filter(f"{PREFIX}/audit", key_id, error), table, more)


def budget_events(
    events: Sequence[keys_pb.BudgetEvent], key_id: str, error: str, next_cursor: str
) -> Markup:
    rows = []
    for e in events:
        if e.type == "key_expiring":
            what = f"expires {when(e.expires_at)} (warning {e.expiry_days} days ahead)"
        else:
            fmt = usd if e.budget == "cost" else count
            what = f"{e.budget} at {e.threshold_percent}%: {fmt(e.used)} of {fmt(e.limit)}"
        rows.append(el(
            "tr", el("td", when(e.occurred_at), data_label="Time"),
            el("td", e.type, data_label="Type"),
            el("td", el("a", e.key_id, href=key_path(e.key_id)), data_label="Key id"),
            el("td", e.workspace + (f" / {e.project}" if e.project else ""), data_label="Where"),
            el("td", what, data_label="What"),
        ))
    table = el("table", el("thead", el("tr", [el("th", h, scope="col") for h in (
        "Time", "Type", "Key id", "Where", "What")])), el("tbody", rows),
        class_="log") if rows else el("p", "No budget events.", class_="empty")
    pager = el("nav",
               el("a", "From the oldest", href=href(f"{PREFIX}/events", key_id=key_id, after="0"),
                  class_="button secondary"),
               el("a", "Newer events", href=href(f"{PREFIX}/events", key_id=key_id,
                                                  after=next_cursor),
                  class_="button secondary") if next_cursor else None,
               class_="pager", aria_label="Pages")
    return join(el("h1", "Budget events"),
                el("p", "Alerts when a key crosses a share of its cost or token limit, or nears "
                        "its expiry; oldest first.", class_="muted"),
                _key_filter(f"{PREFIX}/events", key_id, error), table, pager)


# --- login, errors ----------------------------------------------------------------------


def login(viewer: Viewer, error: str, next_path: str) -> Markup:
    return el(
        "div",
        el("h1", "Sign in"),
        el("p", "Sign in with an admin token (AIGW_ADMIN_TOKEN or one of --admin-token-file's).",
           class_="muted"),
        post_form(
            viewer, f"{PREFIX}/login",
            el("input", type="hidden", name="next", value=next_path),
            field("token", "Admin token", text_input(
                "token", "", type="password", autocomplete="current-password",
                required=True, error=error, autofocus=True), error=error),
            el("button", "Sign in", type="submit", class_="button primary"),
        ),
        class_="login",
    )


def problem(title: str, message: str) -> Markup:
    return join(el("h1", title), notice(message, "error"),
                el("p", el("a", "Back to API keys", href=f"{PREFIX}/keys")))
