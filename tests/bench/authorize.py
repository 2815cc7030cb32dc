"""Authorize throughput and latency against a real sidecar process and store.

Not a test: run with ``make bench`` (or ``python -m tests.bench.authorize``).
Starts its own Valkey and ``aigw-sidecar serve`` on free loopback ports, creates
one key without limits, then measures with a grpc.aio client in this process:

* latency with one call in flight (p50/p90/p99),
* throughput at a fixed concurrency over one channel (calls/s, p50/p99),
* the no-op floor: the gRPC health Check on the same server and channel.

Bounded: each phase runs for ``--seconds`` (default 5) or ``--max-calls``.
Prints a table and writes JSON to ``--json`` when given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aigw_sidecar.api.v1 import admission_pb2, admission_pb2_grpc, keys_pb2, keys_pb2_grpc
from aigw_sidecar.store.embedded import find_server_binary
from tests.servers import SidecarProcess, StoreProcess


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _closed_loop(
    call: Callable[[], Awaitable[object]], concurrency: int, seconds: float, max_calls: int
) -> dict[str, float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline and len(latencies) < max_calls:
            t0 = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "calls": len(latencies),
        "calls_per_s": len(latencies) / elapsed,
        "p50_ms": _pct(latencies, 0.50),
        "p90_ms": _pct(latencies, 0.90),
        "p99_ms": _pct(latencies, 0.99),
        "mean_ms": statistics.fmean(latencies) * 1000,
    }


async def run(seconds: float, concurrency: int, max_calls: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        store = StoreProcess("valkey", find_server_binary(), Path(tmp) / "store").start()
        sidecar = SidecarProcess(store.url, "bench", extra_args=["--log-level", "WARNING"]).start()
        try:
            async with grpc.aio.insecure_channel(sidecar.target) as channel:
                keys = keys_pb2_grpc.KeyManagementStub(channel)
                admission = admission_pb2_grpc.AdmissionStub(channel)
                health = health_pb2_grpc.HealthStub(channel)
                created = await keys.CreateKey(keys_pb2.CreateKeyRequest(name="bench"))
                auth_req = admission_pb2.AuthorizeRequest(secret=created.secret)
                health_req = health_pb2.HealthCheckRequest()

                async def authorize() -> object:
                    reply = await admission.Authorize(auth_req)
                    assert reply.allowed
                    return reply

                async def noop() -> object:
                    return await health.Check(health_req)

                await _closed_loop(authorize, 8, 1.0, 2000)  # warm-up
                results = {
                    "noop_1": await _closed_loop(noop, 1, seconds, max_calls),
                    "authorize_1": await _closed_loop(authorize, 1, seconds, max_calls),
                    f"noop_{concurrency}": await _closed_loop(
                        noop, concurrency, seconds, max_calls
                    ),
                    f"authorize_{concurrency}": await _closed_loop(
                        authorize, concurrency, seconds, max_calls
                    ),
                }
        finally:
            sidecar.stop()
            store.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-calls", type=int, default=200_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = asyncio.run(run(args.seconds, args.concurrency, args.max_calls))
    print(f"{'phase':<16}{'calls':>9}{'calls/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}")
    for name, row in results.items():
        print(
            f"{name:<16}{row['calls']:>9.0f}{row['calls_per_s']:>10.0f}"
            f"{row['p50_ms']:>9.3f}{row['p90_ms']:>9.3f}{row['p99_ms']:>9.3f}"
        )
    c = args.concurrency
    ratio = results[f"authorize_{c}"]["calls_per_s"] / results[f"noop_{c}"]["calls_per_s"]
    print(f"Authorize / no-op throughput at {c} in flight: {ratio:.0%}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
