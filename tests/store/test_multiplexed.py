"""The admission hot path's pipelined store connection, against real servers."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aigw_sidecar.store.embedded import server_args
from aigw_sidecar.store.multiplexed import MultiplexedScripts, supports
from tests.servers import StoreProcess, free_port, store_binaries

ECHO = "return {KEYS[1], ARGV[1], tonumber(ARGV[2]) * 2}"


async def test_concurrent_calls_each_get_their_own_reply(store_url: str) -> None:
    mux = MultiplexedScripts(store_url, timeout_s=5)
    sha = mux.register(ECHO)
    try:
        replies = await asyncio.gather(
            *(mux.evalsha(sha, [f"k{i}"], [f"v{i}", i]) for i in range(500))
        )
    finally:
        await mux.aclose()
    assert replies == [[f"k{i}", f"v{i}", 2 * i] for i in range(500)]


async def test_a_flushed_script_cache_is_reloaded_and_the_call_still_answers(
    store_url: str,
) -> None:
    mux = MultiplexedScripts(store_url, timeout_s=5)
    sha = mux.register(ECHO)
    admin = Redis.from_url(store_url)
    try:
        await mux.evalsha(sha, ["a"], ["x", 1])
        await admin.script_flush()
        assert await mux.evalsha(sha, ["b"], ["y", 2]) == ["b", "y", 4]
    finally:
        await mux.aclose()
        await admin.aclose()


async def test_a_script_error_is_a_response_error_and_the_connection_stays_usable(
    store_url: str,
) -> None:
    mux = MultiplexedScripts(store_url, timeout_s=5)
    bad = mux.register("return redis.call('NOSUCHCOMMAND')")
    good = mux.register(ECHO)
    try:
        with pytest.raises(ResponseError):
            await mux.evalsha(bad, ["k"], [])
        assert await mux.evalsha(good, ["k"], ["v", 1]) == ["k", "v", 2]
    finally:
        await mux.aclose()


async def test_a_stalled_store_fails_the_call_after_the_timeout_instead_of_hanging(
    store_url: str,
) -> None:
    mux = MultiplexedScripts(store_url, timeout_s=0.2)
    sha = mux.register(ECHO)
    admin = Redis.from_url(store_url)
    try:
        await mux.evalsha(sha, ["k"], ["v", 1])  # connected
        await admin.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
        # EVALSHA of a script that may write is held by CLIENT PAUSE WRITE.
        with pytest.raises(RedisTimeoutError):
            await asyncio.wait_for(mux.evalsha(sha, ["k"], ["v", 1]), 5)
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await admin.aclose()
    try:
        assert await mux.evalsha(sha, ["k"], ["v", 3]) == ["k", "v", 6]  # reconnected
    finally:
        await mux.aclose()


async def test_a_restarted_store_is_reached_again_by_the_next_call(tmp_path: Path) -> None:
    store = StoreProcess("valkey", store_binaries()["valkey"], tmp_path / "s").start()
    mux = MultiplexedScripts(store.url, timeout_s=2)
    sha = mux.register(ECHO)
    try:
        assert await mux.evalsha(sha, ["k"], ["v", 1]) == ["k", "v", 2]
        store.stop()
        with pytest.raises((RedisConnectionError, RedisTimeoutError)):
            await mux.evalsha(sha, ["k"], ["v", 1])
        store.start()  # same port, empty script cache
        assert await mux.evalsha(sha, ["k"], ["v", 5]) == ["k", "v", 10]
    finally:
        await mux.aclose()
        store.stop()


async def test_password_and_database_from_the_url_are_used(tmp_path: Path) -> None:
    port = free_port()
    args = server_args(store_binaries()["valkey"], tmp_path, port=port, appendonly=False)
    proc = subprocess.Popen([*args, "--requirepass", "s3cret-pass"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        probe = redis.Redis(port=port, password="s3cret-pass", socket_connect_timeout=0.2)
        for _ in range(100):
            try:
                probe.ping()
                break
            except redis.RedisError:
                await asyncio.sleep(0.05)
        mux = MultiplexedScripts(f"redis://:s3cret-pass@127.0.0.1:{port}/3", timeout_s=2)
        sha = mux.register("redis.call('SET', KEYS[1], ARGV[1]) return 1")
        try:
            assert await mux.evalsha(sha, ["where"], ["db3"]) == 1
        finally:
            await mux.aclose()
        assert redis.Redis(port=port, password="s3cret-pass", db=3).get("where") == b"db3"
        wrong = MultiplexedScripts(f"redis://:wrong@127.0.0.1:{port}/0", timeout_s=2)
        with pytest.raises(RedisConnectionError):  # the store is unusable: UNAVAILABLE
            await wrong.evalsha(sha, ["k"], ["v"])
        await wrong.aclose()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_a_unix_socket_url_works(tmp_path: Path) -> None:
    store = StoreProcess("valkey", store_binaries()["valkey"], tmp_path / "s").start()
    mux = MultiplexedScripts(f"unix://{tmp_path / 's' / 'store.sock'}", timeout_s=2)
    sha = mux.register(ECHO)
    try:
        assert await mux.evalsha(sha, ["k"], ["v", 2]) == ["k", "v", 4]
    finally:
        await mux.aclose()
        store.stop()


def test_only_plain_single_server_urls_are_multiplexed() -> None:
    assert supports("redis://127.0.0.1:6379/0")
    assert supports("unix:///tmp/store.sock")
    assert not supports("rediss://127.0.0.1:6380")
    assert not supports("redis+cluster://127.0.0.1:7000")


async def test_a_burst_after_a_script_flush_loads_the_script_once(store_url: str) -> None:
    mux = MultiplexedScripts(store_url, timeout_s=5)
    big = "local pad = [[" + "x" * 20000 + "]]\n" + ECHO
    sha = mux.register(big)
    admin = Redis.from_url(store_url)
    try:
        await mux.evalsha(sha, ["k"], ["v", 1])
        await admin.script_flush()
        await admin.config_resetstat()
        replies = await asyncio.gather(*(mux.evalsha(sha, ["k"], ["v", i]) for i in range(2000)))
        stats = await admin.info("commandstats")
    finally:
        await mux.aclose()
        await admin.aclose()
    assert replies == [["k", "v", 2 * i] for i in range(2000)]
    assert stats["cmdstat_script|load"]["calls"] == 1


async def test_a_new_connection_loads_every_registered_script_first(tmp_path: Path) -> None:
    store = StoreProcess("valkey", store_binaries()["valkey"], tmp_path / "s").start()
    mux = MultiplexedScripts(store.url, timeout_s=2)
    sha = mux.register(ECHO)
    admin = redis.Redis(port=store.port)
    try:
        assert await mux.evalsha(sha, ["k"], ["v", 1]) == ["k", "v", 2]
        stats = admin.info("commandstats")
        assert "cmdstat_evalsha" in stats
        assert stats["cmdstat_evalsha"].get("failed_calls", 0) == 0  # no NOSCRIPT
    finally:
        await mux.aclose()
        store.stop()


async def test_a_connect_whose_callers_were_cancelled_does_not_break_the_next_reconnect(
    tmp_path: Path,
) -> None:
    store = StoreProcess("valkey", store_binaries()["valkey"], tmp_path / "s").start()
    mux = MultiplexedScripts(store.url, timeout_s=5)
    sha = mux.register(ECHO)
    admin = Redis.from_url(store.url)  # its own store: CLIENT KILL touches nobody else
    try:
        first = asyncio.ensure_future(mux.evalsha(sha, ["k"], ["v", 1]))
        await asyncio.sleep(0)  # the connect has started
        first.cancel()
        await asyncio.sleep(0.2)  # the connect finishes with nobody waiting
        assert await mux.evalsha(sha, ["k"], ["v", 2]) == ["k", "v", 4]
        await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        await asyncio.sleep(0.1)
        with contextlib.suppress(RedisConnectionError):
            await mux.evalsha(sha, ["k"], ["v", 3])  # may meet the dropped connection
        assert await mux.evalsha(sha, ["k"], ["v", 4]) == ["k", "v", 8]
    finally:
        await mux.aclose()
        await admin.aclose()
        store.stop()
