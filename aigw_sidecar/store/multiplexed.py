"""The admission hot path's store connection: many calls in flight on one socket.

Every Authorize and RecordUsage is one EVALSHA. Through redis-py each call
takes a pooled connection, arms its own timeout and writes its own packet;
that bookkeeping costs more Python time than the script costs Redis. Here all
concurrent calls of a process share one connection: commands issued in the
same event-loop turn go out in one write, replies come back in order (Redis
answers a connection's commands in order) and each resolves its caller's
future. It is still one round trip and one atomic script per decision; only
the Python around it is cheaper.

Promises, the same as the pooled client's:

* a call gives up after the store timeout: a watchdog fails every call still
  waiting once the oldest is older than the timeout (so a stalled store costs
  at most about 1.25 times the timeout) and drops the connection;
* a refused connection is tried once more; a call whose connection dropped
  after it was sent is never retried (the script may already have run);
* NOSCRIPT (a restarted or flushed store) loads the script and sends it again.

Used for a single server reached by ``redis://`` or ``unix://``; TLS and
Redis Cluster URLs keep the pooled redis-py client (store/client.py).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.connection import parse_url
from redis.exceptions import AuthenticationError, BusyLoadingError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = str | int


def pack(*args: Arg) -> bytes:
    """A command in RESP (hiredis' stub types its argument as a 1-tuple)."""
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]
    return packed


def supports(url: str) -> bool:
    """True for URLs this client serves (a plain single server)."""
    return url.split("://", 1)[0].lower() in ("redis", "unix")


def _reply_error(message: str) -> RedisError:
    """An error reply as redis-py would raise it (LOADING: the store is starting)."""
    if message.startswith("LOADING"):
        return BusyLoadingError(message)
    return ResponseError(message)


class _Protocol(asyncio.Protocol):
    """One connection: commands out in order, replies matched to futures in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self._loop = loop
        self._timeout_s = timeout_s
        self._reader = hiredis.Reader(encoding="utf-8", errors="replace")
        # (future, deadline) per command sent and not yet answered
        self._pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._transport: Any = None  # asyncio.Transport (uvloop's is not a subclass)
        self.lost: BaseException | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        pending = self._pending
        while True:
            reply = self._reader.gets()
            if reply is False:
                return
            if not pending:  # a reply to nothing: the stream is out of step
                self._fail(RedisConnectionError("unexpected reply from the store"))
                return
            future, _deadline = pending.popleft()
            if future.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(_reply_error(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError("connection to the store lost"))

    # sending

    def send(self, command: bytes) -> asyncio.Future[Any]:
        if self.lost is not None:
            raise RedisConnectionError("connection to the store lost") from self.lost
        future: asyncio.Future[Any] = self._loop.create_future()
        deadline = self._loop.time() + self._timeout_s
        self._pending.append((future, deadline))
        self._out.append(command)
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)
        if self._watchdog is None:
            self._watchdog = self._loop.call_at(deadline, self._check_deadlines)
        return future

    def _flush(self) -> None:
        self._flush_handle = None
        if self._transport is not None and self._out:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def _check_deadlines(self) -> None:
        self._watchdog = None
        if not self._pending:
            return
        oldest_deadline = self._pending[0][1]
        if self._loop.time() >= oldest_deadline:
            # Replies come in order: everything behind a late reply is late too.
            self._fail(RedisTimeoutError("the store did not answer in time"))
            return
        self._watchdog = self._loop.call_at(oldest_deadline, self._check_deadlines)

    def _fail(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc
        while self._pending:
            future, _ = self._pending.popleft()
            if not future.done():
                future.set_exception(exc)
                # Its caller may be gone (cancelled, or a handshake that failed
                # earlier): the failure is reported to whoever awaits, and no
                # "exception never retrieved" noise for the rest.
                future.exception()
        self._out.clear()
        for handle in (self._flush_handle, self._watchdog):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._watchdog = None
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class MultiplexedScripts:
    """EVALSHA over one shared, pipelined connection per process."""

    def __init__(self, url: str, *, timeout_s: float) -> None:
        if not supports(url):
            raise ValueError(f"not a single-server URL: {url.split('://', 1)[0]}://")
        self._params: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        self._timeout_s = timeout_s
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._sources: dict[str, str] = {}  # sha -> script text, for NOSCRIPT
        # One SCRIPT LOAD in flight per script, however many calls met NOSCRIPT.
        self._loading: dict[str, asyncio.Future[Any]] = {}

    def register(self, source: str) -> str:
        """The SHA-1 a script is called by; its text is kept to reload it."""
        sha = hashlib.sha1(source.encode("utf-8"), usedforsecurity=False).hexdigest()
        self._sources[sha] = source
        return sha

    async def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        command = pack("EVALSHA", sha, len(keys), *keys, *args)
        proto = await self._connection()
        try:
            return await proto.send(command)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        # The store lost its scripts (SCRIPT FLUSH, a failover): load once, send again.
        loading = self._loading.get(sha)
        if loading is None:
            proto = await self._connection()
            loading = proto.send(pack("SCRIPT", "LOAD", self._sources[sha]))
            self._loading[sha] = loading
            loading.add_done_callback(lambda _f: self._loading.pop(sha, None))
        await asyncio.shield(loading)
        proto = await self._connection()
        return await proto.send(command)

    async def _connection(self) -> _Protocol:
        proto = self._proto
        if proto is not None and proto.lost is None:
            return proto
        if self._connecting is None:
            connecting = asyncio.ensure_future(self._connect_with_one_retry())
            # Cleared when the attempt ends, even if every caller waiting for it
            # was cancelled meanwhile (a later drop then starts a new attempt).
            connecting.add_done_callback(self._connect_done)
            self._connecting = connecting
        return await asyncio.shield(self._connecting)

    def _connect_done(self, attempt: asyncio.Future[_Protocol]) -> None:
        if self._connecting is attempt:
            self._connecting = None
        if not attempt.cancelled():
            attempt.exception()  # reported to its waiters; no "never retrieved" log

    async def _connect_with_one_retry(self) -> _Protocol:
        try:
            proto = await self._connect()
        except AuthenticationError:
            raise  # refused, not restarting: trying again would not help
        except (OSError, RedisConnectionError, TimeoutError):
            proto = await self._connect()  # a store that is just restarting
        self._proto = proto
        return proto

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        params = self._params

        def factory() -> _Protocol:
            return _Protocol(loop, self._timeout_s)

        try:
            async with asyncio.timeout(self._timeout_s):
                if "path" in params:
                    _, proto = await loop.create_unix_connection(factory, params["path"])
                else:
                    _, proto = await loop.create_connection(
                        factory, params.get("host", "localhost"), params.get("port", 6379)
                    )
                handshake = []
                if params.get("password"):
                    user = (params["username"],) if params.get("username") else ()
                    handshake.append(proto.send(pack("AUTH", *user, params["password"])))
                if params.get("db"):
                    handshake.append(proto.send(pack("SELECT", params["db"])))
                # A new connection may be to a restarted store: load every script
                # up front instead of meeting NOSCRIPT on the first calls.
                handshake.extend(
                    proto.send(pack("SCRIPT", "LOAD", source))
                    for source in self._sources.values()
                )
                try:
                    for reply in handshake:
                        await reply
                except ResponseError as exc:
                    proto.close()
                    for reply in handshake:  # the rest are moot: no log for them
                        if reply.done() and not reply.cancelled():
                            reply.exception()
                    # A refused AUTH or SELECT: the store is unusable, not the request.
                    raise AuthenticationError(f"the store refused the connection: {exc}") from exc
                except BaseException:
                    proto.close()
                    raise
        except TimeoutError:
            raise RedisTimeoutError("could not connect to the store in time") from None
        except OSError as exc:
            raise RedisConnectionError(f"could not connect to the store: {exc}") from exc
        return proto

    async def aclose(self) -> None:
        if self._proto is not None:
            self._proto.close()
            self._proto = None
