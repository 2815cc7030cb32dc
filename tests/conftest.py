"""Session-wide real servers and per-test isolated stores.

Every test that touches a store talks to a real server process started here on
a free port (the embedded Valkey, and Debian's redis-server where present),
never to the shared instance on 6379 and never to a fake. Tests are isolated
by a key prefix of their own, not by flushing.

The store is a parameter of the session: ``store_url`` (the store-level tests)
is parametrised over the backends of the run, and ``valkey_url`` (the store of
the gRPC tests' sidecars) follows it. ``--store=local``, the default, runs
every store-level test once per local server kind (``valkey``, ``redis``).
``--store=cluster`` (or ``AIGW_TEST_CLUSTER=1``; ``make test-cluster``) starts a
3-node Redis Cluster instead and runs only the tests marked ``cluster`` (module
``pytestmark = pytest.mark.cluster``), both fixtures pointing at the cluster,
less those marked ``single_node`` (they count what one server saw).
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
from aigw_sidecar.bootstrap import Sidecar, start
from aigw_sidecar.keys.service import KeyService
from aigw_sidecar.settings import Settings
from aigw_sidecar.store.client import StoreClient, connect
from aigw_sidecar.store.keyspace import Keyspace
from aigw_sidecar.store.redis_store import RedisKeyStore
from tests.servers import (
    ChannelStubs,
    ClusterProcess,
    SidecarProcess,
    StoreProcess,
    store_binaries,
)

_prefixes = itertools.count()
CLUSTER = "cluster"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store", choices=("local", CLUSTER),
        default=CLUSTER if os.environ.get("AIGW_TEST_CLUSTER") else "local",
        help="local (default): store tests on every local server kind (valkey, redis); "
             "cluster: only the tests marked `cluster`, on a local 3-node Redis Cluster "
             "(default when AIGW_TEST_CLUSTER is set)",
    )


def on_cluster(config: pytest.Config) -> bool:
    return bool(config.getoption("store") == CLUSTER)


def store_backends(config: pytest.Config) -> list[str]:
    """The ``store_url`` parameters of this run."""
    return [CLUSTER] if on_cluster(config) else list(store_binaries())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_url" in metafunc.fixturenames:
        metafunc.parametrize(
            "store_url", store_backends(metafunc.config), indirect=True, scope="session"
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the cluster, tests not marked ``cluster``, or marked ``single_node``, are deselected."""
    if not on_cluster(config):
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        runs = item.get_closest_marker(CLUSTER) and not item.get_closest_marker("single_node")
        (kept if runs else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="session")
def store_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, StoreProcess]]:
    procs = {
        name: StoreProcess(name, binary, tmp_path_factory.mktemp(name)).start()
        for name, binary in store_binaries().items()
    }
    yield procs
    for proc in procs.values():
        proc.stop()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterProcess]:
    """Three redis-server primaries joined by ``redis-cli --cluster create`` (--store=cluster)."""
    proc = ClusterProcess(tmp_path_factory.mktemp("cluster")).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def store_url(request: pytest.FixtureRequest) -> str:
    """Each store-level test runs once per backend of the run (see ``store_backends``)."""
    if request.param == CLUSTER:
        return str(request.getfixturevalue("cluster").url)
    return str(request.getfixturevalue("store_processes")[request.param].url)


@pytest.fixture(scope="session")
def valkey_url(request: pytest.FixtureRequest) -> str:
    """The store of the in-process and subprocess sidecars: the session's Valkey, or the cluster."""
    if on_cluster(request.config):
        return str(request.getfixturevalue("cluster").url)
    return str(request.getfixturevalue("store_processes")["valkey"].url)


def open_client(url: str) -> StoreClient:
    """A test's own client of ``url``; on a cluster, a cluster client (as the sidecar's)."""
    if url.startswith("redis+cluster://"):
        return connect(url, timeout_s=5.0, max_connections=32)
    return Redis.from_url(url, decode_responses=True)


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
async def redis_client(store_url: str) -> AsyncIterator[StoreClient]:
    client = open_client(store_url)
    # Every test starts with an empty script cache, so the NOSCRIPT reload runs
    # (on a cluster SCRIPT FLUSH goes to every primary).
    await client.script_flush()
    yield client
    await client.aclose()


@pytest.fixture
async def store_client(valkey_url: str) -> AsyncIterator[StoreClient]:
    """A client of the store ``grpc_stubs``' sidecar uses."""
    client = open_client(valkey_url)
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
class Stubs(ChannelStubs):
    target: str
    channel: grpc.aio.Channel
    sidecar: Sidecar


@pytest.fixture
async def grpc_stubs(valkey_url: str, key_prefix: str, tmp_path: Path) -> AsyncIterator[Stubs]:
    """An in-process sidecar on the session's Valkey, with async stubs."""
    # A store timeout far above the default 250 ms: none of these tests is about a slow
    # store (those build their own sidecar), and a busy 2-vCPU CI machine running the
    # Cluster suite has made a set-up CreateKey time out.
    settings = Settings(
        listen="127.0.0.1:0", redis_url=valkey_url, key_prefix=key_prefix,
        data_dir=tmp_path, shutdown_grace_s=1.0, store_timeout_ms=2000,
    )
    sidecar = await start(settings)
    target = f"127.0.0.1:{sidecar.port}"
    channel = grpc.aio.insecure_channel(target)
    yield Stubs(target, channel, sidecar)
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
