"""Prometheus multiprocess mode: the metrics of several processes summed from one folder.

Several processes (``--workers N``, or replicas sharing a host) use Prometheus'
multiprocess mode: with ``PROMETHEUS_MULTIPROC_DIR`` set before the process
starts (``Settings.metrics_multiproc_dir``), every process writes its values to
files there, and whoever serves the endpoint aggregates the whole folder
(``MultiProcessCollector``). A supervisor serves one endpoint for all its
workers and calls ``mark_process_dead`` when a worker exits.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, multiprocess


def multiprocess_registry(multiproc_dir: str) -> CollectorRegistry:
    """A registry that reads the values of every process writing to ``multiproc_dir``."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=multiproc_dir)  # type: ignore[no-untyped-call]
    return registry


def mark_process_dead(pid: int, multiproc_dir: str) -> None:
    """Drop a dead process's live gauges (its counters stay in the totals)."""
    multiprocess.mark_process_dead(pid, multiproc_dir)  # type: ignore[no-untyped-call]
