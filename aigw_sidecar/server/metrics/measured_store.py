"""MeasuredStore: the admission store with each round trip timed and each failure counted.

A decorator over the store port the admission service uses (plus the health
ping), installed by the composition root when metrics are on: the service and
the health watcher cannot tell it from the store, and the store knows nothing
of metrics. Timings and failures go to ``aigw_store_duration_seconds`` and
``aigw_store_errors`` by operation; the ping's outcome is ``aigw_store_up``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar

from aigw_sidecar.admission.decision import Decision, UsageReport, UsageResult
from aigw_sidecar.admission.service import AdmissionStore
from aigw_sidecar.errors import StoreUnavailable
from aigw_sidecar.server.metrics.collectors import Metrics

T = TypeVar("T")
_perf = time.perf_counter


class MeasurableStore(AdmissionStore, Protocol):
    """The admission store port and the health ping: every call ``MeasuredStore`` times."""

    async def ping(self) -> bool: ...


class MeasuredStore:
    """A ``MeasurableStore`` that times every call of the one it wraps."""

    def __init__(self, store: MeasurableStore, metrics: Metrics) -> None:
        self._store = store
        self._ops = metrics.store_ops
        self._metrics = metrics

    async def _timed(self, op: str, call: Awaitable[T]) -> T:
        latency, errors = self._ops[op]
        start = _perf()
        try:
            return await call
        except StoreUnavailable:
            errors.inc()
            raise
        finally:
            latency.observe(_perf() - start)

    async def authorize(
        self,
        key_id: str,
        key_hash: str,
        request_id: str = "",
        tokens: int | None = None,
        cost_micro_usd: int | None = None,
        model: str = "",
        model_unpriced: bool = False,
    ) -> Decision:
        return await self._timed("authorize", self._store.authorize(
            key_id, key_hash, request_id, tokens, cost_micro_usd, model, model_unpriced
        ))

    async def resolve_legacy(self, key_hash: str) -> str | None:
        return await self._timed("resolve_legacy", self._store.resolve_legacy(key_hash))

    async def record_usage(self, report: UsageReport) -> UsageResult:
        return await self._timed("record_usage", self._store.record_usage(report))

    async def release_reservation(self, key_id: str, request_id: str) -> bool:
        return await self._timed(
            "release_reservation", self._store.release_reservation(key_id, request_id)
        )

    async def ping(self) -> bool:
        """The health watcher's ping; its outcome is ``aigw_store_up``."""
        try:
            up = bool(await self._timed("ping", self._store.ping()))
        except Exception:
            self._metrics.store_state(False)
            raise
        self._metrics.store_state(up)
        return up
