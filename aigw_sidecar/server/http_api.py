"""The HTTP/JSON admin API: every KeyManagement RPC served from its google.api.http rule.

Routes, request parsing and the OpenAPI document (``server/openapi.py``) are read
from the service descriptor, the way ``aigw-admin`` is: a new RPC with a rule is
served with no code here. A request becomes the RPC's request message (path
parameters, then the JSON body for ``body: "*"``, then query parameters, by
protobuf's canonical JSON mapping; an unknown field is refused), and goes to the
very ``KeyManagementServicer`` that gRPC calls, with the caller's principal, so
validation, the audit trail and every error are the same. The reply is the
response message as canonical JSON; an error is
``{"error": {"code": <http>, "status": "<gRPC code name>", "message": "..."}}``.

Who may call: with admin tokens configured, ``Authorization: Bearer <token>``
(the gRPC admin tokens); without, loopback clients only (a token sent anyway is
ignored, and the reply says so with the header ``aigw-admin-auth: none``). A
request with a body must say ``Content-Type: application/json`` and a browser
request must come from this origin, so no other web page can drive the API (no
CORS is ever granted).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from aiohttp import web
from google.api import annotations_pb2
from google.protobuf import descriptor as pb_descriptor
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from aigw_sidecar.server.admin_auth import (
    AUTH_NOTICE,
    TOKEN_IGNORED,
    UNAUTHENTICATED_MESSAGE,
    AdminAuthenticator,
    acting_as,
)

log = logging.getLogger(__name__)

API_PREFIX = "/v1/"
MAX_BODY_BYTES = 64 * 1024
# gRPC status -> HTTP status (google.rpc's mapping).
HTTP_OF_GRPC: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
_PATH_PARAM = re.compile(r"\{(\w+)\}")
# Headers on every reply: nothing here may be cached, framed, sniffed or leak a referrer.
SECURITY_HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}


class ApiError(Exception):
    """An error reply: a gRPC status and a message that names the field at fault."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_reply(code: grpc.StatusCode, message: str) -> web.Response:
    status = HTTP_OF_GRPC.get(code, 500)
    body = {"error": {"code": status, "status": code.name, "message": message}}
    return web.json_response(body, status=status, headers=SECURITY_HEADERS)


@dataclass(frozen=True, slots=True)
class Route:
    """One RPC's HTTP rule."""

    method: str  # GET, POST, PATCH, DELETE
    template: str  # "/v1/keys/{key_id}:enable"
    body: str  # "*" or ""
    rpc: pb_descriptor.MethodDescriptor

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(_PATH_PARAM.findall(self.template))

    @property
    def aiohttp_path(self) -> str:
        # A path parameter is one segment, and stops before a ':verb'.
        return _PATH_PARAM.sub(r"{\1:[^/:]+}", self.template)


def routes_of(service: pb_descriptor.ServiceDescriptor) -> list[Route]:
    """The HTTP rules of a service's methods (those without one are not served)."""
    routes = []
    for rpc in service.methods:
        rule = rpc.GetOptions().Extensions[annotations_pb2.http]
        pattern = rule.WhichOneof("pattern")
        if pattern is None or pattern == "custom":
            continue
        routes.append(Route(pattern.upper(), getattr(rule, pattern), rule.body, rpc))
    return routes


class CallContext:
    """What a servicer method needs of a gRPC context, for a call that came over HTTP."""

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise ApiError(code, details)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()


_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,63}")


def shown_name(name: str) -> str:
    """A name the caller sent, for an error message: only when it can be a field name.

    Anything else (a secret pasted as a key or a query parameter) is not echoed.
    """
    return name if _FIELD_NAME.fullmatch(name) else "(a name that is no field)"


def _field_error(exc: json_format.ParseError, message: Message) -> ApiError:
    """A ParseError as INVALID_ARGUMENT naming the field, never echoing the value."""
    text = str(exc)
    named = re.search(r'has no field named "([^"]+)"', text)
    if named:
        return ApiError(
            grpc.StatusCode.INVALID_ARGUMENT, f"{shown_name(named.group(1))}: unknown field"
        )
    failed = re.findall(r"Failed to parse (\w+) field", text)
    if failed:
        return ApiError(
            grpc.StatusCode.INVALID_ARGUMENT, f"{'.'.join(failed)}: wrong type or format"
        )
    return ApiError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"body: not a {message.DESCRIPTOR.name} in JSON (protobuf's JSON mapping)",
    )


def _field_by_name(descriptor: Any, name: str) -> FieldDescriptor | None:
    """A field by its proto name or its JSON (lowerCamelCase) name."""
    fields: list[FieldDescriptor] = list(descriptor.fields)
    return next((f for f in fields if name in (f.name, f.json_name)), None)


def set_query(message: Message, query: Mapping[str, list[str]]) -> None:
    """Query parameters onto a request: scalars, enums (by name), repeated, dotted paths."""
    for name, values in query.items():
        target: Message = message
        parts = name.split(".")
        for i, part in enumerate(parts):
            field = _field_by_name(target.DESCRIPTOR, part)
            if field is None:
                raise ApiError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"{shown_name(name)}: unknown parameter"
                )
            if i < len(parts) - 1:
                if field.type != FieldDescriptor.TYPE_MESSAGE or field.is_repeated:
                    raise ApiError(
                        grpc.StatusCode.INVALID_ARGUMENT, f"{shown_name(name)}: unknown parameter"
                    )
                target = getattr(target, field.name)
                continue
            _set_scalar(target, field, name, values)


def _set_scalar(message: Message, field: FieldDescriptor, name: str, values: list[str]) -> None:
    if field.message_type is not None and field.message_type.full_name == (
        "google.protobuf.FieldMask"
    ):
        paths = [p for value in values for p in value.split(",") if p]
        getattr(message, field.name).paths.extend(paths)
        return
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"{name}: set it in the body")
    converted = [_scalar(field, name, value) for value in values]
    if field.is_repeated:
        getattr(message, field.name).extend(converted)
    elif len(converted) != 1:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"{name}: given more than once")
    else:
        setattr(message, field.name, converted[0])


def _scalar(field: FieldDescriptor, name: str, value: str) -> Any:
    try:
        if field.type == FieldDescriptor.TYPE_ENUM:
            assert field.enum_type is not None
            enum = field.enum_type.values_by_name.get(value)
            if enum is None:
                raise ValueError(value)
            return enum.number
        if field.type == FieldDescriptor.TYPE_BOOL:
            if value not in ("true", "false"):
                raise ValueError(value)
            return value == "true"
        if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return float(value)
        if field.type == FieldDescriptor.TYPE_STRING:
            return value
        if field.type == FieldDescriptor.TYPE_BYTES:
            raise ValueError(value)
        return int(value, 10)
    except ValueError:
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT, f"{name}: wrong type or format"
        ) from None


def is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


class JsonApi:
    """The routes of one service, bound to its servicer."""

    def __init__(
        self,
        service: pb_descriptor.ServiceDescriptor,
        servicer: object,
        request_classes: Mapping[str, type[Message]],
        authenticator: AdminAuthenticator,
    ) -> None:
        """Args:
        request_classes: message full name -> class, for every request type.
        """
        self.routes = routes_of(service)
        self._servicer = servicer
        self._classes = request_classes
        self._auth = authenticator

    def add_to(self, app: web.Application) -> None:
        for route in self.routes:
            app.router.add_route(route.method, route.aiohttp_path, self._handler(route))

    def _handler(self, route: Route) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            principal = ""
            response: web.Response
            try:
                principal = self.principal(request)
                message = await self._message(route, request)
                with acting_as(principal):
                    method = getattr(self._servicer, route.rpc.name)
                    reply: Message = await method(message, CallContext())
            except ApiError as exc:
                response = error_reply(exc.code, exc.message)
            else:
                text = json_format.MessageToJson(reply, indent=None)
                response = web.Response(
                    text=text, content_type="application/json", headers=SECURITY_HEADERS
                )
            if principal == TOKEN_IGNORED:  # the client can warn its user
                response.headers[AUTH_NOTICE[0]] = AUTH_NOTICE[1]
            return response

        return handle

    def principal(self, request: web.Request) -> str:
        """Who calls, or ApiError: a bearer token, or (none configured) a loopback client."""
        refuse_cross_site(request)
        if not self._auth.enabled:
            if not is_loopback(request.remote):
                raise ApiError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "no admin token is configured: only loopback clients are served",
                )
            return self._auth.anonymous_principal(
                [("authorization", request.headers.get("Authorization", ""))]
            )
        header = request.headers.get("Authorization", "")
        principal = self._auth.principal_of([("authorization", header)])
        if principal is None:
            raise ApiError(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
        return principal

    async def _message(self, route: Route, request: web.Request) -> Message:
        message = self._classes[route.rpc.input_type.full_name]()
        if route.body == "*":
            content_type = request.headers.get("Content-Type", "")
            if content_type.split(";")[0].strip().lower() != "application/json":
                raise ApiError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "Content-Type: send the body as application/json",
                )
            raw = await request.content.read(MAX_BODY_BYTES + 1)
            if len(raw) > MAX_BODY_BYTES:
                raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "body: larger than 64 KiB")
            if raw.strip():
                try:
                    json_format.Parse(raw.decode("utf-8"), message)
                except json_format.ParseError as exc:
                    raise _field_error(exc, message) from None
                except UnicodeDecodeError:
                    raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "body: not UTF-8") from None
        query: dict[str, list[str]] = {}
        for name, value in request.query.items():
            query.setdefault(name, []).append(value)
        if route.body == "*":
            # With a body, only the update mask may come as a query parameter.
            extra = set(query) - {"update_mask", "updateMask"}
            if extra:
                raise ApiError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{shown_name(sorted(extra)[0])}: set it in the body",
                )
        set_query(message, query)
        for name in route.path_params:
            setattr(message, name, request.match_info[name])
        return message


def refuse_cross_site(request: web.Request) -> None:
    """A browser request from another origin is refused (the API grants no CORS)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return
    own = f"{request.scheme}://{request.host}"
    if origin != own:
        raise ApiError(grpc.StatusCode.PERMISSION_DENIED, "cross-origin requests are refused")

