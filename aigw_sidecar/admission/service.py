"""The admission service: turn a secret into a decision with at most one store call.

Malformed secrets (bad prefix, length or checksum) are refused here, before the
store; a well-formed secret carries its key id, so the decision is one script.
Legacy secrets carry no key id and cost one extra lookup of their key hash.

An Authorize may carry an estimate (model, prompt and max output tokens, or a
cost); on a key with a token, tokens-per-minute or cost limit the estimate is
reserved in the same script, and RecordUsage (or ReleaseReservation) settles it.
On a key with max parallel requests the admitted request holds a slot under its
request id (made here when the caller gave none, and returned in the decision)
until the same calls free it. The model (given, or the estimate's) is checked
against the key's allowed models in the same script.
"""

from __future__ import annotations

import asyncio
import re
import secrets as random_tokens
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from aigw_sidecar.admission.decision import (
    Decision,
    DenyReason,
    Estimate,
    UsageReport,
    UsageResult,
)
from aigw_sidecar.admission.recovery import UnknownOutcomes
from aigw_sidecar.errors import InvalidArgument, StoreUnavailable
from aigw_sidecar.keys import secrets
from aigw_sidecar.keys.model import MODEL_NAME_RE, validate_key_id
from aigw_sidecar.keys.money import MAX_MICRO_USD
from aigw_sidecar.pricing.table import PriceTable

MAX_TOKENS_PER_REPORT = 10**12
# What a proxied request that sets no max_tokens reserves for its output when the
# price table does not know its model's own cap (--default-max-output-tokens).
DEFAULT_MAX_OUTPUT_TOKENS = 4096
_REQUEST_ID_RE = re.compile(r"^[\x21-\x7e]{1,128}\Z")


class AdmissionStore(Protocol):
    async def authorize(
        self,
        key_id: str,
        key_hash: str,
        request_id: str = "",
        tokens: int | None = None,
        cost_micro_usd: int | None = None,
        model: str = "",
        model_unpriced: bool = False,
    ) -> Decision: ...

    async def resolve_legacy(self, key_hash: str) -> str | None: ...

    async def record_usage(self, report: UsageReport) -> UsageResult: ...

    async def release_reservation(self, key_id: str, request_id: str) -> bool: ...


def no_pricing() -> PriceTable | None:
    return None


class AdmissionService:
    """Authorize, RecordUsage and ReleaseReservation, independent of any transport."""

    def __init__(
        self,
        store: AdmissionStore,
        pricing: Callable[[], PriceTable | None] = no_pricing,
        default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
        unknown_outcomes: UnknownOutcomes | None = None,
        refuse_unpriced_models: bool = True,
    ) -> None:
        """Args:
        pricing: the price table in force (it may be reloaded), or None without one.
        default_max_output_tokens: see ``output_bound``.
        unknown_outcomes: where an Authorize that timed out under a request id the
            sidecar made is released once the store answers again (None: left to
            its lease).
        refuse_unpriced_models: on a key with a cost limit, refuse a request whose
            model is known before it runs and has no price (``model_not_priced``).
        """
        self._store = store
        self._pricing = pricing
        self._default_max_output_tokens = default_max_output_tokens
        self._unknown = unknown_outcomes
        self._refuse_unpriced = refuse_unpriced_models

    def priced(self, model: str) -> bool:
        """False when ``model`` names a model the price table in force has no price for
        (no table at all: no model is priced); True for no model (nothing to tell)."""
        if not model:
            return True
        table = self._pricing()
        return table is not None and table.price_of(model) is not None

    def output_bound(self, model: str) -> int:
        """The output tokens a request that sets no bound is reserved for.

        The model's own cap from the price table when it lists one, else the
        sidecar's default: so a budget is overshot by at most the requests in
        flight, each by a bounded amount.
        """
        table = self._pricing()
        price = table.price_of(model) if table is not None and model else None
        if price is not None and price.max_output_tokens is not None:
            return price.max_output_tokens
        return self._default_max_output_tokens

    async def authorize(
        self,
        secret: str,
        request_id: str = "",
        estimate: Estimate | None = None,
        model: str = "",
        own_request_id: bool = False,
    ) -> Decision:
        """Args:
        model: what the allowed models are checked against; "" means the estimate's.
        own_request_id: ``request_id`` was made by the sidecar (the proxy adapter's),
            never given to a caller who could retry with it.
        """
        if estimate is not None:
            validate_estimate(request_id, estimate)
        elif request_id:
            _check_request_id(request_id)
        _check_model("model", model)
        model = model or (estimate.model if estimate is not None else "")
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
        # Used only if the request ends up holding a parallel-request slot.
        if not request_id:
            request_id, own_request_id = new_request_id(), True
        unpriced = self._refuse_unpriced and not self.priced(model)
        try:
            if estimate is None:
                return await self._store.authorize(
                    key_id, key_hash, request_id, model=model, model_unpriced=unpriced
                )
            return await self._store.authorize(
                key_id, key_hash, request_id, estimate.tokens, self._estimated_cost(estimate),
                model=model, model_unpriced=unpriced,
            )
        except (StoreUnavailable, asyncio.CancelledError):
            # Timed out, or the caller gave up while the script was on its way: it may
            # run (or have run) all the same, so what it holds is released.
            if own_request_id:
                self.release_unknown(key_id, request_id)
            raise

    def release_unknown(self, key_id: str, request_id: str) -> None:
        """An admission under a request id the sidecar made, whose answer nobody got.

        Its reservation and parallel slot are released once the store answers (see
        ``recovery.py``); without ``unknown_outcomes`` they are left to their lease.
        """
        if self._unknown is not None:
            self._unknown.release_later(
                key_id, request_id, _releaser(self._store, key_id, request_id)
            )

    def refuse(self, reason: DenyReason) -> Decision:
        """A denial a transport decided before any authorize (e.g. a malformed header)."""
        return Decision.deny(reason)

    def _estimated_cost(self, estimate: Estimate) -> int | None:
        if estimate.cost_micro_usd is not None:
            return estimate.cost_micro_usd
        table = self._pricing()
        if table is None or not estimate.model:
            return None
        try:
            return table.quote(
                estimate.model, estimate.prompt_tokens, estimate.max_output_tokens
            ).cost_micro_usd
        except InvalidArgument:
            return None  # an unpriced model reserves tokens only

    async def record_usage(self, report: UsageReport) -> UsageResult:
        validate_usage(report)
        if report.cost_micro_usd is None:
            report = self._priced(report)
        return await self._store.record_usage(report)

    def _priced(self, report: UsageReport) -> UsageReport:
        table = self._pricing()
        if table is None or not report.model:
            return replace(report, cost_micro_usd=0, unpriced_model=bool(report.model))
        quote = table.quote(
            report.model,
            report.prompt_tokens,
            report.completion_tokens,
            report.cached_prompt_tokens,
        )
        return replace(
            report, cost_micro_usd=quote.cost_micro_usd, unpriced_model=not quote.known_model
        )

    async def release_reservation(self, key_id: str, request_id: str) -> bool:
        validate_key_id(key_id)
        _check_request_id(request_id)
        return await self._store.release_reservation(key_id, request_id)


def _releaser(store: AdmissionStore, key_id: str, request_id: str) -> Callable[[], Any]:
    return lambda: store.release_reservation(key_id, request_id)


def new_request_id() -> str:
    """A request id made by the sidecar for an Authorize that gave none."""
    return "req_" + random_tokens.token_hex(12)


def _legacy_shaped(secret: str) -> bool:
    return not secrets.looks_like_ours(secret) and secrets.is_plausible_legacy_secret(secret)


def _check_request_id(request_id: str, field: str = "request_id") -> None:
    if not _REQUEST_ID_RE.match(request_id):
        raise InvalidArgument(
            field, "is required: 1-128 printable ASCII characters without spaces"
        )
    if secrets.looks_like_ours(request_id):
        # Request ids are stored; a secret pasted here must never be.
        raise InvalidArgument(field, "must not be an API key secret")


def _check_count(field: str, value: int) -> None:
    if not 0 <= value <= MAX_TOKENS_PER_REPORT:
        raise InvalidArgument(field, f"must be between 0 and {MAX_TOKENS_PER_REPORT}")


def _check_model(field: str, model: str) -> None:
    if model and not MODEL_NAME_RE.match(model):
        raise InvalidArgument(field, "must be 1-128 printable ASCII characters without spaces")
    if secrets.looks_like_ours(model):
        # Models are stored (usage per model) and named in pricing errors.
        raise InvalidArgument(field, "must not be an API key secret")


def validate_estimate(request_id: str, estimate: Estimate) -> None:
    _check_request_id(request_id)
    _check_model("estimate.model", estimate.model)
    _check_count("estimate.prompt_tokens", estimate.prompt_tokens)
    _check_count("estimate.max_output_tokens", estimate.max_output_tokens)
    if estimate.cost_micro_usd is not None and not 0 <= estimate.cost_micro_usd <= MAX_MICRO_USD:
        raise InvalidArgument(
            "estimate.cost_micro_usd", f"must be between 0 and {MAX_MICRO_USD}"
        )


def validate_usage(report: UsageReport) -> None:
    validate_key_id(report.key_id)
    _check_request_id(report.request_id)
    _check_model("model", report.model)
    _check_count("prompt_tokens", report.prompt_tokens)
    _check_count("completion_tokens", report.completion_tokens)
    _check_count("cached_prompt_tokens", report.cached_prompt_tokens)
    if report.cached_prompt_tokens > report.prompt_tokens:
        raise InvalidArgument("cached_prompt_tokens", "must not exceed prompt_tokens")
    if report.cost_micro_usd is not None and not 0 <= report.cost_micro_usd <= MAX_MICRO_USD:
        raise InvalidArgument("cost_micro_usd", f"must be between 0 and {MAX_MICRO_USD}")
