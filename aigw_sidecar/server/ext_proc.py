"""Envoy ext_proc: ``envoy.service.ext_proc.v3.ExternalProcessor/Process``, usage from the proxy.

The shipped Envoy config runs two ext_proc filters against this one servicer,
each with its own bidi stream per HTTP request:

* the **request** filter (Envoy waits for it): request headers and the whole
  request body, so a streaming request can be given
  ``stream_options.include_usage``; it never sees the response and never settles;
* the **usage** filter, in observability mode (Envoy does not wait: no latency
  on the response path): request and response headers, then the response body
  chunk by chunk (STREAMED; BUFFERED would hold SSE streams back). Its bytes go
  to a ``UsageReader`` and, when the response has ended or the stream was cut
  short, key, status and usage go to ``UsageSettler`` once, off the reply path.

A stream settles if it is in observability mode or has seen a response message
(a single filter doing both jobs still works); otherwise it only rewrote a body.

The key comes only from ext_authz's dynamic metadata (namespace
``envoy.filters.http.ext_authz``, forwarded by Envoy): a stream without it is a
local reply (an ext_authz denial, a direct response) or an unkeyed route, and is
never charged. A streaming request's body gets ``stream_options.include_usage``
when the client did not ask for it (``--envoy-include-usage``).

Nothing here may break the client's response: an error while reading a message
is logged and counted, and the message is answered with "continue" all the same.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.struct_pb2 import Struct

from aigw_sidecar.admission.decision import Estimate, Reservation
from aigw_sidecar.admission.settlement import AdmittedRequest, UsageSettler, proxy_request_id
from aigw_sidecar.admission.usage_stream import UsageReader, with_usage_requested
from aigw_sidecar.api.envoy.v3 import ext_authz_pb2 as authz_pb
from aigw_sidecar.api.envoy.v3 import ext_proc_pb2 as pb

log = logging.getLogger(__name__)

SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"
PROCESS_METHOD = f"/{SERVICE_NAME}/Process"
EXT_AUTHZ_NAMESPACE = "envoy.filters.http.ext_authz"
SETTLE_DRAIN_S = 2.0

Ctx = Any  # grpc.aio.ServicerContext; grpc ships no type information


# Request bodies up to this size are read whole (BUFFERED); a larger one is not
# sent to the sidecar at all (a mode override), so it always fits in one gRPC
# message under the server's receive limit and Envoy never answers it 413.
MAX_REQUEST_BODY_BYTES = 192 * 1024


@dataclass(frozen=True, slots=True)
class ExtProcOptions:
    include_usage: bool = True  # ask streaming requests for their final usage chunk
    max_request_body_bytes: int = MAX_REQUEST_BODY_BYTES


def header_values(headers: authz_pb.HeaderMap) -> dict[str, str]:
    """Lower-case names to values; Envoy's ext_proc sends values in ``raw_value``."""
    return {
        h.key.lower(): h.raw_value.decode("latin-1") if h.raw_value else h.value
        for h in headers.headers
    }


def _number(fields: Any, name: str) -> int:
    value = fields.get(name)
    return int(value.number_value) if value is not None else 0


def admitted_request(metadata: Struct, x_request_id: str = "") -> AdmittedRequest | None:
    """The request ext_authz admitted, read back from its dynamic metadata.

    None when ext_authz did not admit it with a key: a denial (it carries a
    deny_reason), a fail-open pass, or no ext_authz at all.
    """
    fields = metadata.fields
    key_id = fields["key_id"].string_value if "key_id" in fields else ""
    if not key_id or "deny_reason" in fields:
        return None
    request_id = fields["request_id"].string_value if "request_id" in fields else ""
    request_id = request_id or proxy_request_id(x_request_id)
    estimate = None
    if "prompt_tokens" in fields:
        estimate = Estimate(
            model=fields["model"].string_value if "model" in fields else "",
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


@dataclass
class _Exchange:
    """What one stream has seen so far."""

    metadata: Struct | None = None
    x_request_id: str = ""
    status: int | None = None
    reader: UsageReader | None = None
    ended: bool = False
    settled: bool = False
    broken: bool = False  # an error while reading: stop reading, keep answering
    observability: bool = False  # Envoy does not wait for replies (the usage filter)
    saw_response: bool = False
    request_passed: bool = False  # the request filter let the whole request through
    admitted: AdmittedRequest | None = field(default=None)


# Replies that let a message of each kind through unchanged (never mutated).
_CONTINUE: dict[str, pb.ProcessingResponse] = {
    "request_headers": pb.ProcessingResponse(request_headers=pb.HeadersResponse()),
    "response_headers": pb.ProcessingResponse(response_headers=pb.HeadersResponse()),
    "request_body": pb.ProcessingResponse(request_body=pb.BodyResponse()),
    "response_body": pb.ProcessingResponse(response_body=pb.BodyResponse()),
    "request_trailers": pb.ProcessingResponse(request_trailers=pb.TrailersResponse()),
    "response_trailers": pb.ProcessingResponse(response_trailers=pb.TrailersResponse()),
}


def _continue(kind: str) -> pb.ProcessingResponse:
    return _CONTINUE[kind]


_Mode = pb.ProcessingMode
# The rest of the request filter's stream when its body is not read (no key,
# too large, unknown length, or no rewrite wanted): Envoy sends nothing more.
_PASS_THROUGH = pb.ProcessingResponse(
    request_headers=pb.HeadersResponse(),
    mode_override=_Mode(
        request_header_mode=_Mode.SEND, response_header_mode=_Mode.SKIP,
        request_body_mode=_Mode.NONE, response_body_mode=_Mode.NONE,
        request_trailer_mode=_Mode.SKIP, response_trailer_mode=_Mode.SKIP,
    ),
)


def _replaced_body(body: bytes) -> pb.ProcessingResponse:
    """A request body replaced whole; content-length follows the new length."""
    length = authz_pb.HeaderValueOption(
        header=authz_pb.HeaderValue(key="content-length", raw_value=str(len(body)).encode()),
        append_action=authz_pb.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )
    return pb.ProcessingResponse(
        request_body=pb.BodyResponse(
            response=pb.CommonResponse(
                header_mutation=pb.HeaderMutation(set_headers=[length]),
                body_mutation=pb.BodyMutation(body=body),
            )
        )
    )


class ExtProcServicer:
    """``ExternalProcessor/Process``: watch one request/response, settle it once."""

    def __init__(self, settler: UsageSettler, options: ExtProcOptions) -> None:
        self._settler = settler
        self._options = options
        self._pending: set[asyncio.Task[Any]] = set()
        self._counts: Counter[str] = Counter()

    @property
    def counts(self) -> Counter[str]:
        """Streams, local replies, errors, and settlements by outcome."""
        return self._counts + self._settler.counts

    async def Process(
        self, requests: AsyncIterator[pb.ProcessingRequest], context: Ctx
    ) -> AsyncIterator[pb.ProcessingResponse]:
        exchange = _Exchange()
        self._counts["streams"] += 1
        try:
            async for message in requests:
                kind = message.WhichOneof("request")
                if kind is None:
                    continue
                exchange.observability = exchange.observability or message.observability_mode
                reply = self._handle(exchange, kind, message)
                if not message.observability_mode:
                    yield reply
                if exchange.ended:
                    self._settle(exchange)
        finally:
            # Also when Envoy resets the stream: client gone, upstream crashed.
            self._settle(exchange)

    def _handle(
        self, exchange: _Exchange, kind: str, message: pb.ProcessingRequest
    ) -> pb.ProcessingResponse:
        if exchange.broken:
            return _continue(kind)
        try:
            return self._read(exchange, kind, message)
        except Exception:
            exchange.broken = True
            self._counts["errors"] += 1
            log.exception("ext_proc: could not read a %s message; letting it through", kind)
            return _continue(kind)

    def _read(
        self, exchange: _Exchange, kind: str, message: pb.ProcessingRequest
    ) -> pb.ProcessingResponse:
        if exchange.metadata is None and message.HasField("metadata_context"):
            namespaces = message.metadata_context.filter_metadata
            if EXT_AUTHZ_NAMESPACE in namespaces:
                exchange.metadata = namespaces[EXT_AUTHZ_NAMESPACE]
        if kind == "request_headers":
            headers = header_values(message.request_headers.headers)
            exchange.x_request_id = headers.get("x-request-id", "")
            if self._admitted(exchange) is None:
                self._counts["not_charged"] += 1
                exchange.request_passed = True
                return _PASS_THROUGH
            length = headers.get("content-length", "")
            # Read only a body of known, bounded size: a chunked body of unknown
            # length could outgrow the sidecar's message limit.
            if not message.request_headers.end_of_stream and (
                not self._options.include_usage
                or not length.isdigit()
                or int(length) > self._options.max_request_body_bytes
            ):
                exchange.request_passed = True
                return _PASS_THROUGH
            exchange.request_passed = message.request_headers.end_of_stream
        elif kind == "request_body":
            body = message.request_body
            exchange.request_passed = body.end_of_stream
            # Only a whole body may be rewritten (BUFFERED_PARTIAL sends a prefix of a large one).
            if self._options.include_usage and body.end_of_stream and self._admitted(exchange):
                replaced = with_usage_requested(body.body)
                if replaced is not None:
                    self._counts["include_usage_injected"] += 1
                    return _replaced_body(replaced)
        elif kind == "response_headers":
            exchange.saw_response = True
            headers = header_values(message.response_headers.headers)
            status = headers.get(":status", "")
            exchange.status = int(status) if status.isdigit() else None
            if self._admitted(exchange) is None:
                self._counts["not_charged"] += 1  # a local reply: no request came first
            else:
                exchange.reader = UsageReader(headers.get("content-type", ""))
            exchange.ended = message.response_headers.end_of_stream
        elif kind == "response_body":
            exchange.saw_response = True
            if exchange.reader is not None:
                exchange.reader.feed(message.response_body.body)
            exchange.ended = message.response_body.end_of_stream
        elif kind == "response_trailers":
            exchange.ended = True
        return _continue(kind)

    def _admitted(self, exchange: _Exchange) -> AdmittedRequest | None:
        if exchange.admitted is None and exchange.metadata is not None:
            exchange.admitted = admitted_request(exchange.metadata, exchange.x_request_id)
        return exchange.admitted

    def _settle(self, exchange: _Exchange) -> None:
        """Settle the exchange once, in a task of its own (never on the reply path)."""
        if exchange.settled:
            return
        exchange.settled = True
        if not exchange.observability and not exchange.saw_response and exchange.request_passed:
            # The request filter's stream, which let the request through: the
            # usage filter settles. One cut before that (a client gone while its
            # body was buffered) is settled here: the usage filter never started.
            return
        try:
            admitted = self._admitted(exchange)
            usage = None
            if exchange.reader is not None and not exchange.broken:
                usage = exchange.reader.finish()
        except Exception:
            self._counts["errors"] += 1
            log.exception("ext_proc: could not read the end of a response; not settled")
            return
        if admitted is None:
            return
        if not exchange.ended:
            self._counts["cut_short"] += 1
        task = asyncio.ensure_future(self._settle_safely(admitted, exchange.status, usage))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _settle_safely(self, *args: Any) -> None:
        try:
            await self._settler.settle(*args)
        except Exception:
            self._counts["settle_errors"] += 1
            log.exception("ext_proc: settling a request failed; its lease will expire")

    async def drain(self, timeout_s: float = SETTLE_DRAIN_S) -> None:
        """Wait (bounded) for settlements still running, e.g. before shutdown."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout_s)

    def handler(self) -> grpc.GenericRpcHandler:
        """A generic handler under Envoy's method path (the proto declares no service)."""
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Process": grpc.stream_stream_rpc_method_handler(
                    self.Process,
                    request_deserializer=pb.ProcessingRequest.FromString,
                    response_serializer=pb.ProcessingResponse.SerializeToString,
                )
            },
        )
