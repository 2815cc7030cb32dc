"""``make bench``'s tracing rows: what OpenTelemetry tracing costs per Authorize.

Three sidecars on one Valkey, in one run: tracing off (no ``--otel-endpoint``, the
default), tracing on with every trace recorded (``--otel-sample-ratio 1``, the
worst case: two spans per call, Authorize and its store round trip, exported
over OTLP/gRPC), and tracing on with 1 % recorded. Spans go to a real OTLP
receiver in this process (tests/otlp_receiver.py). Each round drives every
sidecar with the same h2load phases back to back (peak throughput at 8x8 in
flight, then p50 with one call in flight); the table is the median of the rounds
with the spread, and the cost per call is

    1e6 / traced calls/s - 1e6 / untraced calls/s   (µs of the sidecar's CPU, at peak)

"Free when off" is structural (tracing off installs no interceptor and wraps no
store: tests/server/test_tracing.py checks that the tracing SDK is not even
imported); ``make bench-compare REV=<a revision before tracing>`` measures it.
Every phase is checked like ``make bench``'s: each call h2load saw end must be in
the store's count, and the receiver must get the spans the traced sidecar made.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from aigw_sidecar.api.v1 import admission_pb2, keys_pb2, keys_pb2_grpc
from aigw_sidecar.store.embedded import find_server_binary
from tests.bench.bench import AUTHORIZE, h2load, lifetime_requests
from tests.otlp_receiver import OtlpReceiver
from tests.servers import SidecarProcess, StoreProcess

VARIANTS = ("off", "on_ratio_1", "on_ratio_0.01")


def _key(target: str) -> tuple[str, str]:
    with grpc.insecure_channel(target) as channel:
        created = keys_pb2_grpc.KeyManagementStub(channel).CreateKey(
            keys_pb2.CreateKeyRequest(name="bench-tracing")
        )
    return created.secret, created.key.key_id


def _traced(receiver: OtlpReceiver) -> int:
    return sum(s.name in ("aigw.v1.Admission/Authorize", "store authorize")
               for s in receiver.spans)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("h2load") is None:
        raise SystemExit("h2load not found: apt-get install nghttp2-client")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    spans_expected = 0
    with tempfile.TemporaryDirectory(prefix="aigw-bench-tracing-") as tmp, \
            OtlpReceiver() as receiver:
        workdir = Path(tmp)
        store = StoreProcess("valkey", find_server_binary(), workdir / "store").start()
        base = ["--log-level", "WARNING"]
        extra = {
            "off": [],
            "on_ratio_1": ["--otel-endpoint", receiver.grpc_endpoint],
            "on_ratio_0.01": ["--otel-endpoint", receiver.grpc_endpoint,
                              "--otel-sample-ratio", "0.01"],
        }
        sidecars = {
            name: SidecarProcess(store.url, f"bt{number}", extra_args=[*base, *extra[name]],
                                 log_path=workdir / f"sidecar-{number}.log").start()
            for number, name in enumerate(VARIANTS)
        }
        try:
            keys = {name: _key(sidecar.target) for name, sidecar in sidecars.items()}
            for number in range(args.rounds):
                for name in VARIANTS:
                    target, (secret, key_id) = sidecars[name].target, keys[name]
                    body = admission_pb2.AuthorizeRequest(secret=secret).SerializeToString()
                    before = lifetime_requests(target, key_id)
                    peak = h2load(f"{name}-{number}", target, AUTHORIZE, body, workdir,
                                  connections=8, streams=8, seconds=args.seconds)
                    one = h2load(f"{name}-{number}-1", target, AUTHORIZE, body, workdir,
                                 connections=1, streams=1, seconds=args.seconds / 2)
                    admitted = lifetime_requests(target, key_id) - before
                    # (A call h2load's -D deadline cut can still reach the store.)
                    if admitted < peak.done + one.done:
                        raise RuntimeError(f"{name}: h2load saw {peak.done + one.done} calls "
                                           f"end, the store counted {admitted}")
                    if name == "on_ratio_1":
                        spans_expected += 2 * admitted  # Authorize + store authorize
                    results[name].append({
                        "calls_per_s": peak.row.calls_per_s,
                        "p50_ms": peak.row.p50_ms or 0.0,
                        "p99_ms": peak.row.p99_ms or 0.0,
                        "one_in_flight_p50_ms": one.row.p50_ms or 0.0,
                    })
                    print(f"  round {number + 1} {name:<14} {peak.row.calls_per_s:>8.0f}/s  "
                          f"p50 {peak.row.p50_ms:.3f} ms  p99 {peak.row.p99_ms:.3f} ms  "
                          f"1-in-flight p50 {one.row.p50_ms:.3f} ms", flush=True)
            # Spans still queued leave at the sidecar's stop (the batch processor's flush).
            for sidecar in sidecars.values():
                sidecar.stop()
            deadline = time.monotonic() + 30
            while _traced(receiver) < spans_expected and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            for sidecar in sidecars.values():
                sidecar.stop()
            store.stop()
        received = _traced(receiver)
    summary = summarise(results)
    summary["spans"] = {
        "made_at_ratio_1_and_0.01": received,
        "expected_at_ratio_1": spans_expected,
    }
    return summary


def summarise(results: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    def med(name: str, field: str) -> float:
        return statistics.median(r[field] for r in results[name])

    def spread(name: str, field: str) -> list[float]:
        values = [r[field] for r in results[name]]
        return [min(values), max(values)]

    out: dict[str, Any] = {"rounds": len(results["off"]), "variants": {}}
    off = med("off", "calls_per_s")
    for name in VARIANTS:
        rate = med(name, "calls_per_s")
        out["variants"][name] = {
            "calls_per_s": rate, "calls_per_s_range": spread(name, "calls_per_s"),
            "p50_ms": med(name, "p50_ms"), "p99_ms": med(name, "p99_ms"),
            "one_in_flight_p50_ms": med(name, "one_in_flight_p50_ms"),
            "one_in_flight_p50_ms_range": spread(name, "one_in_flight_p50_ms"),
            "throughput_over_off": rate / off if off else 0.0,
            "us_per_call_over_off": (1e6 / rate - 1e6 / off) if rate and off else 0.0,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.tracing_overhead",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per peak phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    summary = run(args)
    print(f"\ntracing: median of {summary['rounds']} rounds (range), Authorize at 8x8 in "
          "flight and with 1 in flight")
    print(f"{'variant':<16}{'calls/s':>9}{'range':>17}{'x off':>7}{'us/call':>9}"
          f"{'1-in-flight p50 ms':>20}")
    for name, row in summary["variants"].items():
        low, high = row["calls_per_s_range"]
        print(f"{name:<16}{row['calls_per_s']:>9.0f}{f'{low:.0f}-{high:.0f}':>17}"
              f"{row['throughput_over_off']:>7.2f}{row['us_per_call_over_off']:>9.1f}"
              f"{row['one_in_flight_p50_ms']:>20.3f}")
    spans = summary["spans"]
    print(f"spans received: {spans['made_at_ratio_1_and_0.01']} "
          f"(ratio 1 alone made {spans['expected_at_ratio_1']})")
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
