"""The one place where domain outcomes become gRPC status codes and HTTP replies.

Servicer methods are wrapped with ``domain_errors``: a domain error aborts the
call with its status and its message (which never holds a secret); anything
unexpected is logged once and becomes INTERNAL with a generic message.

For HTTP proxies (Envoy ext_authz) a denied decision becomes an ``HttpDenial``:
the status a client can act on (401 who are you, 403 not allowed, 429 wait,
503 try again), an OpenAI-style JSON error body, ``Retry-After`` and the
``x-ratelimit-*`` headers. These functions are pure: no proto, no I/O.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from aigw_sidecar.admission.decision import Decision, DenyReason, LimitState
from aigw_sidecar.errors import (
    AigwError,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    StoreUnavailable,
)
from aigw_sidecar.limits.kinds import KIND_OF_REASON, LIMIT_KINDS

log = logging.getLogger(__name__)

STATUS_OF: dict[type[AigwError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_of(exc: AigwError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        code = STATUS_OF.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


Req = TypeVar("Req")
Resp = TypeVar("Resp")
Method = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


def domain_errors(method: Method[Req, Resp]) -> Method[Req, Resp]:
    """Map domain errors raised by a servicer method to its gRPC status."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await method(self, request, context)
        except AigwError as exc:
            await context.abort(status_of(exc), str(exc))
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("unexpected error in %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("unreachable: abort raises")

    return wrapper


# --- HTTP, for proxies ------------------------------------------------------

HTTP_STATUS_OF: dict[DenyReason, int] = {
    DenyReason.KEY_MISSING: 401,
    DenyReason.KEY_MALFORMED: 401,
    DenyReason.KEY_UNKNOWN: 401,  # also a deleted key
    DenyReason.KEY_DISABLED: 403,
    DenyReason.KEY_EXPIRED: 403,
    DenyReason.MODEL_NOT_ALLOWED: 403,  # waiting cannot help; another model might
    DenyReason.MODEL_NOT_PRICED: 403,  # an admin must price the model (or lift the limit)
    **{kind.deny_reason: kind.http_status for kind in LIMIT_KINDS},
}
# The x-ratelimit-* families, in header order.
HEADER_FAMILIES: tuple[str, ...] = tuple(
    sorted({kind.header_family for kind in LIMIT_KINDS if kind.header_family})
)
_NEVER = 2**63
HTTP_STORE_UNAVAILABLE = 503
HTTP_BAD_REQUEST = 400
HTTP_TOO_LARGE = 413
# The "type" of an OpenAI-style error body, by HTTP status.
_ERROR_TYPE_OF: dict[int, str] = {
    400: "invalid_request_error",
    413: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}
# Envoy denies on any non-OK gRPC status; the code itself only shows in its logs.
_GRPC_CODE_OF_HTTP: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
STORE_UNAVAILABLE_RETRY_AFTER_S = 1


@dataclass(frozen=True, slots=True)
class HttpDenial:
    """The local reply a proxy sends instead of forwarding the request."""

    status: int
    grpc_code: grpc.StatusCode
    headers: tuple[tuple[str, str], ...]
    body: str  # JSON


def openai_error_body(message: str, status: int, code: str) -> str:
    """``{"error": {"message", "type", "code", "param"}}`` as OpenAI's API sends it."""
    error = {
        "message": message,
        "type": _ERROR_TYPE_OF.get(status, "api_error"),
        "code": code,
        "param": None,
    }
    return json.dumps({"error": error}, separators=(",", ":"))


def ceil_seconds(ms: int) -> int:
    """Whole seconds, rounded up, at least 1 (``Retry-After: 0`` invites a busy loop)."""
    return max(1, -(-ms // 1000))


def reset_duration(ms: int) -> str:
    """A reset delay as OpenAI writes it: ``250ms``, ``17s``, ``6m0s``, ``26h0m0s``."""
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    hours, rest = divmod(ceil_seconds(ms), 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


def _limit_headers(kind: str, state: LimitState | None) -> list[tuple[str, str]]:
    if state is None:  # the key has no limit of this kind
        return []
    headers = [
        (f"x-ratelimit-limit-{kind}", str(state.limit)),
        (f"x-ratelimit-remaining-{kind}", str(max(state.remaining, 0))),
    ]
    if state.reset_ms is not None:  # a budget that never resets has no reset header
        headers.append((f"x-ratelimit-reset-{kind}", reset_duration(state.reset_ms)))
    return headers


def shown_in_family(decision: Decision, family: str) -> LimitState | None:
    """The one limit of a header family (``requests``, ``tokens``) the headers show.

    Kinds of one family share its headers (tokens per minute and the token
    budget): a denial shows the kind that refused it; otherwise the tightest
    (fewest remaining, then the sooner reset, then table order), which is what
    a client must pace itself by.
    """
    refused = KIND_OF_REASON.get(decision.deny_reason) if decision.deny_reason else None
    if refused is not None and refused.header_family == family:
        return decision.state(refused)
    shown = [
        (state.remaining, _NEVER if state.reset_ms is None else state.reset_ms, i, state)
        for i, kind in enumerate(LIMIT_KINDS)
        if kind.header_family == family and (state := decision.state(kind)) is not None
    ]
    return min(shown)[3] if shown else None


def rate_limit_headers(decision: Decision) -> list[tuple[str, str]]:
    """``x-ratelimit-{limit,remaining,reset}-<family>`` for the key's limits."""
    headers: list[tuple[str, str]] = []
    for family in HEADER_FAMILIES:
        headers += _limit_headers(family, shown_in_family(decision, family))
    return headers


def http_denial(decision: Decision) -> HttpDenial:
    """A denied decision as the HTTP reply the client gets; the message never holds a secret."""
    if decision.deny_reason is None:
        raise ValueError("http_denial needs a denied decision")
    status = HTTP_STATUS_OF[decision.deny_reason]
    headers = [("content-type", "application/json")]
    if status == 429:
        if decision.retry_after_ms is not None:  # None: the budget never resets
            headers.append(("retry-after", str(ceil_seconds(decision.retry_after_ms))))
        headers += rate_limit_headers(decision)
    return HttpDenial(
        status=status,
        grpc_code=_GRPC_CODE_OF_HTTP[status],
        headers=tuple(headers),
        body=openai_error_body(decision.message, status, decision.deny_reason.value),
    )


def store_unavailable_denial() -> HttpDenial:
    """Fail closed: 503 with a JSON body and a short ``Retry-After``."""
    return HttpDenial(
        status=HTTP_STORE_UNAVAILABLE,
        grpc_code=grpc.StatusCode.UNAVAILABLE,
        headers=(
            ("content-type", "application/json"),
            ("retry-after", str(STORE_UNAVAILABLE_RETRY_AFTER_S)),
        ),
        body=openai_error_body(
            "The API key could not be checked: the key store is unavailable. Try again.",
            HTTP_STORE_UNAVAILABLE,
            "store_unavailable",
        ),
    )


def bad_request_denial(message: str, *, too_large: bool = False) -> HttpDenial:
    """A request body the gateway will not forward: 400 (or 413), never charged.

    ``message`` says what is wrong in words the client can act on; it never holds
    a value taken from the body.
    """
    status = HTTP_TOO_LARGE if too_large else HTTP_BAD_REQUEST
    return HttpDenial(
        status=status,
        grpc_code=_GRPC_CODE_OF_HTTP[status],
        headers=(("content-type", "application/json"),),
        body=openai_error_body(
            message, status, "request_too_large" if too_large else "invalid_request_body"
        ),
    )
