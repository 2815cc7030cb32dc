"""The metrics themselves: every Prometheus collector of one process, on its own registry.

Hot path: every label combination that admission can hit is bound once, up front
(decisions by deny reason, RPC and store latencies by name), so an Authorize
costs two ``perf_counter`` calls, one histogram observation per layer and one
counter increment, with no allocation for labels.

Label sets are bounded. Workspace and project come from validated identifiers,
but there can be many: each process labels the first ``label_cap`` pairs it sees
and counts the rest as ``workspace="other", project="other"``. Key ids are never
a label unless ``key_id_cap`` > 0 (an operator's opt-in); then the first
``key_id_cap`` key ids seen get ``aigw_key_*`` series and the rest ``"other"``.
Secrets never reach a metric: no label is built from request input other than
those validated identifiers.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from aigw_sidecar.admission.decision import Decision, DenyReason, UsageReport, UsageResult
from aigw_sidecar.admission.observed import AdmissionObserver

DEFAULT_LABEL_CAP = 100
OTHER = "other"
# Sub-millisecond to the store timeout and beyond.
LATENCY_BUCKETS_S = (
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)
STORE_OPS = ("authorize", "resolve_legacy", "record_usage", "release_reservation", "ping")
RESERVATION_EVENTS = ("reserved", "settled", "released", "expired")


class Metrics(AdmissionObserver):
    """Every metric of one process, with its hot label children bound up front."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        label_cap: int = DEFAULT_LABEL_CAP,
        key_id_cap: int = 0,
        fail_mode: str = "closed",
    ) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        reg = self.registry
        self._label_cap = label_cap
        self._key_id_cap = key_id_cap

        self.decisions = Counter(
            "aigw_decisions", "Admission decisions (Authorize and ext_authz Check)",
            ["result", "reason"], registry=reg,
        )
        self._allowed = self.decisions.labels("allowed", "")
        self._denied = {r: self.decisions.labels("denied", r.value) for r in DenyReason}

        self.rpc_latency = Histogram(
            "aigw_rpc_duration_seconds", "Server-side latency of each RPC, by method",
            ["rpc"], buckets=LATENCY_BUCKETS_S, registry=reg,
        )
        self.rpc_errors = Counter(
            "aigw_rpc_errors", "RPCs that ended with a non-OK status, by method and code",
            ["rpc", "code"], registry=reg,
        )
        self.store_latency = Histogram(
            "aigw_store_duration_seconds", "Store round trips of the admission path, by operation",
            ["op"], buckets=LATENCY_BUCKETS_S, registry=reg,
        )
        self.store_errors = Counter(
            "aigw_store_errors", "Store calls that failed (unreachable or timed out), by operation",
            ["op"], registry=reg,
        )
        self.store_ops = {
            op: (self.store_latency.labels(op), self.store_errors.labels(op)) for op in STORE_OPS
        }
        self.store_up = Gauge(
            "aigw_store_up", "1 while the store answers the health ping, else 0",
            registry=reg, multiprocess_mode="livemin",
        )
        self.fail_mode = Gauge(
            "aigw_store_fail_mode",
            "How ext_authz Check answers while the store is unreachable (1 = in force)",
            ["mode"], registry=reg, multiprocess_mode="livemax",
        )
        for mode in ("closed", "open"):
            self.fail_mode.labels(mode).set(1 if mode == fail_mode else 0)

        self.reservations = Counter(
            "aigw_reservations",
            "Budget reservations: reserved by Authorize, settled by RecordUsage, released, "
            "or expired (counted by the key's next RecordUsage)",
            ["event"], registry=reg,
        )
        self._reserved, self._settled, self._released, self._expired = (
            self.reservations.labels(e) for e in RESERVATION_EVENTS
        )
        self.usage_reports = Counter(
            "aigw_usage_reports", "RecordUsage reports: counted, or a repeated request id",
            ["result"], registry=reg,
        )
        self._counted = self.usage_reports.labels("counted")
        self._duplicate = self.usage_reports.labels("duplicate")
        self.usage_tokens = Counter(
            "aigw_usage_tokens", "Tokens recorded (prompt + completion), by workspace and project",
            ["workspace", "project"], registry=reg,
        )
        self.usage_cost = Counter(
            "aigw_usage_cost_micro_usd", "Cost recorded in micro-USD, by workspace and project",
            ["workspace", "project"], registry=reg,
        )
        self._usage: dict[str, dict[str, tuple[Counter, Counter]]] = {}
        self._usage_pairs = 0
        self._usage_other = (
            self.usage_tokens.labels(OTHER, OTHER), self.usage_cost.labels(OTHER, OTHER)
        )
        self.usage_fallbacks = Counter(
            "aigw_usage_fallbacks",
            "Proxied requests charged their estimate because their usage could not be read,"
            " by cause", ["cause"], registry=reg,
        )
        self.alerts = Counter(
            "aigw_budget_alerts", "Budget alert events raised by this process, by type",
            ["type"], registry=reg,
        )
        self.webhook = Counter(
            "aigw_alert_webhook_deliveries", "Alert webhook deliveries, by result",
            ["result"], registry=reg,
        )
        self.key_decisions: Counter | None = None
        self.key_cost: Counter | None = None
        self._keys: dict[str, tuple[Counter, Counter, Counter]] = {}
        if key_id_cap > 0:
            self.key_decisions = Counter(
                "aigw_key_decisions",
                f"Decisions per key id (opt-in; first {key_id_cap} key ids, the rest 'other')",
                ["key_id", "result"], registry=reg,
            )
            self.key_cost = Counter(
                "aigw_key_usage_cost_micro_usd",
                f"Cost per key id in micro-USD (opt-in; first {key_id_cap} key ids)",
                ["key_id"], registry=reg,
            )

    # --- AdmissionObserver ------------------------------------------------------

    def decided(self, decision: Decision) -> None:
        reason = decision.deny_reason
        if reason is None:
            self._allowed.inc()
            if decision.reservation is not None:
                self._reserved.inc()
        else:
            self._denied[reason].inc()
        if self._key_id_cap and decision.key_id:
            allowed, denied, _cost = self._key_children(decision.key_id)
            (allowed if reason is None else denied).inc()

    def recorded(self, report: UsageReport, result: UsageResult) -> None:
        if not result.counted:
            self._duplicate.inc()
            return
        self._counted.inc()
        tokens, cost = self._usage_children(result.workspace, result.project)
        tokens.inc(report.prompt_tokens + report.completion_tokens)
        cost.inc(result.cost_micro_usd)
        if self._key_id_cap:
            self._key_children(report.key_id)[2].inc(result.cost_micro_usd)
        if result.settled_reservation:
            self._settled.inc()
        if result.expired_reservations:
            self._expired.inc(result.expired_reservations)
        for event in result.alerts:
            self.alerts.labels(event.type.value).inc()

    def released(self, released: bool) -> None:
        if released:
            self._released.inc()

    # --- bounded label children -------------------------------------------------

    def _usage_children(self, workspace: str, project: str) -> tuple[Counter, Counter]:
        by_project = self._usage.get(workspace)
        if by_project is not None:
            pair = by_project.get(project)
            if pair is not None:
                return pair
        if self._usage_pairs >= self._label_cap:
            return self._usage_other
        self._usage_pairs += 1
        pair = (
            self.usage_tokens.labels(workspace, project),
            self.usage_cost.labels(workspace, project),
        )
        self._usage.setdefault(workspace, {})[project] = pair
        return pair

    def _key_children(self, key_id: str) -> tuple[Counter, Counter, Counter]:
        children = self._keys.get(key_id)
        if children is None:
            label = key_id if len(self._keys) < self._key_id_cap else OTHER
            children = self._keys.get(label)
            if children is None:
                assert self.key_decisions is not None and self.key_cost is not None
                children = (
                    self.key_decisions.labels(label, "allowed"),
                    self.key_decisions.labels(label, "denied"),
                    self.key_cost.labels(label),
                )
                self._keys[label] = children
        return children

    def usage_fallback(self, cause: str) -> None:
        self.usage_fallbacks.labels(cause=cause).inc()

    def store_state(self, up: bool) -> None:
        self.store_up.set(1 if up else 0)

    def webhook_result(self, result: str) -> None:
        self.webhook.labels(result).inc()
