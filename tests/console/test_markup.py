"""Markup: every value escaped by construction; forms: errors land next to their field."""

from __future__ import annotations

from aigw_sidecar.limits.kinds import LIMIT_KINDS
from aigw_sidecar.server.console.forms import (
    GENERAL,
    KeyForm,
    create_request,
    input_name,
    known_inputs,
    toggle_name,
)
from aigw_sidecar.server.console.markup import Markup, el, join

XSS = "<img src=x onerror=alert(1)>"


def test_text_and_attribute_values_are_escaped() -> None:
    html = el("a", XSS, href=f'" onclick="{XSS}', title="'x'")
    assert html == (
        '<a href="&quot; onclick=&quot;&lt;img src=x onerror=alert(1)&gt;" '
        'title="&#x27;x&#x27;">&lt;img src=x onerror=alert(1)&gt;</a>'
    )


def test_markup_nests_without_being_escaped_twice_and_none_is_left_out() -> None:
    inner = el("b", "a & b")
    assert el("p", inner, None, [el("i", "x"), "<"]) == "<p><b>a &amp; b</b><i>x</i>&lt;</p>"
    assert join(Markup("<br>"), "<br>") == "<br>&lt;br&gt;"
    assert el("input", name="n", required=True, disabled=False) == '<input name="n" required>'


def test_a_limit_counts_only_when_its_toggle_is_on() -> None:
    kind = LIMIT_KINDS[1]
    form = KeyForm(values={"name": "k", input_name(kind): "500"})
    request = create_request(form)
    assert request is not None and not request.limits.HasField(kind.attr)
    form.values[toggle_name(kind)] = "on"
    request = create_request(form)
    assert request is not None and getattr(request.limits, kind.attr) == 500


def test_the_reset_period_applies_only_with_a_limit_that_resets() -> None:
    rolling = next(k for k in LIMIT_KINDS if not k.resets_with_period)
    periodic = next(k for k in LIMIT_KINDS if k.resets_with_period)
    values = {"name": "k", "limits.reset_period": "RESET_PERIOD_DAILY",
              toggle_name(rolling): "on", input_name(rolling): "5"}
    request = create_request(KeyForm(values=dict(values)))
    assert request is not None and request.limits.reset_period == 0
    values |= {toggle_name(periodic): "on", input_name(periodic): "5"}
    request = create_request(KeyForm(values=values))
    assert request is not None and request.limits.reset_period != 0


def test_a_service_error_lands_on_the_input_its_field_names() -> None:
    form = KeyForm()
    form.error_from_service("limits.token_limit: must be positive (leave it unset for no limit)")
    form.error_from_service("limits.allowed_models[2]: must not be an API key secret")
    form.error_from_service("update_mask: names no field to update")
    assert set(form.errors) == {"limits.token_limit", "limits.allowed_models", GENERAL}
    assert {input_name(kind) for kind in LIMIT_KINDS} <= known_inputs()


def test_a_whole_number_field_refuses_text_before_the_service_sees_it() -> None:
    kind = LIMIT_KINDS[1]
    form = KeyForm(values={"name": "k", toggle_name(kind): "on", input_name(kind): "many"})
    assert create_request(form) is None
    assert form.errors == {input_name(kind): f"{input_name(kind)}: must be a whole number"}
