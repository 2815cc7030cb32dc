"""tests/server/test_bad_input.py on a Redis Cluster."""

from collections.abc import AsyncIterator

import pytest

from aigw_sidecar.store.client import StoreClient
from tests.cluster.conftest import cluster_client
from tests.server.test_bad_input import *  # noqa: F403


@pytest.fixture
async def store_client(valkey_url: str) -> AsyncIterator[StoreClient]:
    client = await cluster_client(valkey_url)
    yield client
    await client.aclose()
