"""Envoy's gRPC access log: ``AccessLogService/StreamAccessLogs``, where proxied requests settle.

The shipped Envoy config reads each response's usage in Envoy itself (a Lua
filter writes it into the dynamic metadata namespace ``aigw.usage``) and logs
every finished request to this service through ``envoy.access_loggers.http_grpc``,
which buffers entries and sends them in batches on one long-lived stream per
Envoy worker. Nothing runs in the sidecar while a request is in flight.

Each entry carries what settlement needs: ext_authz's dynamic metadata (the
``AdmittedRequest``: key id, request id, estimate, reservation), the usage the
Lua filter captured (or why it could not), the response code, and whether the
whole request reached the upstream. An entry without a key id in ext_authz's
namespace (a denial, a direct response, an unkeyed route) is never charged.
All settlements of one batch run concurrently, so their store scripts share one
pipelined round trip; the next batch of a stream is read when they are done.

Nothing here may lose a batch quietly: an entry that cannot be read is counted
and logged, and the others of its batch are settled all the same.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf.struct_pb2 import Struct

from aigw_sidecar.admission.bodies import Usage, captured_usage
from aigw_sidecar.admission.decision import Estimate, Reservation
from aigw_sidecar.admission.recovery import AdmittedChecks
from aigw_sidecar.admission.settlement import AdmittedRequest, UsageSettler, proxy_request_id
from aigw_sidecar.api.envoy.v3 import access_log_pb2 as pb

log = logging.getLogger(__name__)

SERVICE_NAME = "envoy.service.accesslog.v3.AccessLogService"
EXT_AUTHZ_NAMESPACE = "envoy.filters.http.ext_authz"
USAGE_NAMESPACE = "aigw.usage"  # written by the shipped config's Lua filter
TRACE_FIELD = "trace"  # a traced Check's context (server/tracing.py puts it there)
SETTLE_DRAIN_S = 2.0
Ctx = Any  # grpc.aio.ServicerContext; grpc ships no type information


def _number(fields: Any, name: str) -> int:
    value = fields.get(name)
    return int(value.number_value) if value is not None else 0


def _text(fields: Any, name: str) -> str:
    value = fields.get(name)
    return value.string_value if value is not None else ""


def admitted_request(metadata: Struct, x_request_id: str = "") -> AdmittedRequest | None:
    """The request ext_authz admitted, read back from its dynamic metadata.

    None when ext_authz did not admit it with a key: a denial (it carries a
    deny_reason), a fail-open pass, or no ext_authz at all.
    """
    fields = metadata.fields
    key_id = _text(fields, "key_id")
    if not key_id or "deny_reason" in fields:
        return None
    request_id = _text(fields, "request_id") or proxy_request_id(x_request_id)
    estimate = None
    if "prompt_tokens" in fields:
        estimate = Estimate(
            model=_text(fields, "model"),
            prompt_tokens=_number(fields, "prompt_tokens"),
            max_output_tokens=_number(fields, "max_output_tokens"),
        )
    reservation = None
    if "reserved_tokens" in fields:
        reservation = Reservation(
            request_id,
            _number(fields, "reserved_tokens"),
            _number(fields, "reserved_cost_micro_usd"),
        )
    return AdmittedRequest(key_id, request_id, estimate, reservation)


@dataclass(frozen=True, slots=True)
class FinishedRequest:
    """One access log entry, as settlement reads it."""

    admitted: AdmittedRequest
    status: int | None  # None: no response was sent (the client left first)
    usage: Usage | None
    upstream_started: bool  # the upstream got the whole request
    unreadable: str  # why the proxy could not read the usage, "" when it could


def finished_request(
    entry: pb.HTTPAccessLogEntry, checks: AdmittedChecks | None = None
) -> FinishedRequest | None:
    """The settlement facts of one entry; None for a request nobody admitted.

    With ``checks``, an entry without ext_authz's answer whose request a Check here
    admitted (Envoy dropped the answer: its client left) is released.
    """
    common = entry.common_properties
    if common.intermediate_log_entry:  # a long stream's periodic entry: not over yet
        return None
    namespaces = common.metadata.filter_metadata
    answered = EXT_AUTHZ_NAMESPACE in namespaces
    if checks is not None:
        dropped = checks.logged(entry.request.request_id, answered)
        if dropped is not None:
            return FinishedRequest(
                AdmittedRequest(*dropped), status=None, usage=None,
                upstream_started=False, unreadable="",
            )
    if not answered:
        return None
    admitted = admitted_request(namespaces[EXT_AUTHZ_NAMESPACE], entry.request.request_id)
    if admitted is None:
        return None
    usage, unreadable = None, ""
    if USAGE_NAMESPACE in namespaces:
        found = namespaces[USAGE_NAMESPACE].fields
        if "usage" in found:
            usage = captured_usage(
                _text(found, "usage"), _text(found, "model"), _text(found, "cost_header")
            )
        unreadable = _text(found, "unreadable")
    code = entry.response.response_code.value if entry.response.HasField("response_code") else 0
    return FinishedRequest(
        admitted=admitted,
        status=code or None,
        usage=usage,
        upstream_started=common.HasField("time_to_last_upstream_tx_byte"),
        unreadable=unreadable,
    )


class SettlementSpans(Protocol):
    """Tracing's usage path (server/tracing.py ``UsageSpans``, only when tracing is on)."""

    def settling(
        self, traceparent: str, key_id: str, status: int | None
    ) -> AbstractContextManager[None]: ...


def _trace_of(entry: pb.HTTPAccessLogEntry) -> str:
    """The traced Check's context the sidecar put in ext_authz's metadata, or ""."""
    namespaces = entry.common_properties.metadata.filter_metadata
    if EXT_AUTHZ_NAMESPACE not in namespaces:
        return ""
    return _text(namespaces[EXT_AUTHZ_NAMESPACE].fields, TRACE_FIELD)


class AccessLogServicer:
    """``AccessLogService/StreamAccessLogs``: settle each finished request once."""

    def __init__(
        self,
        settler: UsageSettler,
        checks: AdmittedChecks | None = None,
        spans: SettlementSpans | None = None,
    ) -> None:
        """Args:
        spans: with tracing on, a span per settlement under the request's trace.
        """
        self._settler = settler
        self._checks = checks
        self._spans = spans
        self._pending: set[asyncio.Future[Any]] = set()
        self._counts: Counter[str] = Counter()

    @property
    def counts(self) -> Counter[str]:
        """Entries, batches, requests not charged, errors, and settlements by outcome."""
        return self._counts + self._settler.counts

    async def StreamAccessLogs(
        self, requests: AsyncIterator[pb.StreamAccessLogsMessage], context: Ctx
    ) -> pb.StreamAccessLogsResponse:
        async for message in requests:
            batch = self._settle_batch(message.http_logs.log_entry)
            if batch is not None:
                # Shielded: a stream Envoy closes (or a shutdown) must not cut a
                # settlement in half; drain() waits for what is still running.
                await asyncio.shield(batch)
        return pb.StreamAccessLogsResponse()

    def _settle_batch(self, entries: Any) -> asyncio.Future[Any] | None:
        self._counts["batches"] += 1
        settlements = []
        for entry in entries:
            self._counts["entries"] += 1
            try:
                finished = finished_request(entry, self._checks)
            except Exception:
                self._counts["errors"] += 1
                log.exception("access log: could not read an entry; not settled")
                continue
            if finished is None:
                self._counts["not_charged"] += 1
                continue
            if self._spans is None:
                settlements.append(self._settle_safely(finished))
            else:
                settlements.append(
                    self._settle_traced(self._spans, finished, _trace_of(entry))
                )
        if not settlements:
            return None
        batch = asyncio.gather(*settlements)
        self._pending.add(batch)
        batch.add_done_callback(self._pending.discard)
        return batch

    async def _settle_safely(self, finished: FinishedRequest) -> None:
        try:
            await self._settler.settle(
                finished.admitted, finished.status, finished.usage,
                finished.upstream_started, finished.unreadable,
            )
        except Exception:
            self._counts["settle_errors"] += 1
            log.exception("access log: settling request %s on key %s failed; its lease "
                          "will expire", finished.admitted.request_id, finished.admitted.key_id)

    async def _settle_traced(
        self, spans: SettlementSpans, finished: FinishedRequest, traceparent: str
    ) -> None:
        with spans.settling(traceparent, finished.admitted.key_id, finished.status):
            await self._settle_safely(finished)

    async def drain(self, timeout_s: float = SETTLE_DRAIN_S) -> None:
        """Wait (bounded) for settlements still running, e.g. before shutdown."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout_s)

    def handler(self) -> grpc.GenericRpcHandler:
        """A generic handler under Envoy's method path (the proto declares no service)."""
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "StreamAccessLogs": grpc.stream_unary_rpc_method_handler(
                    self.StreamAccessLogs,
                    request_deserializer=pb.StreamAccessLogsMessage.FromString,
                    response_serializer=pb.StreamAccessLogsResponse.SerializeToString,
                )
            },
        )
