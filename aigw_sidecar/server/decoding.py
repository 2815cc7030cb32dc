"""Requests that are not valid protobuf get INVALID_ARGUMENT, not grpc's UNKNOWN.

grpc answers a request it cannot parse (truncated bytes, invalid UTF-8 in a
string field) with UNKNOWN "Unexpected DecodeError". This interceptor wraps the
deserializer of every unary and client-streaming method (Envoy's access log): a
request that does not parse becomes a marker, and the call is refused with
INVALID_ARGUMENT before any servicer sees it (for a stream: at the message that
does not parse; the ones before it were handled). The message never echoes the
bytes received.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

MESSAGE = "request: not a valid protobuf message (a string field with invalid UTF-8?)"


class _Undecodable:
    """Stands in for a request that did not parse."""


_UNDECODABLE = _Undecodable()


def _safe(decode: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def safe_decode(raw: bytes) -> Any:
        try:
            return decode(raw)
        except Exception:
            return _UNDECODABLE

    return safe_decode


def _guarded(handler: Any) -> Any:
    if handler.unary_unary is not None:
        behavior = handler.unary_unary

        async def checked(request: Any, context: Any) -> Any:
            if request is _UNDECODABLE:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, MESSAGE)
            return await behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(
            checked, request_deserializer=_safe(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    streaming = handler.stream_unary

    async def checked_stream(requests: AsyncIterator[Any], context: Any) -> Any:
        async def parsed() -> AsyncIterator[Any]:
            async for request in requests:
                if request is _UNDECODABLE:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, MESSAGE)
                yield request

        return await streaming(parsed(), context)

    return grpc.stream_unary_rpc_method_handler(
        checked_stream, request_deserializer=_safe(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses unparseable unary and client-streamed requests with INVALID_ARGUMENT."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None or (
            handler.unary_unary is None and handler.stream_unary is None
        ):
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _guarded(handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped
