"""Console sessions: an HMAC-signed cookie, its CSRF token, and the login throttle.

A session is ``(principal, expires_at_s, nonce)`` in a cookie signed with a key
derived from the configured admin token digests (``AdminAuthenticator.derive_key``),
so every worker and replica with the same tokens accepts it and nothing is kept
on the server. Every visitor gets one: before login its principal is empty (it
still carries the nonce the login form's CSRF token comes from); a login issues a
new nonce. The CSRF token of a session is an HMAC of its nonce, checked in
constant time on every POST.

Without admin tokens the key is a constant: the cookie then guards nothing but
the CSRF nonce (a double-submit token), and only loopback clients are served.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

SESSION_COOKIE = "aigw_console"
SESSION_TTL_S = 8 * 3600
# Failed logins per client address within LOGIN_WINDOW_S before the next is refused.
MAX_LOGIN_FAILURES = 5
LOGIN_WINDOW_S = 60.0
_MAX_TRACKED_ADDRESSES = 10_000


@dataclass(frozen=True, slots=True)
class Session:
    principal: str  # "" before login
    expires_at_s: int
    nonce: str

    @property
    def signed_in(self) -> bool:
        return bool(self.principal)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    """Signs and reads session cookies, and derives their CSRF tokens."""

    def __init__(self, key: bytes, clock_s: Callable[[], float] = time.time) -> None:
        self._key = key
        self._clock_s = clock_s

    def new(self, principal: str = "") -> Session:
        return Session(
            principal, int(self._clock_s()) + SESSION_TTL_S, secrets.token_urlsafe(18)
        )

    def encode(self, session: Session) -> str:
        payload = json.dumps(
            {"p": session.principal, "e": session.expires_at_s, "n": session.nonce},
            separators=(",", ":"),
        ).encode()
        return f"{_b64(payload)}.{_b64(self._mac(b'session', payload))}"

    def decode(self, cookie: str | None) -> Session | None:
        """The session of a cookie, or None: absent, altered, malformed or expired."""
        if not cookie or cookie.count(".") != 1:
            return None
        body, mac = cookie.split(".")
        try:
            payload, given = _unb64(body), _unb64(mac)
            if not hmac.compare_digest(given, self._mac(b"session", payload)):
                return None
            data = json.loads(payload)
            session = Session(str(data["p"]), int(data["e"]), str(data["n"]))
        except (binascii.Error, ValueError, KeyError, TypeError):
            return None
        if session.expires_at_s <= self._clock_s() or not session.nonce:
            return None
        return session

    def csrf_token(self, session: Session) -> str:
        return _b64(self._mac(b"csrf", session.nonce.encode()))

    def csrf_ok(self, session: Session, given: str) -> bool:
        return hmac.compare_digest(self.csrf_token(session).encode(), given.encode())

    def _mac(self, purpose: bytes, payload: bytes) -> bytes:
        return hmac.new(self._key, purpose + b"\0" + payload, hashlib.sha256).digest()


@dataclass
class LoginThrottle:
    """Failed logins per client address in a sliding window (this process's count)."""

    max_failures: int = MAX_LOGIN_FAILURES
    window_s: float = LOGIN_WINDOW_S
    clock_s: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def retry_after_s(self, address: str) -> float:
        """0 when ``address`` may try to log in now, else the seconds to wait."""
        recent = self._recent(address)
        if len(recent) < self.max_failures:
            return 0.0
        return max(1.0, recent[0] + self.window_s - self.clock_s())

    def failed(self, address: str) -> None:
        if len(self._failures) >= _MAX_TRACKED_ADDRESSES:
            for stale in [a for a in self._failures if not self._recent(a)]:
                del self._failures[stale]
            while len(self._failures) >= _MAX_TRACKED_ADDRESSES:  # the oldest entries go
                del self._failures[next(iter(self._failures))]
        self._failures.setdefault(address, deque()).append(self.clock_s())

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)

    def _recent(self, address: str) -> deque[float]:
        recent = self._failures.get(address, deque())
        horizon = self.clock_s() - self.window_s
        while recent and recent[0] <= horizon:
            recent.popleft()
        return recent
