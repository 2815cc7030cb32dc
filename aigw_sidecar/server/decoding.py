"""Requests that are not valid protobuf get INVALID_ARGUMENT, not grpc's UNKNOWN.

grpc answers a request it cannot parse (truncated bytes, invalid UTF-8 in a
string field) with UNKNOWN "Unexpected DecodeError". This interceptor wraps the
deserializer of every unary method: a request that does not parse becomes a
marker, and the call is refused with INVALID_ARGUMENT before any servicer runs.
The message never echoes the bytes received.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

MESSAGE = "request: not a valid protobuf message (a string field with invalid UTF-8?)"


class _Undecodable:
    """Stands in for a request that did not parse."""


_UNDECODABLE = _Undecodable()


def _guarded(handler: Any) -> Any:
    decode = handler.request_deserializer
    behavior = handler.unary_unary

    def safe_decode(raw: bytes) -> Any:
        try:
            return decode(raw)
        except Exception:
            return _UNDECODABLE

    async def checked(request: Any, context: Any) -> Any:
        if request is _UNDECODABLE:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, MESSAGE)
        return await behavior(request, context)

    return grpc.unary_unary_rpc_method_handler(
        checked, request_deserializer=safe_decode,
        response_serializer=handler.response_serializer,
    )


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses unparseable unary requests with INVALID_ARGUMENT."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _guarded(handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped
