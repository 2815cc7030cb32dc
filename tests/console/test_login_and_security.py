"""The console's guard: login with an admin token, sessions, CSRF, the security headers.

A sidecar with an admin token configured. The browser checks what a person
sees; a plain HTTP client checks statuses and headers exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aigw_sidecar.server.console.sessions import SESSION_COOKIE
from tests.console.conftest import (
    TOKEN,
    Http,
    Sidecar,
    Ui,
    deny_reason,
    start_sidecar,
    stop_sidecar,
    unique,
)

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


def _sign_in(ui: Ui, token: str) -> None:
    ui.fill("#f-token", token)
    ui.click("form button[type=submit]")


def test_with_a_token_configured_the_console_needs_a_login(
    token_ui: Ui, token_sidecar: Sidecar
) -> None:
    ui = token_ui
    ui.visit("/console/keys?project=x", "keys-before-login")
    assert ui.path.startswith("/console/login?next=")
    _sign_in(ui, "wrong-token-0123456789abcdef")
    ui.wait_for("#f-token-error")
    ui.shot("wrong-token")
    assert "not valid" in ui.text and ui.path == "/console/login"
    _sign_in(ui, TOKEN)
    ui.wait(lambda d: ui.path == "/console/keys?project=x")  # back where it was going
    ui.shot("signed-in")
    assert "admin" in ui.find(".who").text
    ui.find(".who button").click()  # log out
    ui.wait(lambda d: ui.path == "/console/login")
    ui.shot("signed-out")
    ui.visit("/console/keys", "keys-after-logout")
    assert ui.path.startswith("/console/login")


def test_the_session_cookie_is_http_only_strict_and_scoped_to_the_console(
    token_ui: Ui
) -> None:
    token_ui.visit("/console/login", "login")
    _sign_in(token_ui, TOKEN)
    token_ui.wait(lambda d: token_ui.path == "/console/keys")
    cookie = token_ui.driver.get_cookie(SESSION_COOKIE)
    assert cookie is not None
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/console")
    assert TOKEN not in cookie["value"]


def test_an_action_in_the_console_is_audited_under_the_principal_of_the_token(
    token_ui: Ui, token_sidecar: Sidecar
) -> None:
    ui = token_ui
    ui.visit("/console/keys/new", "new")
    _sign_in(ui, TOKEN)
    ui.wait_for("form.key-form")
    ui.fill("#f-name", name := unique("audited"))
    ui.click("form.key-form button[type=submit]")
    secret = ui.wait_for("input#secret").get_attribute("value")
    assert secret and token_sidecar.authorize(secret).allowed
    ui.visit("/console/audit", "audit")
    first = ui.find("table.log tbody tr").text
    assert "admin" in first and "create_key" in first and name in first


def test_a_tampered_or_missing_session_is_sent_to_the_login(token_sidecar: Sidecar) -> None:
    client = Http(token_sidecar.http_port)
    assert client.sign_in(TOKEN).status == 303
    assert client.get("/console/keys").status == 200
    body, _, mac = client.cookies[SESSION_COOKIE].partition(".")
    client.cookies[SESSION_COOKIE] = f"{body}.{mac[:-2]}AA"
    reply = client.get("/console/keys")
    assert reply.status == 303 and reply.headers["Location"].startswith("/console/login")
    reply = Http(token_sidecar.http_port).get("/console/keys/new")
    assert reply.status == 303 and reply.headers["Location"].startswith("/console/login")


def test_a_post_without_the_csrf_token_or_from_another_site_is_refused(
    token_sidecar: Sidecar
) -> None:
    client = Http(token_sidecar.http_port)
    client.sign_in(TOKEN)
    form = client.get("/console/keys/new")
    assert form.status == 200
    good = {"csrf_token": form.csrf_token(), "name": unique("csrf")}
    for sent, headers in (
        ({"name": good["name"]}, {}),
        ({**good, "csrf_token": "forged"}, {}),
        (good, {"Origin": "http://evil.example"}),
        (good, {"Origin": "null", "Sec-Fetch-Site": "cross-site"}),
        (good, {"Sec-Fetch-Site": "same-site"}),
    ):
        reply = client.post("/console/keys/new", sent, headers=headers)
        assert reply.status == 403, reply.body
        assert "sk-aigw-" not in reply.body
    created = client.post("/console/keys/new", good)
    assert created.status == 200 and 'id="secret"' in created.body
    assert created.headers["Cache-Control"] == "no-store"


def test_the_csrf_token_of_one_session_is_refused_in_another(token_sidecar: Sidecar) -> None:
    mine, theirs = Http(token_sidecar.http_port), Http(token_sidecar.http_port)
    mine.sign_in(TOKEN)
    theirs.sign_in(TOKEN)
    token = theirs.get("/console/keys/new").csrf_token()
    reply = mine.post("/console/keys/new", {"csrf_token": token, "name": unique("x")})
    assert reply.status == 403


def test_every_page_carries_the_security_headers(token_sidecar: Sidecar) -> None:
    client = Http(token_sidecar.http_port)
    replies = [client.get("/console/login"), client.get("/console/keys"), client.get("/")]
    client.sign_in(TOKEN)
    replies += [client.get(p) for p in (
        "/console/keys", "/console/keys/new", "/console/audit", "/console/events",
        "/console/nothing", "/console/keys/key_00000000000000000000",
        "/console/static/console.css", "/console/static/console.js",
    )]
    assert [r.status for r in replies] == [200, 303, 303, 200, 200, 200, 200, 404, 404, 200, 200]
    for reply in replies:
        assert reply.headers["Content-Security-Policy"] == CSP
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        assert reply.headers["Referrer-Policy"] == "no-referrer"
    for reply in replies[:-2]:
        assert reply.headers["Cache-Control"] == "no-store"
    for reply in replies:
        assert "<script>" not in reply.body and " onerror=" not in reply.body
        assert " style=" not in reply.body


@pytest.fixture
def fresh_token_sidecar(valkey_url: str, tmp_path: Path) -> Iterator[Sidecar]:
    """Its own process: the failed logins of this test block its address for a minute."""
    sidecar = start_sidecar(valkey_url, tmp_path, TOKEN)
    yield sidecar
    stop_sidecar(sidecar)


def test_failed_logins_are_limited_per_client_address(fresh_token_sidecar: Sidecar) -> None:
    client = Http(fresh_token_sidecar.http_port)
    page = client.get("/console/login")
    for _ in range(5):
        reply = client.post("/console/login", {"csrf_token": page.csrf_token(),
                                                "token": "wrong-token-0123456789abcdef"})
        assert reply.status == 401
    reply = client.post("/console/login", {"csrf_token": page.csrf_token(), "token": TOKEN})
    assert reply.status == 429 and "Too many" in reply.body
    assert 1 <= int(reply.headers["Retry-After"]) <= 60


def test_the_switch_works_without_javascript_and_never_redirects_off_the_console(
    token_sidecar: Sidecar
) -> None:
    created = token_sidecar.create_key(unique("nojs"))
    client = Http(token_sidecar.http_port)
    client.sign_in(TOKEN)
    csrf = client.get("/console/keys").csrf_token()
    path = f"/console/keys/{created.key.key_id}"
    reply = client.post(f"{path}/disable", {"csrf_token": csrf, "return": "/console/keys?x=1"})
    assert (reply.status, reply.headers["Location"]) == (303, "/console/keys?x=1")
    assert deny_reason(token_sidecar.authorize(created.secret)) == "DENY_REASON_KEY_DISABLED"
    for elsewhere in ("https://evil.example/", "//evil.example/console/", "/v1/keys"):
        reply = client.post(f"{path}/enable", {"csrf_token": csrf, "return": elsewhere})
        assert (reply.status, reply.headers["Location"]) == (303, "/console/keys")
    assert token_sidecar.authorize(created.secret).allowed
