"""Budget alerts: each crossing is one event per period, on the stream, the CLI and a webhook."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest

from aigw_sidecar.admission.decision import UsageReport
from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1 import admission_pb2_grpc, keys_pb2_grpc
from aigw_sidecar.api.v1 import keys_pb2 as kpb
from aigw_sidecar.bootstrap import start
from aigw_sidecar.errors import InvalidArgument
from aigw_sidecar.keys.model import KeySpec, KeyUpdate, Limits
from aigw_sidecar.keys.service import KeyService
from aigw_sidecar.limits.alerts import Budget, EventType, KeyAlerts
from aigw_sidecar.limits.periods import ResetPeriod
from aigw_sidecar.server.webhook import SIGNATURE_HEADER, verify
from aigw_sidecar.settings import Settings
from aigw_sidecar.store.redis_store import RedisKeyStore
from tests.conftest import Clock
from tests.servers import REPO, SidecarProcess, free_port, replicas

WEBHOOK_SECRET = "whsec-test-0123456789abcdef"


def _usage(key_id: str, request_id: str, tokens: int, cost: int = 0) -> UsageReport:
    return UsageReport(key_id, request_id, tokens, 0, cost)


async def test_each_threshold_fires_once_per_period_and_again_in_the_next(
    store: RedisKeyStore, keys: KeyService, clock: Clock
) -> None:
    clock.set_s(1_767_225_600)  # 2026-01-01 00:00 UTC
    key, _ = await keys.create(KeySpec(
        "alerts", limits=Limits(token_limit=100, cost_limit_micro_usd=1_000_000,
                                reset_period=ResetPeriod.DAILY),
        alerts=KeyAlerts((80, 100)),
    ))
    assert key.alerts == KeyAlerts((80, 100))

    first = await store.record_usage(_usage(key.key_id, "r1", 79))
    assert first.alerts == ()
    second = await store.record_usage(_usage(key.key_id, "r2", 1, cost=900_000))
    assert [(a.budget, a.threshold_percent, a.used, a.limit) for a in second.alerts] == [
        (Budget.COST, 80, 900_000, 1_000_000), (Budget.TOKENS, 80, 80, 100),
    ]
    again = await store.record_usage(_usage(key.key_id, "r3", 1))
    assert again.alerts == ()  # 81 %: the 80 % marker holds
    over = await store.record_usage(_usage(key.key_id, "r4", 50))
    assert [(a.budget, a.threshold_percent) for a in over.alerts] == [(Budget.TOKENS, 100)]
    assert over.workspace == "default"

    clock.set_s(1_767_225_600 + 86_400)  # the next daily period starts clean
    nxt = await store.record_usage(_usage(key.key_id, "r5", 85))
    assert [(a.budget, a.threshold_percent) for a in nxt.alerts] == [(Budget.TOKENS, 80)]
    assert nxt.alerts[0].period_start_ms == (1_767_225_600 + 86_400) * 1000


async def test_a_raised_limit_rearms_its_thresholds(
    store: RedisKeyStore, keys: KeyService
) -> None:
    key, _ = await keys.create(KeySpec("rearm", limits=Limits(token_limit=10),
                                       alerts=KeyAlerts((50,))))
    assert len((await store.record_usage(_usage(key.key_id, "a", 6))).alerts) == 1
    await keys.update(key.key_id, KeyUpdate(frozenset({"token_limit"}),
                                            limits=Limits(token_limit=20)))
    assert (await store.record_usage(_usage(key.key_id, "b", 1))).alerts == ()
    assert len((await store.record_usage(_usage(key.key_id, "c", 4))).alerts) == 1


async def test_expiry_warning_fires_once_within_n_days_of_expiry(
    store: RedisKeyStore, keys: KeyService, clock: Clock
) -> None:
    clock.set_s(1_800_000_000)
    expires_ms = (1_800_000_000 + 10 * 86_400) * 1000
    key, _ = await keys.create(KeySpec("expiring", expires_at_ms=expires_ms,
                                       alerts=KeyAlerts(expiry_days=7)))
    assert (await store.record_usage(_usage(key.key_id, "a", 1))).alerts == ()
    clock.set_s(1_800_000_000 + 4 * 86_400)
    (alert,) = (await store.record_usage(_usage(key.key_id, "b", 1))).alerts
    assert alert.type is EventType.KEY_EXPIRING and alert.expires_at_ms == expires_ms
    assert (await store.record_usage(_usage(key.key_id, "c", 1))).alerts == ()


@pytest.mark.parametrize("alerts", [
    KeyAlerts((0,)), KeyAlerts((1001,)), KeyAlerts(tuple(range(1, 10))), KeyAlerts(expiry_days=0),
])
async def test_bad_alert_settings_are_refused(keys: KeyService, alerts: KeyAlerts) -> None:
    with pytest.raises(InvalidArgument):
        await keys.create(KeySpec("bad", alerts=alerts))


# --- across replicas, over gRPC ---------------------------------------------------------


async def test_a_threshold_crossed_by_concurrent_reports_on_two_replicas_is_one_event(
    two_sidecars: tuple[SidecarProcess, SidecarProcess],
) -> None:
    async with replicas(*two_sidecars) as (one, two):
        admin = one.keys
        created = await admin.CreateKey(kpb.CreateKeyRequest(
            name="race", limits=kpb.Limits(token_limit=1000),
            alert_thresholds_percent=[50, 100],
        ), timeout=10)
        key_id = created.key.key_id
        stubs = [one.admission, two.admission]
        await asyncio.gather(*(
            stubs[i % 2].RecordUsage(adm.RecordUsageRequest(
                key_id=key_id, request_id=f"r{i}", prompt_tokens=10), timeout=30)
            for i in range(120)
        ))
        reply = await admin.ListEvents(kpb.ListEventsRequest(key_id=key_id, after="0"),
                                       timeout=10)
    crossed = [(e.budget, e.threshold_percent) for e in reply.events]
    assert crossed == [("tokens", 50), ("tokens", 100)]
    assert all(e.key_id == key_id and e.type == "budget_threshold" for e in reply.events)


def test_events_tail_prints_the_events_of_a_key(
    two_sidecars: tuple[SidecarProcess, SidecarProcess],
) -> None:
    first, _ = two_sidecars
    with grpc.insecure_channel(first.target) as channel:
        created = keys_pb2_grpc.KeyManagementStub(channel).CreateKey(kpb.CreateKeyRequest(
            name="tail", limits=kpb.Limits(cost_limit_usd="1"), alert_thresholds_percent=[10],
        ), timeout=10)
        admission_pb2_grpc.AdmissionStub(channel).RecordUsage(adm.RecordUsageRequest(
            key_id=created.key.key_id, request_id="t1", cost_usd="0.25"), timeout=10)
    done = subprocess.run(
        [sys.executable, "-m", "aigw_sidecar.admin.cli", "--target", first.target,
         "events", "tail", "--key-id", created.key.key_id, "--polls", "1"],
        capture_output=True, text=True, timeout=30, cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert "budget_threshold" in line and created.key.key_id in line
    assert "cost at 10%: $0.25 of $1.00" in line


# --- the webhook ---------------------------------------------------------------------


class Receiver:
    """A loopback HTTP server recording each POST; ``delay_s``/``status`` to misbehave."""

    def __init__(self, status: int = 200, delay_s: float = 0.0) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.got = threading.Event()
        self.answered = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                receiver.got.set()
                time.sleep(delay_s)
                self.send_response(status)
                self.end_headers()
                receiver.answered += 1

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def _sidecar_with_webhook(valkey_url: str, key_prefix: str, tmp_path: Path,
                                url: str) -> Any:
    return await start(Settings(
        listen="127.0.0.1:0", redis_url=valkey_url, key_prefix=key_prefix, data_dir=tmp_path,
        shutdown_grace_s=1.0, alert_webhook_url=url, alert_webhook_secret=WEBHOOK_SECRET,
    ))


async def test_the_webhook_gets_the_event_signed_with_hmac_sha256(
    valkey_url: str, key_prefix: str, tmp_path: Path
) -> None:
    receiver = Receiver()
    sidecar = await _sidecar_with_webhook(valkey_url, key_prefix, tmp_path, receiver.url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
            created = await keys_pb2_grpc.KeyManagementStub(channel).CreateKey(
                kpb.CreateKeyRequest(name="hook", limits=kpb.Limits(token_limit=10),
                                     alert_thresholds_percent=[80]), timeout=10)
            await admission_pb2_grpc.AdmissionStub(channel).RecordUsage(adm.RecordUsageRequest(
                key_id=created.key.key_id, request_id="w1", prompt_tokens=9), timeout=10)
            assert await asyncio.to_thread(receiver.got.wait, 10)
    finally:
        await sidecar.stop()
        receiver.close()
    (headers, body) = receiver.requests[0]
    assert verify(WEBHOOK_SECRET, headers[SIGNATURE_HEADER], body)
    assert not verify("another-secret-0123456789", headers[SIGNATURE_HEADER], body)
    assert not verify(WEBHOOK_SECRET, headers[SIGNATURE_HEADER], body + b" ")
    event = json.loads(body)
    assert event["key_id"] == created.key.key_id and event["threshold_percent"] == "80"
    assert event["event_id"] and event["dedupe_key"]
    assert created.secret not in body.decode()


async def test_a_hanging_webhook_slows_neither_authorize_nor_record_usage(
    valkey_url: str, key_prefix: str, tmp_path: Path
) -> None:
    receiver = Receiver(delay_s=20)  # longer than the whole test
    sidecar = await _sidecar_with_webhook(valkey_url, key_prefix, tmp_path, receiver.url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
            created = await keys_pb2_grpc.KeyManagementStub(channel).CreateKey(
                kpb.CreateKeyRequest(name="slow", limits=kpb.Limits(token_limit=100),
                                     alert_thresholds_percent=list(range(1, 9))), timeout=10)
            admission = admission_pb2_grpc.AdmissionStub(channel)
            for i in range(8):  # each report crosses one more threshold
                await admission.RecordUsage(adm.RecordUsageRequest(
                    key_id=created.key.key_id, request_id=f"s{i}", prompt_tokens=1), timeout=5)
                if i == 0:  # the first crossing's POST now hangs at the receiver
                    assert await asyncio.to_thread(receiver.got.wait, 10)
                assert (await admission.Authorize(
                    adm.AuthorizeRequest(secret=created.secret), timeout=5)).allowed
            # Every call above was answered while that POST was still hanging.
            assert receiver.answered == 0
    finally:
        await sidecar.stop()
        receiver.close()
