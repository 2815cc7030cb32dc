"""The store client: one Redis (or Valkey) server, or a Redis Cluster, behind one type.

A URL with the scheme ``redis+cluster://`` (or ``rediss+cluster://`` for TLS)
names one seed node of a Redis Cluster; the client discovers the other nodes.
Every other URL (``redis://``, ``rediss://``, ``unix://``) is a single server.

Both clients get the same promises: every call gives up after the store
timeout, no call is ever sent twice (a script whose connection dropped or
timed out may already have run: the caller gets UNAVAILABLE, and a dead pooled
connection is replaced by the next call), and scripts are loaded again by
themselves after NOSCRIPT (on a cluster, on every primary).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError
from redis.retry import Retry

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

StoreClient = Redis | RedisCluster


class BlockingRedisCluster(RedisCluster):
    """A RedisCluster whose callers wait (up to the store timeout) for a free connection.

    redis-py's cluster client fails a command at once when a node's pool is
    exhausted; a burst of concurrent requests would then be refused although
    the store is fine. Capping the commands in flight at the pool size, with
    a bounded wait, gives the cluster the single server's blocking pool.
    """

    def __init__(self, *args: Any, max_in_flight: int, wait_s: float, **kwargs: Any) -> None:
        kwargs["max_connections"] = max_in_flight
        super().__init__(*args, **kwargs)
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._wait_s = wait_s

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(self._wait_s):
                await self._in_flight.acquire()
        except TimeoutError:
            raise MaxConnectionsError("no free store connection in time") from None
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self._in_flight.release()


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def connect(url: str, *, timeout_s: float, max_connections: int) -> StoreClient:
    """A client for ``url`` with short timeouts and no automatic resend of a command.

    Args:
        max_connections: pool size (on a cluster: per node). A single server's
            pool blocks up to ``timeout_s`` for a free connection rather than
            failing at once.
    """
    # No retries: redis-py would resend a command whose connection dropped after
    # it was written, and a key-management script must never run twice.
    retry = Retry(NoBackoff(), 0, supported_errors=(RedisConnectionError,))
    if is_cluster_url(url):
        scheme, rest = url.split("://", 1)
        cluster: RedisCluster = BlockingRedisCluster.from_url(
            f"{CLUSTER_SCHEMES[scheme.lower()]}://{rest}",
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            max_in_flight=max_connections,
            wait_s=timeout_s,
            retry=retry,
        )
        return cluster
    pool = BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        max_connections=max_connections,
        timeout=timeout_s,
        retry=retry,
    )
    # from_pool: the client owns the pool, so aclose() also closes its connections.
    return Redis.from_pool(pool)
