"""``make bench-list``: a page of 50 keys with their usage over gRPC, among 10,000 keys.

Not a test (a smoke run of it is: tests/bench/test_bench_list_smoke.py). In one run
it starts the embedded Valkey and ``aigw-sidecar serve`` (with its metrics
endpoint) on free loopback ports, creates ``--keys`` API keys in this process
straight through the store (``KeyService`` over ``RedisKeyStore``, many at once):
four workspaces, eight projects, a mix of limits (none; a daily cost limit; tokens,
requests and tokens per minute; parallel requests and requests per day), usage
reported on every other key (two models) and a request left in flight on the
keys with a parallel limit. Then it asks ``ListKeys`` for pages of ``--page-size``
in three places:

- ``first``: the first page of the whole listing;
- ``middle``: the page half-way through, by its ``page_token``;
- ``project``: the first page filtered by one project (one key in eight matches,
  so the listing reads about eight records per key it returns);

each in the BASIC and the WITH_USAGE view, ``--pages`` times, one call in flight,
the cases interleaved so that a noisy neighbour hits them all alike. For each it
reports:

- server ms per page, p50/p99: measured inside the sidecar, by its own
  ``aigw_rpc_duration_seconds{rpc="ListKeys"}`` (the time around the servicer
  call): with one call in flight, the growth of the histogram's ``_sum`` across a
  call, read from ``/metrics`` after it, is that call's time;
- client ms per page, p50/p99, beside the no-op RPC (gRPC health ``Check``) of the
  same client, the floor of the transport;
- store round trips and commands per page: the same page read by this process's
  own ``KeyService`` over a client whose connections count what they write (one
  write per command, or per pipeline of commands); and the store's own time
  running them (``INFO commandstats``, averaged over ``--warmup`` pages).

Target: at most 30 ms of server time per WITH_USAGE page (p99). Everything stays on
loopback; the table is printed and written as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis

from aigw_sidecar.admission.decision import UsageReport
from aigw_sidecar.admission.service import AdmissionService
from aigw_sidecar.api.v1 import keys_pb2, keys_pb2_grpc
from aigw_sidecar.keys.model import KeyFilter, KeySpec, KeyView, Limits
from aigw_sidecar.keys.service import KeyService
from aigw_sidecar.limits.periods import ResetPeriod
from aigw_sidecar.store.embedded import find_server_binary
from aigw_sidecar.store.keyspace import Keyspace
from aigw_sidecar.store.redis_store import RedisKeyStore
from tests.servers import SidecarProcess, StoreProcess, free_port
from tests.store_calls import CountingConnection

PREFIX = "benchlist"
WORKSPACES = ("acme", "globex", "initech", "umbrella")
PROJECTS = tuple(f"project-{i}" for i in range(8))
FILTERED_PROJECT = PROJECTS[3]
LIMITS = (
    Limits(),
    Limits(cost_limit_micro_usd=25_000_000, reset_period=ResetPeriod.DAILY),
    Limits(token_limit=2_000_000, requests_per_minute=600, tokens_per_minute=100_000,
           reset_period=ResetPeriod.MONTHLY),
    Limits(max_parallel_requests=8, requests_per_day=10_000, cost_limit_micro_usd=5_000_000),
)
MODELS = ("gpt-4o-mini", "claude-3-5-haiku")
TARGET_SERVER_MS = 30.0
_SUM_RE = re.compile(r'^aigw_rpc_duration_seconds_sum\{rpc="ListKeys"\} (\S+)$', re.M)


async def _populate(url: str, n: int, concurrency: int) -> None:
    client = Redis.from_url(url, decode_responses=True, max_connections=concurrency)
    store = RedisKeyStore(client, Keyspace(PREFIX))
    keys, admission = KeyService(store), AdmissionService(store)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            limits = LIMITS[i % len(LIMITS)]
            key, secret = await keys.create(KeySpec(
                name=f"service-{i:05d}", workspace=WORKSPACES[i % len(WORKSPACES)],
                project=PROJECTS[(i // len(WORKSPACES)) % len(PROJECTS)],
                environment="prod" if i % 3 else "dev", limits=limits,
            ))
            if i % 2:
                for r, model in enumerate(MODELS):
                    await admission.authorize(secret, request_id=f"r{r}")
                    await admission.record_usage(UsageReport(
                        key.key_id, f"r{r}", 200 + i % 500, 50 + i % 300, 1_000 + i, model=model,
                    ))
            if limits.max_parallel_requests:
                await admission.authorize(secret, request_id="in-flight")

    try:
        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await client.aclose()


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    request: dict[str, Any]  # ListKeysRequest fields besides the view


async def _store_cost(
    url: str, cases: list[Case], page_size: int, samples: int
) -> dict[str, dict[str, Any]]:
    """Round trips, commands and store time of each case and view, read by this process."""
    client = Redis.from_url(url, decode_responses=True, connection_class=CountingConnection)
    admin = Redis.from_url(url, decode_responses=True)
    keys = KeyService(RedisKeyStore(client, Keyspace(PREFIX)))
    found: dict[str, dict[str, Any]] = {}
    try:
        for case in cases:
            key_filter = KeyFilter(project=case.request.get("project", ""))
            token = case.request.get("page_token", "")
            for view in KeyView:
                await keys.list(key_filter, page_size, token, view)  # connected, script loaded
                writes, commands = CountingConnection.writes, CountingConnection.commands
                page = await keys.list(key_filter, page_size, token, view)
                row = found[f"{case.name}/{view.value}"] = {
                    "round_trips": CountingConnection.writes - writes,
                    "commands": CountingConnection.commands - commands,
                    "keys": len(page.keys),
                }
                await admin.config_resetstat()
                for _ in range(samples):
                    await keys.list(key_filter, page_size, token, view)
                stats = await admin.info("commandstats")
                usec = sum(int(v["usec"]) for k, v in stats.items()
                           if not k.startswith("cmdstat_config"))
                # Time the store spent running the page's commands (not waiting, not I/O).
                row["store_ms"] = round(usec / samples / 1000, 2)
    finally:
        await client.aclose()
        await admin.aclose()
    return found


async def _middle_token(url: str, n: int, page_size: int) -> str:
    client = Redis.from_url(url, decode_responses=True)
    keys = KeyService(RedisKeyStore(client, Keyspace(PREFIX)))
    token = ""
    try:
        for _ in range(max(1, n // page_size // 2)):
            token = (await keys.list(KeyFilter(), page_size, token)).next_page_token
    finally:
        await client.aclose()
    return token


def _server_seconds(metrics_url: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=5) as reply:
        text = reply.read().decode()
    match = _SUM_RE.search(text)
    return float(match.group(1)) if match else 0.0


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": _pct(ms, 0.50), "p99_ms": _pct(ms, 0.99), "mean_ms": statistics.fmean(ms)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aigw-bench-list-") as tmp:
        workdir = Path(tmp)
        store = StoreProcess("valkey", find_server_binary(), workdir / "store").start()
        metrics_port = free_port()
        sidecar = SidecarProcess(
            store.url, PREFIX, log_path=workdir / "sidecar.log",
            extra_args=["--log-level", "WARNING", "--metrics-listen",
                        f"127.0.0.1:{metrics_port}"],
        )
        try:
            started = time.perf_counter()
            asyncio.run(_populate(store.url, args.keys, args.concurrency))
            populate_s = time.perf_counter() - started
            print(f"{args.keys} keys created with usage in {populate_s:.1f} s", flush=True)
            sidecar.start()
            middle = asyncio.run(_middle_token(store.url, args.keys, args.page_size))
            cases = [
                Case("first", {}),
                Case("middle", {"page_token": middle}),
                Case("project", {"project": FILTERED_PROJECT}),
            ]
            store_cost = asyncio.run(_store_cost(store.url, cases, args.page_size, args.warmup))
            result = _measure(sidecar.target, f"http://127.0.0.1:{metrics_port}/metrics",
                              cases, args)
        finally:
            sidecar.stop()
            store.stop()
    for name, row in result["rows"].items():
        row.update(store_cost[name])
    result.update(keys=args.keys, page_size=args.page_size, pages=args.pages,
                  populate_s=round(populate_s, 1))
    return result


def _measure(target: str, metrics_url: str, cases: list[Case],
             args: argparse.Namespace) -> dict[str, Any]:
    views = {"basic": keys_pb2.KEY_VIEW_BASIC, "with_usage": keys_pb2.KEY_VIEW_WITH_USAGE}
    server: dict[str, list[float]] = {}
    client: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    noop: list[float] = []
    with grpc.insecure_channel(target) as channel:
        stub = keys_pb2_grpc.KeyManagementStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        requests = {
            f"{case.name}/{view}": keys_pb2.ListKeysRequest(
                page_size=args.page_size, view=number, **case.request
            )
            for case in cases for view, number in views.items()
        }
        for name, request in requests.items():  # warm: connections, scripts, caches
            for _ in range(args.warmup):
                reply = stub.ListKeys(request, timeout=30)
            sizes[name] = len(reply.keys)
            if name.endswith("with_usage") and len(reply.overviews) != len(reply.keys):
                raise SystemExit(f"{name}: {len(reply.overviews)} overviews for "
                                 f"{len(reply.keys)} keys")
        for _ in range(args.pages):
            for name, request in requests.items():
                before = _server_seconds(metrics_url)
                start = time.perf_counter()
                stub.ListKeys(request, timeout=30)
                client.setdefault(name, []).append((time.perf_counter() - start) * 1000)
                server.setdefault(name, []).append(
                    (_server_seconds(metrics_url) - before) * 1000
                )
            start = time.perf_counter()
            health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            noop.append((time.perf_counter() - start) * 1000)
    rows = {
        name: {
            "server": _summary(server[name]), "client": _summary(client[name]),
            "keys": sizes[name],
        }
        for name in requests
    }
    return {"rows": rows, "noop_client": _summary(noop)}


def _print(result: dict[str, Any]) -> None:
    print(f"\nListKeys, pages of {result['page_size']} among {result['keys']} keys, "
          f"{result['pages']} calls each, one in flight")
    print(f"{'page':<22}{'keys':>5}{'server p50':>12}{'p99':>8}{'client p50':>12}{'p99':>8}"
          f"{'round trips':>13}{'commands':>10}{'store ms':>10}")
    for name, row in result["rows"].items():
        s, c = row["server"], row["client"]
        print(f"{name:<22}{row['keys']:>5}{s['p50_ms']:>12.2f}{s['p99_ms']:>8.2f}"
              f"{c['p50_ms']:>12.2f}{c['p99_ms']:>8.2f}{row['round_trips']:>13}"
              f"{row['commands']:>10}{row['store_ms']:>10.2f}")
    n = result["noop_client"]
    print(f"{'no-op (health Check)':<22}{'':>5}{'':>12}{'':>8}{n['p50_ms']:>12.2f}"
          f"{n['p99_ms']:>8.2f}")
    print("server: inside the sidecar, the time around the servicer call "
          "(aigw_rpc_duration_seconds); store ms: the store's own time running the "
          "page's commands (INFO commandstats); all in ms")
    worst = max(row["server"]["p99_ms"] for name, row in result["rows"].items()
                if name.endswith("with_usage"))
    verdict = "ok" if worst <= TARGET_SERVER_MS else "OVER"
    print(f"WITH_USAGE worst server p99: {worst:.2f} ms (target <= {TARGET_SERVER_MS:.0f} ms: "
          f"{verdict})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.list_page",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument("--pages", type=int, default=200, help="calls per case and view")
    parser.add_argument("--warmup", type=int, default=5, help="calls per case before timing")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="keys created at once while populating")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run that only proves the benchmark works (CI)")
    parser.add_argument("--json", type=Path, default=Path("bench-list-results.json"))
    args = parser.parse_args(argv)
    if args.smoke:
        args.keys, args.pages, args.warmup = 400, 3, 1
    result = run(args)
    _print(result)
    args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
