"""Our trimmed ext_proc proto is wire-compatible with Envoy's (xds-protos), both ways.

Like the ext_authz test: xds-protos is a test-only dependency, and only its
``envoy.service...`` / ``envoy.extensions...`` modules are imported.
"""

from __future__ import annotations

import pytest
from google.protobuf.struct_pb2 import Struct

from aigw_sidecar.api.envoy.v3 import ext_authz_pb2 as authz
from aigw_sidecar.api.envoy.v3 import ext_proc_pb2 as ours

xds_proc = pytest.importorskip("envoy.service.ext_proc.v3.external_processor_pb2")
xds_mode = pytest.importorskip("envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2")
xds_base = pytest.importorskip("envoy.config.core.v3.base_pb2")

NAMESPACE = "envoy.filters.http.ext_authz"


def envoy_requests() -> list[object]:
    """One message of each kind Envoy sends, with the fields we read (and some we do not)."""
    headers = xds_proc.ProcessingRequest()
    headers.request_headers.headers.headers.add(key=":path", raw_value=b"/v1/chat/completions")
    headers.request_headers.headers.headers.add(key="x-request-id", raw_value=b"rid-1")
    headers.request_headers.end_of_stream = False
    headers.metadata_context.filter_metadata[NAMESPACE].update(
        {"key_id": "key_a", "request_id": "rid-1.ab12cd34", "reserved_tokens": 307}
    )
    headers.attributes["envoy.filters.http.ext_proc"].update({"request.path": "/v1"})
    headers.protocol_config.request_body_mode = xds_mode.ProcessingMode.BUFFERED  # not ours

    request_body = xds_proc.ProcessingRequest()
    request_body.request_body.body = b'{"stream": true}'
    request_body.request_body.end_of_stream = True

    response_headers = xds_proc.ProcessingRequest()
    response_headers.response_headers.headers.headers.add(key=":status", raw_value=b"200")
    response_headers.response_headers.end_of_stream = False
    response_headers.observability_mode = True

    response_body = xds_proc.ProcessingRequest()
    response_body.response_body.body = b'data: {"usage": {}}\n\n'
    response_body.response_body.end_of_stream = True

    trailers = xds_proc.ProcessingRequest()
    trailers.response_trailers.trailers.headers.add(key="grpc-status", raw_value=b"0")
    return [headers, request_body, response_headers, response_body, trailers]


@pytest.mark.parametrize("index", range(5))
def test_envoys_processing_requests_parse_into_ours_and_back(index: int) -> None:
    envoy = envoy_requests()[index]
    mine = ours.ProcessingRequest.FromString(envoy.SerializeToString())  # type: ignore[attr-defined]
    assert mine.WhichOneof("request") == envoy.WhichOneof("request")  # type: ignore[attr-defined]
    assert mine.observability_mode == envoy.observability_mode  # type: ignore[attr-defined]
    # Our parse keeps unknown fields (protocol_config), so the trip is lossless.
    back = xds_proc.ProcessingRequest.FromString(mine.SerializeToString())
    assert back == envoy


def test_the_fields_we_read_arrive_as_envoy_sent_them() -> None:
    headers, body, status, chunk, _ = (
        ours.ProcessingRequest.FromString(m.SerializeToString())  # type: ignore[attr-defined]
        for m in envoy_requests()
    )
    sent = headers.request_headers.headers.headers
    assert [(h.key, h.raw_value) for h in sent] == [
        (":path", b"/v1/chat/completions"), ("x-request-id", b"rid-1")
    ]
    metadata = headers.metadata_context.filter_metadata[NAMESPACE]
    assert metadata.fields["key_id"].string_value == "key_a"
    assert metadata.fields["reserved_tokens"].number_value == 307
    assert dict(headers.attributes["envoy.filters.http.ext_proc"]) == {"request.path": "/v1"}
    assert (body.request_body.body, body.request_body.end_of_stream) == (
        b'{"stream": true}', True
    )
    assert status.response_headers.headers.headers[0].raw_value == b"200"
    assert chunk.response_body.end_of_stream is True


def our_responses() -> list[ours.ProcessingResponse]:
    mode = ours.ProcessingMode
    metadata = Struct()
    metadata.update({"settled": True})
    length = authz.HeaderValueOption(
        header=authz.HeaderValue(key="content-length", raw_value=b"42"),
        append_action=authz.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )
    return [
        ours.ProcessingResponse(request_headers=ours.HeadersResponse()),
        ours.ProcessingResponse(
            request_headers=ours.HeadersResponse(),
            mode_override=mode(
                request_header_mode=mode.SEND, response_header_mode=mode.SKIP,
                request_body_mode=mode.NONE, response_body_mode=mode.STREAMED,
                request_trailer_mode=mode.SKIP, response_trailer_mode=mode.SKIP,
            ),
        ),
        ours.ProcessingResponse(
            request_body=ours.BodyResponse(response=ours.CommonResponse(
                header_mutation=ours.HeaderMutation(set_headers=[length], remove_headers=["x"]),
                body_mutation=ours.BodyMutation(body=b'{"a":1}'),
            )),
            dynamic_metadata=metadata,
        ),
        ours.ProcessingResponse(response_headers=ours.HeadersResponse()),
        ours.ProcessingResponse(response_body=ours.BodyResponse()),
        ours.ProcessingResponse(
            response_body=ours.BodyResponse(response=ours.CommonResponse(
                status=ours.CommonResponse.CONTINUE_AND_REPLACE,
                body_mutation=ours.BodyMutation(clear_body=True),
                clear_route_cache=True,
            ))
        ),
        ours.ProcessingResponse(response_trailers=ours.TrailersResponse()),
    ]


@pytest.mark.parametrize("index", range(7))
def test_our_processing_responses_read_the_same_in_envoys_messages(index: int) -> None:
    mine = our_responses()[index]
    envoy = xds_proc.ProcessingResponse.FromString(mine.SerializeToString())
    assert envoy.WhichOneof("response") == mine.WhichOneof("response")
    assert ours.ProcessingResponse.FromString(envoy.SerializeToString()) == mine


def test_the_fields_we_write_mean_what_envoy_reads() -> None:
    _, override, replaced, *_, cleared, _ = (
        xds_proc.ProcessingResponse.FromString(m.SerializeToString()) for m in our_responses()
    )
    envoy_mode = xds_mode.ProcessingMode
    assert override.mode_override == envoy_mode(
        request_header_mode=envoy_mode.SEND, response_header_mode=envoy_mode.SKIP,
        request_body_mode=envoy_mode.NONE, response_body_mode=envoy_mode.STREAMED,
        request_trailer_mode=envoy_mode.SKIP, response_trailer_mode=envoy_mode.SKIP,
    )
    common = replaced.request_body.response
    assert common.body_mutation.body == b'{"a":1}'
    option = common.header_mutation.set_headers[0]
    assert (option.header.key, option.header.raw_value) == ("content-length", b"42")
    assert option.append_action == xds_base.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    assert list(common.header_mutation.remove_headers) == ["x"]
    assert dict(replaced.dynamic_metadata) == {"settled": True}
    assert cleared.response_body.response.status == (
        xds_proc.CommonResponse.CONTINUE_AND_REPLACE
    )
    assert cleared.response_body.response.body_mutation.clear_body is True
    assert cleared.response_body.response.clear_route_cache is True


def test_envoys_body_mutation_parses_into_ours() -> None:
    envoy = xds_proc.ProcessingResponse()
    envoy.request_body.response.body_mutation.body = b"new"
    envoy.request_body.response.header_mutation.set_headers.add().header.key = "k"
    mine = ours.ProcessingResponse.FromString(envoy.SerializeToString())
    assert mine.request_body.response.body_mutation.body == b"new"
    assert mine.request_body.response.header_mutation.set_headers[0].header.key == "k"
