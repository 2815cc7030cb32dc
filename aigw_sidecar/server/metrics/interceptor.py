"""TelemetryInterceptor: each RPC's request id bound for the logs and, with metrics on, timed.

The gRPC side of the metrics: ``aigw_rpc_duration_seconds`` and
``aigw_rpc_errors`` by method. grpc ships no type hints (``ignore_missing_imports``
in pyproject.toml), so its handlers, requests and contexts are ``Any`` here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aigw_sidecar.logs import bind_request_id
from aigw_sidecar.server.metrics.collectors import Metrics
from aigw_sidecar.server.wrapping import Handler, UnaryWrapper

EXT_AUTHZ_CHECK = "/envoy.service.auth.v3.Authorization/Check"
_perf = time.perf_counter


def _request_id_of(method: str) -> Callable[[Any], str]:
    """How an RPC's request id is found in its request (Check: Envoy's x-request-id)."""
    if method == EXT_AUTHZ_CHECK:
        return lambda request: str(
            request.attributes.request.http.headers.get("x-request-id", "")
        )
    return lambda request: str(getattr(request, "request_id", "") or "")


class TelemetryInterceptor(UnaryWrapper):
    """Binds each RPC's request id for the logs and, with metrics on, times the RPC.

    Install it last (innermost), so the handler it wraps is the registered one:
    the wrapped handler is then built once per method and reused.
    """

    def __init__(self, metrics: Metrics | None) -> None:
        super().__init__()
        self._metrics = metrics

    def wrap(self, method: str, inner: Handler) -> Handler:
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
