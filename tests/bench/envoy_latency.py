"""Latency Envoy + aigw-sidecar (ext_authz) adds over Envoy alone, on loopback.

Not a test: run with ``make bench-envoy`` (or ``python -m tests.bench.envoy_latency``).
Starts its own Valkey, ``aigw-sidecar serve``, the mock OpenAI upstream (its own
process) and two Envoys with the same config, clients/envoy/envoy.yaml as shipped:
one with it as is, one with the sidecar's filters (ext_authz and ext_proc) cut
out ("Envoy alone"). Then it
sends sequential keep-alive ``POST /v1/chat/completions`` requests, alternating
batches between the two, so both paths see the same machine in the same run.

The key has a requests-per-minute and a token limit, so every check runs the
whole authorize script. Bounded by ``--requests`` per path and ``--seconds``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from aigw_sidecar.api.v1 import keys_pb2, keys_pb2_grpc
from aigw_sidecar.store.embedded import find_server_binary
from tests.e2e.envoy_process import EnvoyProcess, render_shipped_config
from tests.servers import SidecarProcess, StoreProcess

BODY = json.dumps({"model": "mock", "messages": [{"role": "user", "content": "hi"}]}).encode()
_FILTER_START = "          - name: envoy.filters.http.ext_authz\n"
_FILTER_END = "          - name: envoy.filters.http.router\n"


_EXT_PROC_START = "          # Two ext_proc filters after ext_authz"


def without_ext_authz(config: str) -> str:
    """The same config with the sidecar's HTTP filters (ext_authz, ext_proc) removed."""
    start, end = config.index(_FILTER_START), config.index(_FILTER_END)
    return config[:start] + config[end:]


def ext_authz_only(config: str) -> str:
    """The same config with ext_authz kept and the ext_proc filters removed."""
    start, end = config.index(_EXT_PROC_START), config.index(_FILTER_END)
    return config[:start] + config[end:]


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _summary(samples: list[float]) -> dict[str, float]:
    return {
        "requests": len(samples),
        "p50_ms": _pct(samples, 0.50),
        "p90_ms": _pct(samples, 0.90),
        "p99_ms": _pct(samples, 0.99),
        "mean_ms": statistics.fmean(samples) * 1000,
    }


def _batch(conn: http.client.HTTPConnection, headers: dict[str, str], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body=BODY, headers=headers)
        reply = conn.getresponse()
        reply.read()
        out.append(time.perf_counter() - t0)
        if reply.status != 200:
            raise RuntimeError(f"unexpected HTTP {reply.status}")
    return out


def measure(ports: dict[str, int], secret: str, requests: int, seconds: float,
            batch: int = 100) -> dict[str, list[float]]:
    headers = {"authorization": f"Bearer {secret}", "content-type": "application/json"}
    conns = {name: http.client.HTTPConnection("127.0.0.1", port) for name, port in ports.items()}
    for name, conn in conns.items():  # warm up connections, caches and the script
        _batch(conn, headers, batch)
    samples: dict[str, list[float]] = {name: [] for name in ports}
    deadline = time.monotonic() + seconds
    order = list(ports)
    while min(len(s) for s in samples.values()) < requests and time.monotonic() < deadline:
        for name in order:
            samples[name] += _batch(conns[name], headers, batch)
        order.reverse()  # neither path always goes first
    for conn in conns.values():
        conn.close()
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.envoy_latency")
    parser.add_argument("--requests", type=int, default=3000, help="per path (default 3000)")
    parser.add_argument("--seconds", type=float, default=60.0, help="time bound (default 60)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="aigw-bench-envoy-") as tmp:
        workdir = Path(tmp)
        store = StoreProcess("valkey", find_server_binary(), workdir / "store").start()
        sidecar = SidecarProcess(store.url, "bench", log_path=workdir / "sidecar.log")
        upstream = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.upstream"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        envoys: list[EnvoyProcess] = []
        try:
            assert upstream.stdout is not None
            upstream_port = int(upstream.stdout.readline())
            sidecar.start()
            with grpc.insecure_channel(sidecar.target) as channel:
                created = keys_pb2_grpc.KeyManagementStub(channel).CreateKey(
                    keys_pb2.CreateKeyRequest(
                        name="bench",
                        limits=keys_pb2.Limits(requests_per_minute=1_000_000,
                                               token_limit=10**12),
                    )
                )
            config = render_shipped_config(sidecar.port, upstream_port)
            with_authz = EnvoyProcess(config, workdir / "envoy-authz").start()
            envoys.append(with_authz)
            alone = EnvoyProcess(without_ext_authz(config), workdir / "envoy-alone").start()
            envoys.append(alone)
            authz_only = EnvoyProcess(ext_authz_only(config), workdir / "envoy-authz-only").start()
            envoys.append(authz_only)
            ports = {
                "envoy_alone": alone.ports["llm_gateway"],
                "envoy_ext_authz_only": authz_only.ports["llm_gateway"],
                "envoy_with_sidecar": with_authz.ports["llm_gateway"],
            }
            samples = measure(ports, created.secret, args.requests, args.seconds)
        finally:
            for envoy in envoys:
                envoy.stop()
            if upstream.stdin:
                upstream.stdin.close()
            upstream.wait(timeout=10)
            sidecar.stop()
            store.stop()

    results = {name: _summary(s) for name, s in samples.items()}
    base = results["envoy_alone"]
    for name, path in (("added_by_sidecar", "envoy_with_sidecar"),
                       ("added_by_ext_authz", "envoy_ext_authz_only")):
        results[name] = {
            stat: results[path][stat] - base[stat]
            for stat in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")
        }
    print(f"{'path':<22}{'requests':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'mean ms':>9}")
    for name, row in results.items():
        print(f"{name:<22}{int(row.get('requests', 0)) or '':>9}{row['p50_ms']:>9.3f}"
              f"{row['p90_ms']:>9.3f}{row['p99_ms']:>9.3f}"
              f"{row['mean_ms']:>9.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
