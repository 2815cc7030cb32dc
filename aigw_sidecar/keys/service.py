"""The key-management service: validate, mint secrets, and delegate to the store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from aigw_sidecar.errors import FailedPrecondition, InvalidArgument
from aigw_sidecar.keys import secrets
from aigw_sidecar.keys.model import (
    ApiKey,
    DailyUsage,
    KeyFilter,
    KeyOverview,
    KeyPage,
    KeySpec,
    KeyUpdate,
    KeyView,
    validate_history_days,
    validate_ident,
    validate_key_id,
    validate_name_contains,
    validate_page_size,
    validate_spec,
    validate_update,
    validate_workspace,
)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
LEGACY_LIMITS_MESSAGE = (
    "legacy keys do not support cost, token or rate limits; create a new API key "
    "with the limits you need (CreateKey), move your integrations to it, then "
    "disable or delete this legacy key"
)
LEGACY_ROTATION_MESSAGE = (
    "legacy keys cannot be rotated: their secret carries no key id; create a new "
    "API key (CreateKey), move your integrations to it, then delete this legacy key"
)
MAX_GRACE_PERIOD_S = 30 * 24 * 3600


class KeyStore(Protocol):
    async def create_key(
        self, spec: KeySpec, key_id: str, key_hash: str, masked: str, *, legacy: bool
    ) -> ApiKey: ...

    async def get_key(self, key_id: str) -> ApiKey: ...

    async def list_keys(
        self, key_filter: KeyFilter, page_size: int, page_token: str
    ) -> tuple[Sequence[ApiKey], str]: ...

    async def list_key_ids(
        self, key_filter: KeyFilter, page_size: int, page_token: str
    ) -> tuple[Sequence[str], str]:
        """The key ids of the page ``list_keys`` would return, and the same token."""
        ...

    async def update_key(self, key_id: str, update: KeyUpdate) -> ApiKey: ...

    async def rotate_secret(
        self, key_id: str, key_hash: str, masked: str, grace_ms: int
    ) -> ApiKey: ...

    async def set_enabled(self, key_id: str, enabled: bool) -> ApiKey: ...

    async def delete_key(self, key_id: str) -> None: ...

    async def overview(self, key_id: str) -> KeyOverview: ...

    async def usage_history(self, key_id: str, days: int) -> tuple[DailyUsage, ...]: ...

    async def overviews(self, key_ids: Sequence[str]) -> Sequence[KeyOverview]:
        """The overviews of these keys in their order; a key id with no key is left out."""
        ...


class KeyService:
    """Create, read, list, update, toggle, delete and inspect API keys."""

    def __init__(self, store: KeyStore) -> None:
        self._store = store

    async def create(self, spec: KeySpec) -> tuple[ApiKey, str]:
        """The new key and its secret (returned this once, never stored)."""
        spec = validate_spec(spec)
        minted = secrets.new_secret()
        key = await self._store.create_key(
            spec, minted.key_id, minted.key_hash, minted.masked, legacy=False
        )
        return key, minted.secret

    async def import_legacy(self, secret: str, spec: KeySpec) -> ApiKey:
        if not secret:
            raise InvalidArgument("secret", "is required")
        if secrets.looks_like_ours(secret):
            raise InvalidArgument("secret", "is an aigw secret, not a legacy one")
        if not secrets.is_plausible_legacy_secret(secret):
            raise InvalidArgument(
                "secret", "must be 8-512 printable ASCII characters without spaces or commas"
            )
        if spec.limits.any:
            raise FailedPrecondition(LEGACY_LIMITS_MESSAGE)
        spec = validate_spec(spec)
        return await self._store.create_key(
            spec,
            secrets.new_key_id(),
            secrets.hash_secret(secret),
            secrets.mask_secret(secret),
            legacy=True,
        )

    async def get(self, key_id: str) -> ApiKey:
        return await self._store.get_key(validate_key_id(key_id))

    async def list(
        self,
        key_filter: KeyFilter,
        page_size: int = 0,
        page_token: str = "",
        view: KeyView = KeyView.BASIC,
    ) -> KeyPage:
        """One page of keys; with usage, each key's overview too."""
        page_size = validate_page_size(page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        key_filter = KeyFilter(
            workspace=validate_workspace(key_filter.workspace) if key_filter.workspace else "",
            project=validate_ident(key_filter.project, "project", optional=True),
            environment=validate_ident(key_filter.environment, "environment", optional=True),
            status=key_filter.status,
            name_contains=validate_name_contains(key_filter.name_contains),
        )
        if view is KeyView.BASIC:
            keys, token = await self._store.list_keys(key_filter, page_size, page_token)
            return KeyPage(tuple(keys), token)
        ids, token = await self._store.list_key_ids(key_filter, page_size, page_token)
        # The page shows each key as its overview read it (one instant for both); a
        # key deleted, or changed out of the filter, since the listing is left out.
        overviews = tuple(
            ov for ov in await self._store.overviews(ids) if key_filter.matches(ov.key)
        )
        return KeyPage(tuple(ov.key for ov in overviews), token, overviews)

    async def update(self, key_id: str, update: KeyUpdate) -> ApiKey:
        key_id = validate_key_id(key_id)
        if not update.fields:
            raise InvalidArgument("update_mask", "names no field to update")
        return await self._store.update_key(key_id, validate_update(update))

    async def rotate_secret(self, key_id: str, grace_period_s: int = 0) -> tuple[ApiKey, str]:
        """A new secret for the same key (returned this once); the old one works
        for ``grace_period_s`` more seconds, then stops."""
        key_id = validate_key_id(key_id)
        if not 0 <= grace_period_s <= MAX_GRACE_PERIOD_S:
            raise InvalidArgument(
                "grace_period_s", f"must be between 0 and {MAX_GRACE_PERIOD_S} (30 days)"
            )
        minted = secrets.new_secret(key_id)
        key = await self._store.rotate_secret(
            key_id, minted.key_hash, minted.masked, grace_period_s * 1000
        )
        return key, minted.secret

    async def set_enabled(self, key_id: str, enabled: bool) -> ApiKey:
        return await self._store.set_enabled(validate_key_id(key_id), enabled)

    async def delete(self, key_id: str) -> None:
        await self._store.delete_key(validate_key_id(key_id))

    async def overview(self, key_id: str) -> KeyOverview:
        return await self._store.overview(validate_key_id(key_id))

    async def usage_history(self, key_id: str, days: int = 0) -> tuple[DailyUsage, ...]:
        """Usage per UTC day, the last ``days`` days to today (the store's clock), oldest
        first; a day without usage is zeros. ``days``: 1..HISTORY_DAYS, 0 for the default."""
        key_id = validate_key_id(key_id)
        return await self._store.usage_history(key_id, validate_history_days(days))
