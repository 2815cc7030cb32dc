"""The console's guard on its own (no browser): who is let in without an admin token."""

from __future__ import annotations

from unittest import mock

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from aigw_sidecar.server.admin_auth import AdminAuthenticator
from aigw_sidecar.server.console import Console


def _request_from(address: str) -> web.Request:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (address, 40000) if name == "peername" else default
    )
    return make_mocked_request("GET", "/console/keys", transport=transport)


async def _never(request: web.Request) -> web.StreamResponse:
    raise AssertionError("the handler must not run")


async def test_without_a_token_a_client_off_loopback_is_refused() -> None:
    console = Console(servicer=object(), authenticator=AdminAuthenticator([]))
    response = await console.middleware(_request_from("192.0.2.9"), _never)
    assert isinstance(response, web.Response) and response.status == 403
    assert response.text is not None and "loopback clients only" in response.text
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert not response.cookies


async def test_without_a_token_a_loopback_client_is_served_as_anonymous() -> None:
    console = Console(servicer=object(), authenticator=AdminAuthenticator([]))
    seen: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request["session"].principal)
        return web.Response(text="ok")

    response = await console.middleware(_request_from("127.0.0.1"), handler)
    assert response.status == 200 and seen == ["anonymous"]
    cookie = response.cookies["aigw_console"]
    assert (cookie["httponly"], cookie["samesite"], cookie["path"]) == (True, "Strict", "/console")
