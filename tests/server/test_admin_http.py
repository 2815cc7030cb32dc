"""The HTTP/JSON admin API: every route, auth on and off, every error shape, the OpenAPI document.

An in-process sidecar on the session's store with --admin-http-listen on a free
port, called with a real HTTP client (aiohttp).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openapi_spec_validator import validate

from aigw_sidecar.bootstrap import Sidecar, start
from aigw_sidecar.server.admin_http import KEY_MANAGEMENT, OPENAPI_PATH, parse_address
from aigw_sidecar.server.http_api import routes_of
from aigw_sidecar.settings import Settings

TOKEN = "http-admin-token-0123456789"
LEGACY = "sk-legacy-http-0123456789abcdefghij"


@dataclass
class Api:
    base: str
    session: aiohttp.ClientSession
    sidecar: Sidecar
    token: str | None

    async def call(
        self, method: str, path: str, body: Any = None, *, token: str | None = "default",
        headers: dict[str, str] | None = None, raw: bytes | None = None,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        sent = dict(headers or {})
        use = self.token if token == "default" else token
        if use:
            sent["Authorization"] = f"Bearer {use}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        async with self.session.request(method, self.base + path, data=data, headers=sent) as r:
            text = await r.text()
            return r.status, json.loads(text) if text else {}, dict(r.headers)


async def _api(store_url: str, key_prefix: str, tmp_path: Path, token: str | None) -> Api:
    settings = Settings(
        listen="127.0.0.1:0", redis_url=store_url, key_prefix=key_prefix, data_dir=tmp_path,
        shutdown_grace_s=0.5, admin_http_listen="127.0.0.1:0", admin_token=token or "",
    )
    sidecar = await start(settings)
    assert sidecar.admin_http is not None
    session = aiohttp.ClientSession()
    return Api(f"http://127.0.0.1:{sidecar.admin_http.port}", session, sidecar, token)


@pytest.fixture
async def api(valkey_url: str, key_prefix: str, tmp_path: Path) -> AsyncIterator[Api]:
    made = await _api(valkey_url, key_prefix, tmp_path, TOKEN)
    yield made
    await made.session.close()
    await made.sidecar.stop()


@pytest.fixture
async def open_api(valkey_url: str, key_prefix: str, tmp_path: Path) -> AsyncIterator[Api]:
    """No admin token configured: loopback clients only, audited as anonymous."""
    made = await _api(valkey_url, key_prefix, tmp_path, None)
    yield made
    await made.session.close()
    await made.sidecar.stop()


async def _create(api: Api, name: str = "web", **extra: Any) -> dict[str, Any]:
    status, body, _ = await api.call("POST", "/v1/keys", {"name": name, **extra})
    assert status == 200, body
    return body


async def test_a_key_lives_its_whole_life_over_http(api: Api) -> None:
    created = await _create(api, limits={"costLimitUsd": "25", "tokenLimit": "1000"})
    secret, key = created["secret"], created["key"]
    assert secret.startswith("sk-aigw-") and key["limits"]["costLimitMicroUsd"] == "25000000"
    key_id = key["keyId"]
    status, got, _ = await api.call("GET", f"/v1/keys/{key_id}")
    assert (status, got["key"]["name"]) == (200, "web")
    status, page, _ = await api.call("GET", "/v1/keys?page_size=10&workspace=default")
    assert status == 200 and [k["keyId"] for k in page["keys"]] == [key_id]
    status, updated, _ = await api.call(
        "PATCH", f"/v1/keys/{key_id}?update_mask=limits.token_limit,name",
        {"name": "web-2", "limits": {"tokenLimit": "5"}},
    )
    assert status == 200, updated
    assert (updated["key"]["name"], updated["key"]["limits"]["tokenLimit"]) == ("web-2", "5")
    status, off, _ = await api.call("POST", f"/v1/keys/{key_id}:disable", {})
    assert (status, off["key"]["status"]) == (200, "KEY_STATUS_DISABLED")
    status, on, _ = await api.call("POST", f"/v1/keys/{key_id}:enable", {})
    assert (status, on["key"]["status"]) == (200, "KEY_STATUS_ENABLED")
    status, rotated, _ = await api.call("POST", f"/v1/keys/{key_id}:rotateSecret", {})
    assert status == 200 and rotated["secret"] != secret
    status, overview, _ = await api.call("GET", f"/v1/keys/{key_id}/overview")
    assert status == 200 and overview["overview"]["tokens"]["limit"] == "5"
    status, _body, _ = await api.call("DELETE", f"/v1/keys/{key_id}")
    assert status == 200
    status, gone, _ = await api.call("GET", f"/v1/keys/{key_id}")
    assert status == 404 and gone["error"]["status"] == "NOT_FOUND"
    status, audit, _ = await api.call("GET", "/v1/auditEntries?page_size=20")
    assert status == 200
    actions = [e["action"] for e in audit["entries"]]
    assert {"create_key", "update_key", "delete_key"} <= set(actions)
    assert {e["principal"] for e in audit["entries"]} == {"admin"}
    assert secret not in json.dumps(audit)


async def test_the_other_routes_answer(api: Api) -> None:
    status, imported, _ = await api.call(
        "POST", "/v1/keys:importLegacy", {"secret": LEGACY, "name": "old"}
    )
    assert status == 200 and imported["key"]["legacy"] is True
    assert LEGACY not in json.dumps(imported)
    status, events, _ = await api.call("GET", "/v1/events")
    assert status == 200, events
    status, prices, _ = await api.call("GET", "/v1/modelPrices?page_size=5")
    assert status == 200 and len(prices["prices"]) == 5
    status, price, _ = await api.call("GET", "/v1/modelPrices:resolve?model=gpt-4o-mini")
    assert status == 200 and price["priced"] is True


def test_every_rpc_of_key_management_has_a_route() -> None:
    routed = {route.rpc.name for route in routes_of(KEY_MANAGEMENT)}
    assert routed == {method.name for method in KEY_MANAGEMENT.methods}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "nope": 1}, "nope"),
        ({"name": "x", "limits": {"tokenLimit": "many"}}, "limits.tokenLimit"),
        ({"name": "x", "limits": {"tokenLimit": -3}}, "limits.token_limit"),
        ({"name": ""}, "name"),
    ],
)
async def test_a_bad_body_is_400_naming_the_field(api: Api, body: Any, field: str) -> None:
    status, reply, _ = await api.call("POST", "/v1/keys", body)
    assert status == 400, reply
    error = reply["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    assert error["message"].startswith(field), error
    assert "many" not in error["message"]


async def test_malformed_json_and_a_missing_content_type_are_400(api: Api) -> None:
    status, reply, _ = await api.call("POST", "/v1/keys", raw=b"{not json")
    assert (status, reply["error"]["status"]) == (400, "INVALID_ARGUMENT")
    status, reply, _ = await api.call(
        "POST", "/v1/keys", raw=b'{"name": "x"}', headers={"Content-Type": "text/plain"}
    )
    assert status == 400 and "Content-Type" in reply["error"]["message"]


async def test_unknown_query_parameters_paths_and_methods_are_json_errors(api: Api) -> None:
    status, reply, _ = await api.call("GET", "/v1/keys?colour=red")
    assert status == 400 and reply["error"]["message"].startswith("colour")
    status, reply, _ = await api.call("GET", "/v1/nothing")
    assert (status, reply["error"]["status"]) == (404, "NOT_FOUND")
    status, reply, _ = await api.call("PUT", "/v1/keys")
    assert status == 501 and reply["error"]["status"] == "UNIMPLEMENTED"


async def test_a_taken_name_is_409_and_a_legacy_limit_is_400(api: Api) -> None:
    await _create(api, "same")
    status, reply, _ = await api.call("POST", "/v1/keys", {"name": "same"})
    assert (status, reply["error"]["status"]) == (409, "ALREADY_EXISTS")
    status, imported, _ = await api.call(
        "POST", "/v1/keys:importLegacy", {"secret": LEGACY, "name": "legacy"}
    )
    assert status == 200
    status, reply, _ = await api.call(
        "PATCH", f"/v1/keys/{imported['key']['keyId']}?update_mask=limits.token_limit",
        {"limits": {"tokenLimit": "5"}},
    )
    assert (status, reply["error"]["status"]) == (400, "FAILED_PRECONDITION")


async def test_with_a_token_configured_a_call_needs_it(api: Api) -> None:
    for token in (None, "wrong-token-0123456789abcdef"):
        status, reply, _ = await api.call("GET", "/v1/keys", token=token)
        assert (status, reply["error"]["status"]) == (401, "UNAUTHENTICATED")
    status, _reply, _ = await api.call("GET", "/v1/keys")
    assert status == 200


async def test_without_a_token_loopback_callers_are_served_as_anonymous(open_api: Api) -> None:
    await _create(open_api, "anon")
    status, audit, _ = await open_api.call("GET", "/v1/auditEntries")
    assert status == 200 and audit["entries"][0]["principal"] == "anonymous"


async def test_another_origin_is_refused(open_api: Api) -> None:
    status, reply, _ = await open_api.call(
        "POST", "/v1/keys", {"name": "csrf"}, headers={"Origin": "http://evil.example"}
    )
    assert (status, reply["error"]["status"]) == (403, "PERMISSION_DENIED")


async def test_every_reply_carries_the_security_headers(api: Api) -> None:
    for path in ("/v1/keys", "/v1/nothing", OPENAPI_PATH):
        _status, _body, headers = await api.call("GET", path)
        assert headers["Cache-Control"] == "no-store"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["Referrer-Policy"] == "no-referrer"


async def test_the_openapi_document_is_valid_and_lists_every_route(api: Api) -> None:
    status, document, _ = await api.call("GET", OPENAPI_PATH)
    assert status == 200
    validate(document)
    for route in routes_of(KEY_MANAGEMENT):
        assert route.method.lower() in document["paths"][route.template]


def test_an_address_is_host_and_port() -> None:
    assert parse_address("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_address("[::1]:0") == ("::1", 0)
    with pytest.raises(ValueError, match="host:port"):
        parse_address("8080")


async def test_a_secret_sent_as_a_field_or_parameter_name_is_not_echoed(api: Api) -> None:
    secret = "sk-aigw-0123456789abcdefghjk_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef123456"
    status, reply, _ = await api.call("POST", "/v1/keys", {"name": "x", secret: 1})
    assert status == 400 and secret not in json.dumps(reply)
    status, reply, _ = await api.call("GET", f"/v1/keys?{secret}=1")
    assert status == 400 and secret not in json.dumps(reply)
