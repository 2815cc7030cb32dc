"""OpenTelemetry tracing: opt-in (``--otel-endpoint``), spans exported over OTLP.

Imported by the composition root only when tracing is on, so a sidecar without
``--otel-endpoint`` never loads the SDK, installs no interceptor and wraps no
store: tracing off costs nothing per call.

Spans:

* one ``SERVER`` span per RPC (Authorize, Check, RecordUsage, ReleaseReservation,
  each KeyManagement RPC), named ``<package>.<Service>/<Method>`` as OpenTelemetry's
  RPC conventions say, under the trace the call's gRPC metadata names (Envoy sends
  its ext_authz span there); a Check whose HTTP client named a trace only in its own
  headers links to it instead (``client_link``);
* one ``CLIENT`` span per store round trip (``store authorize``,
  ``store record_usage``, ...), a child of the RPC's span;
* on the usage path, one ``settle usage`` span per finished request Envoy logs, a
  child of the traced Check that admitted it (its context rides in ext_authz's
  dynamic metadata).

Attributes: the key id, workspace, project, decision, deny reason, model and
token counts. Never a secret: the key's secret and its hash are not read here,
and an RPC's attributes come only from named, non-secret fields.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from aigw_sidecar import __version__
from aigw_sidecar.admission.decision import Decision, UsageReport, UsageResult
from aigw_sidecar.server.access_log import TRACE_FIELD
from aigw_sidecar.server.metrics.interceptor import EXT_AUTHZ_CHECK
from aigw_sidecar.server.metrics.measured_store import MeasurableStore
from aigw_sidecar.server.wrapping import Handler, UnaryWrapper
from aigw_sidecar.settings import OtelEndpoint, Settings, parse_otel_endpoint

T = TypeVar("T")
# B3 first and W3C last: where a call carries both, traceparent wins.
PROPAGATOR = CompositePropagator(
    [B3SingleFormat(), B3MultiFormat(), TraceContextTextMapPropagator()]
)
# The headers a parent is read from (lower case, as gRPC metadata and Envoy send them).
TRACE_HEADERS = frozenset(
    {"traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid",
     "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags"}
)
# The only request and response fields an RPC span reads (never a secret, never a hash).
_IDENTITY_FIELDS = ("key_id", "workspace", "project")
SETTLE_SPAN = "settle usage"
MAX_ATTRIBUTE_LENGTH = 256


def exporter_for(endpoint: OtelEndpoint) -> SpanExporter:
    """The OTLP exporter for ``endpoint``; headers, certificates and timeouts come
    from the standard ``OTEL_EXPORTER_OTLP_*`` variables, which both exporters read."""
    if endpoint.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )
        return GrpcExporter(endpoint=endpoint.target, insecure=endpoint.insecure)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )
    return HttpExporter(endpoint=endpoint.target)


class Tracing:
    """One process's tracer provider, and the pieces the composition root installs."""

    def __init__(self, settings: Settings, exporter: SpanExporter | None = None) -> None:
        resource = Resource.create({
            "service.name": settings.otel_service_name,
            "service.version": __version__,
            # Replicas and --workers processes apart.
            "service.instance.id": f"{socket.gethostname()}-{os.getpid()}",
        })
        # A trace the caller (Envoy) sampled or dropped keeps that choice; a trace
        # that starts here is recorded at --otel-sample-ratio.
        sampler = ParentBased(TraceIdRatioBased(settings.otel_sample_ratio))
        # A model name comes from the client's request: no attribute is longer than
        # this, however long the name.
        limits = SpanLimits(max_span_attribute_length=MAX_ATTRIBUTE_LENGTH)
        self.provider = TracerProvider(resource=resource, sampler=sampler, span_limits=limits)
        self.provider.add_span_processor(BatchSpanProcessor(
            exporter if exporter is not None
            else exporter_for(parse_otel_endpoint(settings.otel_endpoint))
        ))
        self.tracer: Tracer = self.provider.get_tracer("aigw_sidecar", __version__)

    def interceptor(self) -> TracingInterceptor:
        return TracingInterceptor(self.tracer)

    def store(self, store: MeasurableStore) -> TracedStore:
        return TracedStore(store, self.tracer)

    def key_store(self, store: Any) -> Any:
        """The key store under KeyManagement, with each of its calls a CLIENT span."""
        return TracedKeyStore(store, self.tracer)

    def usage_spans(self) -> UsageSpans:
        return UsageSpans(self.tracer)

    async def shutdown(self, timeout_s: float) -> None:
        """Export what is still queued, then stop; waits at most ``timeout_s`` (a
        collector that does not answer must not hold the sidecar's exit)."""
        # A daemon thread: one still blocked in an export does not keep the process.
        worker = threading.Thread(target=self.provider.shutdown, name="otel shutdown",
                                  daemon=True)
        worker.start()
        deadline = time.monotonic() + timeout_s
        while worker.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)


def parent_context(headers: Mapping[str, str]) -> otel_context.Context | None:
    """The remote parent named by ``headers`` (traceparent, b3, x-b3-*), or None."""
    carrier = {name: value for name, value in headers.items() if name in TRACE_HEADERS}
    if not carrier:
        return None
    found = PROPAGATOR.extract(carrier, context=otel_context.Context())
    if not trace.get_current_span(found).get_span_context().is_valid:
        return None
    return found


def client_link(request: Any) -> list[Link]:
    """A Check's link to the trace the HTTP client named in its own headers, if any.

    Linked, not joined: a parent decides its children's sampling and trace id, and a
    hostile client would use that to have each of its requests recorded (a sampled
    flag, or trace ids a ratio sampler always keeps) or to write into other traces.
    The Check starts a trace of its own, sampled at --otel-sample-ratio, that points
    at the client's; its trace state is not copied.
    """
    found = parent_context(request.attributes.request.http.headers)
    if found is None:
        return []
    context = trace.get_current_span(found).get_span_context()
    return [Link(trace.SpanContext(context.trace_id, context.span_id, is_remote=True))]


def _metadata_headers(context: Any) -> dict[str, str]:
    return {key: value for key, value in (context.invocation_metadata() or ())
            if key in TRACE_HEADERS and isinstance(value, str)}


def _identity(message: Any, span: Span) -> None:
    """key_id, workspace, project from ``message`` (and its ``key``/``overview``), if set."""
    for holder in (message, getattr(message, "key", None), getattr(message, "overview", None)):
        if holder is None or not hasattr(holder, "DESCRIPTOR"):
            continue
        fields = holder.DESCRIPTOR.fields_by_name
        for name in _IDENTITY_FIELDS:
            if name in fields:
                value = getattr(holder, name)
                if isinstance(value, str) and value:
                    span.set_attribute("aigw." + name, value)


def _check_attributes(response: Any, span: Span) -> None:
    """A Check's outcome, from the dynamic metadata the sidecar answers Envoy with."""
    fields = response.dynamic_metadata.fields
    for name in _IDENTITY_FIELDS:
        if name in fields and fields[name].string_value:
            span.set_attribute("aigw." + name, fields[name].string_value)
    if "model" in fields and fields["model"].string_value:
        span.set_attribute("gen_ai.request.model", fields["model"].string_value)
    if response.status.code == 0:
        span.set_attribute("aigw.decision", "fail_open" if "fail_open" in fields else "allowed")
    else:
        span.set_attribute("aigw.decision", "denied")
        if response.HasField("denied_response"):
            span.set_attribute("http.response.status_code", response.denied_response.status.code)
        if "deny_reason" in fields:
            span.set_attribute("aigw.deny_reason", fields["deny_reason"].string_value)


def _carry_trace(response: Any, span: Span) -> None:
    """An admitted request carries its Check span's context to its settlement.

    In ext_authz's dynamic metadata, which Envoy's access log entry brings back: the
    settlement's span is then a child of the Check's (in Envoy's trace), and only a
    recorded Check has one. The client cannot set or see it.
    """
    fields = response.dynamic_metadata.fields
    if response.status.code == 0 and "key_id" in fields:
        context = span.get_span_context()
        response.dynamic_metadata.update(
            {TRACE_FIELD: f"00-{context.trace_id:032x}-{context.span_id:016x}-01"}
        )


class TracingInterceptor(UnaryWrapper):
    """A SERVER span around every unary RPC but grpc's own (health, reflection)."""

    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self._tracer = tracer

    def wrap(self, method: str, inner: Handler) -> Handler:
        tracer = self._tracer
        service, _, rpc = method.lstrip("/").rpartition("/")
        name = f"{service}/{rpc}"
        check = method == EXT_AUTHZ_CHECK
        base = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}

        async def traced(request: Any, context: Any) -> Any:
            parent = parent_context(_metadata_headers(context))
            links = client_link(request) if parent is None and check else None
            span = tracer.start_span(name, context=parent, kind=SpanKind.SERVER,
                                     attributes=base, links=links)
            if not span.is_recording():
                # Sampled out: nothing here or under it is recorded (TracedStore makes
                # no span under one that does not record), so none is made current.
                return await inner(request, context)
            token = otel_context.attach(trace.set_span_in_context(span, parent))
            try:
                if not check:
                    _identity(request, span)
                    _request_model(request, span)
                response = await inner(request, context)
                span.set_attribute("rpc.grpc.status_code", 0)
                if check:
                    _check_attributes(response, span)
                    _carry_trace(response, span)
                else:
                    _identity(response, span)
                    _response_attributes(response, span)
                return response
            except BaseException:
                code = context.code()
                span.set_attribute("rpc.grpc.status_code",
                                   code.value[0] if code is not None else 2)
                # The code's name only: a message may quote what the caller sent.
                span.set_status(Status(StatusCode.ERROR, code.name if code else "UNKNOWN"))
                raise
            finally:
                otel_context.detach(token)
                span.end()

        return traced


def _response_attributes(response: Any, span: Span) -> None:
    """Authorize's decision and RecordUsage's charge, where the response has them."""
    fields = response.DESCRIPTOR.fields_by_name
    if "allowed" in fields:
        span.set_attribute("aigw.decision", "allowed" if response.allowed else "denied")
        if not response.allowed and "deny_reason" in fields:
            reason = fields["deny_reason"].enum_type.values_by_number.get(response.deny_reason)
            if reason is not None:
                span.set_attribute("aigw.deny_reason", reason.name.lower().removeprefix(
                    "deny_reason_"))
    if "counted" in fields:
        span.set_attribute("aigw.usage.counted", response.counted)
        span.set_attribute("aigw.cost_micro_usd", response.cost_micro_usd)


def _request_model(request: Any, span: Span) -> None:
    """The model an Authorize names (its own field, else its estimate's)."""
    model = getattr(request, "model", "")
    if not model and request.DESCRIPTOR.fields_by_name.get("estimate") is not None:
        model = request.estimate.model
    if isinstance(model, str) and model:
        span.set_attribute("gen_ai.request.model", model)


def _reservation_attributes(decision: Decision, span: Span) -> None:
    """What the store span adds to its call's span (which has the decision): the hold."""
    if decision.reservation is not None:
        span.set_attribute("aigw.reserved_tokens", decision.reservation.tokens)
        span.set_attribute("aigw.reserved_cost_micro_usd", decision.reservation.cost_micro_usd)


def _report_attributes(report: UsageReport, span: Span) -> None:
    span.set_attribute("aigw.key_id", report.key_id)
    if report.model:
        span.set_attribute("gen_ai.response.model", report.model)
    span.set_attribute("gen_ai.usage.input_tokens", report.prompt_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", report.completion_tokens)


async def in_store_span(
    tracer: Tracer, op: str, call: Awaitable[T],
    annotate: Callable[[T, Span], None] | None = None,
) -> T:
    """Await ``call`` inside a CLIENT span ``store <op>`` under the current span; with
    no recording span current, none (such a child would not be recorded either)."""
    if not trace.get_current_span().is_recording():
        return await call
    span = tracer.start_span(
        f"store {op}", kind=SpanKind.CLIENT,
        attributes={"db.system.name": "redis", "db.operation.name": op},
    )
    try:
        result = await call
        if annotate is not None:
            annotate(result, span)
        return result
    except BaseException as exc:
        # The error's type only: store errors may name a key or an address.
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        span.end()


class TracedStore:
    """A ``MeasurableStore`` whose round trips are CLIENT spans under the current span.

    Under a span that does not record (no RPC span, or one sampled out) it makes
    none: such a child would not be recorded either.
    """

    def __init__(self, store: MeasurableStore, tracer: Tracer) -> None:
        self._store = store
        self._tracer = tracer

    async def authorize(
        self,
        key_id: str,
        key_hash: str,
        request_id: str = "",
        tokens: int | None = None,
        cost_micro_usd: int | None = None,
        model: str = "",
        model_unpriced: bool = False,
    ) -> Decision:
        def annotate(decision: Decision, span: Span) -> None:
            _reservation_attributes(decision, span)
            if tokens is not None:
                span.set_attribute("aigw.estimated_tokens", tokens)

        return await in_store_span(self._tracer, "authorize", self._store.authorize(
            key_id, key_hash, request_id, tokens, cost_micro_usd, model, model_unpriced
        ), annotate)

    async def resolve_legacy(self, key_hash: str) -> str | None:
        return await in_store_span(self._tracer, "resolve_legacy",
                                   self._store.resolve_legacy(key_hash))

    async def record_usage(self, report: UsageReport) -> UsageResult:
        def annotate(result: UsageResult, span: Span) -> None:
            _report_attributes(report, span)
            span.set_attribute("aigw.usage.counted", result.counted)
            span.set_attribute("aigw.cost_micro_usd", result.cost_micro_usd)
            for name in ("workspace", "project"):
                value = getattr(result, name)
                if value:
                    span.set_attribute("aigw." + name, value)

        return await in_store_span(self._tracer, "record_usage",
                                   self._store.record_usage(report), annotate)

    async def release_reservation(self, key_id: str, request_id: str) -> bool:
        def annotate(_released: bool, span: Span) -> None:
            span.set_attribute("aigw.key_id", key_id)

        return await in_store_span(self._tracer, "release_reservation",
                                   self._store.release_reservation(key_id, request_id), annotate)

    async def ping(self) -> bool:
        # The health watcher's ping, once a second: not traced (it is no one's request).
        return await self._store.ping()


class TracedKeyStore:
    """Any store: each coroutine method it has becomes ``store <method>``, a CLIENT span.

    KeyManagement's store has many methods and none on a hot path: wrapped by name,
    when first used, rather than one by one. The arguments are never recorded.
    """

    def __init__(self, store: Any, tracer: Tracer) -> None:
        self._store = store
        self._tracer = tracer

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute
        tracer = self._tracer

        @functools.wraps(attribute)
        async def traced(*args: Any, **kwargs: Any) -> Any:
            return await in_store_span(tracer, name, attribute(*args, **kwargs))

        setattr(self, name, traced)  # built once per method
        return traced


class UsageSpans:
    """The usage path's spans: one per finished request Envoy's access log settles."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    @contextmanager
    def settling(self, traceparent: str, key_id: str, status: int | None) -> Iterator[None]:
        """A span around one settlement, a child of the Check that admitted the request
        (``traceparent``, carried in ext_authz's metadata); none where it was not traced."""
        parent = parent_context({"traceparent": traceparent}) if traceparent else None
        if parent is None:
            yield
            return
        span = self._tracer.start_span(SETTLE_SPAN, context=parent, kind=SpanKind.INTERNAL)
        if not span.is_recording():
            yield
            return
        span.set_attribute("aigw.key_id", key_id)
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            yield
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            otel_context.detach(token)
            span.end()
