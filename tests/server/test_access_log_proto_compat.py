"""Our trimmed access-log proto is wire-compatible with Envoy's (xds-protos), both ways.

Like the ext_authz test: xds-protos is a test-only dependency, and only its
``envoy.service...`` / ``envoy.data...`` modules are imported.
"""

from __future__ import annotations

import pytest

from aigw_sidecar.api.envoy.v3 import access_log_pb2 as ours

xds_als = pytest.importorskip("envoy.service.accesslog.v3.als_pb2")
xds_entry = pytest.importorskip("envoy.data.accesslog.v3.accesslog_pb2")

NAMESPACE = "envoy.filters.http.ext_authz"


def envoy_message() -> object:
    """A batch as Envoy sends it: the stream's first message, with two entries."""
    message = xds_als.StreamAccessLogsMessage()
    message.identifier.log_name = "aigw_usage"
    message.identifier.node.id = "gateway-1"  # not ours
    first = message.http_logs.log_entry.add()
    common = first.common_properties
    common.metadata.filter_metadata[NAMESPACE].update(
        {"key_id": "key_a", "request_id": "rid-1.ab12cd34", "reserved_tokens": 307}
    )
    common.metadata.filter_metadata["aigw.usage"].update(
        {"usage": '{"prompt_tokens": 11, "completion_tokens": 5}', "model": "m"}
    )
    common.time_to_last_upstream_tx_byte.nanos = 120_000
    common.upstream_cluster = "llm"
    common.route_name = "chat"
    common.downstream_remote_address.socket_address.address = "127.0.0.1"  # not ours
    common.response_flags.downstream_connection_termination = True
    common.response_flags.no_route_found = True  # not ours
    first.request.path = "/v1/chat/completions"
    first.request.request_id = "rid-1"
    first.request.request_method = 3  # POST; not ours
    first.response.response_code.value = 200
    first.response.response_code_details = "via_upstream"
    first.response.response_body_bytes = 1378  # not ours
    second = message.http_logs.log_entry.add()
    second.common_properties.intermediate_log_entry = True
    return message


def test_envoys_batch_parses_into_ours_and_back() -> None:
    envoy = envoy_message()
    mine = ours.StreamAccessLogsMessage.FromString(envoy.SerializeToString())  # type: ignore[attr-defined]
    # Our parse keeps unknown fields (node, addresses, method), so the trip is lossless.
    assert xds_als.StreamAccessLogsMessage.FromString(mine.SerializeToString()) == envoy


def test_the_fields_we_read_arrive_as_envoy_sent_them() -> None:
    mine = ours.StreamAccessLogsMessage.FromString(envoy_message().SerializeToString())  # type: ignore[attr-defined]
    assert mine.identifier.log_name == "aigw_usage"
    first, second = mine.http_logs.log_entry
    common = first.common_properties
    authz = common.metadata.filter_metadata[NAMESPACE].fields
    assert authz["key_id"].string_value == "key_a"
    assert authz["reserved_tokens"].number_value == 307
    usage = common.metadata.filter_metadata["aigw.usage"].fields
    assert usage["model"].string_value == "m"
    assert common.HasField("time_to_last_upstream_tx_byte")
    assert common.time_to_last_upstream_tx_byte.nanos == 120_000
    assert (common.upstream_cluster, common.route_name) == ("llm", "chat")
    assert common.response_flags.downstream_connection_termination is True
    assert (first.request.path, first.request.request_id) == ("/v1/chat/completions", "rid-1")
    assert first.response.HasField("response_code")
    assert first.response.response_code.value == 200
    assert first.response.response_code_details == "via_upstream"
    assert second.common_properties.intermediate_log_entry is True
    assert not second.response.HasField("response_code")
    assert not second.common_properties.HasField("time_to_last_upstream_tx_byte")


def test_the_service_path_is_envoys() -> None:
    method = xds_als.DESCRIPTOR.services_by_name["AccessLogService"].methods_by_name[
        "StreamAccessLogs"
    ]
    from aigw_sidecar.server.access_log import SERVICE_NAME

    assert f"{SERVICE_NAME}.StreamAccessLogs" == method.full_name
    assert method.client_streaming and not method.server_streaming
    assert ours.StreamAccessLogsResponse().SerializeToString() == (
        xds_als.StreamAccessLogsResponse().SerializeToString()
    )
