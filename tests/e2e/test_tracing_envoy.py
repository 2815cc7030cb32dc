"""One request through real Envoy with tracing on: one trace, client -> Envoy -> sidecar -> store.

Envoy runs clients/envoy/envoy-otel.yaml (its OpenTelemetry tracer on) and the
sidecar runs with --otel-endpoint; both export to one real OTLP receiver on
loopback (tests/otlp_receiver.py, the collector's gRPC service).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import pytest_asyncio
import yaml

from aigw_sidecar.api.v1.admission_pb2 import AuthorizeRequest
from tests.e2e.conftest import Gateway, close_gateway, open_gateway
from tests.e2e.envoy_process import (
    OTEL_CONFIG,
    SHIPPED_CONFIG,
    envoy_binary,
    render_otel_config,
)
from tests.e2e.upstream import MockUpstream
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

SIDECAR = "aigw-sidecar-e2e"
ENVOY = "llm-gateway"
CHECK = "envoy.service.auth.v3.Authorization/Check"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest_asyncio.fixture(scope="module")
async def traced_gateway(
    valkey_url: str,
    upstream: MockUpstream,
    receiver: OtlpReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Gateway]:
    with pytest.MonkeyPatch.context() as patch:
        # The sidecar's batch processor exports every 50 ms (default: 5 s).
        patch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        gw = await open_gateway(
            valkey_url, upstream, tmp_path_factory.mktemp("traced"),
            envoy_config=functools.partial(render_otel_config, collector_port=receiver.grpc_port),
            otel_endpoint=receiver.grpc_endpoint, otel_service_name=SIDECAR,
        )
    yield gw
    await close_gateway(gw)


async def _wait(
    receiver: OtlpReceiver, predicate: Callable[[list[ReceivedSpan]], bool]
) -> list[ReceivedSpan]:
    # In a thread: the sidecar runs on this test's event loop.
    return await asyncio.to_thread(receiver.wait_for, predicate, 15.0)


def _by_name(spans: list[ReceivedSpan], service: str, name: str) -> ReceivedSpan:
    found = [s for s in spans if s.service == service and s.name == name]
    assert len(found) == 1, f"{service} {name}: {len(found)} spans"
    return found[0]


def _trace_of_check(spans: list[ReceivedSpan], needed: set[str]) -> list[ReceivedSpan] | None:
    """The spans of the trace whose sidecar Check span came first, once ``needed`` are in."""
    checks = [s for s in spans if s.service == SIDECAR and s.name == CHECK]
    if not checks:
        return None
    trace = [s for s in spans if s.trace_id == checks[0].trace_id]
    names = {s.name for s in trace if s.service == SIDECAR}
    if not needed <= names or not any(s.service == ENVOY and s.is_root is False for s in trace):
        return None
    return trace


async def test_one_request_is_one_trace_from_envoy_through_the_sidecar_to_the_store(
    traced_gateway: Gateway, receiver: OtlpReceiver
) -> None:
    created = await traced_gateway.create_key(requests_per_minute=100)
    receiver.clear()
    reply = await traced_gateway.client(created.secret).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.http_response.status_code == 200
    needed = {CHECK, "store authorize", "settle usage", "store record_usage"}
    spans = await _wait(receiver, lambda got: _trace_of_check(got, needed) is not None)
    trace = _trace_of_check(spans, needed)
    assert trace is not None

    # Envoy's request span is the root; its ext_authz call is its child ...
    ingress = next(s for s in trace if s.service == ENVOY and s.is_root)
    egress = next(s for s in trace if s.service == ENVOY and "Authorization.Check" in s.name)
    assert egress.parent_span_id == ingress.span_id
    # ... the sidecar's Check continues that call, and the store round trip is its child.
    check = _by_name(trace, SIDECAR, CHECK)
    assert check.parent_span_id == egress.span_id
    assert check.kind == 2  # SERVER
    store = _by_name(trace, SIDECAR, "store authorize")
    assert store.parent_span_id == check.span_id
    assert store.kind == 3  # CLIENT
    # After the response, the usage path settles under the Check that admitted it.
    settle = _by_name(trace, SIDECAR, "settle usage")
    assert settle.parent_span_id == check.span_id
    record = _by_name(trace, SIDECAR, "store record_usage")
    assert record.parent_span_id == settle.span_id

    assert check.attributes["aigw.key_id"] == created.key.key_id
    assert check.attributes["aigw.decision"] == "allowed"
    assert check.attributes["aigw.workspace"] == created.key.workspace
    assert check.attributes["aigw.project"] == "chat"
    assert check.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert record.attributes["gen_ai.usage.input_tokens"] > 0
    assert record.attributes["gen_ai.usage.output_tokens"] > 0
    assert settle.attributes["http.response.status_code"] == 200
    # Never a secret, in any span of any service.
    for span in receiver.spans:
        assert created.secret not in repr(span.attributes)
        assert created.secret[-12:] not in repr(span.attributes)


async def test_a_refused_request_is_traced_with_its_deny_reason(
    traced_gateway: Gateway, receiver: OtlpReceiver
) -> None:
    created = await traced_gateway.create_key(requests_per_minute=1)
    client = traced_gateway.client(created.secret)
    await client.models.list()
    receiver.clear()
    with pytest.raises(openai.RateLimitError):
        await client.models.list()

    def denied(span: ReceivedSpan) -> bool:
        return span.name == CHECK and span.attributes.get("aigw.decision") == "denied"

    spans = await _wait(receiver, lambda got: any(denied(s) for s in got))
    check = next(s for s in spans if denied(s))
    assert check.attributes["aigw.deny_reason"] == "requests_per_minute"
    assert check.attributes["http.response.status_code"] == 429
    assert check.attributes["aigw.key_id"] == created.key.key_id


async def test_a_clients_traceparent_is_the_trace_everything_joins(
    traced_gateway: Gateway, receiver: OtlpReceiver
) -> None:
    created = await traced_gateway.create_key()
    receiver.clear()
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    client = traced_gateway.client(
        created.secret, default_headers={"traceparent": f"00-{trace_id}-{parent_id}-01"}
    )
    await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    needed = {CHECK, "store authorize", "settle usage"}
    spans = await _wait(receiver, lambda got: _trace_of_check(got, needed) is not None)
    trace = _trace_of_check(spans, needed) or []
    assert {s.trace_id for s in trace} == {trace_id}
    ingress = next(s for s in trace if s.service == ENVOY and s.parent_span_id == parent_id)
    assert ingress.name == "ingress"


def _without_tracing(config: dict[str, Any]) -> dict[str, Any]:
    """envoy-otel.yaml with the parts its header marks "tracing:" taken out."""
    config = copy.deepcopy(config)
    resources = config["static_resources"]
    hcm = resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    del hcm["tracing"]
    resources["clusters"] = [c for c in resources["clusters"] if c["name"] != "otel_collector"]
    return config


def test_the_tracing_variant_is_the_shipped_config_plus_tracing_only() -> None:
    shipped = yaml.safe_load(SHIPPED_CONFIG.read_text())
    variant = yaml.safe_load(OTEL_CONFIG.read_text())
    assert variant != shipped
    assert _without_tracing(variant) == shipped


def test_the_tracing_variant_validates() -> None:
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(OTEL_CONFIG)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _unsampled_config(sidecar_port: int, upstream_port: int, collector_port: int) -> str:
    """envoy-otel.yaml with Envoy sampling no request itself."""
    text = render_otel_config(sidecar_port, upstream_port, collector_port)
    return text.replace("random_sampling: {value: 100}", "random_sampling: {value: 0}")


async def test_a_client_cannot_have_a_request_traced_that_envoy_did_not_sample(
    valkey_url: str, upstream: MockUpstream, receiver: OtlpReceiver, tmp_path: Path,
) -> None:
    """A hostile client's sampled traceparent costs nobody a span: Envoy's sampling
    decision, not the client's flag, goes to the sidecar, and the sidecar keeps it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        gateway = await open_gateway(
            valkey_url, upstream, tmp_path,
            envoy_config=functools.partial(_unsampled_config, collector_port=receiver.grpc_port),
            otel_endpoint=receiver.grpc_endpoint, otel_service_name=SIDECAR,
        )
    try:
        created = await gateway.create_key()
        trace_id = uuid.uuid4().hex
        # A sampled traceparent, and the header Envoy's client_sampling would obey.
        client = gateway.client(created.secret, default_headers={
            "traceparent": f"00-{trace_id}-{'1' * 16}-01", "x-client-trace-id": trace_id,
        })
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        # A traced call after it: once its span is in, the sidecar's earlier ones would
        # be (one exporter, in order); Envoy's flush every 100 ms gets half a second more.
        marker = uuid.uuid4().hex
        await gateway.admission.Authorize(
            AuthorizeRequest(secret=created.secret),
            metadata=(("traceparent", f"00-{marker}-{'2' * 16}-01"),),
        )
        await _wait(receiver, lambda got: any(s.trace_id == marker for s in got))
        await asyncio.sleep(0.5)
        assert [s for s in receiver.spans if s.trace_id == trace_id] == []
        # Only the key's creation (an admin call without a parent) and the marker.
        assert sorted(s.name for s in receiver.spans
                      if s.attributes.get("aigw.key_id") == created.key.key_id) == [
                          "aigw.v1.Admission/Authorize", "aigw.v1.KeyManagement/CreateKey"]
    finally:
        await close_gateway(gateway)
