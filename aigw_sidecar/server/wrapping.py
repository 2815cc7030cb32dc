"""UnaryWrapper: the base of interceptors that wrap each unary RPC's handler once.

grpc.aio asks every interceptor for each call's handler. A subclass says how to
wrap one method's handler (``wrap``); this builds that wrapper once per method and
hands the same one back while the handler beneath stays the same object (under an
interceptor that makes a handler per call, such as admin auth, it wraps per call). grpc's
own services (health, reflection) and streaming RPCs are passed through untouched.
grpc ships no type hints, so handlers, requests and contexts are ``Any`` here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

Handler = Callable[[Any, Any], Awaitable[Any]]


class UnaryWrapper(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps every unary-unary handler but grpc's own, once per method."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None or details.method.startswith("/grpc."):
            return handler
        cached = self._wrapped.get(details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = handler._replace(unary_unary=self.wrap(details.method, handler.unary_unary))
        self._wrapped[details.method] = (handler, wrapped)
        return wrapped

    def wrap(self, method: str, inner: Handler) -> Handler:
        """The handler to serve ``method`` with, around ``inner``."""
        raise NotImplementedError
