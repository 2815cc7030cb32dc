"""Store outages: a stalled store never hangs a call, a restarted one is used again by itself.

Each test owns its store process (a Valkey on a free port), so it can pause,
kill and restart it without touching the session's stores.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis

from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1 import admission_pb2_grpc, keys_pb2_grpc
from aigw_sidecar.api.v1 import keys_pb2 as kpb
from aigw_sidecar.bootstrap import Sidecar, start
from aigw_sidecar.settings import Settings
from tests.servers import StoreProcess, store_binaries

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Rig:
    store: StoreProcess
    sidecar: Sidecar
    channel: grpc.aio.Channel

    @property
    def keys(self) -> keys_pb2_grpc.KeyManagementStub:
        return keys_pb2_grpc.KeyManagementStub(self.channel)

    @property
    def admission(self) -> admission_pb2_grpc.AdmissionStub:
        return admission_pb2_grpc.AdmissionStub(self.channel)

    def restart_store(self, *, kill: bool = False) -> None:
        self.store.stop(kill=kill)
        self.store = StoreProcess(
            self.store.name, self.store.binary, self.store.data_dir,
            appendonly=self.store.appendonly, port=self.store.port,
        ).start()


@pytest.fixture
async def rig(tmp_path: Path, key_prefix: str) -> AsyncIterator[Rig]:
    store = StoreProcess(
        "valkey", store_binaries()["valkey"], tmp_path / "store", appendonly=True
    ).start()
    settings = Settings(
        listen="127.0.0.1:0", redis_url=store.url, key_prefix=key_prefix, data_dir=tmp_path,
        shutdown_grace_s=5.0, health_interval_s=0.1, store_timeout_ms=250,
    )
    sidecar = await start(settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}")
    made = Rig(store, sidecar, channel)
    try:
        yield made
    finally:
        await channel.close()
        await sidecar.stop()
        made.store.stop()


async def _health(rig: Rig) -> int:
    reply = await health_pb2_grpc.HealthStub(rig.channel).Check(
        health_pb2.HealthCheckRequest(), timeout=5
    )
    return int(reply.status)


async def _wait_for_health(rig: Rig, status: int) -> None:
    for _ in range(400):
        if await _health(rig) == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"health never became {status}")


async def test_a_paused_store_fails_the_call_with_unavailable_within_the_timeout(rig: Rig) -> None:
    created = await rig.keys.CreateKey(kpb.CreateKeyRequest(name="k"), timeout=10)
    admin = Redis.from_url(rig.store.url)
    try:
        await admin.execute_command("CLIENT", "PAUSE", "4000", "ALL")
        began = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rig.admission.Authorize(adm.AuthorizeRequest(secret=created.secret), timeout=30)
        took = time.monotonic() - began
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await admin.aclose()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # 250 ms timeout; generous for a loaded machine, far below the 4 s pause.
    assert took < 2.5


async def test_scripts_are_loaded_again_after_the_store_restarts_without_them(rig: Rig) -> None:
    created = await rig.keys.CreateKey(
        kpb.CreateKeyRequest(name="k", limits=kpb.Limits(requests_per_minute=5)), timeout=10
    )
    request = adm.AuthorizeRequest(secret=created.secret)
    assert (await rig.admission.Authorize(request, timeout=10)).allowed
    # The append-only file brings the keys back; the script cache starts empty.
    rig.restart_store()
    admin = Redis.from_url(rig.store.url)
    try:
        assert await admin.script_exists("0" * 40) == [False]
        assert await admin.exists(f"{rig.sidecar.settings.key_prefix}:key:{{{created.key.key_id}}}")
    finally:
        await admin.aclose()
    reply = None
    began = time.monotonic()
    while time.monotonic() - began < 10:
        try:
            reply = await rig.admission.Authorize(request, timeout=10)
            break
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            await asyncio.sleep(0.02)
    assert reply is not None and reply.allowed
    assert reply.requests.remaining == 3  # the first request is still in the window
    assert time.monotonic() - began < 5  # "about a second"; generous on a loaded machine


async def test_health_logs_one_line_per_store_state_change(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aigw_sidecar.server.health")
    rig.store.stop(kill=True)
    await _wait_for_health(rig, NOT_SERVING)
    await asyncio.sleep(0.6)  # several failed checks: still one line
    rig.restart_store()
    await _wait_for_health(rig, SERVING)
    await asyncio.sleep(0.6)
    lines = [r.getMessage() for r in caplog.records if r.name == "aigw_sidecar.server.health"]
    assert lines == [
        "store is unreachable; health NOT_SERVING",
        "store is reachable; health SERVING",
    ]


async def test_sigterm_order_is_not_serving_then_in_flight_calls_finish_then_the_pool_closes(
    tmp_path: Path,
) -> None:
    store = StoreProcess("valkey", store_binaries()["valkey"], tmp_path / "store").start()
    # A long store timeout, so the held call below waits instead of failing.
    settings = Settings(
        listen="127.0.0.1:0", redis_url=store.url, key_prefix="order", data_dir=tmp_path,
        shutdown_grace_s=10.0, store_timeout_ms=10_000,
    )
    try:
        await _check_sigterm_order(settings)
    finally:
        store.stop()


async def _check_sigterm_order(settings: Settings) -> None:
    sidecar = await start(settings)
    events: list[str] = []
    admin = Redis.from_url(settings.redis_url)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        created = await keys_pb2_grpc.KeyManagementStub(channel).CreateKey(
            kpb.CreateKeyRequest(name="k"), timeout=10
        )
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())

        async def not_serving() -> None:
            try:
                async for reply in watch:
                    if reply.status == NOT_SERVING:
                        events.append("not serving")
                        watch.cancel()
                        return
            except (asyncio.CancelledError, grpc.aio.AioRpcError):
                # The stream ended with the server: whatever it delivered is in events.
                return

        watcher = asyncio.ensure_future(not_serving())
        await asyncio.sleep(0.2)
        await admin.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        call = asyncio.ensure_future(admission_pb2_grpc.AdmissionStub(channel).Authorize(
            adm.AuthorizeRequest(secret=created.secret), timeout=30
        ))
        call.add_done_callback(lambda _f: events.append("in-flight call done"))
        await asyncio.sleep(0.3)
        assert not call.done()
        await asyncio.wait_for(sidecar.stop(), 30)
        events.append("stopped: pool closed")
        # Read the reply before the channel closes: on a loaded machine it may
        # still be on its way when stop() returns, and closing would cancel it.
        reply = await asyncio.wait_for(call, 10)
        await asyncio.wait_for(watcher, 5)
        assert watcher.exception() is None
    try:
        # The store notices the closed sockets a moment later.
        for _ in range(100):
            clients = await admin.client_list()
            if len(clients) == 1:
                break
            await asyncio.sleep(0.05)
    finally:
        await admin.aclose()
    assert events[0] == "not serving"
    # Allowed: the held call ran its script, so the pool was still open when it ran.
    assert reply.allowed
    assert len(clients) == 1  # only this test's admin connection is left
