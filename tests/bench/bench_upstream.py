"""The mock upstream (tests/e2e/upstream.py) as benchmarks start it, in its own process.

The same server, with a listen backlog that holds a burst of connections: socketserver's
default of 5 overflows when Envoy opens dozens of upstream connections at once, and a
dropped SYN is retried only after the kernel's 1 s timeout, which shows up as
one-second tail latencies that belong to neither Envoy nor the sidecar.

``python -m tests.bench.bench_upstream``: serve on a free port, print it, stop on EOF
of stdin (as ``python -m tests.e2e.upstream``).
"""

from __future__ import annotations

import socketserver

from tests.e2e import upstream

LISTEN_BACKLOG = 1024


def main() -> None:
    socketserver.TCPServer.request_queue_size = LISTEN_BACKLOG  # this process only
    upstream.main()


if __name__ == "__main__":
    main()
