"""Admin authentication: KeyManagement calls must carry ``authorization: Bearer <token>``.

Tokens come from ``AIGW_ADMIN_TOKEN`` (principal ``--admin-principal``) and from
``--admin-token-file`` (one token per line, ``<token>`` or ``<principal> <token>``;
``#`` starts a comment). They are compared in constant time against SHA-256
digests, so neither a token's content nor its length shows in the timing.

``AdminAuthInterceptor`` guards every method of the protected services; a call
without a valid token ends UNAUTHENTICATED with one fixed message, before any
servicer or store code runs. The principal of an accepted call is available to
the domain (audit trail) through ``current_principal`` for that call only.

With no token configured every call is served as ``anonymous``. A call that
carries a token anyway is served as ``TOKEN_IGNORED`` (so the audit trail says a
token was presented), answered with the trailing metadata ``aigw-admin-auth:
none`` (the HTTP API sends it as a response header) so the client can warn, and
the first such call is logged as a warning: a client that believes it
authenticates is talking to an open admin plane.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

log = logging.getLogger(__name__)

UNAUTHENTICATED_MESSAGE = "missing or invalid admin token"
ANONYMOUS = "anonymous"  # the principal when no admin token is configured
# ... when none is configured and the call carried a token all the same.
TOKEN_IGNORED = "anonymous (token ignored: none configured)"
# Trailing metadata (gRPC) and response header (HTTP) of such a call.
AUTH_NOTICE = ("aigw-admin-auth", "none")
_principal: contextvars.ContextVar[str] = contextvars.ContextVar(
    "aigw_admin_principal", default=ANONYMOUS
)


def current_principal() -> str:
    """Who is making the current admin call."""
    return _principal.get()


@contextmanager
def acting_as(principal: str) -> Iterator[None]:
    """The principal of an admin call that did not come over gRPC (the HTTP API)."""
    reset = _principal.set(principal)
    try:
        yield
    finally:
        _principal.reset(reset)


@dataclass(frozen=True, slots=True)
class AdminToken:
    principal: str
    digest: bytes  # SHA-256 of the token; the token itself is not kept

    def __repr__(self) -> str:
        return f"AdminToken(principal={self.principal!r})"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def parse_token_file(text: str, default_principal: str) -> list[AdminToken]:
    """Lines ``<token>`` or ``<principal> <token>``; blank lines and ``#`` comments skipped."""
    tokens = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) == 1:
            principal, token = default_principal, parts[0]
        elif len(parts) == 2:
            principal, token = parts
        else:
            raise ValueError(f"line {number}: expected '<token>' or '<principal> <token>'")
        if len(token) < 16:
            raise ValueError(f"line {number}: an admin token must be at least 16 characters")
        tokens.append(AdminToken(principal, _digest(token)))
    return tokens


def load_admin_tokens(env_token: str, token_file: str, principal: str) -> list[AdminToken]:
    """Every configured admin token; raises RuntimeError on an unusable configuration."""
    tokens: list[AdminToken] = []
    if env_token:
        if len(env_token) < 16:
            raise RuntimeError("AIGW_ADMIN_TOKEN must be at least 16 characters")
        tokens.append(AdminToken(principal, _digest(env_token)))
    if token_file:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
            from_file = parse_token_file(text, principal)
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"admin token file {token_file}: {exc}") from None
        if not from_file:
            raise RuntimeError(f"admin token file {token_file} holds no token")
        tokens.extend(from_file)
    return tokens


class AdminAuthenticator:
    """Resolves the bearer token of a call's metadata to a principal, or None."""

    def __init__(self, tokens: Sequence[AdminToken]) -> None:
        self._tokens = tuple(tokens)
        self._warned_ignored_token = False

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def anonymous_principal(self, metadata: Iterable[tuple[str, Any]] | None) -> str:
        """The principal of a call when no token is configured (``enabled`` is False).

        ``TOKEN_IGNORED`` when the call carried a bearer token; the first time, a warning.
        """
        if not _bearer_token(metadata):
            return ANONYMOUS
        if not self._warned_ignored_token:
            self._warned_ignored_token = True
            log.warning(
                "an admin call carried an admin token, but the sidecar has none configured: "
                "the token is ignored and every local caller is served (audited as %r); "
                "set AIGW_ADMIN_TOKEN or --admin-token-file (logged once)", TOKEN_IGNORED,
            )
        return TOKEN_IGNORED

    def derive_key(self, purpose: str) -> bytes:
        """A key for ``purpose`` from the configured token digests (never the tokens).

        Every process configured with the same tokens derives the same key, so a
        value one worker or replica signs, another accepts; changing the tokens
        changes the key. Without tokens the key is a constant, known to anyone.
        """
        material = b"".join(sorted(token.digest for token in self._tokens))
        return hmac.new(material, f"aigw-sidecar {purpose}".encode(), hashlib.sha256).digest()

    def principal_of(self, metadata: Iterable[tuple[str, Any]] | None) -> str | None:
        token = _bearer_token(metadata)
        if not token:
            return None
        digest = _digest(token)
        found = None
        # No early exit: every configured token is compared on every call.
        for candidate in self._tokens:
            if hmac.compare_digest(candidate.digest, digest):
                found = candidate.principal
        return found


def _bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """The token of an ``authorization: Bearer <token>`` entry; "" when there is none."""
    header = ""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            header = value
            break
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class AdminAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Requires an admin token on every method of ``services`` (full names)."""

    def __init__(self, authenticator: AdminAuthenticator, services: Iterable[str]) -> None:
        self._auth = authenticator
        self._prefixes = tuple(f"/{name}/" for name in services)

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or not method.startswith(self._prefixes):
            return handler
        if not self._auth.enabled:
            anonymous = self._auth.anonymous_principal(details.invocation_metadata)
            return _with_principal(handler, anonymous)
        principal = self._auth.principal_of(details.invocation_metadata)
        if principal is None:
            log.warning("admin call %s refused: %s", method, UNAUTHENTICATED_MESSAGE)
            return grpc.unary_unary_rpc_method_handler(_refuse)
        return _with_principal(handler, principal)


async def _refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)


def _with_principal(handler: Any, principal: str) -> Any:
    inner: Handler | None = handler.unary_unary
    if inner is None:  # the admin services are unary-unary only
        return handler

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if principal == TOKEN_IGNORED:
            # Set first: an abort keeps the trailing metadata already set.
            context.set_trailing_metadata((AUTH_NOTICE,))
        reset = _principal.set(principal)
        try:
            return await inner(request, context)
        finally:
            _principal.reset(reset)

    return handler._replace(unary_unary=call)
