"""Requests dropped or wrongly admitted in a rolling restart of two replicas (loopback, bounded).

Two sidecar subprocesses (A and B) on one Valkey. Closed-loop clients call
Authorize, alternating replicas like a proxy balancing over two endpoints; a
call that fails with UNAVAILABLE (a refused or reset connection, a draining
server) or CANCELLED is retried once on the other replica, as Envoy's retry
policy would (``retry_on: unavailable,cancelled,reset,connect-failure``).
CANCELLED is what grpc core answers, at SIGTERM, for calls that had arrived but
not yet reached a handler (it drops them on server shutdown): never run, so safe
to retry; the limited key's count below would show it if one had run.
One client calls a key with a requests-per-minute limit, paced. While they run,
A is restarted (SIGTERM, wait for exit, start on the same port, wait until the
clients' channel to it is SERVING again), then B. Printed: calls, retried calls,
dropped calls (failed on both replicas), other errors, and for the limited key
the admissions the client saw against its limit: after the run the client keeps
calling until the first denial, so its admissions must equal the limit exactly;
more is wrongly admitted, fewer means admissions counted but never delivered.

    .venv/bin/python -m tests.bench.rolling_restart [--clients 16] [--pause-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1 import admission_pb2_grpc, keys_pb2_grpc
from aigw_sidecar.api.v1 import keys_pb2 as kpb
from tests.servers import SidecarProcess, StoreProcess, store_binaries

LIMIT = 200  # requests per minute of the limited key; the run stays well under a minute
LIMITED_PAUSE_S = 0.02
# A proxy reconnects quickly to an endpoint that came back (grpc's default backoff
# starts at 1 s and grows to 120 s).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]
RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


@dataclass
class Counts:
    calls: int = 0
    retried: int = 0
    cancelled: int = 0  # of the retried: CANCELLED by a replica shutting down
    dropped: int = 0
    other_errors: int = 0
    limited_admitted_during: int = 0
    limited_admitted_after: int = 0
    error_kinds: set[str] = field(default_factory=set)


class TwoReplicas:
    """A proxy's view of two endpoints: alternate, retry once on the other on UNAVAILABLE."""

    def __init__(self, targets: list[str], counts: Counts) -> None:
        self.channels = [grpc.aio.insecure_channel(t, options=CHANNEL_OPTIONS) for t in targets]
        self.stubs = [admission_pb2_grpc.AdmissionStub(c) for c in self.channels]
        self.counts = counts
        self._next = 0

    async def authorize(self, secret: str) -> adm.AuthorizeResponse | None:
        """The decision, or None when the call was dropped (failed on both replicas)."""
        first = self._next
        self._next ^= 1
        self.counts.calls += 1
        for attempt, replica in enumerate((first, first ^ 1)):
            try:
                reply: adm.AuthorizeResponse = await self.stubs[replica].Authorize(
                    adm.AuthorizeRequest(secret=secret), timeout=5
                )
                return reply
            except grpc.aio.AioRpcError as err:
                if err.code() not in RETRIED:
                    self.counts.other_errors += 1
                    self.counts.error_kinds.add(f"{err.code().name}: {err.details()}"[:120])
                    return None
                if attempt == 0:
                    self.counts.retried += 1
                    self.counts.cancelled += err.code() == grpc.StatusCode.CANCELLED
        self.counts.dropped += 1
        return None

    async def wait_serving(self, replica: int, timeout_s: float = 30) -> None:
        """Readiness through the clients' own channel, as a rolling restart waits for it."""
        stub = health_pb2_grpc.HealthStub(self.channels[replica])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1,
                                         wait_for_ready=True)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError(f"replica {'AB'[replica]} did not come back")

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


async def _restart(sidecar: SidecarProcess, replicas: TwoReplicas, index: int) -> float:
    """SIGTERM, wait for the exit, start again on the same port; seconds until SERVING."""
    began = time.monotonic()
    code = await asyncio.to_thread(sidecar.stop)
    if code != 0:
        raise RuntimeError(f"replica {'AB'[index]} exited with {code} on SIGTERM")
    await asyncio.to_thread(sidecar.start)
    await replicas.wait_serving(index)
    return time.monotonic() - began


async def run(clients: int, pause_s: float, folder: Path) -> dict[str, object]:
    store = StoreProcess("valkey", store_binaries()["valkey"], folder / "store").start()
    prefix = f"r{uuid.uuid4().hex[:6]}"
    sidecars = [
        SidecarProcess(store.url, prefix, log_path=folder / f"sidecar-{name}.log")
        for name in "AB"
    ]
    counts = Counts()
    restart_s: list[float] = []
    replicas: TwoReplicas | None = None
    try:
        for sidecar in sidecars:
            sidecar.start()
        replicas = TwoReplicas([s.target for s in sidecars], counts)
        async with grpc.aio.insecure_channel(sidecars[0].target) as admin:
            keys = keys_pb2_grpc.KeyManagementStub(admin)
            open_key = await keys.CreateKey(kpb.CreateKeyRequest(name="open"), timeout=10)
            limited = await keys.CreateKey(kpb.CreateKeyRequest(
                name="limited", limits=kpb.Limits(requests_per_minute=LIMIT)), timeout=10)
        running = True

        async def client() -> None:
            while running:
                await replicas.authorize(open_key.secret)
                if pause_s:
                    await asyncio.sleep(pause_s)

        async def limited_client() -> None:
            while running:
                reply = await replicas.authorize(limited.secret)
                if reply is not None and reply.allowed:
                    counts.limited_admitted_during += 1
                await asyncio.sleep(LIMITED_PAUSE_S)

        tasks = [asyncio.create_task(client()) for _ in range(clients)]
        tasks.append(asyncio.create_task(limited_client()))
        await asyncio.sleep(1.0)
        for index, sidecar in enumerate(sidecars):
            restart_s.append(await _restart(sidecar, replicas, index))
            await asyncio.sleep(1.0)
        running = False
        await asyncio.gather(*tasks)
        # Top up: the limit must be reached exactly, so call until the first denial.
        for _ in range(LIMIT + 1):
            reply = await replicas.authorize(limited.secret)
            if reply is None:
                continue
            if not reply.allowed:
                break
            counts.limited_admitted_after += 1
    finally:
        if replicas is not None:
            await replicas.close()
        for sidecar in sidecars:
            sidecar.stop()
        store.stop()
    admitted = counts.limited_admitted_during + counts.limited_admitted_after
    return {
        "clients": clients, "calls": counts.calls, "retried": counts.retried,
        "retried_cancelled": counts.cancelled,
        "dropped": counts.dropped, "other_errors": counts.other_errors,
        "limit": LIMIT, "limited_admitted": admitted,
        "limited_admitted_during_run": counts.limited_admitted_during,
        "wrongly_admitted": max(0, admitted - LIMIT),
        "admissions_never_delivered": max(0, LIMIT - admitted),
        "restart_s": [round(s, 2) for s in restart_s],
        "other_error_kinds": sorted(counts.error_kinds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--pause-ms", type=float, default=0.0,
                        help="pause of each client between calls (0: closed loop)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = asyncio.run(run(min(args.clients, 256), args.pause_ms / 1000, Path(folder)))
        print(json.dumps(result))


if __name__ == "__main__":
    main()
