"""Steady arrivals: build and run ``openloop.c`` (see its header for why not h2load --rps).

``steady(...)`` sends calls at exactly ``rate`` per second for ``seconds`` after
``warmup`` seconds, measures each from its scheduled send time, and returns the
percentiles of the measured calls (warm-up excluded). The generator is compiled
once per checkout with the system C compiler into ``build/`` next to this file.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("openloop.c")
BUILD = Path(__file__).with_name("build")


def binary() -> Path:
    """The compiled generator, rebuilt when the source is newer."""
    out = BUILD / "openloop"
    if out.exists() and out.stat().st_mtime >= SOURCE.stat().st_mtime:
        return out
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("a C compiler (cc) is needed to build tests/bench/openloop.c")
    BUILD.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp")
    subprocess.run([cc, "-O2", "-o", str(tmp), str(SOURCE)], check=True, timeout=120)
    tmp.replace(out)
    return out


def available() -> bool:
    try:
        binary()
    except (RuntimeError, subprocess.CalledProcessError, OSError):
        return False
    return True


@dataclass
class Steady:
    calls: int          # measured calls (after warm-up)
    ok: int
    errors: int         # failed or unanswered measured calls
    offered_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    max_send_lag_ms: float   # how late the generator itself sent a call
    late_sends: int          # sends more than 1 ms late (the generator did not get a CPU)
    counters: dict[str, float]
    samples_us: list[int]    # every successful measured call, sorted
    p99_from_send_ms: float  # p99 measured from the actual send (generator lateness left out)
    p999_from_send_ms: float


def _pct(ordered: list[int], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


def steady(target: str, path: str, framed_body: bytes, *, rate: float, seconds: float,
           warmup: float = 1.0, connections: int = 1) -> Steady:
    """One steady run against ``target`` (``host:port``, IPv4)."""
    host, port = target.rsplit(":", 1)
    with tempfile.TemporaryDirectory(prefix="openloop-") as tmp:
        body = Path(tmp) / "body.bin"
        body.write_bytes(framed_body)
        out = Path(tmp) / "latency.txt"
        proc = subprocess.run(
            [str(binary()), host, port, path, str(body), f"{rate:.3f}", f"{seconds:.3f}",
             f"{warmup:.3f}", str(connections), str(out)],
            capture_output=True, text=True, timeout=warmup + seconds + 60,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"openloop failed: {proc.stderr.strip()}")
        counters = {
            k: float(v) for k, v in (f.split("=") for f in proc.stdout.split())
        }
        pairs = [line.split() for line in out.read_text().splitlines()]
    lat = [int(a) for a, _ in pairs]
    ok = sorted(x for x in lat if x >= 0)
    from_send = sorted(int(b) for _, b in pairs if int(b) >= 0)
    if not ok:
        raise RuntimeError(f"openloop: no call succeeded ({proc.stdout.strip()})")
    return Steady(
        calls=len(lat), ok=len(ok), errors=len(lat) - len(ok),
        offered_per_s=counters["offered_per_s"],
        p50_ms=_pct(ok, 0.5), p90_ms=_pct(ok, 0.9), p99_ms=_pct(ok, 0.99),
        p999_ms=_pct(ok, 0.999), max_ms=ok[-1] / 1000,
        max_send_lag_ms=counters["max_send_lag_us"] / 1000,
        late_sends=int(counters["send_lag_over_1ms"]),
        counters=counters, samples_us=ok,
        p99_from_send_ms=_pct(from_send, 0.99), p999_from_send_ms=_pct(from_send, 0.999),
    )
