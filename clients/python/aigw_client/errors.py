"""The client's exception tree; each gRPC status code maps to one class.

    AigwError                     base: ``code`` (gRPC status name) and ``message``
     ├── TransportError           the call did not get an answer
     │    ├── Unavailable         UNAVAILABLE (sidecar or its store unreachable)
     │    └── DeadlineExceeded    DEADLINE_EXCEEDED
     ├── AuthenticationError      UNAUTHENTICATED, PERMISSION_DENIED (admin token)
     ├── InvalidArgument          INVALID_ARGUMENT (the message names the field)
     ├── NotFound                 NOT_FOUND (no such key id)
     ├── AlreadyExists            ALREADY_EXISTS (name or legacy secret taken)
     ├── FailedPrecondition       FAILED_PRECONDITION (e.g. limits on a legacy key)
     └── ServerError              INTERNAL, UNIMPLEMENTED and every other code

Messages come from the server and never contain a secret.
"""

from __future__ import annotations

from typing import Any

import grpc


class AigwError(Exception):
    """Base class of every error the client raises for a failed call."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class TransportError(AigwError):
    """No answer: the sidecar or its store could not be reached in time."""


class Unavailable(TransportError):
    pass


class DeadlineExceeded(TransportError):
    pass


class AuthenticationError(AigwError):
    """The admin token is missing or wrong."""


class InvalidArgument(AigwError):
    pass


class NotFound(AigwError):
    pass


class AlreadyExists(AigwError):
    pass


class FailedPrecondition(AigwError):
    pass


class ServerError(AigwError):
    """Any other status: a bug or an unsupported call on the server side."""


_BY_CODE: dict[str, type[AigwError]] = {
    "UNAVAILABLE": Unavailable,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
    "UNAUTHENTICATED": AuthenticationError,
    "PERMISSION_DENIED": AuthenticationError,
    "INVALID_ARGUMENT": InvalidArgument,
    "NOT_FOUND": NotFound,
    "ALREADY_EXISTS": AlreadyExists,
    "FAILED_PRECONDITION": FailedPrecondition,
}


def from_rpc_error(exc: grpc.RpcError) -> AigwError:
    """The client exception for a failed gRPC call."""
    err: Any = exc
    code = err.code() if hasattr(err, "code") else None
    name = code.name if code is not None else "UNKNOWN"
    details = err.details() if hasattr(err, "details") else ""
    return _BY_CODE.get(name, ServerError)(name, str(details or ""))
