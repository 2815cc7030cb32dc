"""What metrics add to one Authorize: the interceptor, the timed store call, the observer.

A store that answers at once isolates the instrumentation's own cost. Run
``python -m tests.bench.metrics_overhead`` (set ``PROMETHEUS_MULTIPROC_DIR`` to an
empty folder to measure multiprocess mode).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import grpc

from aigw_sidecar.admission.decision import Decision, LimitState
from aigw_sidecar.admission.observed import ObservedAdmissionService
from aigw_sidecar.admission.service import AdmissionService
from aigw_sidecar.keys import secrets
from aigw_sidecar.server.metrics import MeasuredStore, Metrics, TelemetryInterceptor

DECISION = Decision(allowed=True, key_id="key_x", workspace="w",
                    limits={"requests_per_minute": LimitState(10, 5, 100)})
ROUNDS, CALLS = 7, 20_000


class InstantStore:
    async def authorize(self, *args: Any, **kwargs: Any) -> Decision:
        return DECISION

    async def ping(self) -> bool:
        return True


class Details:
    method = "/aigw.v1.Admission/Authorize"


class Request:
    request_id = ""
    secret = secrets.new_secret().secret


async def per_call_us(instrumented: bool) -> float:
    store: Any = InstantStore()
    metrics = Metrics() if instrumented else None
    service = (
        ObservedAdmissionService(MeasuredStore(store, metrics), observer=metrics)
        if metrics is not None
        else AdmissionService(store)
    )

    async def authorize(request: Any, context: Any) -> Decision:
        return await service.authorize(request.secret)

    handler = grpc.unary_unary_rpc_method_handler(authorize)
    interceptor = TelemetryInterceptor(metrics) if metrics is not None else None
    details, request = Details(), Request()

    async def lookup(_details: Any) -> Any:
        return handler

    async def once() -> None:
        found = (
            await interceptor.intercept_service(lookup, details)
            if interceptor is not None
            else await lookup(details)
        )
        await found.unary_unary(request, None)

    for _ in range(2000):
        await once()
    began = time.perf_counter()
    for _ in range(CALLS):
        await once()
    return (time.perf_counter() - began) / CALLS * 1e6


async def main() -> None:
    bare, timed = [], []
    for _ in range(ROUNDS):
        bare.append(await per_call_us(False))
        timed.append(await per_call_us(True))
    off, on = statistics.median(bare), statistics.median(timed)
    print(f"bare {off:.2f} us, instrumented {on:.2f} us: +{on - off:.2f} us per Authorize")


if __name__ == "__main__":
    asyncio.run(main())
