"""Faults under mixed load: store stalls and restarts, cancellations, short deadlines, two replicas.

One engine, used by ``make bench-faults`` (100 stalls by default) and by
``tests/store/test_fault_injection.py`` (a small bounded run), on loopback:

* its own Valkey (append-only file, ``appendfsync always``: a kill -9 loses no
  acknowledged write, so any miscount below is the sidecar's, not the fsync
  policy's) and two ``aigw-sidecar serve`` replicas on one key prefix
  (``--store-timeout-ms 250``, the default);
* four keys: ``parallel`` (max parallel requests + a token limit: slots and
  reservations), ``budget`` (a token limit sized to be reached during the run),
  ``rpm`` (requests per minute sized to be reached), ``open`` (no limits);
* closed-loop asyncio clients, each on one replica, in six roles: Envoy-style
  Checks (the proxy settles with RecordUsage or ReleaseReservation under the
  request id of the Check's dynamic metadata, retried until taken, as the
  sidecar's access-log settler does; a Check the client gave up on is logged as
  Envoy logs it, without an answer, to the same replica), Authorize with the
  caller's own request id
  and an estimate (an unknown outcome is released by the caller: until taken,
  and once more 2.5 s later), Authorize without one (the sidecar makes the id; such
  a caller never gives up on the call: it could not release what it lost),
  paced traffic on the rpm and budget keys, and Authorize + RecordUsage on the
  open key. Every report is retried with the same request id until one attempt
  is acknowledged (OK). About 10 % of all calls carry a 0.05-0.2 s deadline and
  5 % are cancelled by the client after 0-0.1 s;
* with ``--no-give-ups`` no call has a short deadline or is cancelled (the store
  faults alone);
* faults at random times: ``--stalls`` SIGSTOP/SIGCONT of the store for
  0.3-0.8 s, ``--restarts`` kill -9 + start on the same port and files, and
  ``--replica-restarts`` SIGTERM + start of replica B (at least 3 s after the
  previous fault; with ``--replica-restart-in-stall`` while the store is stopped).

Checked at the end (each failure is a line in ``violations``; the CLI exits 1):

* no reply for another key or request: every reply's key id is the key of the
  secret sent, every request id the one sent (or, made by the sidecar, new and
  unique); denials only for the key's own limit;
* no limit overshot: the rpm key's window (read from the store every 2 s) never
  held more than its limit in any 60 s; the budget key's settled tokens stay
  within its limit;
* a few seconds after the last fault: 0 open reservations, 0 reserved tokens
  and 0 parallel slots on every key, and every key admits again (all parallel
  slots at once; the budget key whatever still fits; the rpm key at most its
  window, and with ``--rpm-wait`` once the window frees);
* every acknowledged report counted exactly once (sum of acknowledged tokens =
  the key's lifetime and period tokens), and no admission nobody saw beyond one
  per call whose outcome was unknown;
* the sidecars' RSS grew less than ``--rss-limit-mb``.

Figures: calls (total and under fault) per kind and status, mismatches,
leftovers and when they cleared, recovery time after each fault per replica,
time to UNAVAILABLE of calls caught by a stall against ``--store-timeout-ms``
(the README's "at most 1.25 times it, plus connect time"), admissions whose
reply nobody got (on the rpm key: window entries), RSS before and after.

    .venv/bin/python -m tests.bench.faults [--stalls 100] [--seconds S] [--clients 16] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import json
import math
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import redis
from redis.asyncio import Redis

from aigw_sidecar.api.envoy.v3 import access_log_pb2 as log_pb
from aigw_sidecar.api.envoy.v3 import ext_authz_pb2 as authz
from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1 import admission_pb2_grpc, keys_pb2_grpc
from aigw_sidecar.api.v1 import keys_pb2 as kpb
from aigw_sidecar.server.access_log import SERVICE_NAME as ACCESS_LOG_SERVICE
from aigw_sidecar.server.ext_authz import CHECK_METHOD
from aigw_sidecar.store.embedded import server_args
from tests.servers import SidecarProcess, StoreProcess, store_binaries

STORE_TIMEOUT_MS = 250
ACCESS_LOG_METHOD = f"/{ACCESS_LOG_SERVICE}/StreamAccessLogs"
ACCESS_LOG_FLUSH_S = 0.1  # the shipped config's buffer_flush_interval
LONG_DEADLINE_S = 2.0  # above any store timeout: such a call ends by the sidecar's answer
SHORT_DEADLINE_S = (0.05, 0.2)
SHORT_SHARE = 0.10
CANCEL_SHARE = 0.05
CANCEL_AFTER_S = (0.0, 0.1)
RELEASE_CONFIRM_S = 2.5  # a caller's second release of its own id (the sidecar's: 2 s)
RETRY_PAUSE_S = 0.05
LEASE_MS = 600_000  # --reservation-ttl-s, the default
SETTLE_GIVE_UP_S = 60.0  # a settlement not taken by then is a violation
WARMUP_S = 1.0
TAIL_S = 1.0
CLEAR_WITHIN_S = 10.0  # after the last fault: nothing may be held any more
REPLICA_CALM_S = 3.0  # a replica is restarted only this long after any store fault
AUTH_ESTIMATE = (200, 800)  # prompt, max output tokens of an Authorize with an estimate
RPM_RATE = 30.0  # attempts per second of all rpm clients together
BUDGET_RATE = 20.0  # attempts per second of all budget clients together
MEAN_CHARGE = 316  # tokens a budget-key attempt charges on average (Checks and Authorize)
UNKNOWN = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "client_cancel", "503"})
ANSWERED = ("allowed", "denied:", "ok")  # the store answered (outcome prefixes)
EXPECTED_DENIALS = {
    "parallel": {"PARALLEL_REQUESTS"},
    "budget": {"TOKEN_LIMIT"},
    "rpm": {"REQUESTS_PER_MINUTE"},
    "open": set(),
}
ROLES = ("check_parallel", "own_id_parallel", "sidecar_id_parallel", "rpm", "budget", "open")
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


@dataclass
class Config:
    stalls: int = 100
    restarts: int = 1
    replica_restarts: int = 0
    seconds: float | None = None  # None: as long as the faults take
    clients: int = 16
    pause_s: float = 0.005  # each client's pause between requests
    stall_s: tuple[float, float] = (0.3, 0.8)
    gap_s: tuple[float, float] = (0.1, 0.9)  # between two faults (scaled with --seconds)
    store_timeout_ms: int = STORE_TIMEOUT_MS
    rss_limit_mb: float = 50.0
    give_ups: bool = True  # short deadlines and client-side cancellations
    replica_in_stall: bool = False  # SIGTERM replica B while the store is stopped
    rpm_wait: bool = False  # after the run, wait for the rpm window and admit once more
    seed: int | None = None


@dataclass
class Fault:
    kind: str  # stall, restart, replica
    start: float
    end: float  # SIGCONT sent, restarted store answering PING, replica SERVING
    replica: int = -1


@dataclass(slots=True)
class Call:
    kind: str  # check, authorize, record_usage, release
    key: str
    replica: int
    sent: float
    done: float
    outcome: str  # allowed, denied:<REASON>, ok, 503, client_cancel, or a gRPC code name
    mode: str  # normal, short (deadline 0.05-0.2 s), cancel (cancelled by the client)
    ident: str = ""  # the x-request-id of a Check, the caller's request id of an Authorize


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _spread(values: list[float], scale: float = 1.0, digits: int = 3) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(statistics.median(values) * scale, digits),
        "p99": round(_pct(values, 0.99) * scale, digits),
        "max": round(max(values) * scale, digits),
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class FaultStore(StoreProcess):
    """The run's Valkey: append-only, fsynced before every reply, restartable in place."""

    def start(self) -> FaultStore:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [*server_args(self.binary, self.data_dir, port=self.port, appendonly=True),
                "--appendfsync", "always"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                try:
                    if client.ping():
                        return self
                except redis.RedisError:
                    time.sleep(0.02)
        finally:
            client.close()
        raise RuntimeError(f"the store did not start; see {self.data_dir}/store.log")


class FaultRun:
    """One run: processes, keys, load, faults, then the checks and the figures."""

    def __init__(self, config: Config, folder: Path) -> None:
        self.cfg = config
        self.folder = folder
        self.rng = random.Random(config.seed)
        self.run_id = secrets.token_hex(3)
        self.ids = itertools.count(1)
        self.calls: list[Call] = []
        self.faults: list[Fault] = []
        self.violations: list[str] = []
        self.mismatches: list[str] = []
        self.anomalies: list[str] = []  # replies that contradict what the client did
        self.other_errors: Counter[str] = Counter()
        self.acked_tokens: Counter[str] = Counter()
        self.seen_allowed: Counter[str] = Counter()  # admissions whose reply a client got
        self.unknown_admissions: Counter[str] = Counter()  # Authorize/Check calls, unknown
        self.sidecar_ids: set[str] = set()  # request ids the sidecar made, seen in replies
        self.open_ids: dict[str, str] = {}  # id -> what the client did with it (diagnostics)
        self.window_log: dict[str, float] = {}  # rpm window member -> score (µs), from polls
        self.lags: list[tuple[float, float]] = []  # (when, how late) of this process' loop
        self.window_polls = 0
        self.rss: dict[str, dict[str, float]] = {}
        self.stopping = asyncio.Event()
        self.background: set[asyncio.Task[None]] = set()
        self.store: FaultStore | None = None
        self.sidecars: list[SidecarProcess] = []
        self.channels: list[grpc.aio.Channel] = []
        self.keys: dict[str, kpb.CreateKeyResponse] = {}
        self.limits: dict[str, int] = {}
        self.prefix = f"f{self.run_id}"
        self.began = 0.0
        self.load_ended = 0.0

    # ------------------------------------------------------------------ setup

    def plan(self) -> tuple[list[tuple[float, str, float]], float]:
        """(gap before, kind, stall seconds) per fault, in order, and the run's length."""
        cfg, rng = self.cfg, self.rng
        kinds = ["stall"] * cfg.stalls + ["restart"] * cfg.restarts
        rng.shuffle(kinds)
        for _ in range(cfg.replica_restarts):  # never first, never right after a fault
            kinds.insert(rng.randint(1, len(kinds)) if kinds else 0, "replica")
        stalls = [rng.uniform(*cfg.stall_s) if k == "stall" else 0.0 for k in kinds]
        gaps = [rng.uniform(*cfg.gap_s) for _ in kinds]
        for i, kind in enumerate(kinds):
            if kind == "replica":
                gaps[i] = max(gaps[i], REPLICA_CALM_S)
        busy = sum(stalls) + 0.6 * cfg.restarts + 4.0 * cfg.replica_restarts
        if cfg.seconds is not None:
            room = cfg.seconds - WARMUP_S - TAIL_S - busy
            fixed = sum(g for g, k in zip(gaps, kinds, strict=True) if k == "replica")
            free = sum(g for g, k in zip(gaps, kinds, strict=True) if k != "replica")
            scale = max(0.0, room - fixed) / free if free else 0.0
            gaps = [g if k == "replica" else max(0.05, g * scale)
                    for g, k in zip(gaps, kinds, strict=True)]
        length = WARMUP_S + TAIL_S + busy + sum(gaps)
        return list(zip(gaps, kinds, stalls, strict=True)), length

    async def setup(self, length: float) -> None:
        binary = store_binaries()["valkey"]
        store = FaultStore("valkey", binary, self.folder / "store")
        self.store = await asyncio.to_thread(store.start)
        args = ["--store-timeout-ms", str(self.cfg.store_timeout_ms)]
        self.sidecars = [
            SidecarProcess(self.store.url, self.prefix, extra_args=args,
                           log_path=self.folder / f"sidecar-{name}.log")
            for name in "AB"
        ]
        # The first replica pins the deployment settings; the second then starts alongside.
        await asyncio.to_thread(self.sidecars[0].start)
        await asyncio.to_thread(self.sidecars[1].start)
        self.channels = [grpc.aio.insecure_channel(s.target, options=CHANNEL_OPTIONS)
                         for s in self.sidecars]
        self.admission = [admission_pb2_grpc.AdmissionStub(c) for c in self.channels]
        self.check = [
            c.unary_unary(CHECK_METHOD, request_serializer=authz.CheckRequest.SerializeToString,
                          response_deserializer=authz.CheckResponse.FromString)
            for c in self.channels
        ]
        # Envoy's access log, to which a proxy reports every request it handled.
        self.access_log = [
            c.stream_unary(ACCESS_LOG_METHOD,
                           request_serializer=log_pb.StreamAccessLogsMessage.SerializeToString,
                           response_deserializer=log_pb.StreamAccessLogsResponse.FromString)
            for c in self.channels
        ]
        self.admin = keys_pb2_grpc.KeyManagementStub(self.channels[0])
        self.roles = [ROLES[i % len(ROLES)] for i in range(max(self.cfg.clients, len(ROLES)))]
        on_parallel = sum(r.endswith("_parallel") for r in self.roles)
        window = min(length, 60.0)
        self.limits = {
            "parallel": on_parallel + 4,
            "rpm": max(20, int(RPM_RATE * window * 0.6)),
            "budget": max(5_000, int(BUDGET_RATE * length * 0.35 * MEAN_CHARGE)),
        }
        specs = {
            "parallel": kpb.Limits(max_parallel_requests=self.limits["parallel"],
                                   token_limit=10**12),
            "budget": kpb.Limits(token_limit=self.limits["budget"]),
            "rpm": kpb.Limits(requests_per_minute=self.limits["rpm"]),
            "open": kpb.Limits(),
        }
        for name, limits in specs.items():
            self.keys[name] = await self.admin.CreateKey(
                kpb.CreateKeyRequest(name=f"{name}-{self.run_id}", limits=limits), timeout=10)
        self.redis = Redis.from_url(self.store.url, decode_responses=True, socket_timeout=0.5,
                                    socket_connect_timeout=0.5)
        seconds, micros = await self.redis.time()
        self.store_clock = (seconds + micros / 1e6, time.monotonic())  # to date store times

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
        if hasattr(self, "redis"):
            await self.redis.aclose()
        for sidecar in self.sidecars:
            await asyncio.to_thread(sidecar.stop)
        if self.store is not None:
            if self.store.process is not None:
                self.store.process.send_signal(signal.SIGCONT)  # never left stopped
            await asyncio.to_thread(self.store.stop)

    def key_id(self, key: str) -> str:
        return str(self.keys[key].key.key_id)

    def next_id(self, tag: str) -> str:
        return f"{tag}-{self.run_id}-{next(self.ids)}"

    # ------------------------------------------------------------------ one call

    def _mode(self) -> str:
        draw = self.rng.random()
        if not self.cfg.give_ups:
            return "normal"
        if draw < SHORT_SHARE:
            return "short"
        if draw < SHORT_SHARE + CANCEL_SHARE:
            return "cancel"
        return "normal"

    async def _call(self, kind: str, key: str, replica: int, method: Any, request: Any,
                    ident: str = "", may_give_up: bool = True) -> tuple[Call, Any]:
        """The call's record and its reply (None: no answer); a reply's outcome is the
        caller's to set."""
        mode = self._mode() if may_give_up else "normal"
        timeout = self.rng.uniform(*SHORT_DEADLINE_S) if mode == "short" else LONG_DEADLINE_S
        sent = time.monotonic()
        reply, outcome = None, "ok"
        try:
            if mode == "cancel":
                reply = await asyncio.wait_for(method(request, timeout=timeout),
                                               self.rng.uniform(*CANCEL_AFTER_S))
            else:
                reply = await method(request, timeout=timeout)
        except TimeoutError:
            outcome = "client_cancel"
        except grpc.aio.AioRpcError as err:
            outcome = err.code().name
            if outcome not in UNKNOWN:
                self.other_errors[f"{kind} {outcome}: {err.details()}"[:160]] += 1
        call = Call(kind, key, replica, sent, time.monotonic(), outcome, mode, ident)
        self.calls.append(call)
        return call, reply

    # ------------------------------------------------------------------ Check

    def _check_request(self, key: str, x_request_id: str) -> authz.CheckRequest:
        request = authz.CheckRequest()
        request.attributes.context_extensions["endpoint"] = "chat"
        http = request.attributes.request.http
        http.headers["authorization"] = f"Bearer {self.keys[key].secret}"
        http.headers["x-request-id"] = x_request_id
        http.path = "/v1/chat/completions"
        http.method = "POST"
        http.raw_body = json.dumps({
            "model": "m", "max_tokens": 300, "messages": [{"role": "user", "content": "hi"}],
        }).encode()
        return request

    async def _proxy_once(self, key: str, replica: int) -> str:
        """A Check, then what the proxy's access log would settle for it; the Check's outcome."""
        x_request_id = self.next_id("x")
        call, reply = await self._call("check", key, replica, self.check[replica],
                                       self._check_request(key, x_request_id), x_request_id)
        if reply is None:
            self._unknown(key, call.outcome)
            # As Envoy does: the request is logged all the same, without an answer.
            self._spawn(self._log_unanswered(x_request_id, replica))
            return call.outcome
        meta = reply.dynamic_metadata.fields
        meta_key = meta["key_id"].string_value if "key_id" in meta else ""
        if meta_key and meta_key != self.key_id(key):
            self.mismatches.append(f"check on {key}: reply for key {meta_key}")
        if not reply.HasField("ok_response"):
            status = reply.denied_response.status.code
            if status == 503:
                call.outcome = "503"
                self._unknown(key, "503")
                return call.outcome
            reason = meta["deny_reason"].string_value.upper() if "deny_reason" in meta else ""
            call.outcome = f"denied:{reason or status}"
            self._expect_denial("check", key, reason or str(status))
            return call.outcome
        call.outcome = "allowed"
        self.seen_allowed[key] += 1
        headers = {h.header.key: h.header.value for h in reply.ok_response.headers}
        if headers.get("x-aigw-key-id") != self.key_id(key):
            self.mismatches.append(f"check on {key}: x-aigw-key-id {headers.get('x-aigw-key-id')}")
        request_id = meta["request_id"].string_value
        if not request_id.startswith(f"{x_request_id}.") or request_id in self.sidecar_ids:
            self.mismatches.append(f"check {x_request_id}: request id {request_id}")
        self.sidecar_ids.add(request_id)
        prompt = int(meta["prompt_tokens"].number_value)
        max_output = int(meta["max_output_tokens"].number_value)
        await asyncio.sleep(self.rng.uniform(0.0, 0.02))  # the upstream
        held = key in ("parallel", "budget")  # a slot or a reservation (of the estimate)
        usage = (prompt, self.rng.randint(0, max_output)) if self.rng.random() < 0.7 else None
        await self._settle(key, request_id, usage, replica, "check", held=held, reserved=held)
        return call.outcome

    async def _log_unanswered(self, x_request_id: str, replica: int) -> None:
        """Envoy's access log entry of a request whose Check answer it never applied."""
        await asyncio.sleep(ACCESS_LOG_FLUSH_S)
        entry = log_pb.HTTPAccessLogEntry()
        entry.request.request_id = x_request_id
        batch = log_pb.StreamAccessLogsMessage(
            http_logs=log_pb.StreamAccessLogsMessage.HTTPAccessLogEntries(log_entry=[entry])
        )
        for _ in range(100):  # Envoy buffers while the sidecar is away
            try:
                await self.access_log[replica](iter([batch]), timeout=LONG_DEADLINE_S)
                return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)

    # ------------------------------------------------------------------ Authorize

    async def _authorize_once(self, key: str, replica: int, *, own_id: bool,
                              estimate: bool) -> str:
        """An Authorize, then its settlement; the Authorize's outcome."""
        request_id = self.next_id("c") if own_id else ""
        request = adm.AuthorizeRequest(secret=self.keys[key].secret, request_id=request_id)
        if estimate:
            request.estimate.model = "m"
            request.estimate.prompt_tokens, request.estimate.max_output_tokens = AUTH_ESTIMATE
        # Only a caller that holds its own request id may give up on the call: one the
        # sidecar makes is lost with the reply (README: pass your own and release it).
        call, reply = await self._call("authorize", key, replica,
                                       self.admission[replica].Authorize, request, request_id,
                                       may_give_up=own_id)
        if reply is None:
            self._unknown(key, call.outcome)
            if own_id:  # the caller's own id: the caller releases it, the sidecar never does
                self.open_ids[request_id] = (f"authorize on {key}: {call.outcome}, "
                                             "released by the client")
                self._spawn(self._release_own(key, request_id, replica))
            return call.outcome
        if reply.key_id != self.key_id(key):
            self.mismatches.append(f"authorize on {key}: reply for key {reply.key_id}")
        if not reply.allowed:
            reason = adm.DenyReason.Name(reply.deny_reason).removeprefix("DENY_REASON_")
            call.outcome = f"denied:{reason}"
            self._expect_denial("authorize", key, reason)
            return call.outcome
        call.outcome = "allowed"
        self.seen_allowed[key] += 1
        held = key == "parallel" or (key == "budget" and estimate)
        if own_id and held and reply.request_id != request_id:
            self.mismatches.append(f"authorize {request_id}: reply for {reply.request_id}")
        if not own_id and held:
            if not reply.request_id.startswith("req_") or reply.request_id in self.sidecar_ids:
                self.mismatches.append(f"authorize on {key}: request id {reply.request_id!r}")
            self.sidecar_ids.add(reply.request_id)
        if not held and reply.request_id:
            self.anomalies.append(f"authorize on {key}: request id {reply.request_id} "
                                  "although nothing is held")
        if estimate and held and reply.reservation.tokens != sum(AUTH_ESTIMATE):
            self.anomalies.append(f"authorize {request_id}: reserved {reply.reservation.tokens}")
        settle_id = request_id or reply.request_id or self.next_id("u")
        await asyncio.sleep(self.rng.uniform(0.0, 0.02))
        usage = None
        if self.rng.random() < 0.7 or not held:
            bound = sum(AUTH_ESTIMATE) if estimate else 1000
            prompt = self.rng.randint(0, bound // 4)
            usage = (prompt, self.rng.randint(0, bound - prompt))
        await self._settle(key, settle_id, usage, replica, "authorize", held=held,
                           reserved=held and estimate)
        return call.outcome

    def _unknown(self, key: str, outcome: str) -> None:
        if outcome in UNKNOWN:
            self.unknown_admissions[key] += 1

    def _expect_denial(self, kind: str, key: str, reason: str) -> None:
        if reason not in EXPECTED_DENIALS[key]:
            self.violations.append(f"{kind} on {key} refused {reason}: not this key's limit")

    # ------------------------------------------------------------------ settlement

    async def _settle(self, key: str, request_id: str, usage: tuple[int, int] | None,
                      replica: int, origin: str, *, held: bool, reserved: bool) -> None:
        """RecordUsage (usage) or ReleaseReservation (None) until one attempt is acknowledged.

        held: the admission holds a slot or a reservation; reserved: a reservation.
        """
        key_id = self.key_id(key)
        unknown_before = False
        began = time.monotonic()
        self.open_ids[request_id] = f"{origin} on {key}: admitted, being settled"
        while True:
            if usage is not None:
                call, reply = await self._call(
                    "record_usage", key, replica, self.admission[replica].RecordUsage,
                    adm.RecordUsageRequest(key_id=key_id, request_id=request_id,
                                           prompt_tokens=usage[0], completion_tokens=usage[1]))
            else:
                call, reply = await self._call(
                    "release", key, replica, self.admission[replica].ReleaseReservation,
                    adm.ReleaseReservationRequest(key_id=key_id, request_id=request_id))
            outcome = call.outcome
            if reply is not None:
                break
            if outcome not in UNKNOWN:
                self.violations.append(f"settling {request_id} on {key}: {outcome}")
                self.open_ids[request_id] = f"{origin} on {key}: settlement failed {outcome}"
                return
            if time.monotonic() - began > SETTLE_GIVE_UP_S:
                self.violations.append(f"settling {request_id} on {key}: never taken")
                return
            unknown_before = True
            replica ^= 1  # as a proxy does: the next attempt on the other replica
            await asyncio.sleep(RETRY_PAUSE_S)
        self.open_ids[request_id] = f"{origin} on {key}: settled"
        if usage is not None:
            self.acked_tokens[key] += usage[0] + usage[1]
        if unknown_before:
            return  # an earlier attempt may have run: either answer is right
        if usage is not None:
            if not reply.counted:
                self.anomalies.append(f"record_usage {request_id}: not counted, first attempt")
            if reply.settled_reservation != reserved:
                self.anomalies.append(f"record_usage {request_id} on {key}: settled_reservation "
                                      f"{reply.settled_reservation}, reserved {reserved}")
        elif held and not reply.released:
            self.anomalies.append(f"release {request_id} on {key}: nothing was open")

    async def _release_own(self, key: str, request_id: str, replica: int) -> None:
        """A caller's own id whose Authorize had no answer: release it, then once more later."""
        key_id = self.key_id(key)
        for pause in (0.0, RELEASE_CONFIRM_S):
            await asyncio.sleep(pause)
            began = time.monotonic()
            while True:
                call, reply = await self._call(
                    "release", key, replica, self.admission[replica].ReleaseReservation,
                    adm.ReleaseReservationRequest(key_id=key_id, request_id=request_id))
                if reply is not None:
                    break
                if call.outcome not in UNKNOWN or time.monotonic() - began > SETTLE_GIVE_UP_S:
                    self.violations.append(f"releasing {request_id} on {key}: {call.outcome}")
                    return
                replica ^= 1
                await asyncio.sleep(RETRY_PAUSE_S)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # ------------------------------------------------------------------ clients

    async def client(self, index: int, role: str, count: int) -> None:
        # Alternate within each role too, so every role runs on both replicas.
        replica = (index + index // len(ROLES)) % 2
        pace = {"rpm": count / RPM_RATE, "budget": count / BUDGET_RATE}.get(role, 0.0)
        turn = 0
        while not self.stopping.is_set():
            began = time.monotonic()
            turn += 1
            if role == "check_parallel":
                outcome = await self._proxy_once("parallel", replica)
            elif role == "own_id_parallel":
                outcome = await self._authorize_once("parallel", replica, own_id=True,
                                                     estimate=True)
            elif role == "sidecar_id_parallel":
                outcome = await self._authorize_once("parallel", replica, own_id=False,
                                                     estimate=False)
            elif role == "rpm" and turn % 2:
                outcome = await self._proxy_once("rpm", replica)
            elif role == "rpm":
                outcome = await self._authorize_once("rpm", replica, own_id=False,
                                                     estimate=False)
            elif role == "budget" and turn % 2:
                outcome = await self._proxy_once("budget", replica)
            elif role == "budget":
                outcome = await self._authorize_once("budget", replica, own_id=True,
                                                     estimate=True)
            else:
                outcome = await self._authorize_once("open", replica, own_id=False,
                                                     estimate=False)
            if outcome in UNKNOWN:
                await asyncio.sleep(0.01)  # no hot loop on a refused connection
            wait = max(self.cfg.pause_s, pace - (time.monotonic() - began))
            await asyncio.sleep(wait)

    # ------------------------------------------------------------------ faults

    async def inject(self, plan: list[tuple[float, str, float]]) -> None:
        assert self.store is not None
        await asyncio.sleep(WARMUP_S)
        self._measure_rss("before")
        for gap, kind, stall_s in plan:
            await asyncio.sleep(gap)
            if kind == "stall":
                process = self.store.process
                assert process is not None
                process.send_signal(signal.SIGSTOP)
                start = time.monotonic()
                try:
                    await asyncio.sleep(stall_s)
                finally:
                    process.send_signal(signal.SIGCONT)
                self.faults.append(Fault("stall", start, time.monotonic()))
            elif kind == "restart":
                start = time.monotonic()
                await asyncio.to_thread(self.store.stop, kill=True)
                again = FaultStore("valkey", self.store.binary, self.store.data_dir,
                                   port=self.store.port)
                await asyncio.to_thread(again.start)
                self.store.process = again.process
                self.faults.append(Fault("restart", start, time.monotonic()))
            else:
                sidecar = self.sidecars[1]
                self._measure_rss("before_restart", only=1)
                start = time.monotonic()
                process = self.store.process
                assert process is not None
                if self.cfg.replica_in_stall:  # B stops with releases still to send
                    process.send_signal(signal.SIGSTOP)
                    await asyncio.sleep(0.4)
                try:
                    code = await asyncio.to_thread(sidecar.stop)
                finally:
                    if self.cfg.replica_in_stall:
                        process.send_signal(signal.SIGCONT)
                        self.faults.append(Fault("stall", start, time.monotonic()))
                if code != 0:
                    self.violations.append(f"replica B exited with {code} on SIGTERM")
                await asyncio.to_thread(sidecar.start)
                self.faults.append(Fault("replica", start, time.monotonic(), replica=1))
                await asyncio.sleep(WARMUP_S)
                self._measure_rss("after_restart_baseline", only=1)
        await asyncio.sleep(TAIL_S)
        self.stopping.set()

    def _measure_rss(self, when: str, only: int | None = None) -> None:
        for i, sidecar in enumerate(self.sidecars):
            if only is not None and i != only:
                continue
            assert sidecar.process is not None
            self.rss.setdefault("AB"[i], {})[when] = round(rss_mb(sidecar.process.pid), 1)

    async def watch_loop(self) -> None:
        """How late this process' own event loop runs (it times every call)."""
        tick = 0.01
        while not self.stopping.is_set():
            before = time.monotonic()
            await asyncio.sleep(tick)
            late = time.monotonic() - before - tick
            if late > 0.005:
                self.lags.append((before, late))

    def _lag_near(self, start: float, end: float) -> float:
        return max((late for when, late in self.lags if start <= when <= end), default=0.0)

    async def poll_window(self) -> None:
        """The rpm key's window, read every 2 s: every admission with the store's time."""
        while not self.stopping.is_set():
            await self._read_window()
            try:
                await asyncio.wait_for(self.stopping.wait(), 2.0)
            except TimeoutError:
                pass

    async def _read_window(self) -> None:
        try:
            entries = await self.redis.zrange(f"{self.prefix}:win:{{{self.key_id('rpm')}}}",
                                              0, -1, withscores=True)
        except Exception:  # a stalled or restarting store: the next poll reads it
            return
        self.window_polls += 1
        for member, score in entries:
            self.window_log[member] = score

    # ------------------------------------------------------------------ run

    async def run(self) -> dict[str, Any]:
        plan, length = self.plan()
        await self.setup(length)
        try:
            return await self._run(plan, length)
        finally:
            await self.close()

    async def _run(self, plan: list[tuple[float, str, float]], length: float) -> dict[str, Any]:
        counts = Counter(self.roles)
        clients = [asyncio.ensure_future(self.client(i, role, counts[role]))
                   for i, role in enumerate(self.roles)]
        poller = asyncio.ensure_future(self.poll_window())
        watcher = asyncio.ensure_future(self.watch_loop())
        self.began = time.monotonic()
        try:
            await self.inject(plan)
        finally:
            self.stopping.set()
            if self.store is not None and self.store.process is not None:
                self.store.process.send_signal(signal.SIGCONT)
        done, pending = await asyncio.wait(clients, timeout=SETTLE_GIVE_UP_S + 10)
        for task in pending:
            task.cancel()
            self.violations.append("a client did not finish its settlements")
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        self.load_ended = time.monotonic()
        after = await self.leftovers()  # while the callers' second releases still run
        if self.background:
            await asyncio.wait(list(self.background), timeout=SETTLE_GIVE_UP_S + 10)
        await poller
        await watcher
        await self._read_window()
        self._measure_rss("after")
        totals = await self.overviews()  # before the checks below add admissions
        await self.admits_again()
        return self.figures(plan, length, after, totals)

    # ------------------------------------------------------------------ checks

    async def overview(self, key: str) -> kpb.KeyOverview:
        reply = await self.admin.GetKeyOverview(
            kpb.GetKeyOverviewRequest(key_id=self.key_id(key)), timeout=10)
        return reply.overview

    async def overviews(self) -> dict[str, kpb.KeyOverview]:
        return {key: await self.overview(key) for key in self.keys}

    async def leftovers(self) -> dict[str, Any]:
        """Poll until nothing is held on any key, at most CLEAR_WITHIN_S after the last fault."""
        last = max((f.end for f in self.faults if f.kind != "replica"), default=self.began)
        deadline = last + CLEAR_WITHIN_S
        clear_since: float | None = None
        while True:
            views = await self.overviews()
            held = {k: (v.open_reservations, v.reserved_tokens, v.parallel_requests.used)
                    for k, v in views.items()}
            if any(any(h) for h in held.values()):
                clear_since = None  # (held again: a script that ran late)
            elif clear_since is None:
                clear_since = time.monotonic()
            # Done when nothing is held and no caller still has a release to send.
            if (clear_since is not None and not self.background) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        cleared = round((clear_since or time.monotonic()) - last, 2)
        result: dict[str, Any] = {
            key: {"open_reservations": h[0], "reserved_tokens": h[1], "parallel_used": h[2]}
            for key, h in held.items()
        }
        left = {k: h for k, h in held.items() if any(h)}
        result["cleared_after_s"] = None if left else cleared
        if left:
            holders = await self._who_holds()
            causes = Counter(h["cause"] for h in holders)
            result["held_by_kind"] = dict(Counter(
                h["cause"].split(" (", 1)[0] for h in holders).most_common())
            result["held_by_cause"] = dict(causes.most_common())
            result["held_examples"] = holders[:10]
            self.violations.append(
                f"held {cleared} s after the last fault (open reservations, reserved tokens, "
                f"slots): {left}; by cause: {dict(causes.most_common())}; e.g. {holders[:3]}")
        return result

    async def _who_holds(self) -> list[dict[str, Any]]:
        """Each request id still holding a slot or a lease, and the call that left it."""
        now_ms = (await self.redis.time())[0] * 1000
        members: dict[tuple[str, str], dict[str, Any]] = {}
        for key in self.keys:
            for kind in ("slot", "lease"):
                name = f"{self.prefix}:{kind}:{{{self.key_id(key)}}}"
                for member, expiry_ms in await self.redis.zrangebyscore(
                    name, now_ms, "+inf", withscores=True
                ):
                    entry = members.setdefault((key, member), {"key": key, "id": member})
                    entry[kind] = True
                    entry["admitted_at_s"] = self._run_time(expiry_ms - LEASE_MS)
        calls = {c.ident: c for c in self.calls if c.ident and c.kind in ("check", "authorize")}
        for entry in members.values():
            entry["cause"], entry["call"] = self._cause(entry, calls)
        return sorted(members.values(), key=lambda e: e["admitted_at_s"])

    def _run_time(self, store_ms: float) -> float:
        """A store time (ms) as seconds into the run."""
        return round(store_ms / 1000 - self.store_clock[0] + self.store_clock[1] - self.began, 3)

    def _cause(self, entry: dict[str, Any], calls: dict[str, Call]) -> tuple[str, str]:
        member, at = entry["id"], entry["admitted_at_s"] + self.began
        near = [f for f in self.faults if f.start - 0.3 <= at <= f.end + 0.5]
        fault = f" (admitted {near[0].kind} {near[0].start - at:+.3f}..{near[0].end - at:+.3f} "\
                "s from then)" if near else " (no fault near)"
        call = calls.get(member.split(".", 1)[0]) or calls.get(member)
        if call is None and member.startswith("req_"):
            if member in self.sidecar_ids:
                return "a sidecar-made id a client saw and settled" + fault, ""
            # Authorize without an id: the candidates are the unanswered ones around then.
            around = [c for c in self.calls if c.kind == "authorize" and not c.ident
                      and c.key == entry["key"] and c.outcome in UNKNOWN
                      and c.sent - 0.05 <= at <= c.done + 0.05]
            call = min(around, key=lambda c: abs(c.done - at), default=None)
            kind = "authorize without request id"
        else:
            kind = "check" if member.startswith("x-") else "authorize with own request id"
        if call is None:
            return f"{kind}: no matching call" + fault, ""
        described = (f"{call.kind} {call.ident or '(no id)'} on {'AB'[call.replica]}: "
                     f"{call.outcome} ({call.mode}), sent {call.sent - at:+.3f} s, "
                     f"ended {call.done - at:+.3f} s from the admission")
        if call.mode != "normal" and call.outcome in ("client_cancel", "DEADLINE_EXCEEDED"):
            return f"{kind}: the client gave up" + fault, described
        if call.outcome in UNKNOWN:
            return f"{kind}: {call.outcome}" + fault, described
        return f"{kind}: answered {call.outcome}" + fault, described

    async def admits_again(self) -> None:
        """After the faults: every key admits what its own limits allow."""
        stub = self.admission[0]
        parallel = self.limits["parallel"]
        ids = [self.next_id("after") for _ in range(parallel)]
        replies = await asyncio.gather(*(stub.Authorize(adm.AuthorizeRequest(
            secret=self.keys["parallel"].secret, request_id=rid,
            estimate=adm.Estimate(model="m", prompt_tokens=1, max_output_tokens=1)),
            timeout=10) for rid in ids))
        taken = sum(r.allowed for r in replies)
        if taken != parallel:
            reasons = Counter(adm.DenyReason.Name(r.deny_reason) for r in replies if not r.allowed)
            self.violations.append(f"parallel key: {taken} of {parallel} slots free ({reasons})")
        for rid in ids:
            await stub.ReleaseReservation(adm.ReleaseReservationRequest(
                key_id=self.key_id("parallel"), request_id=rid), timeout=10)
        open_reply = await stub.Authorize(
            adm.AuthorizeRequest(secret=self.keys["open"].secret), timeout=10)
        if not open_reply.allowed:
            self.violations.append(f"open key refused: {open_reply.message}")
        budget = await self.overview("budget")
        room = self.limits["budget"] - budget.tokens.used
        if room > 0:
            rid = self.next_id("after")
            reply = await stub.Authorize(adm.AuthorizeRequest(
                secret=self.keys["budget"].secret, request_id=rid,
                estimate=adm.Estimate(model="m", prompt_tokens=room, max_output_tokens=0)),
                timeout=10)
            if not reply.allowed:
                self.violations.append(f"budget key: the {room} tokens left not admitted: "
                                       f"{reply.message}")
            else:
                await stub.ReleaseReservation(adm.ReleaseReservationRequest(
                    key_id=self.key_id("budget"), request_id=rid), timeout=10)
        await self._rpm_admits_again()

    async def _rpm_admits_again(self) -> None:
        stub = self.admission[0]
        request = adm.AuthorizeRequest(secret=self.keys["rpm"].secret)
        reply = await stub.Authorize(request, timeout=10)
        self.rpm_after: dict[str, Any] = {"admitted_at_once": reply.allowed}
        if reply.allowed:
            return
        if reply.deny_reason != adm.DENY_REASON_REQUESTS_PER_MINUTE:
            self.violations.append(f"rpm key refused: {reply.message}")
            return
        self.rpm_after["retry_after_ms"] = reply.retry_after_ms
        if reply.retry_after_ms > 60_000:
            self.violations.append(f"rpm key: retry after {reply.retry_after_ms} ms > 60 s")
        if not self.cfg.rpm_wait:
            return
        await asyncio.sleep(reply.retry_after_ms / 1000 + 0.05)
        again = await stub.Authorize(request, timeout=10)
        self.rpm_after["admitted_after_wait"] = again.allowed
        if not again.allowed:
            self.violations.append(f"rpm key refused after its retry-after: {again.message}")

    # ------------------------------------------------------------------ figures

    def _rpm_window(self) -> dict[str, Any]:
        scores = sorted(self.window_log.values())
        limit = self.limits["rpm"]
        most, j = 0, 0
        for i, score in enumerate(scores):
            while scores[j] <= score - 60_000_000:
                j += 1
            most = max(most, i - j + 1)  # admissions in (score - 60 s, score]
        if most > limit:
            self.violations.append(f"rpm key: {most} admissions in 60 s, limit {limit}")
        return {"limit": limit, "admissions_logged": len(scores),
                "max_in_any_60s": most, "polls": self.window_polls}

    def _under(self, call: Call, kinds: tuple[str, ...] = ("stall", "restart", "replica")
               ) -> Fault | None:
        for fault in self.faults:
            if fault.kind in kinds and call.sent <= fault.end and call.done >= fault.start:
                return fault
        return None

    def _recovery(self) -> dict[str, Any]:
        answered = [[c for c in self.calls if c.replica == r and c.outcome.startswith(ANSWERED)]
                    for r in (0, 1)]
        for calls in answered:
            calls.sort(key=lambda c: c.sent)
        sent_at = [[c.sent for c in calls] for calls in answered]
        found: dict[str, list[float]] = {}
        interrupted = 0  # the next fault began before the replica answered: not counted
        starts = sorted(f.start for f in self.faults)
        for fault in self.faults:
            following = starts[bisect.bisect_right(starts, fault.start):]
            next_start = following[0] if following else math.inf
            for replica in (0, 1):
                if fault.kind == "replica" and replica != fault.replica:
                    continue
                i = bisect.bisect_left(sent_at[replica], fault.end)
                if i < len(answered[replica]):
                    first = min(c.done for c in answered[replica][i:i + 50])
                    if first > next_start:
                        interrupted += 1
                        continue
                    found.setdefault(f"{fault.kind}:{'AB'[replica]}", []).append(first - fault.end)
        every = [v for values in found.values() for v in values]
        by_kind = {k: _spread(v, 1000, 1) for k, v in sorted(found.items())}
        return {"all_ms": _spread(every, 1000, 1), "interrupted_by_next_fault": interrupted,
                **{f"{k}_ms": v for k, v in by_kind.items()}}

    def _time_to_unavailable(self) -> dict[str, Any]:
        timeout_s = self.cfg.store_timeout_ms / 1000
        first, later, restart = [], [], []
        slow: list[tuple[float, Call, Fault]] = []
        for call in self.calls:
            if call.mode != "normal" or call.outcome not in ("UNAVAILABLE", "503"):
                continue
            fault = self._under(call, ("stall", "restart"))
            if fault is None:
                continue
            took = call.done - call.sent
            if fault.kind == "stall":
                slow.append((took, call, fault))
            if fault.kind == "restart":
                restart.append(took)
            elif call.sent < fault.start + timeout_s:
                first.append(took)  # on the connection open when the stall began
            else:
                later.append(took)  # the watchdog had dropped it: a new connection first
        stalled = first + later
        result: dict[str, Any] = {"store_timeout_ms": self.cfg.store_timeout_ms}
        for name, values in (("stall_all", stalled), ("stall_open_connection", first),
                             ("stall_new_connection", later), ("restart", restart)):
            result[f"{name}_ms"] = _spread(values, 1000, 1)
            if values:
                result[f"{name}_ratio"] = {k: round(v / self.cfg.store_timeout_ms, 2)
                                           for k, v in result[f"{name}_ms"].items() if k != "n"}
        result["stall_over_1_25x"] = sum(t > 1.25 * timeout_s for t in stalled)
        # The same, less how late this process' own loop ran meanwhile (it times the calls).
        result["stall_over_1_25x_net_of_load_generator_lag"] = sum(
            took - self._lag_near(c.sent, c.done) > 1.25 * timeout_s for took, c, _ in slow)
        slow.sort(key=lambda item: -item[0])
        result["slowest_stalled"] = [
            f"{c.kind} on {'AB'[c.replica]}: {took * 1000:.0f} ms, sent {c.sent - f.start:+.3f} s "
            f"from the stall's start, answered {c.done - f.end:+.3f} s from its end; this "
            f"process' loop late by up to {self._lag_near(c.sent, c.done) * 1000:.0f} ms"
            for took, c, f in slow[:8]
        ]
        lags = [late for _, late in self.lags]
        result["load_generator_loop_lag_ms"] = {
            "over_5ms": len(lags), "max": round(max(lags, default=0) * 1000, 1)}
        hung = [c for c in self.calls if c.mode == "normal" and c.outcome == "DEADLINE_EXCEEDED"]
        result["normal_calls_past_their_2s_deadline"] = len(hung)
        return result

    def figures(self, plan: list[tuple[float, str, float]], length: float,
                leftovers: dict[str, Any], totals: dict[str, kpb.KeyOverview]) -> dict[str, Any]:
        by_kind: dict[str, Counter[str]] = {}
        under: dict[str, Counter[str]] = {}
        for call in self.calls:
            name = f"{call.outcome}" if call.mode == "normal" else f"{call.outcome} ({call.mode})"
            by_kind.setdefault(call.kind, Counter())[name] += 1
            if self._under(call) is not None:
                under.setdefault(call.kind, Counter())[name] += 1
        usage = {}
        late = {}
        for key, view in totals.items():
            lifetime = view.lifetime_prompt_tokens + view.lifetime_completion_tokens
            period = view.period_prompt_tokens + view.period_completion_tokens
            usage[key] = {"acknowledged": self.acked_tokens[key], "lifetime": lifetime,
                          "period": period}
            if not self.acked_tokens[key] == lifetime == period:
                self.violations.append(f"{key}: acknowledged tokens {self.acked_tokens[key]}, "
                                       f"counted {lifetime} (period {period})")
            unseen = view.lifetime_requests - self.seen_allowed[key]
            late[key] = {"store_admissions": view.lifetime_requests,
                         "seen_by_clients": self.seen_allowed[key],
                         "admitted_unseen": unseen,
                         "unknown_outcome_calls": self.unknown_admissions[key]}
            if unseen < 0 or unseen > self.unknown_admissions[key]:
                self.violations.append(f"{key}: {unseen} admissions nobody saw, "
                                       f"{self.unknown_admissions[key]} unknown outcomes")
        late["rpm"]["window_used_at_end"] = totals["rpm"].requests_per_minute.used
        window = self._rpm_window()
        if window["admissions_logged"] != totals["rpm"].lifetime_requests:
            self.violations.append(f"rpm window log has {window['admissions_logged']} "
                                   f"admissions, the key counted {totals['rpm'].lifetime_requests}")
        budget_used = totals["budget"].tokens.used
        if budget_used > self.limits["budget"]:
            self.violations.append(f"budget overshot: {budget_used} > {self.limits['budget']}")
        for name, values in self.rss.items():
            start = values.get("after_restart_baseline", values.get("before"))
            if start is not None and values["after"] - start > self.cfg.rss_limit_mb:
                self.violations.append(f"replica {name} RSS grew {start} -> {values['after']} MB")
            if "before_restart" in values and values["before_restart"] - values["before"] > (
                self.cfg.rss_limit_mb
            ):
                self.violations.append(f"replica {name} RSS grew {values['before']} -> "
                                       f"{values['before_restart']} MB before its restart")
        if self.mismatches:
            self.violations.append(f"{len(self.mismatches)} replies for another key or request: "
                                   f"{self.mismatches[:5]}")
        if self.anomalies:
            self.violations.append(f"{len(self.anomalies)} replies that contradict the calls: "
                                   f"{self.anomalies[:5]}")
        if self.other_errors:
            self.violations.append(f"unexpected errors: {dict(self.other_errors.most_common(5))}")
        stalls = [f.end - f.start for f in self.faults if f.kind == "stall"]
        return {
            "config": {**asdict(self.cfg), "planned_s": round(length, 1)},
            "limits": self.limits,
            "duration_s": round(self.load_ended - self.began, 1),
            "faults": {
                "stalls": len(stalls), "stall_s": _spread(stalls, 1, 2),
                "restarts_s": [round(f.end - f.start, 2) for f in self.faults
                               if f.kind == "restart"],
                "replica_restarts_s": [round(f.end - f.start, 2) for f in self.faults
                                       if f.kind == "replica"],
            },
            "calls": {"total": len(self.calls), "by_kind": {k: dict(v.most_common())
                                                              for k, v in by_kind.items()}},
            "calls_under_fault": {"total": sum(sum(v.values()) for v in under.values()),
                                  "by_kind": {k: dict(v.most_common()) for k, v in under.items()}},
            "mismatches": len(self.mismatches),
            "anomalies": len(self.anomalies),
            "leftovers": leftovers,
            "recovery": self._recovery(),
            "time_to_unavailable": self._time_to_unavailable(),
            "admitted_unseen": late,
            "rpm_window": window,
            "rpm_after": getattr(self, "rpm_after", {}),
            "budget": {"limit": self.limits["budget"], "used": budget_used},
            "usage_tokens": usage,
            "rss_mb": self.rss,
            "violations": self.violations,
        }


async def run(config: Config, folder: Path) -> dict[str, Any]:
    return await FaultRun(config, folder).run()


def table(result: dict[str, Any]) -> str:
    """The figures a reader wants first, one per line."""
    t = result["time_to_unavailable"]
    rec = result["recovery"]["all_ms"]
    under = result["calls_under_fault"]
    statuses: Counter[str] = Counter()
    for kinds in under["by_kind"].values():
        for outcome, n in kinds.items():
            statuses[outcome.split(" ")[0].split(":")[0]] += n
    late = result["admitted_unseen"]
    rows = [
        ("run", f"{result['duration_s']} s, {result['faults']['stalls']} stalls "
                f"(p50 {result['faults']['stall_s'].get('p50')} s), store restarts "
                f"{result['faults']['restarts_s']} s, replica restarts "
                f"{result['faults']['replica_restarts_s']} s"),
        ("calls", f"{result['calls']['total']} total, {under['total']} under a fault: "
                  + ", ".join(f"{k} {v}" for k, v in statuses.most_common())),
        ("mismatches (other key/request)", str(result["mismatches"])),
        ("replies contradicting the call", str(result["anomalies"])),
        ("leftovers after the last fault", _leftovers_row(result["leftovers"])),
        ("recovery after a fault (ms)", f"p50 {rec.get('p50')}, p99 {rec.get('p99')}, "
                                        f"max {rec.get('max')} (n {rec['n']})"),
    ]
    for name in ("stall_all", "stall_open_connection", "stall_new_connection", "restart"):
        s = t[f"{name}_ms"]
        if s["n"]:
            ratio = t[f"{name}_ratio"]
            rows.append((f"time to UNAVAILABLE, {name} (ms)",
                         f"p50 {s['p50']}, p99 {s['p99']}, max {s['max']} (n {s['n']}); "
                         f"x timeout: {ratio['p50']} / {ratio['p99']} / {ratio['max']}"))
    rows.append(("stalled calls over 1.25x timeout", str(t["stall_over_1_25x"]) + (
        f" ({t['stall_over_1_25x_net_of_load_generator_lag']} net of the load generator's "
        "own loop lag)") + (
        "; slowest: " + " | ".join(t["slowest_stalled"][:3]) if t["stall_over_1_25x"] else "")))
    rows.append(("admitted, reply never seen",
                 ", ".join(f"{k} {v['admitted_unseen']} (of {v['unknown_outcome_calls']} "
                           "unknown)" for k, v in late.items())))
    rows.append(("rpm window", f"limit {result['rpm_window']['limit']}, max in any 60 s "
                               f"{result['rpm_window']['max_in_any_60s']}, entries nobody saw "
                               f"{late['rpm']['admitted_unseen']}"))
    rows.append(("budget", f"{result['budget']['used']} of {result['budget']['limit']} tokens"))
    rows.append(("tokens acknowledged = counted",
                 ", ".join(f"{k} {v['acknowledged']}={v['lifetime']}"
                           for k, v in result["usage_tokens"].items())))
    rows.append(("RSS MB", json.dumps(result["rss_mb"])))
    rows.append(("violations", "none" if not result["violations"]
                 else "\n  " + "\n  ".join(result["violations"])))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _leftovers_row(left: dict[str, Any]) -> str:
    if left["cleared_after_s"] is not None:
        return f"none; nothing held {left['cleared_after_s']} s after the last fault"
    held = ", ".join(
        f"{key} {v['open_reservations']} reservations/{v['reserved_tokens']} tokens/"
        f"{v['parallel_used']} slots" for key, v in left.items()
        if isinstance(v, dict) and "parallel_used" in v and any(v.values()))
    return f"HELD: {held}; left by: {left.get('held_by_kind')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--stalls", type=int, default=100)
    parser.add_argument("--restarts", type=int, default=1, help="store kill -9 + start")
    parser.add_argument("--replica-restarts", type=int, default=1, help="SIGTERM + start of B")
    parser.add_argument("--seconds", type=float, default=None,
                        help="length of the load (default: as long as the faults take)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-rpm-wait", action="store_true",
                        help="do not wait (up to 60 s) for the rpm window to admit again")
    parser.add_argument("--no-give-ups", action="store_true",
                        help="no short deadlines and no client-side cancellations")
    parser.add_argument("--replica-restart-in-stall", action="store_true",
                        help="stop replica B while the store is stopped (its pending releases)")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (3 stalls, 1 restart)")
    parser.add_argument("--json", default="bench-faults-results.json")
    args = parser.parse_args()
    config = Config(
        stalls=min(args.stalls, 1000), restarts=min(args.restarts, 10),
        replica_restarts=min(args.replica_restarts, 10),
        seconds=None if args.seconds is None else min(args.seconds, 1800),
        clients=min(max(args.clients, 1), 256), seed=args.seed, rpm_wait=not args.no_rpm_wait,
        give_ups=not args.no_give_ups, replica_in_stall=args.replica_restart_in_stall,
    )
    if args.smoke:
        config = Config(stalls=3, restarts=1, replica_restarts=0, seconds=6, clients=6,
                        seed=args.seed)
    with tempfile.TemporaryDirectory() as folder:
        result = asyncio.run(run(config, Path(folder)))
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(table(result))
    print(f"(all figures in {args.json})")
    sys.exit(1 if result["violations"] else 0)


if __name__ == "__main__":
    main()
