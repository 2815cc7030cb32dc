"""The Grafana dashboard queries only metrics and labels a real sidecar exposes.

A sidecar process with metrics, per-key-id series and an alert webhook on goes
through a scripted run that makes every series the dashboard draws exist:
allowed and denied Authorize calls for several limit kinds, reservations settled
and released, usage of two workspaces, an ext_authz Check settled from an Envoy
access log entry without usage, a failed RPC and a delivered webhook. Its
``/metrics`` is then parsed with prometheus_client, and every metric name,
label name and literal label value in every PromQL expression of the dashboard
(panels and template variables) is looked up in that scrape.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aigw_sidecar.api.envoy.v3 import access_log_pb2 as log_pb
from aigw_sidecar.api.envoy.v3 import ext_authz_pb2 as authz_pb
from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1 import admission_pb2_grpc, keys_pb2_grpc
from aigw_sidecar.api.v1 import keys_pb2 as kpb
from aigw_sidecar.keys import secrets
from aigw_sidecar.server.ext_authz import CHECK_METHOD
from tests.limits.test_budget_alerts import WEBHOOK_SECRET, Receiver
from tests.server.test_ext_authz_servicer import check_request
from tests.servers import REPO, SidecarProcess, free_port

DASHBOARD = REPO / "clients" / "grafana" / "aigw-sidecar.json"
DATASOURCE_VARIABLE = "DS_PROMETHEUS"
# Labels Prometheus attaches to every series it scrapes; no exposition carries them.
TARGET_LABELS = frozenset({"job", "instance"})

# --- a small PromQL reader: names, not semantics ----------------------------------------

FUNCTIONS = frozenset({
    "sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile", "stddev",
    "rate", "irate", "increase", "delta", "histogram_quantile", "sort", "sort_desc",
    "clamp_min", "clamp_max", "abs", "round", "vector", "scalar", "time", "absent",
})
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset"})
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<braces>\{(?:[^}"]|"(?:[^"\\]|\\.)*")*\})
  | (?P<range>\[[^\]]*\])
  | (?P<op>==|!=|>=|<=|[-+*/%^<>(),])
""", re.VERBOSE)
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_LITERALS = re.compile(r"[A-Za-z0-9_]+(?:\|[A-Za-z0-9_]+)*")  # a regex that is a|b|c
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$", re.S)


@dataclass(frozen=True, slots=True)
class Matcher:
    label: str
    op: str
    value: str


@dataclass(frozen=True, slots=True)
class Selector:
    """One vector selector: ``metric{matchers}``, ``[range]`` when a range function reads it."""

    metric: str
    matchers: tuple[Matcher, ...]
    ranged: bool


@dataclass(frozen=True, slots=True)
class Query:
    selectors: tuple[Selector, ...]
    grouping: frozenset[str]  # labels of by/without/on/ignoring clauses
    functions: frozenset[str]


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot read {expr[pos:]!r} in {expr!r}")
        kind = str(match.lastgroup)
        if kind != "space":
            out.append((kind, match.group()))
        pos = match.end()
    return out


def _matchers(braces: str) -> tuple[Matcher, ...]:
    body, found, pos = braces[1:-1], [], 0
    while pos < len(body):
        match = _MATCHER.match(body, pos)
        if match is None:
            raise ValueError(f"cannot read the matchers {braces!r}")
        found.append(Matcher(match[1], match[2], match[3]))
        pos = match.end()
    return tuple(found)


def parse(expr: str) -> Query:
    """Selectors, grouping labels and functions of an expression; raises on what it cannot read."""
    tokens = _tokens(expr)
    selectors: list[Selector] = []
    grouping: set[str] = set()
    functions: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if kind == "braces":
            raise ValueError(f"a selector without a metric name in {expr!r}")
        if kind != "ident" or text in KEYWORDS:
            i += 1
            continue
        if text in FUNCTIONS and (nxt == ("op", "(") or nxt[1] in GROUPING):
            functions.add(text)  # sum(...), or an aggregation with its clause first
            i += 1
            continue
        if nxt == ("op", "("):
            if text not in GROUPING:
                raise ValueError(f"unknown function {text!r} in {expr!r}")
            i += 2
            while tokens[i] != ("op", ")"):
                if tokens[i][0] == "ident":
                    grouping.add(tokens[i][1])
                i += 1
            i += 1
            continue
        matchers: tuple[Matcher, ...] = ()
        i += 1
        if i < len(tokens) and tokens[i][0] == "braces":
            matchers = _matchers(tokens[i][1])
            i += 1
        ranged = i < len(tokens) and tokens[i][0] == "range"
        selectors.append(Selector(text, matchers, ranged))
    return Query(tuple(selectors), frozenset(grouping), frozenset(functions))


def variable_query(query: str) -> tuple[Query, str | None]:
    """A query variable's PromQL, and the label of ``label_values(expr, label)``."""
    found = _LABEL_VALUES.match(query)
    if found:
        return parse(found[1]), found[2]
    return parse(query), None


# --- the dashboard ----------------------------------------------------------------------


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, the ones inside collapsed rows too."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(dashboard) if p["type"] != "row"]


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, Query, str | None]]:
    """(where, parsed query, label_values label) of every panel target and query variable."""
    found: list[tuple[str, Query, str | None]] = []
    for panel in query_panels(dashboard):
        for target in panel["targets"]:
            found.append((f"panel {panel['title']!r}", parse(target["expr"]), None))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            found.append((f"variable {variable['name']!r}", *variable_query(text)))
    return found


# --- a real sidecar's scrape ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scrape:
    """Exposed sample names with the label sets seen on them, and their family's type."""

    labels: dict[str, list[dict[str, str]]]
    types: dict[str, str]

    @classmethod
    def of(cls, text: str) -> Scrape:
        labels: dict[str, list[dict[str, str]]] = {}
        types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels.setdefault(sample.name, []).append(dict(sample.labels))
                types[sample.name] = family.type
        return cls(labels, types)

    def label_names(self, name: str) -> set[str]:
        return {label for labels in self.labels.get(name, []) for label in labels}

    def label_values(self, name: str, label: str) -> set[str]:
        return {labels[label] for labels in self.labels.get(name, []) if label in labels}


def _scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


def _create(admin: keys_pb2_grpc.KeyManagementStub, workspace: str, project: str,
            limits: kpb.Limits, alerts: tuple[int, ...] = ()) -> kpb.CreateKeyResponse:
    reply: kpb.CreateKeyResponse = admin.CreateKey(kpb.CreateKeyRequest(
        name=f"g{uuid.uuid4().hex[:8]}", workspace=workspace, project=project,
        limits=limits, alert_thresholds_percent=list(alerts)), timeout=10)
    return reply


def _denied_for(admission: admission_pb2_grpc.AdmissionStub, secret: str) -> int:
    reply = admission.Authorize(adm.AuthorizeRequest(secret=secret), timeout=10)
    assert not reply.allowed
    return int(reply.deny_reason)


def _settle_a_check_from_an_access_log_entry_without_usage(
    channel: grpc.Channel, secret: str
) -> None:
    """Envoy's path: an allowed Check, then its 200 logged with no usage read (no_usage)."""
    check = channel.unary_unary(
        CHECK_METHOD,
        request_serializer=authz_pb.CheckRequest.SerializeToString,
        response_deserializer=authz_pb.CheckResponse.FromString,
    )
    reply = check(check_request(authorization=f"Bearer {secret}", x_request_id="g-rid-1"),
                  timeout=10)
    assert reply.HasField("ok_response")
    entry = log_pb.HTTPAccessLogEntry()
    entry.request.request_id = "g-rid-1"
    entry.common_properties.metadata.filter_metadata[
        "envoy.filters.http.ext_authz"].CopyFrom(reply.dynamic_metadata)
    entry.common_properties.time_to_last_upstream_tx_byte.nanos = 1000
    entry.response.response_code.value = 200
    stream = channel.stream_unary(
        "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs",
        request_serializer=log_pb.StreamAccessLogsMessage.SerializeToString,
        response_deserializer=log_pb.StreamAccessLogsResponse.FromString,
    )
    stream(iter([log_pb.StreamAccessLogsMessage(
        http_logs=log_pb.StreamAccessLogsMessage.HTTPAccessLogEntries(log_entry=[entry]))]),
        timeout=10)


def scripted_run(target: str) -> None:
    """Every series a panel draws, made to exist by what really produces it."""
    with grpc.insecure_channel(target) as channel:
        admin = keys_pb2_grpc.KeyManagementStub(channel)
        admission = admission_pb2_grpc.AdmissionStub(channel)
        web = _create(admin, "acme", "web", kpb.Limits(requests_per_minute=2, token_limit=1000),
                      alerts=(50,))
        batch = _create(admin, "globex", "batch", kpb.Limits(cost_limit_micro_usd=1000))
        tiny = _create(admin, "acme", "web", kpb.Limits(token_limit=5))
        proxied = _create(admin, "globex", "chat", kpb.Limits(max_parallel_requests=1))
        estimate = adm.Estimate(prompt_tokens=10, max_output_tokens=10)

        # Two admitted with a reservation: one settled (crossing 50 % of the token limit:
        # a budget alert, then a webhook delivery), one released; the third is over rpm.
        for request_id in ("w1", "w2"):
            assert admission.Authorize(adm.AuthorizeRequest(
                secret=web.secret, request_id=request_id, estimate=estimate), timeout=10).allowed
        usage = adm.RecordUsageRequest(key_id=web.key.key_id, request_id="w1",
                                       prompt_tokens=400, completion_tokens=200,
                                       cost_micro_usd=2500)
        assert admission.RecordUsage(usage, timeout=10).counted
        assert not admission.RecordUsage(usage, timeout=10).counted  # a retried report
        assert admission.ReleaseReservation(adm.ReleaseReservationRequest(
            key_id=web.key.key_id, request_id="w2"), timeout=10).released
        assert _denied_for(admission, web.secret) == adm.DENY_REASON_REQUESTS_PER_MINUTE

        # A used-up cost limit and a used-up token limit.
        assert admission.RecordUsage(adm.RecordUsageRequest(
            key_id=batch.key.key_id, request_id="b1", prompt_tokens=30, completion_tokens=20,
            cost_micro_usd=1000), timeout=10).counted
        assert _denied_for(admission, batch.secret) == adm.DENY_REASON_COST_LIMIT
        assert admission.RecordUsage(adm.RecordUsageRequest(
            key_id=tiny.key.key_id, request_id="t1", prompt_tokens=5, cost_micro_usd=7),
            timeout=10).counted
        assert _denied_for(admission, tiny.secret) == adm.DENY_REASON_TOKEN_LIMIT

        assert _denied_for(admission, secrets.new_secret().secret) == adm.DENY_REASON_KEY_UNKNOWN
        assert _denied_for(admission, "sk-aigw-nope") == adm.DENY_REASON_KEY_MALFORMED
        with pytest.raises(grpc.RpcError) as failed:
            admin.GetKey(kpb.GetKeyRequest(key_id="key_" + "0" * 22), timeout=10)
        assert failed.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)

        _settle_a_check_from_an_access_log_entry_without_usage(channel, proxied.secret)


@pytest.fixture(scope="module")
def scrape(valkey_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrape]:
    """The scrape of a sidecar (metrics, key-id series and a webhook on) after the scripted run."""
    folder = tmp_path_factory.mktemp("grafana")
    receiver = Receiver()
    port = free_port()
    sidecar = SidecarProcess(
        valkey_url, f"gf{uuid.uuid4().hex[:8]}",
        ["--metrics-listen", f"127.0.0.1:{port}", "--metrics-key-ids", "10",
         "--alert-webhook-url", receiver.url],
        log_path=folder / "sidecar.log", env={"AIGW_ALERT_WEBHOOK_SECRET": WEBHOOK_SECRET},
    )
    try:
        sidecar.start()
        scripted_run(sidecar.target)
        assert receiver.got.wait(10), "the webhook got no event"
        # The delivery and the access-log settlement are counted off the RPC path.
        deadline = time.monotonic() + 10
        while True:
            found = Scrape.of(_scrape_text(port))
            late = {"aigw_alert_webhook_deliveries_total", "aigw_usage_fallbacks_total"}
            if late <= found.labels.keys() or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        yield found
    finally:
        sidecar.stop()
        receiver.close()


# --- tests ------------------------------------------------------------------------------


def test_the_promql_reader_finds_names_labels_and_ranges() -> None:
    query = parse('histogram_quantile(0.99, sum by (rpc, le) (rate(aigw_rpc_duration_seconds_'
                  'bucket{rpc=~"Authorize|Check", job=~"$job"}[$__rate_interval]))) * 3600 / 1e6'
                  ' - sum without (code) (aigw_store_up == 1)')
    assert [s.metric for s in query.selectors] == [
        "aigw_rpc_duration_seconds_bucket", "aigw_store_up"]
    assert query.selectors[0].matchers == (
        Matcher("rpc", "=~", "Authorize|Check"), Matcher("job", "=~", "$job"))
    assert [s.ranged for s in query.selectors] == [True, False]
    assert query.grouping == {"rpc", "le", "code"}
    assert query.functions == {"histogram_quantile", "sum", "rate"}
    assert variable_query('label_values(aigw_store_up{job=~"$job"}, instance)')[1] == "instance"
    with pytest.raises(ValueError, match="unknown function"):
        parse("summ(aigw_store_up)")


def test_the_dashboard_is_importable_grafana_json() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 36 and dashboard["uid"] and dashboard["title"]
    (datasource,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert datasource["name"] == DATASOURCE_VARIABLE and datasource["query"] == "prometheus"
    panels = all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert all({"h", "w", "x", "y"} <= p["gridPos"].keys() for p in panels)
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in panels)
    assert [p for p in dashboard["panels"] if p["type"] == "row"], "panels are grouped in rows"
    reference = {"type": "prometheus", "uid": f"${{{DATASOURCE_VARIABLE}}}"}
    for panel in query_panels(dashboard):
        assert panel["datasource"] == reference, panel["title"]
        assert panel["description"].strip(), panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == reference, panel["title"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == reference, variable["name"]


def test_every_metric_a_panel_queries_is_exposed(scrape: Scrape) -> None:
    missing = [(where, s.metric) for where, query, _ in expressions(load_dashboard())
               for s in query.selectors if s.metric not in scrape.labels]
    assert not missing


def test_range_functions_read_only_counters_and_histograms(scrape: Scrape) -> None:
    gauges = [(where, s.metric) for where, query, _ in expressions(load_dashboard())
              for s in query.selectors
              if s.ranged and scrape.types.get(s.metric) not in ("counter", "histogram")]
    assert not gauges


def test_every_label_a_panel_queries_is_on_its_metric(scrape: Scrape) -> None:
    missing: list[tuple[str, str, str]] = []
    for where, query, label_values in expressions(load_dashboard()):
        for selector in query.selectors:
            present = scrape.label_names(selector.metric) | TARGET_LABELS
            used = {m.label for m in selector.matchers} | query.grouping
            if label_values:
                used.add(label_values)
            missing.extend((where, selector.metric, label) for label in used - present)
    assert not missing


def test_every_literal_label_value_a_panel_matches_exists(scrape: Scrape) -> None:
    unmatched: list[tuple[str, str, Matcher]] = []
    for where, query, _ in expressions(load_dashboard()):
        for selector in query.selectors:
            for m in selector.matchers:
                if "$" in m.value or m.label in TARGET_LABELS:
                    continue  # a template variable, or a label of the scrape target
                values = scrape.label_values(selector.metric, m.label)
                pattern = re.compile(m.value)
                if m.op == "=~" and _LITERALS.fullmatch(m.value):
                    hit = set(m.value.split("|")) <= values  # each alternative is a value
                else:
                    hit = {
                        "=": m.value in values,
                        "!=": any(v != m.value for v in values),
                        "=~": any(pattern.fullmatch(v) for v in values),
                        "!~": any(not pattern.fullmatch(v) for v in values),
                    }[m.op]
                if not hit:
                    unmatched.append((where, selector.metric, m))
    assert not unmatched


def test_the_scripted_run_gave_each_panel_a_series_with_data(scrape: Scrape) -> None:
    # Names alone could be exposed empty: these are the series the run itself made.
    assert {"acme", "globex"} <= scrape.label_values("aigw_usage_cost_micro_usd_total",
                                                     "workspace")
    assert {"Authorize", "Check", "RecordUsage", "ReleaseReservation"} <= scrape.label_values(
        "aigw_rpc_duration_seconds_count", "rpc")
    assert scrape.label_values("aigw_alert_webhook_deliveries_total", "result") == {"delivered"}
    assert scrape.label_values("aigw_usage_fallbacks_total", "cause") == {"no_usage"}
    assert scrape.label_values("aigw_budget_alerts_total", "type") == {"budget_threshold"}
    assert scrape.label_names("aigw_rpc_errors_total") == {"rpc", "code"}

