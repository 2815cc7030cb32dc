"""Domain errors map to gRPC status codes in one place (server/status.py)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from aigw_sidecar.errors import (
    AigwError,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    StoreUnavailable,
)
from aigw_sidecar.server.status import domain_errors, status_of


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidArgument("name", "is required"), grpc.StatusCode.INVALID_ARGUMENT),
        (NotFound("no API key"), grpc.StatusCode.NOT_FOUND),
        (AlreadyExists("taken"), grpc.StatusCode.ALREADY_EXISTS),
        (FailedPrecondition("legacy"), grpc.StatusCode.FAILED_PRECONDITION),
        (StoreUnavailable("down"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_each_domain_error_has_its_own_status(error: AigwError, code: grpc.StatusCode) -> None:
    assert status_of(error) is code


def test_a_subclass_of_a_domain_error_keeps_its_parents_status() -> None:
    class NameTaken(AlreadyExists):
        pass

    assert status_of(NameTaken("x")) is grpc.StatusCode.ALREADY_EXISTS


def test_a_domain_error_without_a_mapping_is_internal() -> None:
    assert status_of(AigwError("?")) is grpc.StatusCode.INTERNAL


def test_an_invalid_argument_message_starts_with_the_field_name() -> None:
    assert str(InvalidArgument("limits.token_limit", "must be positive")).startswith(
        "limits.token_limit: "
    )


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details


class _Context:
    """Just enough of grpc.aio.ServicerContext for the decorator: abort raises."""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _Aborted(code, details)


class _Servicer:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    @domain_errors
    async def Call(self, request: Any, context: Any) -> Any:
        raise self.exc


async def test_a_domain_error_aborts_the_call_with_its_status_and_message() -> None:
    with pytest.raises(_Aborted) as err:
        await _Servicer(NotFound("no API key with that key_id")).Call(None, _Context())
    assert (err.value.code, err.value.details) == (
        grpc.StatusCode.NOT_FOUND, "no API key with that key_id"
    )


async def test_an_unexpected_error_is_internal_with_a_generic_message() -> None:
    with pytest.raises(_Aborted) as err:
        await _Servicer(KeyError("sk-aigw-secret-material")).Call(None, _Context())
    assert (err.value.code, err.value.details) == (grpc.StatusCode.INTERNAL, "internal error")


async def test_a_successful_call_passes_its_response_through() -> None:
    class Ok:
        @domain_errors
        async def Call(self, request: Any, context: Any) -> Any:
            return request

    assert await Ok().Call("reply", _Context()) == "reply"
