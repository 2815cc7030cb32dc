"""MetricsEndpoint: ``/metrics`` over HTTP, from a thread of its own (never the event loop).

Off by default: ``--metrics-listen host:port`` starts one, over this process's
registry or, in multiprocess mode, over the whole folder.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry
from prometheus_client import start_http_server as _start_http_server

from aigw_sidecar.server.metrics.multiprocess import multiprocess_registry


@dataclass
class MetricsEndpoint:
    """``/metrics`` over HTTP from a daemon thread; ``port`` is the bound port."""

    server: WSGIServer
    thread: threading.Thread
    port: int

    @classmethod
    def start(cls, listen: str, registry: CollectorRegistry) -> MetricsEndpoint:
        host, _, port = listen.rpartition(":")
        server, thread = _start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1",
                                            registry=registry)
        return cls(server, thread, int(server.server_port))

    @classmethod
    def for_folder(cls, listen: str, multiproc_dir: str) -> MetricsEndpoint:
        """One endpoint for every process writing to ``multiproc_dir`` (a supervisor's)."""
        return cls.start(listen, multiprocess_registry(multiproc_dir))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
