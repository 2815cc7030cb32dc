"""The embedded store keeps keys and counters across restarts; SIGTERM drains in-flight calls."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path

import grpc
from redis.asyncio import Redis

from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1 import admission_pb2_grpc, keys_pb2_grpc
from aigw_sidecar.api.v1 import keys_pb2 as kpb
from aigw_sidecar.store.embedded import SOCKET_NAME
from tests.servers import SidecarProcess


def _embedded(data_dir: Path, *extra: str) -> SidecarProcess:
    """A sidecar on its own embedded store: no --redis-url, only a data folder."""
    return SidecarProcess(
        "", f"d{uuid.uuid4().hex[:8]}", extra_args=["--data-dir", str(data_dir), *extra],
        log_path=data_dir.parent / f"sidecar-{time.monotonic_ns()}.log",
    )


async def test_keys_and_counters_survive_a_restart_of_the_embedded_store(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = _embedded(data_dir).start()
    try:
        async with grpc.aio.insecure_channel(first.target) as channel:
            created = await keys_pb2_grpc.KeyManagementStub(channel).CreateKey(
                kpb.CreateKeyRequest(name="k", limits=kpb.Limits(token_limit=1000)), timeout=10
            )
            admission = admission_pb2_grpc.AdmissionStub(channel)
            assert (await admission.Authorize(
                adm.AuthorizeRequest(secret=created.secret), timeout=10
            )).allowed
            await admission.RecordUsage(
                adm.RecordUsageRequest(key_id=created.key.key_id, request_id="r1",
                                       prompt_tokens=40, completion_tokens=2, cost_micro_usd=9),
                timeout=10,
            )
    finally:
        assert first.stop() == 0
    assert not (data_dir / SOCKET_NAME).exists()

    second = SidecarProcess(
        "", first.key_prefix, extra_args=first.extra_args, log_path=tmp_path / "second.log"
    ).start()
    try:
        async with grpc.aio.insecure_channel(second.target) as channel:
            overview = (await keys_pb2_grpc.KeyManagementStub(channel).GetKeyOverview(
                kpb.GetKeyOverviewRequest(key_id=created.key.key_id), timeout=10
            )).overview
            reply = await admission_pb2_grpc.AdmissionStub(channel).Authorize(
                adm.AuthorizeRequest(secret=created.secret), timeout=10
            )
    finally:
        assert second.stop() == 0
    assert overview.key.name == "k"
    assert (overview.lifetime_requests, overview.lifetime_prompt_tokens) == (1, 40)
    assert (overview.tokens.used, overview.lifetime_cost_micro_usd) == (42, 9)
    assert reply.allowed and reply.tokens.remaining == 958


async def test_sigterm_lets_an_in_flight_call_finish_and_exits_0(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    sidecar = _embedded(
        data_dir, "--store-timeout-ms", "10000", "--shutdown-grace-s", "15"
    ).start()
    store = Redis.from_url(f"unix://{data_dir.resolve() / SOCKET_NAME}", decode_responses=True)
    try:
        async with grpc.aio.insecure_channel(sidecar.target) as channel:
            created = await keys_pb2_grpc.KeyManagementStub(channel).CreateKey(
                kpb.CreateKeyRequest(name="k"), timeout=10
            )
            # Hold every store command for a while, so the call below is still in flight
            # when SIGTERM arrives.
            await store.execute_command("CLIENT", "PAUSE", "1500", "ALL")
            call = asyncio.ensure_future(
                admission_pb2_grpc.AdmissionStub(channel).Authorize(
                    adm.AuthorizeRequest(secret=created.secret), timeout=30
                )
            )
            await asyncio.sleep(0.3)
            assert not call.done()
            assert sidecar.process is not None
            sidecar.process.terminate()
            reply = await call
        assert reply.allowed
        returncode = await asyncio.to_thread(sidecar.process.wait, 30)
        assert returncode == 0
    finally:
        await store.aclose()
        sidecar.stop()


def _store_child(sidecar: SidecarProcess) -> int:
    """The embedded store: the one child of the sidecar process serving our data folder."""
    assert sidecar.process is not None
    pid = sidecar.process.pid
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        if SOCKET_NAME.encode() in cmdline:
            return int(child)
    raise AssertionError("the sidecar has no embedded store child")


async def test_kill_9_of_the_embedded_store_under_load_loses_no_key_and_at_most_a_second_of_usage(
    tmp_path: Path,
) -> None:
    """16 clients report usage (retrying a failed report with its request id, as a proxy
    does) while the store is killed and restarted by the sidecar. Every acknowledged report
    counts once, except at most the ones acknowledged in the last second before the kill
    (``appendfsync everysec``); every key created, up to the kill, is still there.
    """
    sidecar = _embedded(tmp_path / "data").start()
    acked: list[tuple[float, str]] = []  # (ack time, key id), one per request id
    created: list[kpb.CreateKeyResponse] = []
    failures = 0
    killed_at: list[float] = []
    try:
        async with grpc.aio.insecure_channel(sidecar.target) as channel:
            keys = keys_pb2_grpc.KeyManagementStub(channel)
            admission = admission_pb2_grpc.AdmissionStub(channel)
            for i in range(8):
                created.append(await keys.CreateKey(kpb.CreateKeyRequest(name=f"k{i}"),
                                                    timeout=10))
            stop_at = time.monotonic() + 60  # a bound; the run stops itself much earlier
            restarted = asyncio.Event()

            async def reporter(i: int) -> None:
                nonlocal failures
                n = 0
                while time.monotonic() < stop_at:
                    key_id = created[i % len(created)].key.key_id
                    request = adm.RecordUsageRequest(
                        key_id=key_id, request_id=f"c{i}-{n}", prompt_tokens=1
                    )
                    n += 1
                    while time.monotonic() < stop_at + 30:
                        try:
                            await admission.RecordUsage(request, timeout=5)
                            break
                        except grpc.aio.AioRpcError as err:
                            assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
                            failures += 1
                            await asyncio.sleep(0.05)
                    else:
                        raise AssertionError("a report never got through")
                    acked.append((time.monotonic(), key_id))
                    if killed_at and not restarted.is_set():
                        restarted.set()

            async def creator() -> None:
                # Keys created right up to the kill must survive it as well.
                n = 0
                while not killed_at:
                    try:
                        reply = await keys.CreateKey(
                            kpb.CreateKeyRequest(name=f"late{n}"), timeout=5
                        )
                    except grpc.aio.AioRpcError:
                        continue  # created or not: only shown keys are promised
                    created.append(reply)
                    n += 1
                    await asyncio.sleep(0.02)

            async def kill_and_wait() -> None:
                nonlocal stop_at
                await asyncio.sleep(2.5)
                os.kill(_store_child(sidecar), signal.SIGKILL)
                killed_at.append(time.monotonic())
                await asyncio.wait_for(restarted.wait(), timeout=30)
                stop_at = time.monotonic() + 0.5  # a little load on the reloaded store

            await asyncio.gather(kill_and_wait(), creator(), *(reporter(i) for i in range(16)))

            listed = await keys.ListKeys(kpb.ListKeysRequest(page_size=500), timeout=10)
            used: dict[str, int] = {}
            for reply in created:
                overview = (await keys.GetKeyOverview(
                    kpb.GetKeyOverviewRequest(key_id=reply.key.key_id), timeout=10
                )).overview
                used[reply.key.key_id] = overview.lifetime_prompt_tokens
            survivors = await asyncio.gather(*(
                admission.Authorize(adm.AuthorizeRequest(secret=r.secret), timeout=10)
                for r in created
            ))
    finally:
        assert sidecar.stop() == 0

    # A create cut by the kill may exist without having been shown; every shown one must.
    assert {r.key.key_id for r in created} <= {k.key_id for k in listed.keys}
    assert all(reply.allowed for reply in survivors)
    expected: dict[str, int] = {}
    for _at, key_id in acked:
        expected[key_id] = expected.get(key_id, 0) + 1
    lost = sum(expected.values()) - sum(used.values())
    last_second = sum(1 for at, _key in acked if killed_at[0] - 1.0 <= at <= killed_at[0])
    print(f"\nkill -9 of the embedded store: {len(acked)} reports acknowledged, "
          f"{failures} failed attempts retried, {lost} lost; "
          f"{last_second} acknowledged in the last second before the kill; "
          f"{len(created)} keys, all present")
    assert all(used[key] <= count for key, count in expected.items())  # never counted twice
    assert 0 <= lost <= last_second
    assert failures > 0  # the kill really interrupted the store
