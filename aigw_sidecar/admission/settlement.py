"""Settling a request admitted at the proxy: charge its usage, its estimate, or nothing.

The Envoy path has two halves that never share a Python object: ext_authz admits
the request (and reserves its estimate) and hands an ``AdmittedRequest`` to Envoy
as dynamic metadata; when the request has ended, completely or not, Envoy's
access log brings it back with the usage the proxy read from the response, and
``UsageSettler.settle`` runs exactly once for it. The rule for what is charged is
``bodies.settlement``. A request charged its estimate because its usage could
not be read is counted by cause and logged once per key and cause.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import secrets as random_tokens
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from aigw_sidecar.admission.bodies import Settlement, Usage, settlement
from aigw_sidecar.admission.decision import Estimate, Reservation, UsageReport
from aigw_sidecar.admission.recovery import UnknownOutcomes
from aigw_sidecar.admission.service import AdmissionService
from aigw_sidecar.errors import InvalidArgument, StoreUnavailable
from aigw_sidecar.keys import secrets
from aigw_sidecar.pricing.table import ModelPrice

log = logging.getLogger(__name__)

_PROXY_ID_RE = re.compile(r"^[\x21-\x7e]{1,100}\Z")
STORE_RETRY_DELAY_S = 0.2
# (key id, cause) pairs already logged; forgotten all at once when full.
MAX_LOGGED_FALLBACKS = 10_000


class FallbackCause:
    """Why a request was charged its estimate instead of its usage."""

    NO_USAGE = "no_usage"  # a 2xx whose body held no usage (cut short, or none reported)
    CLIENT_LEFT = "client_left"  # no response: the client left while the upstream ran
    ENCODING = "content_encoding"  # a response body the proxy could not decode
    REWRITE = "rewrite_failed"  # the proxy could not ask a stream for its usage
    UNPRICED = "unpriced_model"  # usage of a model the price table has no price for


# A suffix unique to this process (random, 32 bits) and to each call (a counter):
# no two admissions share a request id, without a random draw per request.
_SUFFIX_PREFIX = random_tokens.token_hex(4)
_suffix_counter = itertools.count()


def _new_suffix_prefix() -> None:  # a forked child must not repeat its parent's ids
    global _SUFFIX_PREFIX
    _SUFFIX_PREFIX = random_tokens.token_hex(4)


os.register_at_fork(after_in_child=_new_suffix_prefix)


def proxy_request_id(x_request_id: str) -> str:
    """The request id a proxied request reserves and settles under.

    The proxy's ``x-request-id`` (Envoy's, or a client's when Envoy keeps it) plus
    a suffix no other admission has: a client that sends the same ``x-request-id``
    twice must not replace its first reservation, nor have its second usage
    ignored as a retry.
    """
    base = x_request_id.strip()
    if not _PROXY_ID_RE.match(base) or secrets.looks_like_ours(base):
        base = random_tokens.token_hex(16)
    return f"{base}.{_SUFFIX_PREFIX}{next(_suffix_counter):x}"


@dataclass(frozen=True, slots=True)
class AdmittedRequest:
    """What admission knew about a request, carried to whoever settles it."""

    key_id: str
    request_id: str
    estimate: Estimate | None = None
    reservation: Reservation | None = None  # None: nothing was reserved


class UsageSettler:
    """Turns the end of one proxied response into one RecordUsage or one release."""

    def __init__(
        self,
        service: AdmissionService,
        on_fallback: Callable[[str], None] | None = None,
        unknown_outcomes: UnknownOutcomes | None = None,
        trust_upstream_cost: bool = False,
        unpriced_fallback: ModelPrice | None = None,
    ) -> None:
        """Args:
        unknown_outcomes: where a settlement the store did not take is tried again
            until it does (None: left to the reservation's lease).
        trust_upstream_cost: charge the cost the upstream reported for a request
            (when it reports one) instead of pricing its tokens with the table.
        unpriced_fallback: the price of usage whose model the table does not know
            (known only from the response); None: its reserved cost, else what the
            table's unknown_model policy says. Counted and logged once per model.
        """
        self._trust_upstream_cost = trust_upstream_cost
        self._unpriced_fallback = unpriced_fallback
        self._service = service
        self._unknown = unknown_outcomes
        self._on_fallback = on_fallback or (lambda cause: None)
        self._logged: set[tuple[str, str]] = set()
        self.counts: Counter[str] = Counter()  # settlements and failures, by name

    async def settle(
        self,
        admitted: AdmittedRequest,
        status: int | None,
        usage: Usage | None,
        upstream_started: bool = True,
        unreadable: str = "",
    ) -> Settlement:
        """Settle once; a store that stays unreachable leaves the lease to expire.

        Args:
            upstream_started: the upstream got the whole request.
            unreadable: a ``FallbackCause`` the proxy reported, "" when none.
        """
        outcome = settlement(status, usage, upstream_started)
        if outcome is Settlement.CHARGE_ESTIMATE:
            self._fallback(admitted.key_id, unreadable or (
                FallbackCause.CLIENT_LEFT if status is None else FallbackCause.NO_USAGE
            ))
        for attempt in (1, 2):
            try:
                await self._apply(admitted, outcome, usage)
                break
            except StoreUnavailable:
                if attempt == 2:
                    self.counts["store_unavailable"] += 1
                    if self._unknown is not None:
                        self._unknown.retry_later(
                            admitted.key_id, admitted.request_id,
                            lambda: self._apply(admitted, outcome, usage),
                        )
                        log.warning("usage of request %s on key %s not settled yet: store "
                                    "unavailable; tried again when it answers",
                                    admitted.request_id, admitted.key_id)
                    else:
                        log.error("usage of request %s on key %s not settled: store "
                                  "unavailable; its reservation expires with its lease",
                                  admitted.request_id, admitted.key_id)
                    return outcome
                await asyncio.sleep(STORE_RETRY_DELAY_S)
        self.counts[outcome.value] += 1
        return outcome

    def _unpriced(self, admitted: AdmittedRequest, model: str, usage: Usage) -> int | None:
        """The cost of usage whose model has no price: the fallback price, else what
        was reserved, else None (the table's unknown_model policy decides)."""
        self.counts[f"fallback_{FallbackCause.UNPRICED}"] += 1
        self._on_fallback(FallbackCause.UNPRICED)
        if ("", model) not in self._logged:
            if len(self._logged) >= MAX_LOGGED_FALLBACKS:
                self._logged.clear()
            self._logged.add(("", model))
            log.warning("usage of model %r has no price (logged once per model); charged %s",
                        model[:64], "the fallback price" if self._unpriced_fallback
                        else "its reserved cost, or what unknown_model says")
        if self._unpriced_fallback is not None:
            return self._unpriced_fallback.cost_micro_usd(
                usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens
            )
        reserved = admitted.reservation.cost_micro_usd if admitted.reservation else 0
        return reserved or None

    def _fallback(self, key_id: str, cause: str) -> None:
        self.counts[f"fallback_{cause}"] += 1
        self._on_fallback(cause)
        if (key_id, cause) in self._logged:
            return
        if len(self._logged) >= MAX_LOGGED_FALLBACKS:
            self._logged.clear()
        self._logged.add((key_id, cause))
        log.warning("key %s: a request's usage could not be read (%s); charged its "
                    "estimate (logged once per key and cause)", key_id, cause)

    async def _apply(
        self, admitted: AdmittedRequest, outcome: Settlement, usage: Usage | None
    ) -> None:
        if outcome is Settlement.RELEASE:
            # Even without a reservation: a key with max parallel requests holds a
            # slot under the request id, and a release frees it (cheap, idempotent).
            await self._service.release_reservation(admitted.key_id, admitted.request_id)
            return
        report = self._report(admitted, outcome, usage)
        if report is None:
            await self._service.release_reservation(admitted.key_id, admitted.request_id)
            return
        try:
            await self._service.record_usage(report)
        except InvalidArgument as exc:
            # The pricing table refuses the model. The request already ran: count
            # its tokens at the reserved cost (or nothing) rather than lose them.
            self.counts["unpriced_model"] += 1
            log.warning("request %s on key %s: %s; charged its reserved cost instead",
                        admitted.request_id, admitted.key_id, exc)
            reserved = admitted.reservation.cost_micro_usd if admitted.reservation else 0
            await self._service.record_usage(replace(report, cost_micro_usd=reserved))

    def _report(
        self, admitted: AdmittedRequest, outcome: Settlement, usage: Usage | None
    ) -> UsageReport | None:
        model = admitted.estimate.model if admitted.estimate else ""
        if outcome is Settlement.CHARGE_USAGE and usage is not None:
            # Priced by the pricing table, unless the upstream's own figure is trusted.
            cost = usage.reported_cost_micro_usd if self._trust_upstream_cost else None
            charged_model = model or usage.model
            if cost is None and charged_model and not self._service.priced(charged_model):
                cost = self._unpriced(admitted, charged_model, usage)
            return UsageReport(
                key_id=admitted.key_id,
                request_id=admitted.request_id,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cost_micro_usd=cost,
                model=charged_model,
                cached_prompt_tokens=usage.cached_prompt_tokens,
            )
        if admitted.estimate is None:  # nothing known: nothing to charge
            return None
        reserved_cost = admitted.reservation.cost_micro_usd if admitted.reservation else 0
        return UsageReport(
            key_id=admitted.key_id,
            request_id=admitted.request_id,
            prompt_tokens=admitted.estimate.prompt_tokens,
            completion_tokens=admitted.estimate.max_output_tokens,
            # Exactly what was held, so the settlement changes nothing but its label.
            cost_micro_usd=reserved_cost or None,
            model=model,
        )
