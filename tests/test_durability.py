"""The embedded store keeps keys and counters across restarts; SIGTERM drains in-flight calls."""

from __future__ import annotations

import asyncio
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
