"""The console's key pages in Chromium: create, toggle, delete, rotate, replace, overview.

No admin token here (loopback, no login). Each test checks the page's effect
where it matters: an Authorize over gRPC with the secret the page showed.
"""

from __future__ import annotations

import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from aigw_sidecar.admin.render import SECRET_WARNING
from aigw_sidecar.api.v1 import keys_pb2
from tests.console.conftest import (
    Sidecar,
    Ui,
    create_in_page,
    deny_reason,
    secret_shown,
    unique,
)


def test_a_key_created_in_the_page_shows_its_secret_once_and_it_authorizes(
    ui: Ui, open_sidecar: Sidecar
) -> None:
    name = unique("web")
    secret = create_in_page(
        ui, name, project="shop", environment="production", **{
            "limits.cost_limit_usd": "10", "limits.token_limit": "5000",
            "limits.requests_per_minute": "60", "reset_period": "RESET_PERIOD_MONTHLY",
        },
    )
    assert secret.startswith("sk-aigw-")
    assert SECRET_WARNING in ui.text
    assert ui.find("button.copy").is_displayed()  # console.js showed the copy button
    decision = open_sidecar.authorize(secret)
    assert decision.allowed, decision
    # Reloading the page loses the secret (the POST is not sent again).
    ui.driver.refresh()
    ui.wait_for("form.key-form")
    assert secret not in ui.driver.page_source
    ui.shot("after-reload")
    # The list shows the key with a bar per limit it has.
    ui.visit(f"/console/keys?name={name}", "list")
    row = ui.find("table.keys tbody tr")
    assert name in row.text and "legacy" not in row.text
    labels = [e.text for e in row.find_elements(By.CSS_SELECTOR, ".bar-label")]
    assert labels == ["cost", "tokens", "requests/min"]
    assert secret not in ui.driver.page_source


def test_form_errors_appear_next_to_their_field_in_the_services_words(
    ui: Ui, open_sidecar: Sidecar
) -> None:
    taken = open_sidecar.create_key(unique("taken")).key.name
    ui.visit("/console/keys/new", "new")
    ui.fill("#f-name", taken)
    ui.click("#f-limits-token-limit-on")
    ui.fill("#f-limits-token-limit", "0")
    ui.click("form.key-form button[type=submit]")
    error = ui.wait_for("#f-limits-token-limit-error")
    assert error.text == "limits.token_limit: must be positive (leave it unset for no limit)"
    assert ui.find("#f-limits-token-limit").get_attribute("aria-invalid") == "true"
    ui.shot("token-limit-error")
    ui.fill("#f-limits-token-limit", "1000")
    ui.click("form.key-form button[type=submit]")
    error = ui.wait_for("#f-name-error")
    assert "already exists" in error.text and taken in error.text
    ui.shot("name-taken")


def test_toggling_a_key_off_in_the_list_denies_it_and_on_again_allows_it(
    ui: Ui, open_sidecar: Sidecar
) -> None:
    created = open_sidecar.create_key(unique("toggle"), requests_per_minute=100)
    ui.visit(f"/console/keys?name={created.key.name}", "list")
    switch = ui.find("button.switch")
    assert switch.get_attribute("aria-checked") == "true"
    switch.click()
    ui.wait(lambda d: ui.find("button.switch").get_attribute("aria-checked") == "false")
    ui.shot("off")
    assert deny_reason(open_sidecar.authorize(created.secret)) == "DENY_REASON_KEY_DISABLED"
    ui.driver.refresh()  # the server agrees with what the switch shows
    assert ui.find("button.switch").get_attribute("aria-checked") == "false"
    assert "disabled" in ui.find("table.keys tbody tr").text
    ui.find("button.switch").click()
    ui.wait(lambda d: ui.find("button.switch").get_attribute("aria-checked") == "true")
    ui.shot("on")
    assert open_sidecar.authorize(created.secret).allowed


def test_deleting_needs_the_keys_name_typed_and_then_the_key_is_unknown(
    ui: Ui, open_sidecar: Sidecar
) -> None:
    created = open_sidecar.create_key(unique("doomed"))
    ui.visit(f"/console/keys?name={created.key.name}", "list")
    ui.click_link("Delete", within="table.keys")
    ui.wait_for("form.delete-form")
    assert "permanent" in ui.text and created.key.name in ui.find("h1").text
    ui.fill("#f-confirm-name", created.key.name + "x")
    assert not ui.find("button[data-confirm-button]").is_enabled()
    # The server checks the name too: submit the wrong one past the disabled button.
    ui.driver.execute_script("document.querySelector('form.delete-form').submit()")
    ui.wait_for("#f-confirm-name-error")
    ui.shot("wrong-name")
    assert "nothing was deleted" in ui.text
    assert open_sidecar.authorize(created.secret).allowed
    ui.fill("#f-confirm-name", created.key.name)
    ui.click("button[data-confirm-button]")
    ui.wait(lambda d: ui.path.startswith("/console/keys?notice=deleted"))
    ui.shot("deleted")
    assert "The key was deleted." in ui.text
    assert deny_reason(open_sidecar.authorize(created.secret)) == "DENY_REASON_KEY_UNKNOWN"


def test_rotating_shows_the_new_secret_once_and_the_old_one_stops(
    ui: Ui, open_sidecar: Sidecar
) -> None:
    created = open_sidecar.create_key(unique("rotate"), token_limit=1000)
    ui.visit(f"/console/keys/{created.key.key_id}/rotate", "rotate")
    ui.click("form button[type=submit]")
    secret = secret_shown(ui)
    ui.shot("new-secret")
    assert secret != created.secret
    assert open_sidecar.authorize(secret).allowed
    assert not open_sidecar.authorize(created.secret).allowed
    # A reload shows the confirmation again (for the new secret), never the secret.
    ui.driver.refresh()
    ui.wait_for("form select#f-grace-period-s")
    assert secret not in ui.driver.page_source
    assert secret[-4:] in ui.text  # the masked secret of the new one


def test_a_legacy_key_is_replaced_in_four_steps(ui: Ui, open_sidecar: Sidecar) -> None:
    legacy, legacy_secret = open_sidecar.import_legacy(
        unique("old"), project="shop", environment="production", labels={"team": "checkout"}
    )
    ui.visit(f"/console/keys?name={legacy.name}", "list")
    row = ui.find("table.keys tbody tr")
    assert "legacy — no limits" in row.text and ".bar-label" not in row.get_attribute("innerHTML")
    # Step 1 and 2: from the list, a new key prefilled from the legacy one.
    ui.click_link("Replace", within="table.keys")
    ui.wait_for("ol.steps")
    ui.shot("replace-form")
    assert ui.find("#f-name").get_attribute("value") == f"{legacy.name}-new"
    assert ui.find("#f-project").get_attribute("value") == "shop"
    assert ui.find("#f-environment").get_attribute("value") == "production"
    assert ui.find("#f-labels").get_attribute("value") == "team=checkout"
    ui.click("#f-limits-requests-per-minute-on")
    ui.fill("#f-limits-requests-per-minute", "120")
    ui.click("form.key-form button[type=submit]")
    # Step 3: the new secret, once; it works, and so does the legacy one still.
    secret = secret_shown(ui)
    ui.shot("replacement-secret")
    assert ui.find("ol.steps li.current").text.startswith("Update every integration")
    assert open_sidecar.authorize(secret).allowed
    assert open_sidecar.authorize(legacy_secret).allowed
    # Step 4: disable the legacy key, then delete it.
    ui.find("main").find_element(By.XPATH, "//button[starts-with(., 'Disable legacy key')]").click()
    ui.wait_for("form.delete-form")
    ui.shot("legacy-disabled")
    assert "The legacy key is disabled" in ui.text
    assert deny_reason(open_sidecar.authorize(legacy_secret)) == "DENY_REASON_KEY_DISABLED"
    ui.fill("#f-confirm-name", legacy.name)
    ui.click("button[data-confirm-button]")
    ui.wait(lambda d: ui.path.startswith("/console/keys?notice=deleted"))
    assert deny_reason(open_sidecar.authorize(legacy_secret)) == "DENY_REASON_KEY_UNKNOWN"
    assert open_sidecar.authorize(secret).allowed


def _no_markup_ran(ui: Ui) -> None:
    with pytest.raises(NoAlertPresentException):
        ui.driver.switch_to.alert  # reading it raises when no alert is open
    assert ui.find_all("img") == []


def test_a_key_named_like_markup_shows_as_text(ui: Ui, open_sidecar: Sidecar) -> None:
    name = f"<img src=x onerror=alert(1)> {unique('x')}"
    create_in_page(ui, name)
    _no_markup_ran(ui)
    key_id = ui.find("dl.facts code").text
    assert name in ui.text
    for path in ("/console/keys?name=onerror", f"/console/keys/{key_id}",
                 f"/console/keys/{key_id}/delete", f"/console/audit?key_id={key_id}"):
        ui.visit(path)
        _no_markup_ran(ui)
        assert name in ui.text, path


def test_the_overview_shows_usage_against_every_limit(ui: Ui, open_sidecar: Sidecar) -> None:
    created = open_sidecar.create_key(
        unique("busy"), cost_limit_usd="5", token_limit=100_000, requests_per_minute=50,
        max_parallel_requests=4, reset_period=4,
    )
    for model, tokens, cost in (("gpt-4o", 6000, 1_250_000), ("gpt-4o-mini", 1500, 250_000)):
        open_sidecar.use(created.secret, tokens=tokens, cost_micro_usd=cost, model=model)
    ui.visit(f"/console/keys/{created.key.key_id}", "overview")
    table = ui.find("table.usage-table").text
    assert "$1.50" in table and "$5.00" in table and "30%" in table
    assert "7,500 tokens" in table and "100,000 tokens" in table
    assert "requests/min" in table and "2 requests" in table
    facts = ui.find("main").text
    assert "Requests in the last 60 s\n2" in facts
    assert "Reservations in flight\n0 holding 0 tokens and $0" in facts
    assert "Current period\n" in facts and "00:00 UTC →" in facts
    models = [row.text for row in ui.find_all("table.models tbody tr")]
    assert models[0].startswith("gpt-4o 1 6,000 $1.25")
    assert len(ui.find_all("table.usage-table svg.bar")) == 4


def test_the_keys_list_filters_searches_and_pages(ui: Ui, open_sidecar: Sidecar) -> None:
    project = unique("many")
    names = [open_sidecar.create_key(f"{project}-{i:02d}", project=project).key.name
             for i in range(27)]
    ui.visit(f"/console/keys?project={project}", "first-page")
    assert len(ui.find_all("table.keys tbody tr")) == 25
    ui.click_link("Next page")
    ui.wait(lambda d: "page_token=" in ui.path)
    ui.shot("second-page")
    assert len(ui.find_all("table.keys tbody tr")) == 2
    ui.visit("/console/keys", "all")
    ui.fill("#f-name", names[3])
    Select(ui.find("#f-status")).select_by_value("KEY_STATUS_ENABLED")
    ui.click("form.filters button[type=submit]")
    ui.wait(lambda d: "name=" in ui.path)
    ui.shot("searched")
    rows = ui.find_all("table.keys tbody tr")
    assert [r.find_element(By.CSS_SELECTOR, ".key-name").text for r in rows] == [names[3]]
    ui.visit(f"/console/keys?project={project}&status=KEY_STATUS_DISABLED", "disabled-only")
    assert "No API keys match." in ui.text


def test_the_audit_log_and_budget_events_filter_by_key(ui: Ui, open_sidecar: Sidecar) -> None:
    created = open_sidecar.create_key(unique("alerts"), cost_limit_usd="1")
    open_sidecar.keys.UpdateKey(keys_pb2.UpdateKeyRequest(
        key_id=created.key.key_id, alert_thresholds_percent=[50],
        update_mask=FieldMask(paths=["alert_thresholds_percent"]),
    ))
    open_sidecar.use(created.secret, tokens=100, cost_micro_usd=600_000, model="gpt-4o")
    ui.visit(f"/console/audit?key_id={created.key.key_id}", "audit")
    actions = [r.text for r in ui.find_all("table.log tbody tr")]
    assert len(actions) == 2 and "update_key" in actions[0] and "create_key" in actions[1]
    assert "anonymous" in actions[0]
    ui.visit(f"/console/events?key_id={created.key.key_id}&after=0", "events")
    events = [r.text for r in ui.find_all("table.log tbody tr")]
    assert len(events) == 1 and "budget_threshold" in events[0] and "cost at 50%" in events[0]
    ui.visit("/console/events?key_id=not-a-key", "bad-filter")
    assert "key_id: is not a key id" in ui.find("#f-key-id-error").text


def test_the_keys_list_shows_a_usage_bar_per_limit(ui: Ui, open_sidecar: Sidecar) -> None:
    """docs/console-keys.png: keys with limits and usage, on a laptop and on a phone."""
    project = "demo"
    shop = open_sidecar.create_key(
        "checkout-service", project=project, environment="production", cost_limit_usd="25",
        token_limit=2_000_000, requests_per_minute=600, reset_period=4,
    )
    bot = open_sidecar.create_key(
        "support-bot", project=project, environment="staging", cost_limit_usd="5",
        tokens_per_minute=20_000, reset_period=2,
    )
    batch = open_sidecar.create_key(
        "nightly-batch", project=project, environment="production",
        token_limit=100_000, requests_per_day=5000, max_parallel_requests=4,
    )
    open_sidecar.create_key("sandbox", project=project, environment="development")
    for secret, n, tokens, cost in ((shop.secret, 12, 40_000, 1_000_000),
                                    (bot.secret, 5, 4000, 1_000_000),
                                    (batch.secret, 9, 10_000, 0)):
        for i in range(n):
            open_sidecar.use(secret, tokens=tokens, cost_micro_usd=cost,
                             model="gpt-4o-mini" if i % 3 else "gpt-4o")
    open_sidecar.import_legacy("legacy-app", project=project, environment="production")
    open_sidecar.keys.DisableKey(keys_pb2.DisableKeyRequest(key_id=bot.key.key_id))
    ui.visit(f"/console/keys?project={project}", "keys-list")
    rows = ui.find_all("table.keys tbody tr")
    assert len(rows) == 5
    bars = {r.find_element(By.CSS_SELECTOR, ".key-name").text:
            [e.text for e in r.find_elements(By.CSS_SELECTOR, ".bar-label")] for r in rows}
    assert bars[shop.key.name] == ["cost", "tokens", "requests/min"]
    assert bars[batch.key.name] == ["tokens", "requests/day", "in flight"]
    assert "$12.00 of $25.00" in ui.text
    ui.shot("keys-list-phone", width=390)
