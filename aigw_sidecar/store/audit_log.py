"""RedisAuditLog: the audit trail of admin actions as one capped Redis Stream.

Each append is a single XADD with an approximate MAXLEN cap, so the trail never
grows without bound and needs no script. The stream id (the store's clock in
ms, then a sequence) orders the entries and serves as their time and page token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import cast

from aigw_sidecar.errors import InvalidArgument
from aigw_sidecar.keys.audit import AuditAction, AuditEntry, AuditEvent
from aigw_sidecar.store.client import StoreClient
from aigw_sidecar.store.errors import store_errors
from aigw_sidecar.store.keyspace import Keyspace

DEFAULT_MAX_ENTRIES = 100_000
# A key_id filter reads at most this many entries per page before answering.
_MAX_SCANNED = 5000
_BATCH = 500
_ENTRY_ID_RE = re.compile(r"^\d{1,20}-\d{1,20}\Z")


class RedisAuditLog:
    def __init__(
        self, redis: StoreClient, keyspace: Keyspace, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        self._redis = redis
        self._key = keyspace.audit
        self._max_entries = max_entries

    async def append(self, event: AuditEvent) -> None:
        fields = {
            "principal": event.principal,
            "action": event.action.value,
            "key_id": event.key_id,
            "name": event.name,
            "workspace": event.workspace,
            "detail": event.detail,
        }
        async with store_errors():
            await self._redis.xadd(
                self._key, fields,  # type: ignore[arg-type]
                maxlen=self._max_entries, approximate=True,
            )

    async def list(
        self, key_id: str, page_size: int, page_token: str
    ) -> tuple[Sequence[AuditEntry], str]:
        if page_token and not _ENTRY_ID_RE.match(page_token):
            raise InvalidArgument("page_token", "is not a token from a previous page")
        upper = f"({page_token}" if page_token else "+"
        found: list[AuditEntry] = []
        scanned = 0
        last_id = ""
        while len(found) < page_size and scanned < _MAX_SCANNED:
            count = page_size - len(found) if not key_id else _BATCH
            async with store_errors():
                batch = cast(
                    list[tuple[str, dict[str, str]]],
                    await self._redis.xrevrange(self._key, upper, "-", count=count),
                )
            if not batch:
                return found, ""
            for entry_id, fields in batch:
                scanned += 1
                last_id = entry_id
                if not key_id or fields.get("key_id") == key_id:
                    found.append(_decode(entry_id, fields))
                    if len(found) == page_size:
                        break
            upper = f"({last_id}"
        async with store_errors():
            older = await self._redis.xrevrange(self._key, upper, "-", count=1)
        return found, last_id if older else ""


def _decode(entry_id: str, fields: dict[str, str]) -> AuditEntry:
    return AuditEntry(
        entry_id=entry_id,
        occurred_at_ms=int(entry_id.split("-", 1)[0]),
        event=AuditEvent(
            principal=fields.get("principal", ""),
            action=AuditAction(fields.get("action", "")),
            key_id=fields.get("key_id", ""),
            name=fields.get("name", ""),
            workspace=fields.get("workspace", ""),
            detail=fields.get("detail", ""),
        ),
    )
