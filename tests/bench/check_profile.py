"""Where a Check's CPU goes: the sidecar's CPU per Check against its no-op RPC, and a profile.

Not a test: run with ``make bench-profile`` (or ``python -m tests.bench.check_profile``).
It starts its own Valkey and ``aigw-sidecar serve``, creates a key with a token
budget and a requests-per-minute limit (so every Check runs the whole script and
reserves an estimate), and drives the sidecar directly with h2load over gRPC
(no Envoy): the gRPC health Check (the no-op floor) and Envoy's
``Authorization/Check`` with a chat body, in alternating rounds. It prints each
one's calls/s and the sidecar's CPU per call (from /proc), and the ratio.

With py-spy installed (``pip install py-spy``) it then records the sidecar under
Check load and prints the split of samples: our code (``aigw_sidecar``), protobuf,
and the rest (grpc.aio's event loop and Cython core, and grpc's own threads).
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from aigw_sidecar.api.envoy.v3 import ext_authz_pb2 as authz
from aigw_sidecar.api.v1 import keys_pb2, keys_pb2_grpc
from aigw_sidecar.server.ext_authz import CHECK_METHOD
from tests.bench.proc_cpu import read_cpu
from tests.servers import SidecarProcess, StoreProcess, store_binaries

HEALTH_CHECK = "/grpc.health.v1.Health/Check"


def _framed(message: bytes) -> bytes:
    """One gRPC message as h2load sends it: not compressed, 4-byte length."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def check_request(secret: str) -> bytes:
    request = authz.CheckRequest()
    request.attributes.context_extensions["endpoint"] = "chat"
    http = request.attributes.request.http
    http.method, http.path = "POST", "/v1/chat/completions"
    http.headers["authorization"] = f"Bearer {secret}"
    http.headers["x-request-id"] = "b3a1c2d4-0000-4000-8000-123456789abc"
    http.raw_body = json.dumps({
        "model": "mock", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}],
    }).encode()
    return request.SerializeToString()


def h2load(target: str, path: str, body: Path, seconds: float, in_flight: int) -> int:
    """Completed calls of one bounded h2load run (8 connections)."""
    conns = min(8, in_flight)
    out = subprocess.run(
        ["h2load", "-D", str(max(1, round(seconds))), "-c", str(conns),
         "-m", str(max(1, in_flight // conns)),
         "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://{target}{path}"],
        capture_output=True, text=True, check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("requests:"))
    return int(line.split()[7])  # "requests: N total, N started, N done, N succeeded, ..."


def split(profile: Path) -> dict[str, float]:
    """Shares of py-spy samples (raw format): ours, protobuf, and everything else."""
    parts: Counter[str] = Counter()
    for line in profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        # Every stack starts in cli.py's main and runner.py's run: only frames below count.
        ours = any("aigw_sidecar/" in f and "cli.py" not in f and "runner.py" not in f
                   for f in frames)
        part = "aigw_sidecar" if ours else (
            "protobuf" if "protobuf" in frames[-1] else "grpc and asyncio")
        parts[part] += int(count)
    total = sum(parts.values()) or 1
    return {name: 100 * n / total for name, n in parts.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="per phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        print("h2load not found: apt-get install nghttp2-client", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="aigw-profile-"))
    store = StoreProcess("valkey", store_binaries()["valkey"], workdir / "store").start()
    sidecar = SidecarProcess(store.url, "profile").start()
    try:
        with grpc.insecure_channel(sidecar.target) as channel:
            key = keys_pb2_grpc.KeyManagementStub(channel).CreateKey(keys_pb2.CreateKeyRequest(
                name="profile",
                limits=keys_pb2.Limits(token_limit=10**12, requests_per_minute=10**6),
            ))
        noop, check = workdir / "noop.bin", workdir / "check.bin"
        noop.write_bytes(_framed(health_pb2.HealthCheckRequest().SerializeToString()))
        check.write_bytes(_framed(check_request(key.secret)))
        assert sidecar.process is not None
        pid = sidecar.process.pid
        ratios = []
        for rnd in range(args.rounds):
            row = []
            for name, path, body in (("no-op", HEALTH_CHECK, noop), ("Check", CHECK_METHOD, check)):
                before = read_cpu([pid]).seconds
                done = h2load(sidecar.target, path, body, args.seconds, args.in_flight)
                used = read_cpu([pid]).seconds - before
                row.append((name, done / args.seconds, used / max(done, 1) * 1e6))
            ratios.append(row[1][2] / row[0][2])
            print(f"round {rnd + 1}: " + " | ".join(
                f"{n} {rate:,.0f}/s {us:.0f} µs CPU/call" for n, rate, us in row
            ) + f" | Check / no-op CPU {ratios[-1]:.2f}", flush=True)
        ordered = sorted(ratios)
        print(f"Check / no-op CPU per call: median {ordered[len(ordered) // 2]:.2f} "
              f"[{ordered[0]:.2f}-{ordered[-1]:.2f}]")
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if Path(spy).exists():
            profile = workdir / "check.prof"
            recorder = subprocess.Popen(
                [spy, "record", "-p", str(pid), "-d", str(int(args.seconds)), "-r", "200",
                 "-f", "raw", "-o", str(profile)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            h2load(sidecar.target, CHECK_METHOD, check, args.seconds, args.in_flight)
            recorder.wait()
            if profile.exists():
                shares = split(profile)
                print("py-spy samples under Check load: " + ", ".join(
                    f"{name} {share:.1f} %" for name, share in sorted(shares.items())))
    finally:
        sidecar.stop()
        store.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
