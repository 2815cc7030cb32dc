"""Session cookies, CSRF tokens and the login throttle (pure code, a test clock)."""

from __future__ import annotations

from aigw_sidecar.server.admin_auth import AdminAuthenticator, AdminToken, load_admin_tokens
from aigw_sidecar.server.console.sessions import SESSION_TTL_S, LoginThrottle, SessionCodec


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _authenticator(*tokens: str) -> AdminAuthenticator:
    found: list[AdminToken] = []
    for token in tokens:
        found += load_admin_tokens(token, "", "admin")
    return AdminAuthenticator(found)


def test_a_session_reads_back_as_signed() -> None:
    codec = SessionCodec(b"k" * 32)
    session = codec.new("admin")
    assert codec.decode(codec.encode(session)) == session


def test_an_altered_cookie_is_no_session() -> None:
    codec = SessionCodec(b"k" * 32)
    cookie = codec.encode(codec.new("admin"))
    body, mac = cookie.split(".")
    forged = codec.encode(codec.new("root")).split(".")[0]
    for bad in (f"{forged}.{mac}", f"{body}.{mac[:-1]}", body, "", "a.b.c", "!!.??"):
        assert codec.decode(bad) is None, bad


def test_a_session_expires() -> None:
    clock = Clock()
    codec = SessionCodec(b"k" * 32, clock)
    cookie = codec.encode(codec.new("admin"))
    clock.now += SESSION_TTL_S - 1
    assert codec.decode(cookie) is not None
    clock.now += 1
    assert codec.decode(cookie) is None


def test_every_process_with_the_same_tokens_accepts_a_session_and_others_do_not() -> None:
    first = _authenticator("token-a-0123456789", "token-b-0123456789")
    same = _authenticator("token-b-0123456789", "token-a-0123456789")
    other = _authenticator("token-c-0123456789")
    cookie = SessionCodec(first.derive_key("console session")).encode(
        SessionCodec(b"").new("admin")
    )
    assert SessionCodec(same.derive_key("console session")).decode(cookie) is not None
    assert SessionCodec(other.derive_key("console session")).decode(cookie) is None
    assert first.derive_key("console session") != first.derive_key("something else")


def test_the_csrf_token_belongs_to_one_session() -> None:
    codec = SessionCodec(b"k" * 32)
    one, two = codec.new("admin"), codec.new("admin")
    assert codec.csrf_ok(one, codec.csrf_token(one))
    assert not codec.csrf_ok(one, codec.csrf_token(two))
    assert not codec.csrf_ok(one, "")


def test_five_failed_logins_in_a_minute_block_that_address_only() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock_s=clock)
    for _ in range(5):
        assert throttle.retry_after_s("10.0.0.1") == 0
        throttle.failed("10.0.0.1")
    assert 59 <= throttle.retry_after_s("10.0.0.1") <= 60
    assert throttle.retry_after_s("10.0.0.2") == 0
    clock.now += 60
    assert throttle.retry_after_s("10.0.0.1") == 0


def test_a_successful_login_clears_the_failures() -> None:
    throttle = LoginThrottle(clock_s=Clock())
    for _ in range(4):
        throttle.failed("10.0.0.1")
    throttle.succeeded("10.0.0.1")
    for _ in range(4):
        throttle.failed("10.0.0.1")
    assert throttle.retry_after_s("10.0.0.1") == 0
