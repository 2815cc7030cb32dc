"""The ``--workers N`` supervisor: N sidecar processes sharing one port and one store.

One Python process tops out at about one core (the gRPC and Redis clients are
CPU-bound), so ``--workers N`` runs N ordinary sidecars as child processes.
The supervisor:

* starts the embedded store once (unless ``--redis-url`` is given) and hands
  its URL to every worker, so all of them share one truth;
* reserves the listen port with a bound, never-listening SO_REUSEPORT socket
  (it resolves port 0, and a stale server without SO_REUSEPORT cannot take
  the port), then starts the workers with SO_REUSEPORT on; the kernel spreads
  incoming connections over them;
* starts the embedded store again when it dies (it reloads its append-only file);
* restarts a worker that dies (after ``RESTART_DELAY_S``), and gives up,
  stopping everything, when one keeps dying right after its start;
* on SIGTERM or SIGINT forwards SIGTERM to every worker (each drains as a
  lone sidecar does), waits for them, then stops the embedded store;
* with ``--metrics-listen``, serves ``/metrics`` itself: the workers write to a
  fresh ``PROMETHEUS_MULTIPROC_DIR`` and get no ``--metrics-listen`` of their own
  (they would all want the same port), the endpoint sums the folder, and a worker
  that exits is marked dead there (its live gauges go, its counters stay). The
  caller says how (``WorkerMetrics``: the CLI passes server/metrics' endpoint and
  ``mark_process_dead``), so the supervisor imports no transport.

A lone sidecar (``--workers 1``, the default) never gets here and keeps
SO_REUSEPORT off.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Protocol

from aigw_sidecar.runner import run_worker
from aigw_sidecar.settings import Settings
from aigw_sidecar.store.embedded import EmbeddedStore

log = logging.getLogger("aigw_sidecar.supervisor")

RESTART_DELAY_S = 1.0
# A worker that dies this soon after its start, this many times in a row, is not restarted.
QUICK_EXIT_S = 5.0
MAX_QUICK_EXITS = 3
_POLL_S = 0.1


class MetricsServer(Protocol):
    """A running ``/metrics`` endpoint; ``port`` is the bound port."""

    port: int

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class WorkerMetrics:
    """How the workers' metrics are served from their multiprocess folder."""

    serve_folder: Callable[[str, str], MetricsServer]  # (listen, folder) -> the endpoint
    mark_process_dead: Callable[[int, str], None]  # (pid, folder): drop its live gauges


def worker_count(settings: Settings) -> int:
    """``--workers``, with 0 meaning one per CPU."""
    return settings.workers or os.cpu_count() or 1


def reserve_port(address: str) -> socket.socket:
    """A bound (not listening) SO_REUSEPORT socket holding ``host:port`` for the workers."""
    if address.startswith(("unix:", "unix-abstract:")):
        raise RuntimeError(f"--workers needs TCP listen addresses; {address} is a unix socket")
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - the address the operator asked for
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"could not reserve {address} for the workers: {exc}") from None
    return sock


def _address(sock: socket.socket, requested: str) -> str:
    host = requested.rpartition(":")[0]
    return f"{host}:{sock.getsockname()[1]}"


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    started_at: float
    quick_exits: int = 0


class Supervisor:
    """Starts, watches and stops the workers; ``run`` returns the exit code."""

    def __init__(
        self, settings: Settings, serve_args: Sequence[str], metrics: WorkerMetrics
    ) -> None:
        """Args:
        serve_args: the ``serve`` command line, passed on to every worker.
        """
        self._settings = settings
        self._metrics = metrics
        self._serve_args = list(serve_args)
        self._stopping = False
        self._workers: list[_Worker] = []
        self._overrides: list[str] = []
        self._env: dict[str, str] | None = None  # None: the workers inherit ours
        # Where the workers' metrics are (ours, or an operator's folder), or "".
        self._multiproc_dir = settings.metrics_multiproc_dir

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self._stopping:
            log.info("supervisor: %s, stopping the workers", signal.Signals(signum).name)
        self._stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        settings = self._settings
        reserved = [reserve_port(settings.listen)]
        self._overrides = ["--listen", _address(reserved[0], settings.listen)]
        if settings.admin_listen:
            reserved.append(reserve_port(settings.admin_listen))
            self._overrides += ["--admin-listen", _address(reserved[1], settings.admin_listen)]
        embedded = None
        metrics: MetricsServer | None = None
        try:
            if settings.metrics_listen:
                metrics = self._serve_metrics(settings.metrics_listen)
            url = settings.redis_url
            if not url:
                embedded = EmbeddedStore(settings.data_dir, settings.embedded_binary)
                url = asyncio.run(embedded.start())
                log.info("supervisor: embedded store ready in %s", settings.data_dir)
            self._overrides += ["--redis-url", url]
            count = worker_count(settings)
            self._workers = [self._spawn(i) for i in range(count)]
            log.info("supervisor: %d workers on %s", count, self._overrides[1])
            return self._watch(embedded)
        finally:
            self._stop_workers()
            if embedded is not None:
                embedded.stop()
            if metrics is not None:
                metrics.close()
                shutil.rmtree(self._multiproc_dir, ignore_errors=True)
            for sock in reserved:
                sock.close()
            log.info("supervisor: stopped")

    def _serve_metrics(self, listen: str) -> MetricsServer:
        """The one endpoint, over a fresh folder (stale files of an earlier run would count)."""
        folder = tempfile.mkdtemp(prefix="aigw-metrics-")
        try:
            endpoint = self._metrics.serve_folder(listen, folder)
        except OSError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError(f"could not serve metrics on {listen}: {exc}") from None
        self._multiproc_dir = folder
        self._env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": folder}
        # The last --metrics-listen wins: the workers serve none.
        self._overrides += ["--metrics-listen", ""]
        log.info("supervisor: metrics of every worker on http://%s:%d/metrics",
                 listen.rpartition(":")[0], endpoint.port)
        return endpoint

    def _spawn(self, index: int) -> _Worker:
        cmd = [sys.executable, "-m", "aigw_sidecar.supervisor", *self._serve_args,
               *self._overrides]
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=self._env)
        log.info("supervisor: worker %d started (pid %d)", index, process.pid)
        return _Worker(index, process, time.monotonic())

    def _watch(self, embedded: EmbeddedStore | None) -> int:
        restart_at: dict[int, float] = {}
        while not self._stopping:
            now = time.monotonic()
            if embedded is not None and embedded.exited():
                assert embedded.process is not None
                log.warning("supervisor: the embedded store exited with %s; starting it again",
                            embedded.process.returncode)
                try:
                    asyncio.run(embedded.start())
                except RuntimeError as exc:
                    log.error("supervisor: %s", exc)
            for i, worker in enumerate(self._workers):
                if i in restart_at:
                    if now >= restart_at[i]:
                        del restart_at[i]
                        quick = worker.quick_exits
                        self._workers[i] = self._spawn(worker.index)
                        self._workers[i].quick_exits = quick
                    continue
                code = worker.process.poll()
                if code is None:
                    if now - worker.started_at > QUICK_EXIT_S:
                        worker.quick_exits = 0
                    continue
                if self._multiproc_dir:
                    self._metrics.mark_process_dead(worker.process.pid, self._multiproc_dir)
                if now - worker.started_at < QUICK_EXIT_S:
                    worker.quick_exits += 1
                if worker.quick_exits >= MAX_QUICK_EXITS:
                    log.error("supervisor: worker %d keeps exiting (last code %s); giving up",
                              worker.index, code)
                    return 1
                log.warning("supervisor: worker %d (pid %d) exited with %s; restarting it",
                            worker.index, worker.process.pid, code)
                restart_at[i] = now + RESTART_DELAY_S
            time.sleep(_POLL_S)
        return 0

    def _stop_workers(self) -> None:
        alive = [w.process for w in self._workers if w.process.poll() is None]
        for process in alive:
            process.terminate()
        deadline = time.monotonic() + self._settings.shutdown_grace_s + 10
        for process in alive:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("supervisor: worker pid %d did not stop in time; killing it",
                          process.pid)
                process.kill()
                process.wait()


if __name__ == "__main__":
    # A worker (``_spawn``): the serve command line, with the port shared among the workers.
    sys.exit(run_worker(sys.argv[1:]))
