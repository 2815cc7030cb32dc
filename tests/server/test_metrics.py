"""The metrics endpoint counts what happened, across processes, and the logs tell it safely."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aigw_sidecar.admission.decision import Decision, DenyReason, UsageReport, UsageResult
from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1 import admission_pb2_grpc, keys_pb2_grpc
from aigw_sidecar.api.v1 import keys_pb2 as kpb
from aigw_sidecar.bootstrap import Sidecar, start
from aigw_sidecar.keys import secrets
from aigw_sidecar.server.metrics import Metrics
from aigw_sidecar.settings import Settings
from tests.process.test_workers import (
    SEPARATE_CONNECTION,
    _established_inodes,
    _socket_inodes,
    workers_of,
)
from tests.server.test_ext_authz_servicer import check_request, check_stub
from tests.servers import SidecarProcess, free_port, replicas

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> tuple[str, Samples]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def _scripted_run(target: str) -> str:
    """3 allowed, 2 over the rpm limit, 1 unknown, 1 malformed; 2 reports (one repeated)."""
    async with grpc.aio.insecure_channel(target) as channel:
        admin = keys_pb2_grpc.KeyManagementStub(channel)
        admission = admission_pb2_grpc.AdmissionStub(channel)
        created = await admin.CreateKey(kpb.CreateKeyRequest(
            name=f"m{uuid.uuid4().hex[:6]}", workspace="acme", project="web",
            limits=kpb.Limits(requests_per_minute=3)), timeout=10)
        for _ in range(5):
            await admission.Authorize(adm.AuthorizeRequest(secret=created.secret), timeout=10)
        unknown = secrets.new_secret().secret  # well-formed, never stored
        await admission.Authorize(adm.AuthorizeRequest(secret=unknown), timeout=10)
        await admission.Authorize(adm.AuthorizeRequest(secret="sk-aigw-nope"), timeout=10)
        for _ in range(2):
            await admission.RecordUsage(adm.RecordUsageRequest(
                key_id=created.key.key_id, request_id="u1", prompt_tokens=7,
                completion_tokens=5, cost_micro_usd=1234), timeout=10)
    return str(created.secret)


@pytest.fixture
async def metered(valkey_url: str, key_prefix: str, tmp_path: Path) -> AsyncIterator[Sidecar]:
    """An in-process sidecar with its metrics endpoint on a free port."""
    sidecar = await start(Settings(
        listen="127.0.0.1:0", redis_url=valkey_url, key_prefix=key_prefix, data_dir=tmp_path,
        shutdown_grace_s=1.0, metrics_listen="127.0.0.1:0",
    ))
    yield sidecar
    await sidecar.stop()


async def test_a_scrape_after_a_scripted_run_counts_exactly_what_happened(
    metered: Sidecar,
) -> None:
    assert metered.metrics_endpoint is not None
    secret = await _scripted_run(f"127.0.0.1:{metered.port}")
    text, samples = await asyncio.to_thread(scrape, metered.metrics_endpoint.port)
    assert value(samples, "aigw_decisions_total", result="allowed", reason="") == 3
    assert value(samples, "aigw_decisions_total", result="denied",
                 reason="requests_per_minute") == 2
    assert value(samples, "aigw_decisions_total", result="denied", reason="key_unknown") == 1
    assert value(samples, "aigw_decisions_total", result="denied", reason="key_malformed") == 1
    assert value(samples, "aigw_rpc_duration_seconds_count", rpc="Authorize") == 7
    assert value(samples, "aigw_rpc_duration_seconds_count", rpc="RecordUsage") == 2
    assert value(samples, "aigw_rpc_duration_seconds_count", rpc="CreateKey") == 1
    # The malformed secret never reaches the store.
    assert value(samples, "aigw_store_duration_seconds_count", op="authorize") == 6
    assert value(samples, "aigw_usage_reports_total", result="counted") == 1
    assert value(samples, "aigw_usage_reports_total", result="duplicate") == 1
    assert value(samples, "aigw_usage_tokens_total", workspace="acme", project="web") == 12
    assert value(samples, "aigw_usage_cost_micro_usd_total",
                 workspace="acme", project="web") == 1234
    assert value(samples, "aigw_store_up") == 1
    assert value(samples, "aigw_store_fail_mode", mode="closed") == 1
    assert value(samples, "aigw_store_errors_total", op="authorize") == 0
    assert secret not in text and "key_id" not in text  # no secret, no key id by default


def test_workspace_and_key_id_labels_are_capped() -> None:
    metrics = Metrics(label_cap=2, key_id_cap=1)
    for i in range(4):
        metrics.recorded(
            UsageReport(f"key_{i}", "r", 1, 0, 5),
            UsageResult(True, 1, 5, cost_micro_usd=5, workspace=f"ws{i}", project="p"),
        )
        metrics.decided(Decision(allowed=True, key_id=f"key_{i}"))
    metrics.decided(Decision.deny(DenyReason.KEY_MALFORMED))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.registry.collect() for s in family.samples
    }
    workspaces = {dict(labels)["workspace"] for (name, labels) in samples
                  if name == "aigw_usage_tokens_total"}
    assert workspaces == {"ws0", "ws1", "other"}
    assert value(samples, "aigw_usage_tokens_total", workspace="other", project="other") == 2
    key_ids = {dict(labels)["key_id"] for (name, labels) in samples
               if name == "aigw_key_decisions_total"}
    assert key_ids == {"key_0", "other"}
    assert value(samples, "aigw_key_decisions_total", key_id="other", result="allowed") == 3


async def test_two_processes_sharing_a_multiprocess_folder_are_scraped_as_one(
    valkey_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "prom"
    folder.mkdir()
    prefix = f"mm{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(folder)}
    serving = SidecarProcess(valkey_url, prefix, ["--metrics-listen", f"127.0.0.1:{port}"],
                             log_path=tmp_path / "a.log", env=env)
    other = SidecarProcess(valkey_url, prefix, log_path=tmp_path / "b.log", env=env)
    try:
        await asyncio.to_thread(serving.start)
        await asyncio.to_thread(other.start)
        async with replicas(serving, other) as (one, two):
            created = await one.keys.CreateKey(
                kpb.CreateKeyRequest(name="shared", limits=kpb.Limits(requests_per_minute=10)),
                timeout=10)
            stubs = [one.admission, two.admission]
            request = adm.AuthorizeRequest(secret=created.secret)
            await asyncio.gather(*(stubs[i % 2].Authorize(request, timeout=30)
                                   for i in range(30)))
        _text, samples = await asyncio.to_thread(scrape, port)
    finally:
        serving.stop()
        other.stop()
    assert value(samples, "aigw_decisions_total", result="allowed", reason="") == 10
    assert value(samples, "aigw_decisions_total", result="denied",
                 reason="requests_per_minute") == 20
    assert value(samples, "aigw_rpc_duration_seconds_count", rpc="Authorize") == 30
    assert value(samples, "aigw_store_up") == 1


def test_log_lines_of_a_scripted_run_are_json_with_request_ids_and_no_secret(
    valkey_url: str, tmp_path: Path
) -> None:
    log_path = tmp_path / "sidecar.log"
    sidecar = SidecarProcess(valkey_url, f"lg{uuid.uuid4().hex[:8]}",
                             ["--log-level", "DEBUG", "--log-format", "json"], log_path=log_path)
    try:
        sidecar.start()
        secret = asyncio.run(_scripted_run(sidecar.target))
    finally:
        sidecar.stop()
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert lines and all({"ts", "level", "logger", "msg"} <= line.keys() for line in lines)
    text = log_path.read_text()
    assert secret not in text and secret[8:] not in text
    admin = [line for line in lines if str(line["msg"]).startswith("admin action create_key")]
    assert len(admin) == 1 and admin[0]["level"] == "INFO" and admin[0]["request_id"]
    denied = [line for line in lines if str(line["msg"]).startswith("denied:")]
    assert len(denied) == 4 and all(line["level"] == "DEBUG" for line in denied)
    assert all(line.get("request_id") for line in denied)
    # No line per request above DEBUG.
    assert not [line for line in lines if line["level"] != "DEBUG" and "request_id" in line
                and line not in admin]


async def test_checks_refused_from_their_headers_are_counted_with_their_reason(
    metered: Sidecar,
) -> None:
    assert metered.metrics_endpoint is not None
    one, two = secrets.new_secret().secret, secrets.new_secret().secret
    malformed = [
        {"x_api_key": f"{one},{two}"},                # Envoy's join of a repeated header
        {"authorization": f"Basic {one}"},           # not Bearer
        {"authorization": f"Bearer {one}", "x_api_key": two},  # two different keys
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{metered.port}") as channel:
        check = check_stub(channel)
        for headers in malformed:
            reply = await check(check_request(**headers), timeout=10)
            assert reply.denied_response.status.code == 401
        await check(check_request(), timeout=10)  # no key at all
    _text, samples = await asyncio.to_thread(scrape, metered.metrics_endpoint.port)
    assert value(samples, "aigw_decisions_total", result="denied", reason="key_malformed") == 3
    assert value(samples, "aigw_decisions_total", result="denied", reason="key_missing") == 1
    assert value(samples, "aigw_rpc_duration_seconds_count", rpc="Check") == 4
    assert value(samples, "aigw_store_duration_seconds_count", op="authorize") == 0


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _multiproc_dir_of(pid: int) -> Path:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    found = [e.split(b"=", 1)[1] for e in environ if e.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    assert len(found) == 1, "the supervisor sets the folder of its workers"
    return Path(found[0].decode())


def _wait_for(condition: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def supervised_metrics(
    valkey_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SidecarProcess, int]]:
    """``--workers 2 --metrics-listen``: the supervisor serves the endpoint."""
    folder = tmp_path_factory.mktemp("workers-metrics")
    metrics_port = free_port()
    sidecar = SidecarProcess(
        valkey_url, f"wm{uuid.uuid4().hex[:8]}",
        extra_args=["--workers", "2", "--metrics-listen", f"127.0.0.1:{metrics_port}"],
        log_path=folder / "supervisor.log",
    )
    try:
        sidecar.start()
        _wait_for(lambda: len(workers_of(sidecar)) == 2 and all(
            _socket_inodes(pid) & _listening_inodes(sidecar.port) for pid in workers_of(sidecar)))
        yield sidecar, metrics_port
    finally:
        sidecar.stop()


async def _authorize_over_both_workers(supervisor: SidecarProcess, calls: int) -> set[int]:
    """``calls`` Authorize of a new key (20 per minute) over 16 connections; the serving pids."""
    # Each channel is its own connection; the kernel spreads connections over the workers.
    channels = [grpc.aio.insecure_channel(supervisor.target, options=[SEPARATE_CONNECTION])
                for _ in range(16)]
    try:
        created = await keys_pb2_grpc.KeyManagementStub(channels[0]).CreateKey(
            kpb.CreateKeyRequest(name=f"w{uuid.uuid4().hex[:8]}",
                                 limits=kpb.Limits(requests_per_minute=20)), timeout=10)
        request = adm.AuthorizeRequest(secret=created.secret)
        stubs = [admission_pb2_grpc.AdmissionStub(c) for c in channels]
        await asyncio.gather(*(stubs[i % 16].Authorize(request, timeout=30)
                               for i in range(calls)))
        connections = _established_inodes(supervisor.port)
        return {pid for pid in workers_of(supervisor) if _socket_inodes(pid) & connections}
    finally:
        for channel in channels:
            await channel.close()


def _args(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


async def test_the_supervisor_serves_the_sum_of_its_workers_metrics(
    supervised_metrics: tuple[SidecarProcess, int],
) -> None:
    supervisor, metrics_port = supervised_metrics
    serving = await _authorize_over_both_workers(supervisor, 64)
    assert len(serving) == 2, "one worker took every connection"
    _text, samples = await asyncio.to_thread(scrape, metrics_port)
    assert value(samples, "aigw_decisions_total", result="allowed", reason="") == 20
    assert value(samples, "aigw_decisions_total", result="denied",
                 reason="requests_per_minute") == 44
    assert value(samples, "aigw_rpc_duration_seconds_count", rpc="Authorize") == 64
    assert value(samples, "aigw_rpc_duration_seconds_count", rpc="CreateKey") == 1
    assert value(samples, "aigw_store_up") == 1
    # The workers serve nothing themselves: their last --metrics-listen is empty.
    for pid in serving:
        args = _args(pid)
        last = len(args) - 1 - args[::-1].index("--metrics-listen")
        assert args[last + 1] == ""


async def test_a_dead_workers_counters_stay_and_its_live_gauges_go(
    supervised_metrics: tuple[SidecarProcess, int],
) -> None:
    supervisor, metrics_port = supervised_metrics
    assert len(await _authorize_over_both_workers(supervisor, 32)) == 2
    before = (await asyncio.to_thread(scrape, metrics_port))[1]
    assert value(before, "aigw_decisions_total", result="allowed", reason="") > 0
    victim = workers_of(supervisor)[0]
    folder = _multiproc_dir_of(victim)
    assert list(folder.glob(f"gauge_livemin_{victim}.db"))
    os.kill(victim, signal.SIGKILL)
    await asyncio.to_thread(
        _wait_for, lambda: not list(folder.glob(f"gauge_livemin_{victim}.db")))
    after = (await asyncio.to_thread(scrape, metrics_port))[1]
    for reason in ("", "requests_per_minute"):
        result = "allowed" if not reason else "denied"
        assert value(after, "aigw_decisions_total", result=result, reason=reason) == value(
            before, "aigw_decisions_total", result=result, reason=reason)
