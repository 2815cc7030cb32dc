"""RedisEventLog: budget alert events of every key as one capped Redis Stream.

``<prefix>:events`` is a plain Redis Stream any consumer can read (``XREAD``,
consumer groups) besides ``ListEvents``. Each append is one XADD with an
approximate MAXLEN cap; the entry id (the store's clock in ms, then a sequence)
orders the events and is the cursor of ``ListEvents``. Fields are flat strings;
no secret is ever part of an event.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import cast

from aigw_sidecar.errors import InvalidArgument
from aigw_sidecar.event_fields import decode_event, encode_event
from aigw_sidecar.limits.alerts import BudgetEvent, with_stream_id
from aigw_sidecar.store.client import StoreClient
from aigw_sidecar.store.errors import store_errors
from aigw_sidecar.store.keyspace import Keyspace

DEFAULT_MAX_EVENTS = 100_000
# A key_id filter reads at most this many entries per page before answering.
_MAX_SCANNED = 5000
_BATCH = 500
_ENTRY_ID_RE = re.compile(r"^\d{1,20}-\d{1,20}\Z")


def _millis(entry_id: str) -> int:
    """The store's clock when the entry was added: the first half of its stream id."""
    return int(entry_id.split("-", 1)[0])


class RedisEventLog:
    def __init__(
        self, redis: StoreClient, keyspace: Keyspace, max_events: int = DEFAULT_MAX_EVENTS
    ) -> None:
        self._redis = redis
        self._key = keyspace.events
        self._max_events = max_events

    async def append(self, event: BudgetEvent) -> BudgetEvent:
        async with store_errors():
            entry_id = str(await self._redis.xadd(
                self._key, encode_event(event),  # type: ignore[arg-type]
                maxlen=self._max_events, approximate=True,
            ))
        return with_stream_id(event, entry_id, _millis(entry_id))

    async def list(
        self, key_id: str, after: str, page_size: int
    ) -> tuple[Sequence[BudgetEvent], str]:
        """Events after the cursor ``after``, oldest first, and the cursor to poll with next.

        An empty ``after`` starts with the newest ``page_size`` events, so a tail
        shows recent history first; ``0`` starts at the oldest event kept.
        """
        if after and after != "0" and not _ENTRY_ID_RE.match(after):
            raise InvalidArgument("after", "is not a cursor from a previous ListEvents")
        if not after:
            after = await self._start_of_tail(key_id, page_size)
        found: list[BudgetEvent] = []
        scanned = 0
        cursor = after
        while len(found) < page_size and scanned < _MAX_SCANNED:
            async with store_errors():
                batch = cast(
                    list[tuple[str, dict[str, str]]],
                    await self._redis.xrange(self._key, f"({cursor}" if cursor != "0" else "-",
                                             "+", count=_BATCH if key_id else page_size),
                )
            if not batch:
                break
            for entry_id, fields in batch:
                scanned += 1
                cursor = entry_id
                if not key_id or fields.get("key_id") == key_id:
                    found.append(decode_event(fields, entry_id, _millis(entry_id)))
                    if len(found) == page_size:
                        break
        return found, cursor

    async def _start_of_tail(self, key_id: str, page_size: int) -> str:
        """The cursor just before the newest ``page_size`` events (of ``key_id``)."""
        upper = "+"
        seen = 0
        scanned = 0
        oldest = ""
        while seen < page_size and scanned < _MAX_SCANNED:
            async with store_errors():
                batch = cast(
                    list[tuple[str, dict[str, str]]],
                    await self._redis.xrevrange(
                        self._key, upper, "-", count=_BATCH if key_id else page_size
                    ),
                )
            if not batch:
                return "0"
            for entry_id, fields in batch:
                scanned += 1
                if not key_id or fields.get("key_id") == key_id:
                    seen += 1
                    oldest = entry_id
                    if seen == page_size:
                        break
            upper = f"({batch[-1][0]}"
        if not oldest:
            return "0"
        millis, seq = (int(part) for part in oldest.split("-"))
        # The id just before the oldest event to show: XRANGE's "(" then starts at it.
        return f"{millis}-{seq - 1}" if seq else f"{millis - 1}-{2**64 - 1}"
