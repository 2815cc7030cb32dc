"""Exact pictures of everything a test's key prefix holds in the store.

A snapshot maps each Redis key name of the prefix to its type, its full value
and its absolute expiry (PEXPIRETIME), so two snapshots are equal exactly when
no counter, index or TTL changed in between.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis


async def key_names(redis: Redis, prefix: str) -> list[str]:
    """Every Redis key name under ``prefix`` (the test's own key prefix)."""
    return sorted([str(name) async for name in redis.scan_iter(match=f"{prefix}:*", count=500)])


async def value_of(redis: Redis, name: str) -> tuple[str, Any]:
    kind = str(await redis.type(name))
    if kind == "hash":
        return kind, dict(await redis.hgetall(name))
    if kind == "zset":
        return kind, list(await redis.zrange(name, 0, -1, withscores=True))
    if kind == "set":
        return kind, sorted(await redis.smembers(name))
    if kind == "list":
        return kind, list(await redis.lrange(name, 0, -1))
    if kind == "string":
        return kind, await redis.get(name)
    if kind == "stream":
        return kind, [(entry_id, dict(fields)) for entry_id, fields in await redis.xrange(name)]
    return kind, None


async def snapshot(redis: Redis, prefix: str) -> dict[str, tuple[str, Any, int]]:
    """Key name -> (type, value, absolute expiry in ms or -1)."""
    picture: dict[str, tuple[str, Any, int]] = {}
    for name in await key_names(redis, prefix):
        kind, value = await value_of(redis, name)
        expires = int(await redis.execute_command("PEXPIRETIME", name))
        picture[name] = (kind, value, expires)
    return picture


async def every_stored_text(redis: Redis, prefix: str) -> list[str]:
    """Every key name and every value string (hash fields, members) under ``prefix``."""
    texts: list[str] = []
    for name in await key_names(redis, prefix):
        texts.append(name)
        _kind, value = await value_of(redis, name)
        if isinstance(value, dict):
            for field, item in value.items():
                texts.extend((str(field), str(item)))
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], dict):
                    texts.append(str(item[0]))
                    for field, text in item[1].items():
                        texts.extend((str(field), str(text)))
                else:
                    texts.append(str(item))
        elif value is not None:
            texts.append(str(value))
    return texts
