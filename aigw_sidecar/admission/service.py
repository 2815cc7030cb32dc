"""The admission service: turn a secret into a decision with at most one store call.

Malformed secrets (bad prefix, length or checksum) are refused here, before the
store; a well-formed secret carries its key id, so the decision is one script.
Legacy secrets carry no key id and cost one extra lookup of their key hash.
"""

from __future__ import annotations

import re
from typing import Protocol

from aigw_sidecar.admission.decision import Decision, DenyReason, UsageReport, UsageResult
from aigw_sidecar.errors import InvalidArgument
from aigw_sidecar.keys import secrets
from aigw_sidecar.keys.money import MAX_MICRO_USD

MAX_TOKENS_PER_REPORT = 10**12
_REQUEST_ID_RE = re.compile(r"^[\x21-\x7e]{1,128}$")


class AdmissionStore(Protocol):
    async def authorize(self, key_id: str, key_hash: str) -> Decision: ...

    async def resolve_legacy(self, key_hash: str) -> str | None: ...

    async def record_usage(self, report: UsageReport) -> UsageResult: ...


class AdmissionService:
    """Authorize and RecordUsage, independent of any transport."""

    def __init__(self, store: AdmissionStore) -> None:
        self._store = store

    async def authorize(self, secret: str) -> Decision:
        if not secret:
            return Decision.deny(DenyReason.KEY_MISSING)
        key_id = secrets.parse_key_id(secret)
        key_hash = secrets.hash_secret(secret) if key_id or _legacy_shaped(secret) else ""
        if key_id is None:
            if not key_hash:
                return Decision.deny(DenyReason.KEY_MALFORMED)
            key_id = await self._store.resolve_legacy(key_hash)
            if key_id is None:
                return Decision.deny(DenyReason.KEY_UNKNOWN)
        return await self._store.authorize(key_id, key_hash)

    async def record_usage(self, report: UsageReport) -> UsageResult:
        validate_usage(report)
        return await self._store.record_usage(report)


def _legacy_shaped(secret: str) -> bool:
    return not secrets.looks_like_ours(secret) and secrets.is_plausible_legacy_secret(secret)


def validate_usage(report: UsageReport) -> None:
    if not report.key_id:
        raise InvalidArgument("key_id", "is required")
    if not secrets.is_valid_key_id(report.key_id):
        raise InvalidArgument("key_id", "is not a key id (key_ followed by 20 characters)")
    if not _REQUEST_ID_RE.match(report.request_id):
        raise InvalidArgument(
            "request_id", "is required: 1-128 printable ASCII characters without spaces"
        )
    for name, value in (
        ("prompt_tokens", report.prompt_tokens),
        ("completion_tokens", report.completion_tokens),
    ):
        if not 0 <= value <= MAX_TOKENS_PER_REPORT:
            raise InvalidArgument(name, f"must be between 0 and {MAX_TOKENS_PER_REPORT}")
    if not 0 <= report.cost_micro_usd <= MAX_MICRO_USD:
        raise InvalidArgument("cost_micro_usd", f"must be between 0 and {MAX_MICRO_USD}")
