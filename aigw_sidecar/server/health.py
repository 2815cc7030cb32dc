"""Store health: gRPC health says NOT_SERVING while the store does not answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from grpc_health.v1 import health, health_pb2

log = logging.getLogger(__name__)

# A health service name that is SERVING from start until shutdown, whatever the store
# does: for liveness probes (a store outage is no reason to restart the sidecar, but
# a process that no longer answers gRPC is).
LIVENESS_SERVICE = "liveness"


class StoreHealthWatcher:
    """Pings the store every ``interval_s`` and mirrors the result into health."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        ping: Callable[[], Awaitable[bool]],
        services: Sequence[str],
        interval_s: float = 1.0,
    ) -> None:
        self._servicer = servicer
        self._ping = ping
        self._services = ("", *services)
        self._interval_s = interval_s
        self._serving: bool | None = None
        self._draining = False

    async def start(self) -> None:
        """Liveness SERVING, then the store's state as one ping finds it."""
        await self._servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self.check_once()

    async def set_serving(self, serving: bool) -> None:
        if serving == self._serving:
            return
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in self._services:
            await self._servicer.set(name, status)
        log.info("store is %s; health %s", "reachable" if serving else "unreachable",
                 "SERVING" if serving else "NOT_SERVING")

    async def check_once(self) -> None:
        try:
            ok = await self._ping()
        except Exception:
            ok = False
        if not self._draining:  # a check that ends during the drain must not undo it
            await self.set_serving(ok)

    async def run(self) -> None:
        while not self._draining:
            await self.check_once()
            await asyncio.sleep(self._interval_s)

    async def shutdown(self) -> None:
        """Report NOT_SERVING for every service from now on (draining), and stop checking."""
        self._draining = True
        await self._servicer.enter_graceful_shutdown()
