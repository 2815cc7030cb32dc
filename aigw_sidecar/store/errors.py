"""How the store's Redis errors reach the domain: connection trouble becomes StoreUnavailable.

    redis.ConnectionError, TimeoutError, BusyLoadingError,
    ClusterDownError, TryAgainError, RedisClusterException,
    TimeoutError, OSError                      -> aigw_sidecar.errors.StoreUnavailable
    anything else (a script error, a bug)      -> raised as it is

Store modules wrap their round trips in ``store_errors()``, so the transport maps
one domain exception (UNAVAILABLE) and never sees a Redis class.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis import exceptions as redis_errors

from aigw_sidecar.errors import StoreUnavailable


@asynccontextmanager
async def store_errors() -> AsyncIterator[None]:
    """Redis connection trouble becomes StoreUnavailable; nothing else is hidden."""
    try:
        yield
    except (redis_errors.ConnectionError, redis_errors.TimeoutError,
            redis_errors.BusyLoadingError, redis_errors.ClusterDownError,
            redis_errors.TryAgainError, redis_errors.RedisClusterException,
            TimeoutError, OSError) as exc:
        raise StoreUnavailable("the key store is unavailable; try again") from exc
