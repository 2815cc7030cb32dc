"""Session-wide real servers and per-test isolated stores.

Every test that touches a store talks to a real server process started here on
a free port (the embedded Valkey, and Debian's redis-server where present),
never to the shared instance on 6379 and never to a fake. Tests are isolated
by a key prefix of their own, not by flushing.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from redis.asyncio import Redis

from aigw_sidecar.admission.service import AdmissionService
from aigw_sidecar.api.v1 import admission_pb2_grpc, keys_pb2_grpc
from aigw_sidecar.bootstrap import Sidecar, start
from aigw_sidecar.keys.service import KeyService
from aigw_sidecar.settings import Settings
from aigw_sidecar.store.keyspace import Keyspace
from aigw_sidecar.store.redis_store import RedisKeyStore
from tests.servers import SidecarProcess, StoreProcess, store_binaries

_prefixes = itertools.count()
# The Redis Cluster suite starts its own cluster; `make test-cluster` runs it.
collect_ignore = [] if os.environ.get("AIGW_TEST_CLUSTER") else ["cluster"]


@pytest.fixture(scope="session")
def store_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, StoreProcess]]:
    procs = {
        name: StoreProcess(name, binary, tmp_path_factory.mktemp(name)).start()
        for name, binary in store_binaries().items()
    }
    yield procs
    for proc in procs.values():
        proc.stop()


@pytest.fixture(scope="session", params=list(store_binaries()))
def store_url(request: pytest.FixtureRequest, store_processes: dict[str, StoreProcess]) -> str:
    """Each store-level test runs once per real server kind (valkey, redis)."""
    return store_processes[request.param].url


@pytest.fixture(scope="session")
def valkey_url(store_processes: dict[str, StoreProcess]) -> str:
    return store_processes["valkey"].url


@pytest.fixture
def key_prefix() -> str:
    return f"t{next(_prefixes)}"


@dataclass
class Clock:
    """The store clock for a test: None means Redis TIME."""

    now_us: int | None = None

    def __call__(self) -> int | None:
        return self.now_us

    def set_s(self, seconds: float) -> None:
        self.now_us = round(seconds * 1_000_000)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def redis_client(store_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(store_url, decode_responses=True)
    # Every test starts with an empty script cache, so the NOSCRIPT reload runs.
    await client.script_flush()
    yield client
    await client.aclose()


@pytest.fixture
def store(redis_client: Redis, key_prefix: str, clock: Clock) -> RedisKeyStore:
    return RedisKeyStore(redis_client, Keyspace(key_prefix), clock_us=clock)


@pytest.fixture
def keys(store: RedisKeyStore) -> KeyService:
    return KeyService(store)


@pytest.fixture
def admission(store: RedisKeyStore) -> AdmissionService:
    return AdmissionService(store)


@dataclass
class Stubs:
    target: str
    channel: grpc.aio.Channel
    keys: keys_pb2_grpc.KeyManagementStub
    admission: admission_pb2_grpc.AdmissionStub
    sidecar: Sidecar


@pytest.fixture
async def grpc_stubs(valkey_url: str, key_prefix: str, tmp_path: Path) -> AsyncIterator[Stubs]:
    """An in-process sidecar on the session's Valkey, with async stubs."""
    settings = Settings(
        listen="127.0.0.1:0", redis_url=valkey_url, key_prefix=key_prefix,
        data_dir=tmp_path, shutdown_grace_s=1.0,
    )
    sidecar = await start(settings)
    target = f"127.0.0.1:{sidecar.port}"
    channel = grpc.aio.insecure_channel(target)
    yield Stubs(
        target,
        channel,
        keys_pb2_grpc.KeyManagementStub(channel),
        admission_pb2_grpc.AdmissionStub(channel),
        sidecar,
    )
    await channel.close()
    await sidecar.stop()


@pytest.fixture(scope="module")
def two_sidecars(
    request: pytest.FixtureRequest, valkey_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SidecarProcess, SidecarProcess]]:
    """Two ``aigw-sidecar serve`` processes on one store, started once per test module.

    They share a key prefix of their own, so the module's tests use distinct key names.
    """
    logs = tmp_path_factory.mktemp("two-sidecars")
    prefix = f"two{next(_prefixes)}"
    first = SidecarProcess(valkey_url, prefix, log_path=logs / "a.log")
    second = SidecarProcess(valkey_url, prefix, log_path=logs / "b.log")
    try:
        yield first.start(), second.start()
    finally:
        first.stop()
        second.stop()
