"""``aigw-sidecar`` with its garbage-collector pauses recorded (a benchmark probe).

    python -m tests.bench.gcprobe OUT.jsonl serve [sidecar flags]

Runs ``aigw_sidecar.cli.main`` unchanged and appends one JSON line per
collection to OUT.jsonl when the process exits: wall-clock time at its start,
generation, pause in ms, objects collected. Used to line pauses up with a
benchmark phase's window (tests/bench/tails.py).
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import threading
import time

_records: list[tuple[float, int, float, int]] = []
_started: dict[str, float] = {}


def _callback(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _started["t"] = time.perf_counter()
        _started["wall"] = time.time()
    else:
        pause = time.perf_counter() - _started.get("t", time.perf_counter())
        _records.append((_started.get("wall", 0.0), info["generation"], pause * 1000,
                         info.get("collected", 0)))


def _dump(path: str) -> None:
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps({"t": time.time(), "gen": -1, "ms": 0.0, "collected": 0,
                              "tracked": len(gc.get_objects()),
                              "frozen": gc.get_freeze_count()}) + "\n")
        for wall, gen, ms, collected in _records:
            out.write(json.dumps({"t": wall, "gen": gen, "ms": ms, "collected": collected}) + "\n")


def main() -> int:
    path = sys.argv[1]
    gc.callbacks.append(_callback)
    # Experiments: GCPROBE_THRESHOLD="g0,g1,g2"; GCPROBE_FREEZE_AFTER_S=N collects
    # and freezes everything alive N seconds after start (start-up is done by then).
    switch = os.environ.get("GCPROBE_SWITCH_INTERVAL")
    if switch:
        sys.setswitchinterval(float(switch))
    threshold = os.environ.get("GCPROBE_THRESHOLD")
    if threshold:
        gc.set_threshold(*(int(x) for x in threshold.split(",")))
    unfreeze_after = float(os.environ.get("GCPROBE_UNFREEZE_AFTER_S", "0"))
    if unfreeze_after > 0:  # back to no freeze at all (the sidecar freezes at start-up)
        timer = threading.Timer(unfreeze_after, gc.unfreeze)
        timer.daemon = True
        timer.start()
    freeze_after = float(os.environ.get("GCPROBE_FREEZE_AFTER_S", "0"))
    if freeze_after > 0:
        def freeze() -> None:
            gc.collect()
            gc.freeze()

        timer = threading.Timer(freeze_after, freeze)
        timer.daemon = True
        timer.start()
    atexit.register(_dump, path)
    import aigw_sidecar.cli as cli

    health_interval = os.environ.get("GCPROBE_HEALTH_INTERVAL_S")
    if health_interval:  # no flag for it: patch the parsed settings
        from dataclasses import replace

        from aigw_sidecar.settings import Settings, parse_settings

        def patched(argv: list[str]) -> Settings:
            return replace(parse_settings(argv), health_interval_s=float(health_interval))

        cli.parse_settings = patched  # type: ignore[attr-defined,assignment]
    slow_ms = os.environ.get("GCPROBE_SLOW_CALLBACK_MS")
    if slow_ms:  # asyncio's debug mode logs every callback that ran longer (needs
        # --event-loop asyncio and PYTHONASYNCIODEBUG=1)
        import asyncio.base_events as base_events

        init = base_events.BaseEventLoop.__init__

        def patched_init(self: base_events.BaseEventLoop) -> None:
            init(self)
            self.slow_callback_duration = float(slow_ms) / 1000

        base_events.BaseEventLoop.__init__ = patched_init  # type: ignore[method-assign]
    trace = os.environ.get("GCPROBE_TRACE")
    if trace:  # monotonic ns at Authorize's entry and return, for tails.py's timelines
        from aigw_sidecar.server.servicers import AdmissionServicer

        marks: list[tuple[int, int]] = []
        inner = AdmissionServicer.Authorize

        async def traced(self: object, request: object, context: object) -> object:
            t0 = time.monotonic_ns()
            try:
                return await inner(self, request, context)  # type: ignore[arg-type]
            finally:
                marks.append((t0, time.monotonic_ns()))

        AdmissionServicer.Authorize = traced  # type: ignore[method-assign,assignment]

        def dump_trace() -> None:
            with open(trace, "w", encoding="utf-8") as out:
                out.writelines(f"{a} {b}\n" for a, b in marks)

        atexit.register(dump_trace)
    sidecar_main = cli.main

    return sidecar_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
