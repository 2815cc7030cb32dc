"""The audit trail of admin actions: who changed which API key, how, and when.

``AuditedKeyService`` is a ``KeyService`` that appends one ``AuditEvent`` after
each successful change. An event names the principal, the action, the key id,
its name and workspace, and for updates the fields changed; never a secret,
masked or not. The time comes from the store that keeps the trail.

The event is written after the change, in a second store call: the trail lives
on its own slot (Redis Cluster), so it cannot share the change's script. When
that write fails the change still stands (a create must still return its
secret); the failure is logged at ERROR with the event, never silently dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from aigw_sidecar.errors import StoreUnavailable
from aigw_sidecar.keys.model import (
    ApiKey,
    KeySpec,
    KeyUpdate,
    validate_key_id,
    validate_page_size,
)
from aigw_sidecar.keys.service import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, KeyService, KeyStore
from aigw_sidecar.limits.alerts import BudgetEvent, EventLog

log = logging.getLogger(__name__)


class AuditAction(StrEnum):
    CREATE_KEY = "create_key"
    IMPORT_LEGACY_KEY = "import_legacy_key"
    UPDATE_KEY = "update_key"
    ROTATE_KEY_SECRET = "rotate_key_secret"
    ENABLE_KEY = "enable_key"
    DISABLE_KEY = "disable_key"
    DELETE_KEY = "delete_key"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One admin action, before the store stamps it with an id and a time."""

    principal: str
    action: AuditAction
    key_id: str
    name: str
    workspace: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """An ``AuditEvent`` as kept in the trail."""

    entry_id: str
    occurred_at_ms: int
    event: AuditEvent


class AuditLog(Protocol):
    async def append(self, event: AuditEvent) -> None: ...

    async def list(
        self, key_id: str, page_size: int, page_token: str
    ) -> tuple[Sequence[AuditEntry], str]: ...


class AuditedKeyService(KeyService):
    """A KeyService whose every change leaves an entry in the audit trail.

    Args:
        principal: returns who is calling (the transport knows; the domain asks).
    """

    def __init__(
        self,
        store: KeyStore,
        audit: AuditLog,
        principal: Callable[[], str],
        events: EventLog | None = None,
    ) -> None:
        """Args:
        events: the budget alert events, for ``list_events``.
        """
        super().__init__(store)
        self._audit = audit
        self._principal = principal
        self._events = events

    async def _record(self, action: AuditAction, key: ApiKey, detail: str = "") -> None:
        event = AuditEvent(
            principal=self._principal(),
            action=action,
            key_id=key.key_id,
            name=key.name,
            workspace=key.workspace,
            detail=detail,
        )
        # One line per admin action (the trail is the record; this is for log pipelines).
        log.info(
            "admin action %s on key %s by %s", action.value, key.key_id, event.principal,
            extra={"action": action.value, "key_id": key.key_id, "principal": event.principal,
                   "workspace": key.workspace, "detail": detail},
        )
        try:
            await self._audit.append(event)
        except StoreUnavailable:
            log.error("audit entry NOT written (store unavailable): %s", event)

    async def create(self, spec: KeySpec) -> tuple[ApiKey, str]:
        key, secret = await super().create(spec)
        await self._record(AuditAction.CREATE_KEY, key)
        return key, secret

    async def import_legacy(self, secret: str, spec: KeySpec) -> ApiKey:
        key = await super().import_legacy(secret, spec)
        await self._record(AuditAction.IMPORT_LEGACY_KEY, key)
        return key

    async def update(self, key_id: str, update: KeyUpdate) -> ApiKey:
        key = await super().update(key_id, update)
        await self._record(AuditAction.UPDATE_KEY, key, ",".join(sorted(update.fields)))
        return key

    async def rotate_secret(self, key_id: str, grace_period_s: int = 0) -> tuple[ApiKey, str]:
        key, secret = await super().rotate_secret(key_id, grace_period_s)
        await self._record(
            AuditAction.ROTATE_KEY_SECRET, key, f"grace_period_s={grace_period_s}"
        )
        return key, secret

    async def set_enabled(self, key_id: str, enabled: bool) -> ApiKey:
        key = await super().set_enabled(key_id, enabled)
        action = AuditAction.ENABLE_KEY if enabled else AuditAction.DISABLE_KEY
        await self._record(action, key)
        return key

    async def delete(self, key_id: str) -> None:
        # Read first: after the delete nothing names the key any more.
        key = await super().get(key_id)
        await super().delete(key_id)
        await self._record(AuditAction.DELETE_KEY, key)

    async def audit_entries(
        self, key_id: str = "", page_size: int = 0, page_token: str = ""
    ) -> tuple[Sequence[AuditEntry], str]:
        """The trail, newest first; ``key_id`` narrows it to one key."""
        if key_id:
            key_id = validate_key_id(key_id)
        page_size = validate_page_size(page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        return await self._audit.list(key_id, page_size, page_token)

    async def list_events(
        self, key_id: str = "", after: str = "", page_size: int = 0
    ) -> tuple[Sequence[BudgetEvent], str]:
        """Budget alert events after the cursor, oldest first, and the next cursor."""
        if key_id:
            key_id = validate_key_id(key_id)
        page_size = validate_page_size(page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        if self._events is None:
            return (), after
        return await self._events.list(key_id, after, page_size)
