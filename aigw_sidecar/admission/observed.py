"""The admission service as the server runs it: outcomes observed, budget alerts published.

``ObservedAdmissionService`` is an ``AdmissionService`` that tells an observer
(the metrics, in ``server/``) about every decision, usage report and release,
and hands the budget crossings a usage report returns to ``BudgetAlerts``. The
observer is called synchronously and must be cheap: it sits on the hot path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aigw_sidecar.admission.decision import (
    Decision,
    DenyReason,
    Estimate,
    UsageReport,
    UsageResult,
)
from aigw_sidecar.admission.recovery import UnknownOutcomes
from aigw_sidecar.admission.service import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    AdmissionService,
    AdmissionStore,
    no_pricing,
)
from aigw_sidecar.limits.alerts import BudgetAlerts
from aigw_sidecar.pricing.table import PriceTable

log = logging.getLogger(__name__)


class AdmissionObserver:
    """What an observer may hear about; every method does nothing by default."""

    def decided(self, decision: Decision) -> None:
        """One Authorize (or ext_authz Check) decision."""

    def recorded(self, report: UsageReport, result: UsageResult) -> None:
        """One RecordUsage, counted or a duplicate."""

    def released(self, released: bool) -> None:
        """One ReleaseReservation; ``released``: an open reservation was closed."""


class ObservedAdmissionService(AdmissionService):
    def __init__(
        self,
        store: AdmissionStore,
        pricing: Callable[[], PriceTable | None] = no_pricing,
        *,
        observer: AdmissionObserver | None = None,
        alerts: BudgetAlerts | None = None,
        default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
        unknown_outcomes: UnknownOutcomes | None = None,
        refuse_unpriced_models: bool = True,
    ) -> None:
        super().__init__(
            store, pricing, default_max_output_tokens, unknown_outcomes, refuse_unpriced_models
        )
        self._observer = observer or AdmissionObserver()
        self._alerts = alerts

    async def authorize(
        self,
        secret: str,
        request_id: str = "",
        estimate: Estimate | None = None,
        model: str = "",
        own_request_id: bool = False,
    ) -> Decision:
        decision = await super().authorize(secret, request_id, estimate, model, own_request_id)
        self._observer.decided(decision)
        if decision.deny_reason is not None and log.isEnabledFor(logging.DEBUG):
            log.debug("denied: %s (key %s)", decision.deny_reason, decision.key_id or "-")
        return decision

    def refuse(self, reason: DenyReason) -> Decision:
        # Counted like every other decision, though no authorize ran (issue 8).
        decision = super().refuse(reason)
        self._observer.decided(decision)
        return decision

    async def record_usage(self, report: UsageReport) -> UsageResult:
        result = await super().record_usage(report)
        self._observer.recorded(report, result)
        if result.alerts and self._alerts is not None:
            await self._alerts.publish(result.alerts)
        return result

    async def release_reservation(self, key_id: str, request_id: str) -> bool:
        released = await super().release_reservation(key_id, request_id)
        self._observer.released(released)
        return released
