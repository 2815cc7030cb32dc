"""TelemetryInterceptor: each RPC's request id bound for the logs and, with metrics on, timed.

The gRPC side of the metrics: ``aigw_rpc_duration_seconds`` and
``aigw_rpc_errors`` by method. grpc ships no type hints (``ignore_missing_imports``
in pyproject.toml), so its handlers, requests and contexts are ``Any`` here.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from aigw_sidecar.logs import bind_request_id
from aigw_sidecar.server.metrics.collectors import Metrics

Handler = Callable[[Any, Any], Awaitable[Any]]
EXT_AUTHZ_CHECK = "/envoy.service.auth.v3.Authorization/Check"
_perf = time.perf_counter


def _request_id_of(method: str) -> Callable[[Any], str]:
    """How an RPC's request id is found in its request (Check: Envoy's x-request-id)."""
    if method == EXT_AUTHZ_CHECK:
        return lambda request: str(
            request.attributes.request.http.headers.get("x-request-id", "")
        )
    return lambda request: str(getattr(request, "request_id", "") or "")


class TelemetryInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Binds each RPC's request id for the logs and, with metrics on, times the RPC.

    Install it last (innermost), so the handler it wraps is the registered one:
    the wrapped handler is then built once per method and reused.
    """

    def __init__(self, metrics: Metrics | None) -> None:
        self._metrics = metrics
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        # Health and reflection are grpc's own plumbing: neither timed nor logged.
        if handler is None or handler.unary_unary is None or details.method.startswith("/grpc."):
            return handler
        cached = self._wrapped.get(details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = handler._replace(unary_unary=self._wrap(details.method, handler.unary_unary))
        self._wrapped[details.method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, inner: Handler) -> Handler:
        rpc = method.rsplit("/", 1)[-1]
        request_id = _request_id_of(method)
        metrics = self._metrics
        if metrics is None:
            async def call(request: Any, context: Any) -> Any:
                bind_request_id(request_id(request))
                return await inner(request, context)
            return call

        latency = metrics.rpc_latency.labels(rpc)
        errors = metrics.rpc_errors

        async def timed(request: Any, context: Any) -> Any:
            bind_request_id(request_id(request))
            start = _perf()
            try:
                return await inner(request, context)
            except BaseException:
                code = context.code()
                errors.labels(rpc, code.name if code is not None else "UNKNOWN").inc()
                raise
            finally:
                latency.observe(_perf() - start)

        return timed
