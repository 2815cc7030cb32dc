"""Listing keys: pages in (workspace, creation) order with an opaque cursor.

Each workspace keeps its key ids in a zset scored by creation time; a page
walks the workspaces in name order and their keys in (score, key id) order,
reading from each candidate's record, one pipelined round trip per batch, what
the page needs: the whole record for a page of keys without a filter beyond
the workspace (every key read is then returned); else only the fields the
filter checks (``records.filter_fields``), then the whole records of the keys
found, or for a page with usage their overviews (``RedisKeyStore.overviews``).
Without a filter a batch is only as large as what the page still lacks; with
one, ``_LIST_BATCH``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from aigw_sidecar.errors import InvalidArgument
from aigw_sidecar.keys.model import ApiKey, KeyFilter
from aigw_sidecar.store.client import StoreClient
from aigw_sidecar.store.errors import store_errors
from aigw_sidecar.store.keyspace import Keyspace
from aigw_sidecar.store.records import decode_key, filter_fields, filtered_fields

_LIST_BATCH = 200
_LIST_MAX_SCANNED = 5000

Record = dict[str, str]


@dataclass(frozen=True, slots=True)
class PageCursor:
    workspace: str
    score: int
    key_id: str

    def encode(self) -> str:
        raw = json.dumps([self.workspace, self.score, self.key_id]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> PageCursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            workspace, score, key_id = json.loads(raw)
            if not (isinstance(workspace, str) and isinstance(score, int)):
                raise ValueError(token)
            return cls(workspace, score, str(key_id))
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            raise InvalidArgument("page_token", "is not a token from ListKeys") from None


class KeyListing:
    """Pages of keys matching a filter."""

    def __init__(
        self, redis: StoreClient, keyspace: Keyspace, now_ms: Callable[[], Awaitable[int]]
    ) -> None:
        self._redis = redis
        self._ks = keyspace
        self._now_ms = now_ms

    async def list_keys(
        self, key_filter: KeyFilter, page_size: int, page_token: str
    ) -> tuple[list[ApiKey], str]:
        """A page of keys, and the next page's token ("" after the last)."""
        async with store_errors():
            now_ms = await self._now_ms()
            if not key_filter.narrows:
                found, token = await self._scan(key_filter, page_size, page_token, None, now_ms)
                return [decode_key(record, now_ms) for _kid, record in found], token
            ids, token = await self._key_ids(key_filter, page_size, page_token, now_ms)
            pipe = self._redis.pipeline(transaction=False)
            for kid in ids:
                pipe.hgetall(self._ks.record(kid))
            records = await pipe.execute() if ids else []
        keys = [decode_key(record, now_ms) for record in records if record]
        # A key deleted, or changed out of the filter, since the scan is left out.
        return [key for key in keys if key_filter.matches(key)], token

    async def list_key_ids(
        self, key_filter: KeyFilter, page_size: int, page_token: str
    ) -> tuple[list[str], str]:
        """The key ids of a page, and the next page's token, reading only what the filter reads."""
        async with store_errors():
            now_ms = await self._now_ms() if key_filter.status is not None else 0
            return await self._key_ids(key_filter, page_size, page_token, now_ms)

    async def _key_ids(
        self, key_filter: KeyFilter, page_size: int, page_token: str, now_ms: int
    ) -> tuple[list[str], str]:
        # The key id too: a record without one is gone (a key deleted, or one being
        # created, between its index entry and its record).
        fields = ("kid", *filter_fields(key_filter))
        found, token = await self._scan(key_filter, page_size, page_token, fields, now_ms)
        return [kid for kid, _record in found], token

    async def _scan(
        self, key_filter: KeyFilter, page_size: int, page_token: str,
        fields: Sequence[str] | None, now_ms: int,
    ) -> tuple[list[tuple[str, Record]], str]:
        """(key id, record) of a page's keys, each record whole (None) or only ``fields``."""
        cursor = PageCursor.decode(page_token) if page_token else None
        found: list[tuple[str, Record]] = []
        scanned = 0

        def batch() -> int:
            # Without a filter every key read is returned: read no more than the page lacks.
            return _LIST_BATCH if key_filter.narrows else min(_LIST_BATCH, page_size - len(found))

        async for ws in self._workspaces(key_filter.workspace, cursor):
            after = cursor if cursor and cursor.workspace == ws else None
            async for kid, score, record in self._records_of(ws, after, batch, fields):
                scanned += 1
                if not key_filter.narrows or key_filter.admits(*filtered_fields(record, now_ms)):
                    found.append((kid, record))
                if len(found) == page_size or scanned >= _LIST_MAX_SCANNED:
                    return found, PageCursor(ws, score, kid).encode()
        return found, ""

    async def _workspaces(self, only: str, cursor: PageCursor | None) -> AsyncIterator[str]:
        if only:
            if cursor is None or cursor.workspace == only:
                yield only
            return
        low = f"[{cursor.workspace}" if cursor else "-"
        while True:
            batch = [
                str(ws)
                for ws in await self._redis.zrangebylex(
                    self._ks.workspaces, low, "+", 0, _LIST_BATCH
                )
            ]
            for ws in batch:
                yield ws
            if len(batch) < _LIST_BATCH:
                return
            low = f"({batch[-1]}"

    async def _records_of(
        self, ws: str, after: PageCursor | None, size: Callable[[], int],
        fields: Sequence[str] | None,
    ) -> AsyncIterator[tuple[str, int, Record]]:
        """(key id, score, record) of the keys after the cursor, ``size()`` at a time."""
        low: int | str = after.score if after else "-inf"
        offset = 0
        while True:
            num = size()
            batch = await self._redis.zrange(
                self._ks.key_list(ws), low, "+inf", byscore=True, offset=offset,
                num=num, withscores=True,
            )
            entries = [(str(item[0]), int(item[1])) for item in batch]
            if after:
                # Equal scores are ordered by member, so (score, key id) is a total order.
                entries = [e for e in entries if (e[1], e[0]) > (after.score, after.key_id)]
            pipe = self._redis.pipeline(transaction=False)
            for kid, _ in entries:
                if fields is None:
                    pipe.hgetall(self._ks.record(kid))
                else:
                    pipe.hmget(self._ks.record(kid), list(fields))
            replies = await pipe.execute() if entries else []
            for (kid, score), reply in zip(entries, replies, strict=True):
                record = reply if fields is None else _present(fields, reply)
                if record.get("kid"):  # a key deleted meanwhile leaves no record
                    yield kid, score, record
            if len(batch) < num:
                return
            offset += len(batch)


def _present(fields: Sequence[str], values: Sequence[str | None]) -> Record:
    """An HMGET reply as a dict of the fields the record has."""
    return {f: v for f, v in zip(fields, values, strict=True) if v is not None}
