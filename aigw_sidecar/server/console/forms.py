"""The create-key form: its fields (from the limit kinds), parsing, and errors by field.

Inputs are named by the request's field paths (``name``, ``limits.token_limit``,
``limits.cost_limit_usd``, ``alert_thresholds_percent``), which are the names the
service's InvalidArgument messages start with; so an error lands next to its
input in the service's own words. A limit counts only when its toggle
(``on.<kind name>``) is checked; the reset period only when a limit that resets
with it is on (the product's rule). Parsing checks only what a message cannot
carry (a number that is not a number); the service validates the rest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import cast

from aigw_sidecar.api.v1 import keys_pb2 as keys_pb
from aigw_sidecar.limits.kinds import LIMIT_KINDS, LimitKind, Unit, Window

# The kinds on the form itself, as the product page shows them; the others (and
# any new kind) are under "Advanced".
MAIN_KINDS = ("cost_limit", "token_limit", "requests_per_minute")
RESET_PERIOD = "limits.reset_period"
GENERAL = ""  # errors that name no input of the form
_FIELD = re.compile(r"^([a-z_]+(?:\.[a-z_]+)*)")


def toggle_name(kind: LimitKind) -> str:
    return f"on.{kind.name}"


def input_name(kind: LimitKind) -> str:
    return f"limits.{kind.input_field}"


def kind_title(kind: LimitKind) -> str:
    """``Cost limit (USD)``, ``Tokens per minute``, ``Max parallel requests``."""
    title = kind.name.replace("_", " ").capitalize()
    return f"{title} (USD)" if kind.unit is Unit.MICRO_USD else title


def kind_hint(kind: LimitKind) -> str:
    if kind.window is Window.PERIOD:
        return "Counts until the reset period starts a new one."
    if kind.window in (Window.ROLLING_REQUESTS, Window.ROLLING_TOKENS):
        return f"A rolling {kind.window_s}-second window; never follows the reset period."
    if kind.window is Window.FIXED_REQUESTS:
        return "Per UTC day (00:00 to 00:00 UTC); never follows the reset period."
    return "Requests in flight at once."


def period_choices() -> list[tuple[str, str]]:
    """(value, label) of every reset period the proto names."""
    return [
        (v.name, v.name.removeprefix("RESET_PERIOD_").capitalize())
        for v in keys_pb.ResetPeriod.DESCRIPTOR.values
        if v.number != 0
    ]


@dataclass
class KeyForm:
    """The submitted values (to show again) and the errors by input name."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def value(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)

    def checked(self, name: str) -> bool:
        return self.values.get(name) == "on"

    def error_from_service(self, message: str, *, taken: bool = False) -> None:
        """Put a service error next to the input its field names (else at the top)."""
        if taken:
            self.errors["name"] = message
            return
        match = _FIELD.match(message)
        name = match.group(1) if match else GENERAL
        self.errors[name if name in known_inputs() else GENERAL] = message


def known_inputs() -> set[str]:
    return {
        "name", "workspace", "project", "environment", "labels", "expires_at",
        RESET_PERIOD, "limits.allowed_models", "alert_thresholds_percent",
        "alert_expiry_days", *(input_name(kind) for kind in LIMIT_KINDS),
    }


def parse_labels(text: str) -> dict[str, str]:
    """``key=value`` per line (or comma-separated); ValueError names the line."""
    labels: dict[str, str] = {}
    for number, raw in enumerate(re.split(r"[\n,]", text), start=1):
        line = raw.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"labels: entry {number} is not key=value")
        labels[key.strip()] = value.strip()
    return labels


def labels_text(labels: Mapping[str, str]) -> str:
    return "\n".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _words(text: str) -> list[str]:
    return [word for word in re.split(r"[\s,]+", text) if word]


def create_request(form: KeyForm) -> keys_pb.CreateKeyRequest | None:
    """The CreateKeyRequest of a submitted form, or None with ``form.errors`` set."""
    values = form.values
    request = keys_pb.CreateKeyRequest(
        name=values.get("name", ""),
        workspace=values.get("workspace", "").strip(),
        project=values.get("project", "").strip(),
        environment=values.get("environment", "").strip(),
    )
    try:
        request.labels.update(parse_labels(values.get("labels", "")))
    except ValueError as exc:
        form.errors["labels"] = str(exc)
    resets = False
    for kind in LIMIT_KINDS:
        name = input_name(kind)
        text = values.get(name, "").strip()
        if not form.checked(toggle_name(kind)):
            continue
        if not text:
            form.errors[name] = f"{name}: enter a value, or turn this limit off"
            continue
        resets = resets or kind.resets_with_period
        if kind.unit is Unit.MICRO_USD:
            setattr(request.limits, kind.input_field, text)
        elif re.fullmatch(r"-?\d{1,19}", text):
            setattr(request.limits, kind.input_field, int(text))
        else:
            form.errors[name] = f"{name}: must be a whole number"
    period = values.get(RESET_PERIOD, "")
    if resets and period:
        if period not in keys_pb.ResetPeriod.keys():
            form.errors[RESET_PERIOD] = f"{RESET_PERIOD}: choose one of the periods listed"
        else:
            request.limits.reset_period = cast(
                "keys_pb.ResetPeriod", keys_pb.ResetPeriod.Value(period)
            )
    # One per line or comma-separated; spaces stay, for the service to refuse by name.
    models = re.split(r"[\n,]", values.get("limits.allowed_models", ""))
    request.limits.allowed_models.extend(m.strip() for m in models if m.strip())
    _set_alerts(form, request)
    expires = values.get("expires_at", "").strip()
    if expires:
        try:
            day = date.fromisoformat(expires)
        except ValueError:
            form.errors["expires_at"] = "expires_at: choose a date"
        else:
            # The key works through the chosen day (UTC) and stops when it ends.
            end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
            request.expires_at.FromDatetime(end)
    return None if form.errors else request


def _set_alerts(form: KeyForm, request: keys_pb.CreateKeyRequest) -> None:
    thresholds = _words(form.values.get("alert_thresholds_percent", ""))
    if not all(re.fullmatch(r"\d{1,6}", t) for t in thresholds):
        form.errors["alert_thresholds_percent"] = (
            "alert_thresholds_percent: whole percentages, e.g. 80, 100"
        )
    else:
        request.alert_thresholds_percent.extend(int(t) for t in thresholds)
    days = form.values.get("alert_expiry_days", "").strip()
    if days:
        if re.fullmatch(r"\d{1,6}", days):
            request.alert_expiry_days = int(days)
        else:
            form.errors["alert_expiry_days"] = "alert_expiry_days: must be a whole number"


def form_of_key(key: keys_pb.ApiKey, name: str) -> KeyForm:
    """A form prefilled from a key (the replacement of a legacy key)."""
    return KeyForm(values={
        "name": name, "workspace": key.workspace, "project": key.project,
        "environment": key.environment, "labels": labels_text(key.labels),
    })
