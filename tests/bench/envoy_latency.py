"""``make bench-envoy``: what the sidecar costs behind Envoy, told by one run.

Not a test (a smoke run of it is: tests/bench/test_bench_envoy_smoke.py). On loopback it
starts its own Valkey, ``aigw-sidecar serve``, an OpenAI upstream and one Envoy per
variant of the shipped clients/envoy/envoy.yaml, derived by parsing the YAML (see
:func:`variant_config`). The upstream (tests/bench/envoy_upstream.py), ``--upstream``:

* ``envoy`` (default): a second, separate Envoy (one worker) answering
  ``POST /v1/chat/completions`` with a fixed chat completion (``direct_response``):
  an Envoy's floor, some 50-200 µs of CPU per request on a 2-vCPU machine, so less of
  the machine goes to what is not measured;
* ``python``: the mock of the end-to-end tests (tests/e2e/upstream.py, its own
  process), some 300-400 µs per request on the same cores as everything measured.

The Envoy variants:

* ``envoy_alone``: every ext_authz, ext_proc and Lua HTTP filter and every gRPC
  access logger (``HttpGrpcAccessLogConfig``) removed;
* ``ext_authz_only``: the same with ext_authz kept;
* ``shipped``: the config as shipped.

Load comes from h2load (Debian's nghttp2-client, ``--h1``): keep-alive
``POST /v1/chat/completions`` with a JSON body and a key, at 1 and at 64 requests in
flight (HTTP/1.1 has no multiplexing: in flight = connections), each phase
time-bounded (``--seconds``) after ``--warm-up-time``. One more phase drives the
sidecar's no-op, the gRPC health ``Check`` (h2load, h2c, as tests/bench/bench.py
does), at the same in-flight counts over as many connections as Envoy has to the
sidecar, so the sidecar's CPU per request behind Envoy can be set against its CPU
per no-op RPC. Variants are rotated over ``--rounds`` rounds; the table shows the
median and the min-max spread.

For each phase, over h2load's measured window exactly (its "Main benchmark
duration" lines, read as they are printed): requests per second, p50/p99/p999 from
its per-request log, and the CPU per request of the sidecar, Envoy, the store, the
upstream and the client (h2load itself), from /proc (tests/bench/proc_cpu.py).
Around each phase (warm-up and settling included), from Envoy's admin: response
classes, ext_authz results, gRPC access-log entries written and dropped, and stream
resets on the sidecar's cluster against the requests the client cut when it stopped.
Every response is counted: a phase with a non-2xx (h2load's or Envoy's count), a
failed or errored request, or a dropped access-log entry fails the run (exit 1).
At the end the store is asked whether every admitted request was charged.

Each Envoy variant gets its own key, with limits no run reaches: requests per
minute, so every check runs the admission script, and for the shipped config a
token limit too, so every check also reserves its estimate and the usage path
settles it. The ext_authz-only key has no budget: without a usage path nothing
would settle its reservations, and a pile of open ones slows every later check.
Writes ``--json`` (default bench-envoy-results.json).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2

from aigw_sidecar.api.v1 import keys_pb2, keys_pb2_grpc
from aigw_sidecar.store.embedded import find_server_binary
from tests.bench import envoy_upstream
from tests.bench.envoy_upstream import EnvoyUpstream, PythonUpstream
from tests.bench.proc_cpu import CpuReading, cpu_delta, machine_cpu, process_tree, read_cpu
from tests.e2e.envoy_process import EnvoyProcess, render_shipped_config
from tests.servers import SidecarProcess, StoreProcess

PREFIX = "bench"
CHAT_PATH = "/v1/chat/completions"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
BODY = json.dumps({
    "model": "mock", "max_tokens": 64,
    "messages": [{"role": "user", "content": "Say hello from the benchmark."}],
}).encode()
# What either upstream reports for every chat completion (tests/e2e/upstream.py's
# default usage; tests/bench/envoy_upstream.py answers the same).
MOCK_PROMPT_TOKENS = envoy_upstream.PROMPT_TOKENS  # 11
MOCK_COMPLETION_TOKENS = envoy_upstream.COMPLETION_TOKENS  # 5

VARIANTS = ("envoy_alone", "ext_authz_only", "shipped")
GRPC_NOOP = "grpc_noop"
# The sidecar's parts of an Envoy config, by the last part of their typed_config
# @type (so a v3 -> v4 rename still matches). Each variant keeps a subset.
SIDECAR_FILTER_TYPES = ("ExtAuthz", "ExternalProcessor", "Lua")
SIDECAR_LOGGER_TYPES = ("HttpGrpcAccessLogConfig",)
KEPT: dict[str, tuple[str, ...]] = {
    "envoy_alone": (),
    "ext_authz_only": ("ExtAuthz",),
    "shipped": SIDECAR_FILTER_TYPES + SIDECAR_LOGGER_TYPES,
}
PROCESSES = ("sidecar", "envoy", "store", "upstream", "client")
# Envoy counters read around each phase (deltas), by short name.
CLUSTER_COUNTERS = (
    "upstream_rq_total", "upstream_rq_tx_reset", "upstream_rq_rx_reset",
    "upstream_cx_destroy_local_with_active_rq", "upstream_cx_destroy_remote_with_active_rq",
    "upstream_cx_total", "upstream_rq_timeout",
)
RESET_COUNTERS = CLUSTER_COUNTERS[1:5]
HCM_COUNTERS = (
    "downstream_rq_total", "downstream_rq_completed", "downstream_rq_2xx",
    "downstream_rq_3xx", "downstream_rq_4xx", "downstream_rq_5xx",
    "downstream_rq_rx_reset", "downstream_cx_destroy_remote_active_rq",
    "ext_authz.ok", "ext_authz.denied", "ext_authz.error", "ext_authz.failure_mode_allowed",
)
ACCESS_LOG_COUNTERS = ("logs_written", "logs_dropped")

TARGETS = {
    "throughput_shipped_over_ext_authz_64": 0.90,  # at least
    "added_p50_ms_shipped_over_alone_1": 0.65,  # at most
    "sidecar_cpu_shipped_over_noop_64": 1.5,  # at most
    "sidecar_resets_beyond_cut": 0,  # at most
}


# --- config variants ---------------------------------------------------------------


def _type_name(item: Any) -> str:
    if not isinstance(item, dict):
        return ""
    typed = item.get("typed_config")
    if not isinstance(typed, dict):
        return ""
    return str(typed.get("@type", "")).rsplit(".", 1)[-1]


def _walk(node: Any) -> Any:
    """Every dict and list in a parsed config, depth first."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def variant_config(config: str, variant: str) -> str:
    """The config ``variant`` of ``config`` (YAML text): the sidecar's HTTP filters and
    gRPC access loggers that the variant does not keep are removed wherever they are,
    with their per-route configs (``typed_per_filter_config`` under their names)."""
    keep = KEPT[variant]
    if set(keep) == set(SIDECAR_FILTER_TYPES + SIDECAR_LOGGER_TYPES):
        return config  # the shipped config, byte for byte
    drop = {t for t in SIDECAR_FILTER_TYPES + SIDECAR_LOGGER_TYPES if t not in keep}
    tree = copy.deepcopy(yaml.safe_load(config))
    removed_names: set[str] = set()
    for node in list(_walk(tree)):
        if not isinstance(node, dict):
            continue
        for key, value in list(node.items()):
            if not isinstance(value, list):
                continue
            kept = [item for item in value if _type_name(item) not in drop]
            if len(kept) != len(value):
                removed_names.update(
                    str(item.get("name", "")) for item in value if _type_name(item) in drop
                )
                node[key] = kept
    for node in _walk(tree):
        if isinstance(node, dict) and isinstance(node.get("typed_per_filter_config"), dict):
            per_filter = node["typed_per_filter_config"]
            for name in removed_names & set(per_filter):
                del per_filter[name]
            if not per_filter:
                del node["typed_per_filter_config"]
    return str(yaml.safe_dump(tree, sort_keys=False))


@dataclass
class ConfigFacts:
    """What the harness reads from one rendered config."""

    listener: str
    stat_prefix: str
    sidecar_cluster: str
    filters: list[str]
    access_logs: list[str]
    settle_s: float  # how long after a phase Envoy may still talk to the sidecar

    def chain(self) -> str:
        return f"filters [{', '.join(self.filters)}]; access logs [{', '.join(self.access_logs)}]"


def _duration_s(value: Any, default: float) -> float:
    if value is None:
        return default
    text = str(value)
    return float(text[:-1]) if text.endswith("s") else float(text)


def config_facts(config: str, sidecar_port: int) -> ConfigFacts:
    tree = yaml.safe_load(config)
    listener = tree["static_resources"]["listeners"][0]
    hcm = next(
        node["typed_config"] for node in _walk(listener)
        if isinstance(node, dict) and _type_name(node) == "HttpConnectionManager"
    )
    sidecar_cluster = "aigw_sidecar"
    for cluster in tree["static_resources"].get("clusters", []):
        ports = [n.get("port_value") for n in _walk(cluster)
                 if isinstance(n, dict) and "port_value" in n]
        if sidecar_port in ports:
            sidecar_cluster = cluster["name"]
    settle = 0.0
    for node in _walk(tree):
        name = _type_name(node)
        if name == "HttpGrpcAccessLogConfig":
            common = node["typed_config"].get("common_config", {})
            settle = max(settle, _duration_s(common.get("buffer_flush_interval"), 1.0))
        elif name == "ExternalProcessor":
            typed = node["typed_config"]
            if typed.get("observability_mode"):
                settle = max(settle, _duration_s(typed.get("deferred_close_timeout"), 5.0))
    return ConfigFacts(
        listener=str(listener["name"]),
        stat_prefix=str(hcm["stat_prefix"]),
        sidecar_cluster=sidecar_cluster,
        filters=[f"{f.get('name')}({_type_name(f)})" for f in hcm.get("http_filters", [])],
        access_logs=[_type_name(a) for a in hcm.get("access_log", [])],
        settle_s=settle,
    )


# --- h2load phases ------------------------------------------------------------------


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _duration_arg(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


@dataclass
class Snapshot:
    at: float
    cpu: dict[str, CpuReading]
    machine: tuple[float, float]


def _snapshot(trees: dict[str, list[int]]) -> Snapshot:
    return Snapshot(time.monotonic(), {name: read_cpu(pids) for name, pids in trees.items()},
                    machine_cpu())


@dataclass
class Phase:
    """One h2load run and what was measured around it."""

    variant: str
    in_flight: int
    round: int
    connections: int
    streams: int
    requests: int = 0
    window_s: float = 0.0
    req_per_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    status: dict[str, int] = field(default_factory=dict)  # h2load's measured window
    h2load: dict[str, int] = field(default_factory=dict)  # failed, errored, timeout
    cpu_us_per_request: dict[str, float] = field(default_factory=dict)
    cpu_cores: dict[str, float] = field(default_factory=dict)  # CPU s / window s
    machine_busy_cores: float = 0.0
    others_cores: float = 0.0  # machine busy minus the processes measured
    envoy: dict[str, int] = field(default_factory=dict)  # counter deltas, warm-up included
    sidecar_resets: int | None = None
    cut_requests: int | None = None
    problems: list[str] = field(default_factory=list)  # the run fails
    warnings: list[str] = field(default_factory=list)  # told, the run does not fail

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _non_2xx(status: dict[str, int]) -> int:
    return sum(v for k, v in status.items() if k not in ("2xx", "no_status"))


def run_h2load(cmd: list[str], log_file: Path, trees: dict[str, list[int]], phase: Phase,
               timeout_s: float) -> str:
    """Run h2load, reading its stdout as it goes: CPU is read when its measured window
    starts and ends. Fills the phase's throughput, latency and CPU; returns stdout."""
    log_file.unlink(missing_ok=True)  # h2load appends
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    trees = {**trees, "client": [proc.pid]}
    killer = threading.Timer(timeout_s, proc.kill)
    killer.start()
    lines: list[str] = []
    start = end = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if start is None and "Main benchmark duration is started" in line:
                start = _snapshot(trees)
            elif start is not None and end is None and "Main benchmark duration is over" in line:
                end = _snapshot(trees)
            lines.append(line)
        proc.wait()
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(lines)
    if proc.returncode != 0:
        phase.problems.append(f"h2load exited with {proc.returncode}")
    if start is None or end is None:
        phase.problems.append("h2load printed no measured window")
        return out

    durations: list[float] = []
    status: dict[str, int] = {}
    if log_file.exists():
        for line in log_file.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3:
                durations.append(int(parts[2]) / 1000)  # µs -> ms
                # 0: h2load recorded no status (a response it began reading in
                # the warm-up); Envoy's counters still see every response's class.
                code = parts[1]
                cls = f"{code[0]}xx" if len(code) == 3 and code[0] in "12345" else "no_status"
                status[cls] = status.get(cls, 0) + 1
    summary = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, "
                        r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if summary is None or codes is None:
        phase.problems.append("h2load printed no summary")
    else:
        phase.h2load = {"done": int(summary.group(1)), "failed": int(summary.group(3)),
                        "errored": int(summary.group(4)), "timeout": int(summary.group(5))}
        for cls, count in zip(("2xx", "3xx", "4xx", "5xx"), codes.groups(), strict=True):
            status[cls] = max(status.get(cls, 0), int(count))
    phase.status = status
    window = end.at - start.at
    phase.requests = len(durations)
    phase.window_s = window
    phase.req_per_s = phase.requests / window if window > 0 else 0.0
    if durations:
        durations.sort()
        phase.p50_ms = _pct(durations, 0.50)
        phase.p99_ms = _pct(durations, 0.99)
        if len(durations) >= 5000:
            phase.p999_ms = _pct(durations, 0.999)
    ours = 0.0
    for name in trees:
        cpu_s = cpu_delta(start.cpu[name], end.cpu[name])
        if cpu_s is None:
            phase.warnings.append(f"the {name} process ended during the measured window")
            continue
        ours += cpu_s
        phase.cpu_cores[name] = cpu_s / window
        if phase.requests:
            phase.cpu_us_per_request[name] = cpu_s / phase.requests * 1e6
    busy = end.machine[0] - start.machine[0]
    phase.machine_busy_cores = busy / window
    phase.others_cores = max(busy - ours, 0.0) / window
    non_2xx = _non_2xx(status)
    if non_2xx:
        phase.problems.append(f"{non_2xx} non-2xx responses in the measured window")
    for what in ("failed", "errored", "timeout"):
        if phase.h2load.get(what):
            phase.problems.append(f"h2load: {phase.h2load[what]} requests {what}")
    if not phase.requests:
        phase.problems.append("no request completed")
    if phase.cpu_cores.get("client", 0.0) > 0.9:
        phase.warnings.append("the client used a whole core: h2load may be the limit")
    return out


# --- Envoy counters -----------------------------------------------------------------


def envoy_counters(envoy: EnvoyProcess, facts: ConfigFacts) -> dict[str, int]:
    out: dict[str, int] = {}
    cluster = envoy.stats(f"cluster.{facts.sidecar_cluster}.")
    for name in CLUSTER_COUNTERS:
        out[f"sidecar_cluster.{name}"] = cluster.get(f"cluster.{facts.sidecar_cluster}.{name}", 0)
    hcm = envoy.stats(f"http.{facts.stat_prefix}.")
    for name in HCM_COUNTERS:
        out[name] = hcm.get(f"http.{facts.stat_prefix}.{name}", 0)
    logs = envoy.stats("access_logs.")
    for name in ACCESS_LOG_COUNTERS:
        out[f"grpc_access_log.{name}"] = sum(v for k, v in logs.items() if k.endswith(name))
    return out


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after.get(name, 0) - before.get(name, 0) for name in after}


def judge_envoy(phase: Phase, variant: str, facts: ConfigFacts,
                delta: dict[str, int]) -> None:
    phase.envoy = delta
    resets = sum(delta[f"sidecar_cluster.{name}"] for name in RESET_COUNTERS)
    # HTTP/1.1: a client that closes its connection mid-request counts in both.
    cut = max(delta["downstream_cx_destroy_remote_active_rq"], delta["downstream_rq_rx_reset"])
    phase.sidecar_resets, phase.cut_requests = resets, cut
    for cls in ("3xx", "4xx", "5xx"):
        if delta[f"downstream_rq_{cls}"]:
            phase.problems.append(f"Envoy answered {delta[f'downstream_rq_{cls}']} {cls} "
                                  "(warm-up included)")
    for name in ("ext_authz.denied", "ext_authz.error", "ext_authz.failure_mode_allowed"):
        if delta[name]:
            phase.problems.append(f"{name}: {delta[name]}")
    if variant != "envoy_alone" and delta["ext_authz.ok"] < phase.requests:
        phase.problems.append(f"ext_authz.ok {delta['ext_authz.ok']} < {phase.requests} "
                              "requests measured: the check did not run on every request")
    if "HttpGrpcAccessLogConfig" in facts.access_logs and \
            delta["grpc_access_log.logs_written"] < delta["downstream_rq_total"]:
        phase.warnings.append(f"{delta['grpc_access_log.logs_written']} access-log entries "
                              f"written for {delta['downstream_rq_total']} requests")
    if delta["grpc_access_log.logs_dropped"]:
        phase.problems.append(f"{delta['grpc_access_log.logs_dropped']} access-log entries "
                              "dropped (usage lost)")


# --- the run ------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    workdir: Path
    sidecar: SidecarProcess
    store: StoreProcess
    upstream: EnvoyUpstream | PythonUpstream
    envoys: dict[str, EnvoyProcess]
    facts: dict[str, ConfigFacts]
    secrets: dict[str, str]
    phases: list[Phase] = field(default_factory=list)

    def trees(self, envoy: EnvoyProcess | None) -> dict[str, list[int]]:
        assert self.sidecar.process and self.store.process
        trees = {
            "sidecar": process_tree(self.sidecar.process.pid),
            "store": process_tree(self.store.process.pid),
            "upstream": process_tree(self.upstream.pid()),
        }
        if envoy is not None:
            assert envoy.process
            trees["envoy"] = process_tree(envoy.process.pid)
        return trees

    def settle(self) -> float:
        if self.args.settle_seconds is not None:
            return float(self.args.settle_seconds)
        floor = 0.3 if self.args.smoke else 1.0
        return max(floor, max(f.settle_s for f in self.facts.values()) + 0.3)

    def phase(self, variant: str, in_flight: int, round_: int) -> Phase:
        args = self.args
        seconds, warm = args.seconds, args.warm_up_seconds
        common = ["-t", "1", "-D", _duration_arg(seconds), "--warm-up-time", _duration_arg(warm)]
        log_file = self.workdir / "h2load.log"
        if variant == GRPC_NOOP:
            # As Envoy reaches the sidecar: one HTTP/2 connection per Envoy worker.
            conns = max(1, min(args.envoy_concurrency, in_flight))
            streams = max(1, in_flight // conns)
            body = self.workdir / "noop.bin"
            body.write_bytes(grpc_frame(health_pb2.HealthCheckRequest().SerializeToString()))
            cmd = ["h2load", "-c", str(conns), "-m", str(streams), *common, "-d", str(body),
                   "--log-file", str(log_file), "-H", "content-type: application/grpc",
                   "-H", "te: trailers", f"http://{self.sidecar.target}{HEALTH_CHECK}"]
            envoy = None
        else:
            conns, streams = in_flight, 1
            body = self.workdir / "chat.json"
            body.write_bytes(BODY)
            envoy = self.envoys[variant]
            port = envoy.ports[self.facts[variant].listener]
            cmd = ["h2load", "--h1", "-c", str(conns), "-m", "1", *common, "-d", str(body),
                   "--log-file", str(log_file),
                   "-H", f"authorization: Bearer {self.secrets[variant]}",
                   "-H", "content-type: application/json",
                   f"http://127.0.0.1:{port}{args.path}"]
        phase = Phase(variant, in_flight, round_, conns, streams)
        before = envoy_counters(envoy, self.facts[variant]) if envoy else None
        run_h2load(cmd, log_file, self.trees(envoy), phase,
                   timeout_s=seconds + warm + args.h2load_grace_seconds)
        time.sleep(self.settle())  # access-log batches, deferred stream closes, resets
        if envoy is not None and before is not None:
            after = envoy_counters(envoy, self.facts[variant])
            judge_envoy(phase, variant, self.facts[variant], _delta(before, after))
        self.phases.append(phase)
        print(_phase_line(phase), flush=True)
        return phase

    def run(self) -> None:
        order = [GRPC_NOOP, *VARIANTS]
        for round_ in range(self.args.rounds):
            # Rotate, so that no variant always runs first.
            rotated = order[round_ % len(order):] + order[: round_ % len(order)]
            for in_flight in self.args.in_flight:
                for variant in rotated:
                    self.phase(variant, in_flight, round_)


def _phase_line(p: Phase) -> str:
    cpu = " ".join(f"{k}={p.cpu_us_per_request.get(k, 0):.0f}" for k in PROCESSES
                   if k in p.cpu_us_per_request)
    resets = "" if p.sidecar_resets is None else f" resets={p.sidecar_resets}/cut={p.cut_requests}"
    probs = f"  PROBLEM: {'; '.join(p.problems)}" if p.problems else ""
    probs += f"  warning: {'; '.join(p.warnings)}" if p.warnings else ""
    return (f"  round {p.round + 1} {p.variant:<15} {p.in_flight:>3} in flight: "
            f"{p.req_per_s:>8.0f} req/s p50 {_ms(p.p50_ms)} p99 {_ms(p.p99_ms)} ms; "
            f"CPU µs/req {cpu}{resets}{probs}")


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def create_key(target: str, name: str, budget: bool = True) -> tuple[str, str]:
    """A key whose limits are never reached: requests per minute, and (``budget``) a
    token limit, so every Check also reserves its estimate, settled by the usage path.

    Without the usage path (ext_authz only) nothing would settle those reservations:
    they would pile up and slow every later Check, so that key has no budget.
    """
    limits = keys_pb2.Limits(requests_per_minute=1_000_000)
    if budget:
        limits.token_limit = 10**12
    with grpc.insecure_channel(target) as channel:
        created = keys_pb2_grpc.KeyManagementStub(channel).CreateKey(
            keys_pb2.CreateKeyRequest(name=name, limits=limits)
        )
    return created.secret, created.key.key_id


def key_overview(target: str, key_id: str) -> Any:
    with grpc.insecure_channel(target) as channel:
        return keys_pb2_grpc.KeyManagementStub(channel).GetKeyOverview(
            keys_pb2.GetKeyOverviewRequest(key_id=key_id)
        ).overview


def charging_check(bench: Bench, key_ids: dict[str, str]) -> dict[str, Any]:
    """Did the store see every admitted request, and (shipped) charge each one's usage?"""
    out: dict[str, Any] = {}
    for variant in ("ext_authz_only", "shipped"):
        phases = [p for p in bench.phases if p.variant == variant]
        ok = sum(p.envoy.get("ext_authz.ok", 0) for p in phases)
        done_2xx = sum(p.envoy.get("downstream_rq_2xx", 0) for p in phases)
        cut = sum(p.cut_requests or 0 for p in phases)
        # Settlement follows the access log's flush: give a busy sidecar a moment.
        deadline = time.monotonic() + 10.0
        while True:
            ov = key_overview(bench.sidecar.target, key_ids[variant])
            settled = ov.open_reservations == 0
            if variant != "shipped" or settled or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        row: dict[str, Any] = {
            "ext_authz_ok": ok, "responses_2xx": done_2xx, "cut_requests": cut,
            "lifetime_requests": ov.lifetime_requests,
            "lifetime_prompt_tokens": ov.lifetime_prompt_tokens,
            "lifetime_completion_tokens": ov.lifetime_completion_tokens,
            "open_reservations": ov.open_reservations,
            "admitted_but_cut": max(ov.lifetime_requests - ok, 0),
        }
        problems = []
        if not ok <= ov.lifetime_requests <= ok + cut:
            problems.append(f"store admitted {ov.lifetime_requests}, Envoy's ext_authz.ok "
                            f"{ok} (+{cut} cut)")
        if variant == "shipped":
            if ov.lifetime_completion_tokens < MOCK_COMPLETION_TOKENS * done_2xx:
                problems.append(
                    f"{ov.lifetime_completion_tokens} completion tokens charged for "
                    f"{done_2xx} responses of {MOCK_COMPLETION_TOKENS}: usage was lost")
            # A request the client cut while its check was in flight was admitted by
            # the store, but Envoy logs it without the answer: the sidecar releases it
            # then (recovery.AdmittedChecks). Any reservation still open is a leak.
            if ov.open_reservations:
                problems.append(f"{ov.open_reservations} reservations still open after the "
                                f"run ({max(ov.lifetime_requests - ok, 0)} checks cut mid-way)")
        row["problems"] = problems
        out[variant] = row
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("h2load") is None:
        raise SystemExit("h2load not found: install Debian's nghttp2-client "
                         "(apt-get install nghttp2-client)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aigw-bench-envoy-") as tmp:
        workdir = Path(tmp)
        store = StoreProcess("valkey", find_server_binary(), workdir / "store").start()
        sidecar_args = ["--log-level", "WARNING", *args.sidecar_args]
        sidecar = SidecarProcess(store.url, PREFIX, extra_args=sidecar_args,
                                 log_path=workdir / "sidecar.log")
        envoys: dict[str, EnvoyProcess] = {}
        upstream: EnvoyUpstream | PythonUpstream | None = None
        try:
            upstream = envoy_upstream.start_upstream(args.upstream, workdir / "upstream")
            print(f"upstream: {args.upstream} on port {upstream.port}", flush=True)
            sidecar.start()
            shipped = render_shipped_config(sidecar.port, upstream.port)
            facts: dict[str, ConfigFacts] = {}
            secrets: dict[str, str] = {}
            key_ids: dict[str, str] = {}
            for variant in VARIANTS:
                config = variant_config(shipped, variant)
                facts[variant] = config_facts(config, sidecar.port)
                secrets[variant], key_ids[variant] = create_key(
                    sidecar.target, variant, budget=variant != "ext_authz_only"
                )
                envoys[variant] = EnvoyProcess(config, workdir / f"envoy-{variant}",
                                               concurrency=args.envoy_concurrency).start()
                print(f"{variant}: {facts[variant].chain()}", flush=True)
            if facts["envoy_alone"].filters == facts["shipped"].filters and \
                    facts["envoy_alone"].access_logs == facts["shipped"].access_logs:
                raise SystemExit("the shipped config has none of the sidecar's filters or "
                                 "access loggers that this benchmark knows")
            bench = Bench(args, workdir, sidecar, store, upstream, envoys, facts, secrets)
            bench.run()
            time.sleep(bench.settle())
            charging = charging_check(bench, key_ids)
            final = {variant: envoy_counters(envoy, facts[variant])
                     for variant, envoy in envoys.items()}
            upstream_counters = upstream.stats()
        finally:
            for envoy in envoys.values():
                envoy.stop()
            if upstream is not None:
                upstream.stop()
            sidecar.stop()
            store.stop()
    results = summarize(args, bench, charging, final, time.monotonic() - started, sidecar_args)
    results["upstream_counters_at_end"] = upstream_counters
    if upstream_counters.get("downstream_rq_total", 0) != upstream_counters.get(
            "downstream_rq_2xx", 0):
        results["problems"].append(f"the upstream answered non-2xx: {upstream_counters}")
    return results


# --- summary ------------------------------------------------------------------------


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _rows(phases: list[Phase]) -> list[dict[str, Any]]:
    rows = []
    groups: dict[tuple[str, int], list[Phase]] = {}
    for p in phases:
        groups.setdefault((p.variant, p.in_flight), []).append(p)
    for (variant, in_flight), group in sorted(
        groups.items(), key=lambda kv: (kv[0][1], ([GRPC_NOOP, *VARIANTS]).index(kv[0][0]))
    ):
        row: dict[str, Any] = {
            "variant": variant, "in_flight": in_flight, "rounds": len(group),
            "connections": group[0].connections, "streams": group[0].streams,
            "requests": sum(p.requests for p in group),
            "req_per_s": _stats([p.req_per_s for p in group]),
            "p50_ms": _stats([p.p50_ms for p in group if p.p50_ms is not None]),
            "p99_ms": _stats([p.p99_ms for p in group if p.p99_ms is not None]),
            # Only when every round had the samples for it (else rounds would differ).
            "p999_ms": _stats([p.p999_ms for p in group if p.p999_ms is not None])
            if all(p.p999_ms is not None for p in group) else None,
            "cpu_us_per_request": {
                name: _stats([p.cpu_us_per_request[name] for p in group
                              if name in p.cpu_us_per_request])
                for name in PROCESSES if any(name in p.cpu_us_per_request for p in group)
            },
            "cpu_cores": {
                name: _stats([p.cpu_cores[name] for p in group if name in p.cpu_cores])
                for name in PROCESSES if any(name in p.cpu_cores for p in group)
            },
            "machine_busy_cores": _stats([p.machine_busy_cores for p in group]),
            "others_cores": _stats([p.others_cores for p in group]),
            "non_2xx": sum(_non_2xx(p.status) for p in group)
            + sum(p.envoy.get(f"downstream_rq_{c}", 0)
                  for p in group for c in ("3xx", "4xx", "5xx")),
            "sidecar_resets": None if group[0].sidecar_resets is None
            else sum(p.sidecar_resets or 0 for p in group),
            "cut_requests": None if group[0].cut_requests is None
            else sum(p.cut_requests or 0 for p in group),
            "sidecar_rpcs_per_request": None,
            "problems": [f"round {p.round + 1}: {x}" for p in group for x in p.problems],
            "warnings": [f"round {p.round + 1}: {x}" for p in group for x in p.warnings],
        }
        if variant != GRPC_NOOP:
            rpcs = sum(p.envoy.get("sidecar_cluster.upstream_rq_total", 0) for p in group)
            total = sum(p.envoy.get("downstream_rq_total", 0) for p in group)
            row["sidecar_rpcs_per_request"] = rpcs / total if total else None
        rows.append(row)
    return rows


def _per_round(phases: list[Phase], fn: Any) -> list[float]:
    out = []
    for round_ in sorted({p.round for p in phases}):
        by = {(p.variant, p.in_flight): p for p in phases if p.round == round_}
        try:
            value = fn(by)
        except (KeyError, ZeroDivisionError, TypeError):
            continue
        if value is not None:
            out.append(float(value))
    return out


def ratios(phases: list[Phase], top: int) -> dict[str, Any]:
    def sidecar(p: Phase) -> float:
        return p.cpu_us_per_request["sidecar"]

    def added(variant: str, stat: str, in_flight: int) -> Any:
        return lambda by: (getattr(by[(variant, in_flight)], stat)
                           - getattr(by[("envoy_alone", in_flight)], stat))

    out: dict[str, Any] = {
        "throughput_shipped_over_ext_authz_64": _stats(_per_round(
            phases, lambda by: by[("shipped", top)].req_per_s
            / by[("ext_authz_only", top)].req_per_s)),
        "throughput_ext_authz_over_alone_64": _stats(_per_round(
            phases, lambda by: by[("ext_authz_only", top)].req_per_s
            / by[("envoy_alone", top)].req_per_s)),
        "added_p50_ms_shipped_over_alone_1": _stats(_per_round(
            phases, added("shipped", "p50_ms", 1))),
        "added_p99_ms_shipped_over_alone_1": _stats(_per_round(
            phases, added("shipped", "p99_ms", 1))),
        "added_p50_ms_ext_authz_over_alone_1": _stats(_per_round(
            phases, added("ext_authz_only", "p50_ms", 1))),
        "sidecar_cpu_shipped_over_noop_64": _stats(_per_round(
            phases, lambda by: sidecar(by[("shipped", top)]) / sidecar(by[(GRPC_NOOP, top)]))),
        "sidecar_cpu_shipped_over_noop_1": _stats(_per_round(
            phases, lambda by: sidecar(by[("shipped", 1)]) / sidecar(by[(GRPC_NOOP, 1)]))),
        "sidecar_cpu_ext_authz_over_noop_64": _stats(_per_round(
            phases, lambda by: sidecar(by[("ext_authz_only", top)])
            / sidecar(by[(GRPC_NOOP, top)]))),
    }
    beyond = sum(max((p.sidecar_resets or 0) - (p.cut_requests or 0), 0)
                 for p in phases if p.variant != GRPC_NOOP)
    out["sidecar_resets_beyond_cut"] = {"median": beyond, "min": beyond, "max": beyond}
    return out


def verdicts(r: dict[str, Any]) -> dict[str, bool | None]:
    def median(name: str) -> float | None:
        return r[name]["median"] if r.get(name) else None

    out: dict[str, bool | None] = {}
    for name, limit in TARGETS.items():
        value = median(name)
        if value is None:
            out[name] = None
        elif name.startswith("throughput"):
            out[name] = value >= limit
        else:
            out[name] = value <= limit
    return out


def summarize(args: argparse.Namespace, bench: Bench, charging: dict[str, Any],
              final: dict[str, dict[str, int]], elapsed: float,
              sidecar_args: list[str]) -> dict[str, Any]:
    top = max(args.in_flight)
    r = ratios(bench.phases, top)
    by = {(p.variant, p.in_flight): p for p in bench.phases}
    legacy: dict[str, Any] = {}
    if ("shipped", 1) in by and ("envoy_alone", 1) in by:
        # For tests.bench.bench (make bench), which reads these two.
        for name, variant in (("added_by_sidecar", "shipped"),
                              ("added_by_ext_authz", "ext_authz_only")):
            legacy[name] = {
                stat: statistics.median(
                    [getattr(p, stat) - getattr(q, stat)
                     for p in bench.phases for q in bench.phases
                     if p.variant == variant and q.variant == "envoy_alone"
                     and p.in_flight == q.in_flight == 1 and p.round == q.round
                     and getattr(p, stat) is not None and getattr(q, stat) is not None]
                    or [0.0])
                for stat in ("p50_ms", "p99_ms")
            }
    problems = [f"{row['variant']} at {row['in_flight']}: {x}"
                for row in _rows(bench.phases) for x in row["problems"]]
    problems += [f"charging ({variant}): {x}"
                 for variant, row in charging.items() for x in row["problems"]]
    warnings = [f"{row['variant']} at {row['in_flight']}: {x}"
                for row in _rows(bench.phases) for x in row["warnings"]]
    return {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "loadavg_at_end": os.getloadavg(),
                    "h2load": _version(["h2load", "--version"])},
        "settings": {
            "seconds": args.seconds, "warm_up_seconds": args.warm_up_seconds,
            "rounds": args.rounds, "in_flight": args.in_flight, "path": args.path,
            "envoy_concurrency": args.envoy_concurrency, "settle_seconds": bench.settle(),
            "upstream": args.upstream,
            "sidecar_args": sidecar_args, "body_bytes": len(BODY),
        },
        "variants": {v: {"filters": f.filters, "access_logs": f.access_logs,
                         "sidecar_cluster": f.sidecar_cluster}
                     for v, f in bench.facts.items()},
        "rows": _rows(bench.phases),
        "ratios": r,
        "targets": TARGETS,
        "verdicts": verdicts(r),
        "charging": charging,
        "envoy_counters_at_end": final,
        "phases": [p.as_dict() for p in bench.phases],
        "problems": problems,
        "warnings": warnings,
        "elapsed_s": elapsed,
        **legacy,
    }


def _version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _spread(s: dict[str, float] | None, fmt: str) -> str:
    if s is None:
        return "-"
    if s["min"] == s["max"]:
        return format(s["median"], fmt)
    return f"{format(s['median'], fmt)} [{format(s['min'], fmt)}-{format(s['max'], fmt)}]"


def _med(s: dict[str, float] | None, fmt: str) -> str:
    return "-" if s is None else format(s["median"], fmt)


def print_report(results: dict[str, Any]) -> None:
    head = ["path", "in flight", "req/s [min-max]", "p50 ms [min-max]", "p99 ms", "p999 ms",
            "sidecar", "envoy", "store", "upstream", "client", "non-2xx", "resets/cut",
            "busy/others"]
    table = [head]
    for row in results["rows"]:
        cpu = row["cpu_us_per_request"]
        conn = (f"{row['in_flight']} ({row['connections']}x{row['streams']})"
                if row["variant"] == GRPC_NOOP else str(row["in_flight"]))
        table.append([
            row["variant"], conn, _spread(row["req_per_s"], ",.0f"),
            _spread(row["p50_ms"], ".3f"), _med(row["p99_ms"], ".3f"),
            _med(row["p999_ms"], ".3f"),
            *(_med(cpu.get(name), ".0f") for name in PROCESSES),
            str(row["non_2xx"]),
            "-" if row["sidecar_resets"] is None
            else f"{row['sidecar_resets']}/{row['cut_requests']}",
            f"{_med(row['machine_busy_cores'], '.2f')}/{_med(row['others_cores'], '.2f')}",
        ])
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    print()
    print(" " * (sum(widths[:6]) + 2 * 6) + "CPU µs per request (median)")
    for i, r in enumerate(table):
        print("  ".join(cell.ljust(w) if j < 2 else cell.rjust(w)
                        for j, (cell, w) in enumerate(zip(r, widths, strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("(busy/others: cores the machine was busy / busy outside these processes; "
          "resets: on the sidecar's cluster / requests the client cut when it stopped)")
    r, v = results["ratios"], results["verdicts"]
    top = max(results["settings"]["in_flight"])
    lines = [
        (f"shipped / ext_authz-only throughput, {top} in flight",
         "throughput_shipped_over_ext_authz_64", ".0%", ">= 90 %"),
        (f"ext_authz-only / Envoy alone throughput, {top} in flight",
         "throughput_ext_authz_over_alone_64", ".0%", ""),
        ("shipped p50 added over Envoy alone, 1 in flight (ms)",
         "added_p50_ms_shipped_over_alone_1", "+.3f", "<= 0.65"),
        ("shipped p99 added over Envoy alone, 1 in flight (ms)",
         "added_p99_ms_shipped_over_alone_1", "+.3f", ""),
        ("ext_authz-only p50 added over Envoy alone, 1 in flight (ms)",
         "added_p50_ms_ext_authz_over_alone_1", "+.3f", ""),
        (f"sidecar CPU per request: shipped / no-op RPC, {top} in flight",
         "sidecar_cpu_shipped_over_noop_64", ".2f", "<= 1.5"),
        (f"sidecar CPU per request: ext_authz-only / no-op RPC, {top} in flight",
         "sidecar_cpu_ext_authz_over_noop_64", ".2f", ""),
        ("sidecar CPU per request: shipped / no-op RPC, 1 in flight",
         "sidecar_cpu_shipped_over_noop_1", ".2f", ""),
        ("stream resets on the sidecar cluster beyond cut requests",
         "sidecar_resets_beyond_cut", "d", "0"),
    ]
    print()
    width = max(len(x[0]) for x in lines)
    for label, name, fmt, target in lines:
        verdict = v.get(name)
        mark = "" if not target else ("  ok" if verdict else "  MISSED" if verdict is False
                                      else "  n/a")
        value = (_spread(r[name], fmt) if fmt != "d" else str(r[name]["median"])) \
            if r.get(name) else "-"
        print(f"{label:<{width}}  {value:<24}{('target ' + target) if target else ''}{mark}")
    final = results["envoy_counters_at_end"]
    totals = []
    for variant, counters in final.items():
        resets = sum(counters[f"sidecar_cluster.{n}"] for n in RESET_COUNTERS)
        cut = max(counters["downstream_cx_destroy_remote_active_rq"],
                  counters["downstream_rq_rx_reset"])
        totals.append(f"{variant} {resets} ({cut} requests cut)")
    print("stream resets on the sidecar cluster over the whole run: " + ", ".join(totals))
    for variant, row in results["charging"].items():
        print(f"charged ({variant} key): {row['lifetime_requests']} admitted, "
              f"Envoy ext_authz.ok {row['ext_authz_ok']} (+{row['cut_requests']} cut), "
              f"{row['lifetime_prompt_tokens']}+{row['lifetime_completion_tokens']} tokens, "
              f"{row['open_reservations']} reservations open "
              f"({row['admitted_but_cut']} admitted by the store, their check cut by the client)")
    if results["warnings"]:
        print("\nwarnings:")
        for w in results["warnings"]:
            print(f"  - {w}")
    if results["problems"]:
        print("\nPROBLEMS (the run fails):")
        for p in results["problems"]:
            print(f"  - {p}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.envoy_latency",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="measured time per phase (default 5)")
    parser.add_argument("--warm-up-seconds", type=float, default=1.0,
                        help="h2load --warm-up-time per phase (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all phases (default 3)")
    parser.add_argument("--in-flight", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 64], help="comma-separated (default 1,64)")
    parser.add_argument("--envoy-concurrency", type=int, default=1,
                        help="Envoy worker threads (default 1)")
    parser.add_argument("--path", default=CHAT_PATH)
    parser.add_argument("--upstream", choices=envoy_upstream.KINDS, default="envoy",
                        help="envoy (default): a second Envoy answering a fixed chat "
                             "completion itself; python: the mock of the e2e tests "
                             "(tests/e2e/upstream.py, ~300-400 µs CPU per request)")
    parser.add_argument("--settle-seconds", type=float, default=None,
                        help="pause after each phase (default: from the config's access-log "
                             "flush interval, at least 1 s)")
    parser.add_argument("--h2load-grace-seconds", type=float, default=30.0,
                        help="h2load is killed this long after its phase should have ended")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run (1 s phases, 1 round) that only proves the harness works")
    parser.add_argument("--check-targets", action="store_true",
                        help="exit 2 when a target is missed")
    parser.add_argument("--requests", type=int, default=None,
                        help="legacy (tests.bench.bench): one round, --seconds is the whole run")
    parser.add_argument("--json", type=Path, default=Path("bench-envoy-results.json"))
    parser.add_argument("sidecar_args", nargs="*",
                        help="extra flags for aigw-sidecar serve (after --)")
    args = parser.parse_args(argv)
    if args.requests is not None:  # the old interface: a time bound for the whole run
        args.rounds = 1
        args.seconds = max(1.0, min(5.0, args.seconds / 12))
        args.warm_up_seconds = 0.5 if args.seconds <= 1.0 else 1.0
    if args.smoke:
        args.seconds, args.warm_up_seconds, args.rounds = 1.0, 0.5, 1
    if 1 not in args.in_flight:
        args.in_flight = [1, *args.in_flight]
    if args.upstream == "envoy" and args.path != CHAT_PATH:
        parser.error(f"--upstream envoy answers only {CHAT_PATH}; "
                     f"use --upstream python for --path {args.path}")

    results = run(args)
    print_report(results)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nresults written to {args.json} ({results['elapsed_s']:.0f} s)")
    if results["problems"]:
        return 1
    if args.check_targets and any(v is False for v in results["verdicts"].values()):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
