"""Listing keys: pages in (workspace, creation) order with an opaque cursor.

Each workspace keeps its key ids in a zset scored by creation time; a page
walks the workspaces in name order and their keys in (score, key id) order,
reading the records with one pipelined round trip per batch. Without a filter
beyond the workspace every key read is returned, so a batch is only as large
as what the page still lacks; with one, batches of ``_LIST_BATCH``.
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
from aigw_sidecar.store.records import decode_key, filtered_fields

_LIST_BATCH = 200
_LIST_MAX_SCANNED = 5000


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
    ) -> tuple[Sequence[ApiKey], str]:
        cursor = PageCursor.decode(page_token) if page_token else None
        found: list[ApiKey] = []
        scanned = 0

        def batch() -> int:
            # Without a filter every key read is returned: read no more than the page lacks.
            return _LIST_BATCH if key_filter.narrows else min(_LIST_BATCH, page_size - len(found))

        async with store_errors():
            now_ms = await self._now_ms()
            async for ws in self._workspaces(key_filter.workspace, cursor):
                after = cursor if cursor and cursor.workspace == ws else None
                async for kid, score, fields in self._records_of(ws, after, batch):
                    scanned += 1
                    # The filter reads a few fields; only a key it admits is decoded whole.
                    if key_filter.admits(*filtered_fields(fields, now_ms)):
                        found.append(decode_key(fields, now_ms))
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
        self, ws: str, after: PageCursor | None, size: Callable[[], int]
    ) -> AsyncIterator[tuple[str, int, dict[str, str]]]:
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
                pipe.hgetall(self._ks.record(kid))
            records = await pipe.execute() if entries else []
            for (kid, score), fields in zip(entries, records, strict=True):
                if fields:  # a key deleted meanwhile leaves no record
                    yield kid, score, fields
            if len(batch) < num:
                return
            offset += len(batch)
