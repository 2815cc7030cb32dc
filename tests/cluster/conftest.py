"""The Redis Cluster suite: the store-level and gRPC suites again, on a real cluster.

A session fixture starts three redis-server primaries on loopback ports and
joins them with ``redis-cli --cluster create``. The fixtures every store test
uses (``store_url``, ``valkey_url``, ``redis_client``) then point at that
cluster, so the imported test modules run unchanged against it. Run with
``make test-cluster`` (the default suite does not collect this folder).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from aigw_sidecar.store.client import StoreClient, connect
from tests.servers import ClusterProcess


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterProcess]:
    proc = ClusterProcess(tmp_path_factory.mktemp("cluster")).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def store_url(cluster: ClusterProcess) -> str:
    return cluster.url


@pytest.fixture(scope="session")
def valkey_url(cluster: ClusterProcess) -> str:
    """The in-process and subprocess sidecars of the gRPC suites use the cluster too."""
    return cluster.url


async def cluster_client(url: str) -> StoreClient:
    return connect(url, timeout_s=5.0, max_connections=32)


@pytest.fixture
async def redis_client(store_url: str) -> AsyncIterator[StoreClient]:
    client = await cluster_client(store_url)
    # SCRIPT FLUSH goes to every primary, so NOSCRIPT reloads run on every node.
    await client.script_flush()
    yield client
    await client.aclose()
