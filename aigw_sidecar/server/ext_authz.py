"""Envoy ext_authz: ``envoy.service.auth.v3.Authorization/Check`` over the admission path.

One Check is one ``AdmissionService.authorize`` (one store script), exactly like
``aigw.v1.Admission/Authorize``. This module only translates: HTTP headers in,
the secret found in them, and the decision out as Envoy's CheckResponse. Which
HTTP status and body a denial gets is decided in ``server/status.py``.

With ``with_request_body`` in Envoy's config, the Check also carries the whole
request body (Envoy answers 413 itself past its ``max_request_bytes``). On the
LLM routes (named by the route's ``context_extensions`` ``endpoint``, or by the
path) the body is read strictly (``admission/bodies.py``): one that is not the
JSON the upstream will read the same way is refused 400 before any store call,
a cut one 413. Otherwise it becomes an ``Estimate`` that the same script
reserves, under a request id made from ``x-request-id``; a request without
``max_tokens`` is reserved a bounded output (``AdmissionService.output_bound``).
An allowed request's dynamic metadata then holds what settlement needs when
Envoy's access log brings it back (``server/access_log.py``): key id, request id,
the estimate and the reservation, and, for a streaming request that did not ask
for its usage, how the proxy's Lua filter must rewrite the body to ask for it.

The messages come from our trimmed, wire-compatible proto (``aigw.envoy.v3``);
the handler is registered under Envoy's own method path.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.struct_pb2 import Struct

from aigw_sidecar.admission.bodies import BodyRefused, Endpoint, RequestFacts, read_request
from aigw_sidecar.admission.decision import Decision, DenyReason, Estimate
from aigw_sidecar.admission.recovery import AdmittedChecks
from aigw_sidecar.admission.service import AdmissionService
from aigw_sidecar.admission.settlement import proxy_request_id
from aigw_sidecar.api.envoy.v3 import ext_authz_pb2 as pb
from aigw_sidecar.errors import StoreUnavailable
from aigw_sidecar.server.status import (
    HttpDenial,
    bad_request_denial,
    domain_errors,
    http_denial,
    rate_limit_headers,
    store_unavailable_denial,
)

log = logging.getLogger(__name__)

SERVICE_NAME = "envoy.service.auth.v3.Authorization"
CHECK_METHOD = f"/{SERVICE_NAME}/Check"
DEFAULT_KEY_HEADERS = ("authorization", "x-api-key", "api-key")
KEY_ID_HEADER = "x-aigw-key-id"
WORKSPACE_HEADER = "x-aigw-workspace"
PROJECT_HEADER = "x-aigw-project"
FAIL_OPEN_HEADER = "x-aigw-fail-open"
REQUEST_ID_HEADER = "x-request-id"
PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"
ENDPOINT_EXTENSION = "endpoint"  # a route's context_extensions: which LLM endpoint it is
TOO_LARGE_MESSAGE = (
    "The request body is larger than this gateway reads whole; it was not sent upstream."
)
# Headers only the sidecar may set upstream: a client's copy is always replaced or removed.
IDENTITY_HEADERS = (KEY_ID_HEADER, WORKSPACE_HEADER, PROJECT_HEADER, FAIL_OPEN_HEADER)

# A key header value longer than this, or holding a control character, is malformed
# without a store call: no secret (ours or legacy) comes near it, and such a value is
# never hashed or looked up.
MAX_KEY_HEADER_BYTES = 1024
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

_OVERWRITE = pb.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_OK = grpc.StatusCode.OK.value[0]
Ctx = Any  # grpc.aio.ServicerContext; grpc ships no type information


@dataclass(frozen=True, slots=True)
class ExtAuthzOptions:
    """How Check reads the secret and what it tells Envoy to change."""

    key_headers: tuple[str, ...] = DEFAULT_KEY_HEADERS
    strip_key_headers: bool = True
    fail_open: bool = False  # store unreachable: allow with a marker instead of 503
    include_usage: bool = True  # have the proxy ask streaming requests for their usage

    @staticmethod
    def parse_key_headers(text: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
        if not names:
            raise ValueError("at least one key header is required")
        return names


def find_secret(headers: Mapping[str, str], names: Sequence[str]) -> str | DenyReason:
    """The secret carried by ``headers`` ("" when there is none), or KEY_MALFORMED.

    Malformed: a value longer than ``MAX_KEY_HEADER_BYTES`` or holding a control
    character, a value with "," (Envoy joins repeated headers with ","), an
    ``authorization`` value that is not ``Bearer <secret>``, or two different
    secrets in two headers. The same secret in several headers is fine.
    """
    found: set[str] = set()
    for name in names:
        raw = headers.get(name, "")
        if len(raw) > MAX_KEY_HEADER_BYTES or len(raw.encode()) > MAX_KEY_HEADER_BYTES:
            return DenyReason.KEY_MALFORMED
        if _CONTROL_RE.search(raw):
            return DenyReason.KEY_MALFORMED
        value = raw.strip()
        if not value:
            continue
        if "," in value:
            return DenyReason.KEY_MALFORMED
        if name == "authorization":
            scheme, _, token = value.partition(" ")
            value = token.strip()
            if scheme.lower() != "bearer" or not value or " " in value:
                return DenyReason.KEY_MALFORMED
        found.add(value)
    if len(found) > 1:
        return DenyReason.KEY_MALFORMED
    return found.pop() if found else ""


def _add_headers(into: Any, pairs: Iterable[tuple[str, str]]) -> None:
    """Append ``pairs`` to a repeated HeaderValueOption field, each overwriting.

    Filled in place (``add()``): building the messages first and passing them
    to a constructor copies each one again, about twice the cost on every Check.
    """
    for name, value in pairs:
        option = into.add()
        option.header.key = name
        option.header.value = value
        option.append_action = _OVERWRITE


def endpoint_of(request: pb.AttributeContext) -> Endpoint | None:
    """The LLM endpoint a request is for: its route's ``endpoint`` extension, or its path.

    None on a route that names no endpoint, for a path that is not one of the
    metered endpoints (e.g. ``GET /v1/models``, even with a body): nothing to read,
    nothing to estimate, nothing charged.
    """
    named = request.context_extensions.get(ENDPOINT_EXTENSION, "")
    if named:
        try:
            return Endpoint(named)
        except ValueError:
            log.warning("ext_authz: unknown endpoint %r in a route's context_extensions; "
                        "reading its body as chat", named[:40])
            return Endpoint.CHAT
    http = request.request.http
    if http.raw_body or http.body:
        return Endpoint.of_path(http.path)
    return None


def request_facts(http: pb.AttributeContext.HttpRequest, endpoint: Endpoint) -> RequestFacts:
    """The facts of the whole body Envoy sent along; ``BodyRefused`` when it cannot be read.

    A body Envoy cut short (``allow_partial_message``) is refused as too large: its
    model and bounds could hide in the part the sidecar never saw.
    """
    body = http.raw_body or http.body.encode()
    length = http.headers.get("content-length", "")
    if http.headers.get(PARTIAL_BODY_HEADER) == "true" or (
        length.isdigit() and int(length) > len(body)
    ):
        raise _BodyTooLarge(TOO_LARGE_MESSAGE)
    return read_request(body, endpoint)


class _BodyTooLarge(BodyRefused):
    """A body the proxy sent only in part."""


def allowed_response(
    decision: Decision,
    options: ExtAuthzOptions,
    request_id: str = "",
    facts: RequestFacts | None = None,
    estimate: Estimate | None = None,
) -> pb.CheckResponse:
    """Forward upstream with the key's identity; the client sees its rate-limit headers."""
    identity = [(KEY_ID_HEADER, decision.key_id), (WORKSPACE_HEADER, decision.workspace)]
    remove = [FAIL_OPEN_HEADER]
    if decision.project:
        identity.append((PROJECT_HEADER, decision.project))
    else:
        remove.append(PROJECT_HEADER)
    if options.strip_key_headers:
        remove += options.key_headers
    response = pb.CheckResponse()
    response.status.code = _OK
    ok = response.ok_response
    _add_headers(ok.headers, identity)
    ok.headers_to_remove.extend(remove)
    _add_headers(ok.response_headers_to_add, rate_limit_headers(decision))
    _admitted_metadata(
        response.dynamic_metadata, decision, request_id, facts, estimate, options.include_usage
    )
    return response


def _admitted_metadata(
    metadata: Struct,
    decision: Decision,
    request_id: str,
    facts: RequestFacts | None,
    estimate: Estimate | None,
    include_usage: bool,
) -> None:
    """Identity for access logs, plus what settlement and the Lua filter need."""
    fields: dict[str, str | float] = {
        "key_id": decision.key_id, "workspace": decision.workspace,
        "project": decision.project, "request_id": request_id,
    }
    if estimate is not None:
        fields["model"] = estimate.model
        fields["prompt_tokens"] = estimate.prompt_tokens
        fields["max_output_tokens"] = estimate.max_output_tokens
    rewrite = facts.rewrite if facts is not None and include_usage else None
    if rewrite is not None:
        # Read by the proxy's Lua filter, which rewrites only a body of this length.
        fields["body_bytes"] = rewrite.length
        if rewrite.offset is not None:
            fields["usage_rewrite"] = "insert"
            fields["usage_offset"] = rewrite.offset
        else:
            fields["usage_rewrite"] = "replace"
            fields["usage_body"] = rewrite.body
    if decision.reservation is not None:
        fields["reserved_tokens"] = decision.reservation.tokens
        fields["reserved_cost_micro_usd"] = decision.reservation.cost_micro_usd
    metadata.update(fields)


def denied_response(denial: HttpDenial, decision: Decision | None = None) -> pb.CheckResponse:
    """Envoy answers the client itself with ``denial``; nothing goes upstream."""
    response = pb.CheckResponse()
    response.status.code = denial.grpc_code.value[0]
    response.status.message = f"HTTP {denial.status}"
    denied = response.denied_response
    denied.status.code = denial.status
    _add_headers(denied.headers, denial.headers)
    denied.body = denial.body
    if decision is not None and decision.deny_reason is not None:
        fields = {"deny_reason": decision.deny_reason.value}
        if decision.key_id:
            fields["key_id"] = decision.key_id
        response.dynamic_metadata.update(fields)
    return response


def fail_open_response(options: ExtAuthzOptions) -> pb.CheckResponse:
    """Allowed without a decision: upstream is told so, and no identity header survives."""
    remove = [KEY_ID_HEADER, WORKSPACE_HEADER, PROJECT_HEADER]
    if options.strip_key_headers:
        remove += options.key_headers
    response = pb.CheckResponse()
    response.status.code = _OK
    _add_headers(response.ok_response.headers, [(FAIL_OPEN_HEADER, "true")])
    response.ok_response.headers_to_remove.extend(remove)
    response.dynamic_metadata.update({"fail_open": True})
    return response


class ExtAuthzServicer:
    """``Authorization/Check``: headers in, one authorize, CheckResponse out."""

    def __init__(
        self,
        service: AdmissionService,
        options: ExtAuthzOptions,
        admitted: AdmittedChecks | None = None,
    ) -> None:
        """Args:
        admitted: where admissions are kept until Envoy logs their request (see
            ``recovery.AdmittedChecks``); None: a dropped answer is left to its lease.
        """
        self._service = service
        self._options = options
        self._admitted = admitted
        self._failing_open = False

    @domain_errors
    async def Check(self, request: pb.CheckRequest, context: Ctx) -> pb.CheckResponse:
        attributes = request.attributes
        http = attributes.request.http
        found = find_secret(http.headers, self._options.key_headers)
        if isinstance(found, DenyReason):
            refused = self._service.refuse(found)
            return denied_response(http_denial(refused), refused)
        facts: RequestFacts | None = None
        estimate: Estimate | None = None
        # The body is read only for a request that carries a well-placed key.
        endpoint = endpoint_of(attributes) if found else None
        if endpoint is not None:
            try:
                facts = request_facts(http, endpoint)
            except BodyRefused as bad:
                return denied_response(
                    bad_request_denial(str(bad), too_large=isinstance(bad, _BodyTooLarge))
                )
            estimate = facts.estimate(self._service.output_bound(facts.model))
        proxy_id = http.headers.get(REQUEST_ID_HEADER, "")
        request_id = proxy_request_id(proxy_id)
        try:
            decision = await self._service.authorize(
                found, request_id, estimate, own_request_id=True
            )
        except StoreUnavailable:
            # The fail mode is this adapter's job: Authorize leaves it to its caller.
            return self._store_unavailable()
        if self._failing_open:
            self._failing_open = False
            log.warning("ext_authz: store reachable again; checking keys again")
        if decision.allowed:
            if decision.request_id and self._admitted is not None:
                # Released if Envoy logs the request without this answer (its client left).
                self._admitted.admitted(proxy_id, decision.key_id, decision.request_id)
            return allowed_response(decision, self._options, request_id, facts, estimate)
        return denied_response(http_denial(decision), decision)

    def _store_unavailable(self) -> pb.CheckResponse:
        if not self._options.fail_open:
            return denied_response(store_unavailable_denial())
        if not self._failing_open:
            self._failing_open = True
            log.warning("ext_authz: store unreachable; FAILING OPEN (%s: true)", FAIL_OPEN_HEADER)
        return fail_open_response(self._options)

    def handler(self) -> grpc.GenericRpcHandler:
        """A generic handler under Envoy's method path (the proto declares no service)."""
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Check": grpc.unary_unary_rpc_method_handler(
                    self.Check,
                    request_deserializer=pb.CheckRequest.FromString,
                    response_serializer=pb.CheckResponse.SerializeToString,
                )
            },
        )
