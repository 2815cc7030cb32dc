"""The admin HTTP listener (--admin-http-listen): the JSON API, its OpenAPI document, the console.

One aiohttp application on the sidecar's event loop. It serves ``/v1/...`` (see
``http_api``), ``/v1/openapi.json`` and the web console under ``/console/``
(``server/console``; ``/`` redirects there); any other path or method outside
the console is a JSON error. TLS follows the admin listener's certificate flags. Under
``--workers`` every worker binds the same address (SO_REUSEPORT), like gRPC.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from aiohttp import web

from aigw_sidecar.api.v1 import keys_pb2
from aigw_sidecar.server.admin_auth import AdminAuthenticator
from aigw_sidecar.server.console import Console, is_console_path
from aigw_sidecar.server.http_api import API_PREFIX, SECURITY_HEADERS, JsonApi, error_reply
from aigw_sidecar.server.openapi import openapi_document

log = logging.getLogger(__name__)

KEY_MANAGEMENT = keys_pb2.DESCRIPTOR.services_by_name["KeyManagement"]
OPENAPI_PATH = "/v1/openapi.json"
API = web.AppKey("api", JsonApi)  # the app's JsonApi (the console calls through it)
# Off: the flag (or AIGW_ADMIN_HTTP_LISTEN) set to one of these.
OFF = ("", "off", "none")


def request_classes() -> dict[str, type]:
    """Request message classes of KeyManagement by full name."""
    return {
        rpc.input_type.full_name: getattr(keys_pb2, rpc.input_type.name)
        for rpc in KEY_MANAGEMENT.methods
    }


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--admin-http-listen: expected host:port, not {address!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 (the admin asked for it)


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unknown API paths and methods answer in the API's error shape."""
    if is_console_path(request.path):
        return await handler(request)  # the console answers with pages of its own
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return error_reply(grpc.StatusCode.NOT_FOUND, f"{request.path}: no such API path")
    except web.HTTPMethodNotAllowed:
        return error_reply(
            grpc.StatusCode.UNIMPLEMENTED, f"{request.method} {request.path}: not allowed"
        )


def build_app(servicer: object, authenticator: AdminAuthenticator, version: str) -> web.Application:
    console = Console(servicer, authenticator)
    app = web.Application(
        middlewares=[console.middleware, _json_errors], client_max_size=1024 * 1024
    )
    api = JsonApi(KEY_MANAGEMENT, servicer, request_classes(), authenticator)
    api.add_to(app)
    console.add_to(app)
    document = json.dumps(
        openapi_document(KEY_MANAGEMENT, title="aigw-sidecar admin API", version=version),
        indent=1,
    )

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(
            text=document, content_type="application/json", headers=SECURITY_HEADERS
        )

    app.router.add_get(OPENAPI_PATH, openapi)
    app[API] = api
    assert all(route.template.startswith(API_PREFIX) for route in api.routes)
    return app


@dataclass
class AdminHttp:
    """A started listener; ``port`` is the bound port."""

    runner: web.AppRunner
    port: int

    @classmethod
    async def start(
        cls,
        address: str,
        app: web.Application,
        *,
        cert_file: str = "",
        key_file: str = "",
        reuse_port: bool = False,
        shutdown_timeout_s: float = 10.0,
    ) -> AdminHttp:
        host, port = parse_address(address)
        context = None
        if cert_file:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert_file, key_file or None)
        # stop() waits this long at most for open connections (aiohttp's default: 60 s).
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               shutdown_timeout=shutdown_timeout_s)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=context, reuse_port=reuse_port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise RuntimeError(
                f"--admin-http-listen {address}: cannot listen ({exc.strerror}); choose "
                "another address, or turn the HTTP admin API off with --admin-http-listen off"
            ) from None
        # The port bound (for :0): the first address the runner listens on.
        return cls(runner, int(runner.addresses[0][1]) if runner.addresses else port)

    async def stop(self) -> None:
        await self.runner.cleanup()
