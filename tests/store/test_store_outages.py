"""Store outages: a stalled store never hangs a call, a restarted one is used again by itself.

Each test owns its store process (a Valkey on a free port), so it can pause,
kill and restart it without touching the session's stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis

from aigw_sidecar.api.envoy.v3 import ext_authz_pb2 as authz
from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1 import admission_pb2_grpc, keys_pb2_grpc
from aigw_sidecar.api.v1 import keys_pb2 as kpb
from aigw_sidecar.bootstrap import Sidecar, start
from aigw_sidecar.server.ext_authz import CHECK_METHOD
from aigw_sidecar.server.health import LIVENESS_SERVICE
from aigw_sidecar.settings import Settings
from tests.servers import ChannelStubs, StoreProcess, store_binaries

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Rig(ChannelStubs):
    store: StoreProcess
    sidecar: Sidecar
    channel: grpc.aio.Channel

    def restart_store(self, *, kill: bool = False) -> None:
        self.store.stop(kill=kill)
        self.store = StoreProcess(
            self.store.name, self.store.binary, self.store.data_dir,
            appendonly=self.store.appendonly, port=self.store.port,
        ).start()


@pytest.fixture(params=[True, False], ids=["multiplexed", "pooled"])
async def rig(
    request: pytest.FixtureRequest, tmp_path: Path, key_prefix: str
) -> AsyncIterator[Rig]:
    store = StoreProcess(
        "valkey", store_binaries()["valkey"], tmp_path / "store", appendonly=True
    ).start()
    settings = Settings(
        listen="127.0.0.1:0", redis_url=store.url, key_prefix=key_prefix, data_dir=tmp_path,
        shutdown_grace_s=5.0, health_interval_s=0.1, store_timeout_ms=250,
        store_multiplex=request.param,
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
    # Stalled until the call failed: it can only end by the store timeout (the
    # bound itself, 1.25x --store-timeout-ms, is measured by make bench-faults).
    with _stalled(rig.store), pytest.raises(grpc.aio.AioRpcError) as err:
        await rig.admission.Authorize(adm.AuthorizeRequest(secret=created.secret), timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


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


@contextlib.contextmanager
def _stalled(store: StoreProcess) -> Iterator[None]:
    """The store process stopped (SIGSTOP): connections stay open, nothing answers."""
    assert store.process is not None
    store.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        store.process.send_signal(signal.SIGCONT)


async def _overview_when(
    rig: Rig, key_id: str, done: Callable[[kpb.KeyOverview], bool], within_s: float = 10.0
) -> kpb.KeyOverview:
    deadline = time.monotonic() + within_s
    while True:
        reply = await rig.keys.GetKeyOverview(kpb.GetKeyOverviewRequest(key_id=key_id), timeout=10)
        if done(reply.overview) or time.monotonic() > deadline:
            return reply.overview
        await asyncio.sleep(0.05)


def _nothing_held(ov: kpb.KeyOverview) -> bool:
    return ov.open_reservations == 0 and ov.reserved_tokens == 0 and ov.parallel_requests.used == 0


def _check(rig: Rig, secret: str) -> Any:
    """An Envoy Check of a chat request that reserves 12 + 300 tokens (the proxy path)."""
    request = authz.CheckRequest()
    request.attributes.context_extensions["endpoint"] = "chat"
    http = request.attributes.request.http
    http.headers["authorization"] = f"Bearer {secret}"
    http.path = "/v1/chat/completions"
    http.raw_body = json.dumps({
        "model": "m", "max_tokens": 300, "messages": [{"role": "user", "content": "hi"}],
    }).encode()
    call = rig.channel.unary_unary(
        CHECK_METHOD, request_serializer=authz.CheckRequest.SerializeToString,
        response_deserializer=authz.CheckResponse.FromString,
    )
    return call(request, timeout=30)


async def _warm_connection(rig: Rig) -> None:
    """An admission first, so calls made during a stall are really sent (a connection
    opened during the stall fails its handshake first: those calls never reach the store)."""
    warm = await rig.keys.CreateKey(kpb.CreateKeyRequest(name="warm"), timeout=10)
    assert (await rig.admission.Authorize(adm.AuthorizeRequest(secret=warm.secret))).allowed


async def _late_scripts_ran_and_hold_nothing(rig: Rig, key_id: str) -> None:
    """The 3 checks sent during the stall run once the store resumes (all 3 on the
    pipelined connection, 1 on the pool's one warm connection), admitted and counted
    as requests; what they hold is released, even if a release came before a script."""
    sent = 3 if rig.sidecar.multiplexed is not None else 1
    ran = await _overview_when(rig, key_id, lambda ov: ov.period_requests == sent)
    assert ran.period_requests == sent, ran
    ov = await _overview_when(rig, key_id, _nothing_held)
    assert _nothing_held(ov), ov


async def test_admissions_a_stalled_store_ran_late_hold_nothing_once_it_answers(rig: Rig) -> None:
    # The scripts of the timed-out checks run when the store resumes: without the
    # release they held 3 of 3 slots and 936 of 1,000 tokens for the 10-minute lease,
    # and the key was refused "Retry in 599 s".
    created = await rig.keys.CreateKey(kpb.CreateKeyRequest(
        name="stalled", limits=kpb.Limits(token_limit=1000, max_parallel_requests=3),
    ), timeout=10)
    await _warm_connection(rig)
    with _stalled(rig.store):
        replies = await asyncio.gather(*(_check(rig, created.secret) for _ in range(3)))
    assert [r.denied_response.status.code for r in replies] == [503] * 3
    await _late_scripts_ran_and_hold_nothing(rig, created.key.key_id)
    reply = await _check(rig, created.secret)
    assert reply.HasField("ok_response"), reply


async def test_twenty_stalls_under_load_leave_no_reservation_and_no_slot(rig: Rig) -> None:
    created = await rig.keys.CreateKey(kpb.CreateKeyRequest(
        name="storm", limits=kpb.Limits(token_limit=10**9, max_parallel_requests=50),
    ), timeout=10)
    key_id = created.key.key_id
    stop = asyncio.Event()
    counts: Counter[str] = Counter()

    async def release(request_id: str) -> None:  # until it is taken, as the settler does
        while True:
            try:
                await rig.admission.ReleaseReservation(adm.ReleaseReservationRequest(
                    key_id=key_id, request_id=request_id), timeout=5)
                return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)

    async def proxy() -> None:  # Check, then the settlement a proxy would send
        while not stop.is_set():
            reply = await _check(rig, created.secret)
            if not reply.HasField("ok_response"):
                counts[str(reply.denied_response.status.code)] += 1
                continue
            counts["allowed"] += 1
            await release(reply.dynamic_metadata.fields["request_id"].string_value)

    async def direct() -> None:  # Authorize without a request id: the sidecar makes one
        while not stop.is_set():
            try:
                reply = await rig.admission.Authorize(
                    adm.AuthorizeRequest(secret=created.secret), timeout=5
                )
            except grpc.aio.AioRpcError as err:
                counts[err.code().name] += 1
                continue
            counts["allowed" if reply.allowed else reply.message] += 1
            if reply.allowed:
                await release(reply.request_id)

    clients = [asyncio.ensure_future(f()) for f in (proxy, direct) * 4]
    try:
        for _ in range(20):
            await asyncio.sleep(0.1)
            with _stalled(rig.store):
                await asyncio.sleep(0.4)
    finally:
        stop.set()
        await asyncio.gather(*clients, return_exceptions=True)
    assert counts["allowed"] > 0 and counts["503"] + counts["UNAVAILABLE"] > 0, counts
    # Between two stalls the slots of timed-out calls may not all be freed yet (a
    # 429 for parallel requests then), but a few seconds after the last one nothing
    # the stalls created holds the key: no slot, no reservation, nothing pending.
    unknown = rig.sidecar.unknown_outcomes
    assert unknown is not None and unknown.counts["release_remembered"] > 0
    for _ in range(100):  # every release done twice (the second after CONFIRM_S)
        if not unknown:
            break
        await asyncio.sleep(0.1)
    assert len(unknown) == 0, unknown.counts
    ov = await _overview_when(rig, key_id, _nothing_held)
    assert _nothing_held(ov), ov
    full = await asyncio.gather(*(_check(rig, created.secret) for _ in range(50)))
    assert all(r.HasField("ok_response") for r in full)  # all 50 slots are free


async def test_a_check_envoy_gives_up_on_holds_nothing_once_the_store_answers(rig: Rig) -> None:
    # Envoy cancels the Check of a client that left; the script, already sent, runs
    # anyway, and no access log entry will ever settle a request Envoy has no key for.
    created = await rig.keys.CreateKey(kpb.CreateKeyRequest(
        name="left", limits=kpb.Limits(token_limit=1000, max_parallel_requests=3),
    ), timeout=10)
    await _warm_connection(rig)
    with _stalled(rig.store):
        for _ in range(3):
            # Cancelled after 0.1 s, as Envoy does. (On the pool only the warm
            # connection gets that far: the others fail at once, 503.)
            with contextlib.suppress(TimeoutError):
                reply = await asyncio.wait_for(_check(rig, created.secret), 0.1)
                assert reply.denied_response.status.code == 503
        await asyncio.sleep(0.3)
    await _late_scripts_ran_and_hold_nothing(rig, created.key.key_id)


async def test_liveness_stays_serving_while_the_store_is_down(rig: Rig) -> None:
    """The `liveness` health service (Kubernetes' liveness probe) ignores the store."""
    stub = health_pb2_grpc.HealthStub(rig.channel)
    live = health_pb2.HealthCheckRequest(service=LIVENESS_SERVICE)
    assert (await stub.Check(live, timeout=5)).status == SERVING
    rig.store.stop(kill=True)
    await _wait_for_health(rig, NOT_SERVING)
    assert (await stub.Check(live, timeout=5)).status == SERVING
    rig.restart_store()
    await _wait_for_health(rig, SERVING)
