"""Prometheus metrics: what the sidecar decided, how fast, and how its store is doing.

Off by default. Everything is built per ``Metrics`` object on its own registry,
nothing at import time; the composition root wires the pieces:

* ``collectors``: ``Metrics``, every collector of one process (an ``AdmissionObserver``);
* ``measured_store``: ``MeasuredStore``, the admission store with its round trips timed;
* ``interceptor``: ``TelemetryInterceptor``, request ids for the logs and RPC latency;
* ``endpoint``: ``MetricsEndpoint``, ``/metrics`` over HTTP from a thread of its own;
* ``multiprocess``: the metrics of several processes summed from one folder.
"""

from __future__ import annotations

from aigw_sidecar.server.metrics.collectors import (
    DEFAULT_LABEL_CAP,
    LATENCY_BUCKETS_S,
    OTHER,
    RESERVATION_EVENTS,
    STORE_OPS,
    Metrics,
)
from aigw_sidecar.server.metrics.endpoint import MetricsEndpoint
from aigw_sidecar.server.metrics.interceptor import EXT_AUTHZ_CHECK, TelemetryInterceptor
from aigw_sidecar.server.metrics.measured_store import MeasurableStore, MeasuredStore
from aigw_sidecar.server.metrics.multiprocess import mark_process_dead, multiprocess_registry

__all__ = [
    "DEFAULT_LABEL_CAP",
    "EXT_AUTHZ_CHECK",
    "LATENCY_BUCKETS_S",
    "OTHER",
    "RESERVATION_EVENTS",
    "STORE_OPS",
    "MeasurableStore",
    "MeasuredStore",
    "Metrics",
    "MetricsEndpoint",
    "TelemetryInterceptor",
    "mark_process_dead",
    "multiprocess_registry",
]
