"""``--workers 2``: two processes on one port and one embedded store, under a supervisor."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1 import admission_pb2_grpc, keys_pb2_grpc
from aigw_sidecar.api.v1 import keys_pb2 as kpb
from aigw_sidecar.store.embedded import SOCKET_NAME
from tests.servers import SidecarProcess

SEPARATE_CONNECTION = ("grpc.use_local_subchannel_pool", 1)


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def workers_of(supervisor: SidecarProcess) -> list[int]:
    assert supervisor.process is not None
    return [p for p in _children(supervisor.process.pid)
            if "aigw_sidecar.supervisor" in _cmdline(p)]


def _established_inodes(port: int, state_wanted: str = "01") -> set[str]:
    """Socket inodes of established TCP connections whose local port is ``port``
    (state "0A": of the listening sockets on it)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == state_wanted and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    folder = tmp_path_factory.mktemp("workers")
    sidecar = SidecarProcess(
        "", f"w{uuid.uuid4().hex[:8]}",
        extra_args=["--workers", "2", "--data-dir", str(folder / "data")],
        log_path=folder / "supervisor.log",
    )
    try:
        yield sidecar.start()
    finally:
        sidecar.stop()


def _wait_for(condition: object, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_two_workers_both_answer_and_share_one_limit_exactly(
    supervised: SidecarProcess,
) -> None:
    _wait_for(lambda: len(workers_of(supervised)) == 2)
    # Both listening (a worker still starting would leave every connection to the other).
    _wait_for(lambda: all(
        _socket_inodes(pid) & _established_inodes(supervised.port, "0A")
        for pid in workers_of(supervised)
    ))
    # Separate subchannel pools: each channel is its own TCP connection, and the
    # kernel spreads connections (not calls) over the workers.
    channels = [
        grpc.aio.insecure_channel(supervised.target, options=[SEPARATE_CONNECTION])
        for _ in range(16)
    ]
    try:
        created = await keys_pb2_grpc.KeyManagementStub(channels[0]).CreateKey(
            kpb.CreateKeyRequest(name="shared", limits=kpb.Limits(requests_per_minute=40)),
            timeout=10,
        )
        request = adm.AuthorizeRequest(secret=created.secret)
        stubs = [admission_pb2_grpc.AdmissionStub(c) for c in channels]
        replies = await asyncio.gather(
            *(stubs[i % len(stubs)].Authorize(request, timeout=30) for i in range(96))
        )
        assert sum(r.allowed for r in replies) == 40
        connections = _established_inodes(supervised.port)
        serving = [pid for pid in workers_of(supervised) if _socket_inodes(pid) & connections]
        assert len(serving) == 2, "one worker took every connection"
    finally:
        for channel in channels:
            await channel.close()


async def test_a_crashed_worker_is_restarted_and_requests_keep_being_answered(
    supervised: SidecarProcess,
) -> None:
    before = workers_of(supervised)
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    await asyncio.to_thread(_wait_for, lambda: not _alive(before[0]))
    # A connection queued on the killed worker's socket is reset: a proxy retries it.
    created = None
    for _ in range(5):
        try:
            async with grpc.aio.insecure_channel(supervised.target) as channel:
                created = await keys_pb2_grpc.KeyManagementStub(channel).CreateKey(
                    kpb.CreateKeyRequest(name="after-crash"), timeout=10
                )
            break
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert created is not None
    await asyncio.to_thread(
        _wait_for, lambda: len(set(workers_of(supervised)) - {before[0]}) == 2
    )
    async with grpc.aio.insecure_channel(supervised.target) as channel:
        reply = await admission_pb2_grpc.AdmissionStub(channel).Authorize(
            adm.AuthorizeRequest(secret=created.secret), timeout=10
        )
    assert reply.allowed


def test_sigterm_stops_every_worker_and_the_shared_store_and_exits_0(
    supervised: SidecarProcess,
) -> None:
    assert supervised.process is not None
    children = _children(supervised.process.pid)
    assert len(workers_of(supervised)) == 2
    assert len(children) == 3  # two workers and one embedded store
    supervised.process.send_signal(signal.SIGTERM)
    assert supervised.process.wait(timeout=60) == 0
    assert not any(_alive(pid) for pid in children)
    data_dir = Path(supervised.extra_args[-1])
    assert not (data_dir / SOCKET_NAME).exists()
