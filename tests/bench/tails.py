"""Where Authorize's p99 comes from at a steady rate: conditions side by side.

    python -m tests.bench.tails --runs 3 --seconds 10 --rates 1000,2000 \
        --condition base: --condition health60:--health-interval-s=60 \
        --condition freeze:env:GCPROBE_FREEZE=1

Each condition is a fresh Valkey + sidecar (run under tests/bench/gcprobe.py, so
every collector pause is recorded) with its extra flags (``env:K=V`` items set
environment variables instead). For each run, each rate and each method (the
no-op health Check and Authorize) it sends steady arrivals with openloop.c and
prints p50/p99/p999, the generator's own send lag, the collector pauses that
fell in the measured window, and the CPU other tenants of the machine used meanwhile.
Runs are interleaved across conditions so a noisy minute hits all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aigw_sidecar.api.v1 import admission_pb2, keys_pb2, keys_pb2_grpc
from aigw_sidecar.store.embedded import find_server_binary
from tests.bench.openloop import steady
from tests.servers import REPO, StoreProcess, free_port

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
AUTHORIZE = "/aigw.v1.Admission/Authorize"
TICK = os.sysconf("SC_CLK_TCK")


def frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


def machine_busy_s() -> float:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICK


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wait_quiet(max_busy_pct: float, max_wait_s: float) -> float:
    """Wait until the machine was under ``max_busy_pct`` busy (of one CPU) for two
    consecutive 0.5 s samples; gives up after ``max_wait_s``. Returns the wait."""
    start = time.monotonic()
    quiet = 0
    while time.monotonic() - start < max_wait_s and quiet < 2:
        b0 = machine_busy_s()
        time.sleep(0.5)
        quiet = quiet + 1 if (machine_busy_s() - b0) / 0.5 * 100 < max_busy_pct else 0
    return time.monotonic() - start


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Sidecar:
    def __init__(self, workdir: Path, name: str, extra: list[str]) -> None:
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True)
        self.flags = [x for x in extra if not x.startswith("env:")]
        self.env = dict(x[4:].split("=", 1) for x in extra if x.startswith("env:"))
        self.gc_file = self.workdir / "gc.jsonl"
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"

    def start(self) -> Sidecar:
        self.store = StoreProcess("valkey", find_server_binary(), self.workdir / "store").start()
        cmd = [
            sys.executable, "-m", "tests.bench.gcprobe", str(self.gc_file), "serve",
            "--listen", self.target, "--redis-url", self.store.url, "--key-prefix", "bench",
            "--log-level", "WARNING", "--shutdown-grace-s", "2", "--admin-http-listen", "off",
            *self.flags,
        ]
        log = open(self.workdir / "sidecar.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=REPO,
                                     env={**os.environ, **self.env})
        log.close()
        deadline = time.monotonic() + 30
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"sidecar did not start; see {self.workdir}")
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5).status == 1:
                        break
                except grpc.RpcError:
                    time.sleep(0.1)
            made = keys_pb2_grpc.KeyManagementStub(channel).CreateKey(
                keys_pb2.CreateKeyRequest(name="tails")
            )
        self.key_id = made.key.key_id
        self.auth_body = frame(admission_pb2.AuthorizeRequest(secret=made.secret)
                               .SerializeToString())
        return self

    def lifetime_requests(self) -> int:
        with grpc.insecure_channel(self.target) as channel:
            got = keys_pb2_grpc.KeyManagementStub(channel).GetKeyOverview(
                keys_pb2.GetKeyOverviewRequest(key_id=self.key_id)
            )
        return int(got.overview.lifetime_requests)

    def stop(self) -> list[dict[str, Any]]:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.store.stop()
        if not self.gc_file.exists():
            return []
        return [json.loads(line) for line in self.gc_file.read_text().splitlines()]


def phase(args: argparse.Namespace, sidecar: Sidecar, name: str, run_no: int, rate: float,
          method: str, path: str, body: bytes) -> tuple[dict[str, Any], list[int]]:
    pid, store_pid = sidecar.proc.pid, sidecar.store.process.pid  # type: ignore[union-attr]
    before_calls = sidecar.lifetime_requests() if method == "authorize" else 0
    m0, s0, v0, g0 = (machine_busy_s(), proc_cpu_s(pid), proc_cpu_s(store_pid),
                      children_cpu_s())
    t0 = time.time()
    got = steady(sidecar.target, path, body, rate=rate, seconds=args.seconds,
                 warmup=args.warmup, connections=args.connections)
    t1 = time.time()
    m1, s1, v1, g1 = (machine_busy_s(), proc_cpu_s(pid), proc_cpu_s(store_pid),
                      children_cpu_s())
    wall = t1 - t0
    ours = (s1 - s0) + (v1 - v0) + (g1 - g0)
    counted = sidecar.lifetime_requests() - before_calls if method == "authorize" else None
    return {
        "condition": name, "run": run_no, "rate": rate, "method": method,
        "calls": got.calls, "errors": got.errors,
        "p50": got.p50_ms, "p90": got.p90_ms, "p99": got.p99_ms, "p999": got.p999_ms,
        "max": got.max_ms, "send_lag_max": got.max_send_lag_ms, "late_sends": got.late_sends,
        "sidecar_cpu_pct": 100 * (s1 - s0) / wall,
        "others_cpu_pct": 100 * max(0.0, (m1 - m0) - ours) / wall,
        "store_counted": counted,
        "window": (t0 + args.warmup, t1),
    }, got.samples_us


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[Any, list[int]]]:
    conditions = []
    for spec in args.condition or ["base:"]:
        name, _, rest = spec.partition(":")
        conditions.append((name, [x for x in rest.replace(",", " ").split() if x]))
    rates = [float(r) for r in args.rates.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    results: list[dict[str, Any]] = []
    pooled: dict[Any, list[int]] = {}
    with tempfile.TemporaryDirectory(prefix="aigw-tails-") as tmp:
        # Every condition's sidecar runs for the whole experiment; phases take turns
        # (the order rotates every round), so a noisy minute is shared by all.
        sidecars: dict[str, Sidecar] = {}
        try:
            for name, extra in conditions:
                sidecars[name] = Sidecar(Path(tmp), name, extra).start()
            time.sleep(args.settle)
            for run_no in range(args.runs):
                turn = run_no % len(conditions)
                order = conditions[turn:] + conditions[:turn]
                for rate in rates:
                    for method in methods:
                        for name, _extra in order:
                            sidecar = sidecars[name]
                            path, body = (
                                (AUTHORIZE, sidecar.auth_body) if method == "authorize"
                                else (HEALTH_CHECK, frame(b""))
                            )
                            for attempt in range(args.attempts):
                                wait_quiet(args.quiet_pct, args.quiet_wait)
                                row, samples = phase(args, sidecar, name, run_no, rate, method,
                                                     path, body)
                                row["attempt"] = attempt
                                if row["others_cpu_pct"] <= args.max_others_pct:
                                    break
                                print(f"  (noisy: others {row['others_cpu_pct']:.0f}% of a "
                                      "CPU; again)", flush=True)
                            results.append(row)
                            pooled.setdefault((name, method, rate), []).extend(samples)
                            print(_line(row), flush=True)
        finally:
            pauses = {name: sidecar.stop() for name, sidecar in sidecars.items()}
    for name, found in pauses.items():
        for p in found:
            if p["gen"] == -1:
                print(f"{name}: at exit {p['tracked']} objects tracked, {p['frozen']} frozen")
    for row in results:
        lo, hi = row.pop("window")
        inside = [p for p in pauses[row["condition"]] if lo <= p["t"] <= hi]
        row["gc_count"] = len(inside)
        row["gc_by_gen"] = [sum(1 for p in inside if p["gen"] == g) for g in range(3)]
        row["gc_max_ms"] = max((p["ms"] for p in inside), default=0.0)
        row["gc_total_ms"] = sum(p["ms"] for p in inside)
        row["gc_over_1ms"] = [(p["gen"], round(p["ms"], 2)) for p in inside if p["ms"] > 1]
    print("\ncollector pauses per phase")
    for row in results:
        print(f"{row['condition']:<14}{row['run']:>3}{row['method']:>10}{row['rate']:>7.0f}"
              f"  gc {row['gc_count']:>4} {row['gc_by_gen']} max {row['gc_max_ms']:.2f} ms"
              + (f"  >1ms {row['gc_over_1ms']}" if row["gc_over_1ms"] else ""))
    return results, pooled


def _line(row: dict[str, Any]) -> str:
    return (f"{row['condition']:<14}{row['run']:>3}{row['method']:>10}{row['rate']:>7.0f}"
            f"{row['p50']:>8.2f}{row['p90']:>8.2f}{row['p99']:>8.2f}{row['p999']:>8.2f}"
            f"{row['max']:>8.2f}{row['errors']:>5}{row['send_lag_max']:>7.2f}"
            f"{row['late_sends']:>5}{row['sidecar_cpu_pct']:>6.0f}{row['others_cpu_pct']:>6.0f}"
            + (f"  store {row['store_counted']}" if row["store_counted"] is not None else ""))


def summary(results: list[dict[str, Any]], pooled: dict[Any, list[int]]) -> None:
    print("\nper phase: median [min-max] over runs; pooled: every call of every run")
    keys = sorted({(r["condition"], r["method"], r["rate"]) for r in results},
                  key=lambda k: (k[1], k[2], k[0]))
    for cond, method, rate in keys:
        rows = [r for r in results
                if (r["condition"], r["method"], r["rate"]) == (cond, method, rate)]
        cells = []
        for field in ("p50", "p99", "p999"):
            vals = [r[field] for r in rows]
            cells.append(f"{field} {statistics.median(vals):.2f} [{min(vals):.2f}-{max(vals):.2f}]")
        every = sorted(pooled[(cond, method, rate)])
        pooled_cells = " ".join(
            f"{every[min(len(every) - 1, int(q * len(every)))] / 1000:.2f}"
            for q in (0.5, 0.99, 0.999)
        )
        others = statistics.median(r["others_cpu_pct"] for r in rows)
        print(f"{cond:<14}{method:>10}{rate:>7.0f}  " + "  ".join(cells)
              + f"  | pooled p50/p99/p999 {pooled_cells}  (others {others:.0f}%)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.tails")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--rates", default="1000")
    parser.add_argument("--methods", default="noop,authorize")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--quiet-pct", type=float, default=15.0,
                        help="start a phase once the machine is this idle (%% of one CPU)")
    parser.add_argument("--quiet-wait", type=float, default=60.0)
    parser.add_argument("--max-others-pct", type=float, default=20.0,
                        help="repeat a phase when other tenants used more CPU than this")
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--condition", action="append",
                        help="name:flag flag env:K=V ... (repeatable)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    print(f"{'condition':<14}{'run':>3}{'method':>10}{'rate':>7}{'p50':>8}{'p90':>8}{'p99':>8}"
          f"{'p999':>8}{'max':>8}{'err':>5}{'lag':>7}{'late':>5}{'cpu%':>6}{'oth%':>6}")
    results, pooled = run(args)
    summary(results, pooled)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
