"""The one place where domain outcomes become gRPC status codes.

Servicer methods are wrapped with ``domain_errors``: a domain error aborts the
call with its status and its message (which never holds a secret); anything
unexpected is logged once and becomes INTERNAL with a generic message.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from aigw_sidecar.errors import (
    AigwError,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    StoreUnavailable,
)

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
