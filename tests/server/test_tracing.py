"""OpenTelemetry tracing (--otel-endpoint), against a real OTLP receiver on loopback.

An in-process sidecar on the session's Valkey exports to tests/otlp_receiver.py,
over OTLP/gRPC and OTLP/HTTP. The trace through real Envoy is
tests/e2e/test_tracing_envoy.py.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aigw_sidecar.api.v1 import admission_pb2 as adm_pb
from aigw_sidecar.api.v1 import admission_pb2_grpc, keys_pb2
from aigw_sidecar.bootstrap import Sidecar, start, start_tracing
from aigw_sidecar.keys.secrets import hash_secret
from aigw_sidecar.server.tracing import MAX_ATTRIBUTE_LENGTH, Tracing
from aigw_sidecar.settings import Settings, config_text, parse_otel_endpoint, parse_settings
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.server.test_ext_authz_servicer import check_request, check_stub
from tests.servers import REPO, ChannelStubs

SERVICE = "aigw-sidecar-test"
AUTHORIZE = "aigw.v1.Admission/Authorize"
RECORD = "aigw.v1.Admission/RecordUsage"
CHECK = "envoy.service.auth.v3.Authorization/Check"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@dataclass
class Traced(ChannelStubs):
    sidecar: Sidecar
    channel: grpc.aio.Channel
    receiver: OtlpReceiver

    async def spans(self, count_of: dict[str, int]) -> list[ReceivedSpan]:
        """The spans received once each name in ``count_of`` arrived that many times."""
        def enough(spans: list[ReceivedSpan]) -> bool:
            return all(sum(s.name == name for s in spans) >= n for name, n in count_of.items())
        # In a thread: the sidecar runs on this test's event loop.
        return await asyncio.to_thread(self.receiver.wait_for, enough, 10.0)

    async def create_key(self, **limits: int) -> keys_pb2.CreateKeyResponse:
        reply: keys_pb2.CreateKeyResponse = await self.keys.CreateKey(keys_pb2.CreateKeyRequest(
            name=f"t-{uuid.uuid4().hex[:10]}", project="proj", limits=keys_pb2.Limits(**limits)
        ))
        return reply


async def open_traced(
    valkey_url: str, key_prefix: str, workdir: Path, endpoint: str, **settings: object
) -> Traced:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # export every 50 ms (default: 5 s)
        sidecar = await start(Settings(
            listen="127.0.0.1:0", redis_url=valkey_url, key_prefix=key_prefix, data_dir=workdir,
            shutdown_grace_s=0.5, otel_endpoint=endpoint, otel_service_name=SERVICE,
            **settings,  # type: ignore[arg-type]
        ))
    return Traced(sidecar, grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}"), None)  # type: ignore[arg-type]


@pytest.fixture(params=["grpc", "http"])
async def traced(
    request: pytest.FixtureRequest, receiver: OtlpReceiver, valkey_url: str, key_prefix: str,
    tmp_path: Path,
) -> AsyncIterator[Traced]:
    endpoint = receiver.grpc_endpoint if request.param == "grpc" else receiver.http_endpoint
    opened = await open_traced(valkey_url, key_prefix, tmp_path, endpoint)
    opened.receiver = receiver
    receiver.clear()
    yield opened
    await opened.channel.close()
    await opened.sidecar.stop()


def one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{name}: {len(found)} spans in {[s.name for s in spans]}"
    return found[0]


async def test_authorize_and_record_usage_are_spans_with_the_store_round_trip_as_a_child(
    traced: Traced,
) -> None:
    created = await traced.create_key(tokens_per_minute=10_000)
    traced.receiver.clear()
    decision = await traced.admission.Authorize(adm_pb.AuthorizeRequest(
        secret=created.secret, request_id="r1", model="gpt-4o-mini",
    ))
    assert decision.allowed
    await traced.admission.RecordUsage(adm_pb.RecordUsageRequest(
        key_id=created.key.key_id, request_id="r1", prompt_tokens=12, completion_tokens=34,
        model="gpt-4o-mini",
    ))
    spans = await traced.spans({AUTHORIZE: 1, RECORD: 1, "store authorize": 1,
                                "store record_usage": 1})
    authorize, store = one(spans, AUTHORIZE), one(spans, "store authorize")
    assert authorize.service == SERVICE
    assert authorize.is_root and authorize.kind == 2  # SERVER
    assert store.parent_span_id == authorize.span_id and store.kind == 3  # CLIENT
    assert store.trace_id == authorize.trace_id
    assert authorize.attributes["rpc.system"] == "grpc"
    assert authorize.attributes["rpc.method"] == "Authorize"
    assert authorize.attributes["rpc.grpc.status_code"] == 0
    assert authorize.attributes["aigw.decision"] == "allowed"
    assert authorize.attributes["aigw.key_id"] == created.key.key_id
    assert authorize.attributes["aigw.workspace"] == created.key.workspace
    assert authorize.attributes["aigw.project"] == "proj"
    assert store.attributes["db.system.name"] == "redis"
    assert authorize.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    # The store span adds only what the call's span has not: no identity twice.
    assert "aigw.key_id" not in store.attributes
    record, stored = one(spans, RECORD), one(spans, "store record_usage")
    assert stored.parent_span_id == record.span_id
    assert record.attributes["aigw.key_id"] == created.key.key_id
    assert record.attributes["aigw.usage.counted"] is True
    assert stored.attributes["gen_ai.usage.input_tokens"] == 12
    assert stored.attributes["gen_ai.usage.output_tokens"] == 34
    assert stored.attributes["gen_ai.response.model"] == "gpt-4o-mini"
    assert_no_secret(spans, created.secret)


def assert_no_secret(spans: list[ReceivedSpan], secret: str) -> None:
    """Neither the secret, nor a piece of it, nor its stored hash."""
    digest = hash_secret(secret)
    for span in spans:
        text = repr((span.name, span.attributes))
        assert secret not in text
        assert secret[-10:] not in text
        assert digest not in text and digest[:16] not in text


async def test_a_denial_carries_its_reason_and_never_the_secret(traced: Traced) -> None:
    created = await traced.create_key(requests_per_minute=1)
    await traced.admission.Authorize(adm_pb.AuthorizeRequest(secret=created.secret))
    denied = await traced.admission.Authorize(adm_pb.AuthorizeRequest(secret=created.secret))
    assert not denied.allowed
    wrong = created.secret[:-4] + "abcd"
    await traced.admission.Authorize(adm_pb.AuthorizeRequest(secret=wrong))
    spans = await traced.spans({AUTHORIZE: 3})
    reasons = sorted(str(s.attributes.get("aigw.deny_reason")) for s in spans
                     if s.name == AUTHORIZE and s.attributes.get("aigw.decision") == "denied")
    # A changed character fails the secret's checksum: malformed, before any lookup.
    assert reasons == ["key_malformed", "requests_per_minute"]
    assert_no_secret(spans, created.secret)
    assert_no_secret(spans, wrong)


@pytest.mark.parametrize("headers", [
    {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
    {"b3": f"{TRACE_ID}-{PARENT_ID}-1"},
    {"x-b3-traceid": TRACE_ID, "x-b3-spanid": PARENT_ID, "x-b3-sampled": "1"},
], ids=["w3c", "b3-single", "b3-multi"])
async def test_a_call_continues_the_trace_its_metadata_names(
    traced: Traced, headers: dict[str, str]
) -> None:
    created = await traced.create_key()
    traced.receiver.clear()
    await traced.admission.Authorize(
        adm_pb.AuthorizeRequest(secret=created.secret), metadata=tuple(headers.items())
    )
    spans = await traced.spans({AUTHORIZE: 1, "store authorize": 1})
    authorize = one(spans, AUTHORIZE)
    assert (authorize.trace_id, authorize.parent_span_id) == (TRACE_ID, PARENT_ID)
    assert one(spans, "store authorize").trace_id == TRACE_ID


async def test_a_check_links_to_the_trace_the_client_named_but_does_not_join_it(
    traced: Traced,
) -> None:
    """Envoy without its own tracer: the client's traceparent (forwarded in the Check's
    HTTP headers) is a link of a trace of the sidecar's own, not its parent."""
    created = await traced.create_key()
    traced.receiver.clear()
    request = check_request(
        authorization=f"Bearer {created.secret}",
        traceparent=f"00-{TRACE_ID}-{PARENT_ID}-01", tracestate="vendor=" + "x" * 200,
    )
    reply = await check_stub(traced.channel)(request)
    assert reply.status.code == 0
    spans = await traced.spans({CHECK: 1})
    check = one(spans, CHECK)
    assert check.trace_id != TRACE_ID and check.is_root
    assert check.links == ((TRACE_ID, PARENT_ID),)
    assert check.attributes["aigw.decision"] == "allowed"
    assert check.attributes["aigw.key_id"] == created.key.key_id


async def test_the_metadata_parent_wins_over_the_http_headers(traced: Traced) -> None:
    """Envoy's ext_authz span (gRPC metadata) is the parent, not the client's header."""
    created = await traced.create_key()
    traced.receiver.clear()
    other = "11111111111111111111111111111111"
    request = check_request(
        authorization=f"Bearer {created.secret}", traceparent=f"00-{other}-{PARENT_ID}-01",
    )
    await check_stub(traced.channel)(
        request, metadata=(("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),)
    )
    check = one(await traced.spans({CHECK: 1}), CHECK)
    assert check.trace_id == TRACE_ID


async def test_key_management_rpcs_are_spans_with_their_store_calls(traced: Traced) -> None:
    created = await traced.create_key()
    await traced.keys.GetKey(keys_pb2.GetKeyRequest(key_id=created.key.key_id))
    spans = await traced.spans({"aigw.v1.KeyManagement/CreateKey": 1,
                                "aigw.v1.KeyManagement/GetKey": 1})
    get = one(spans, "aigw.v1.KeyManagement/GetKey")
    assert get.attributes["aigw.key_id"] == created.key.key_id
    children = [s for s in spans if s.parent_span_id == get.span_id]
    assert children and all(s.name.startswith("store ") for s in children)
    assert_no_secret(spans, created.secret)


async def test_a_failed_rpc_is_an_error_span_with_its_code(traced: Traced) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await traced.keys.GetKey(keys_pb2.GetKeyRequest(key_id="key_" + "0" * 20))
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    get = one(await traced.spans({"aigw.v1.KeyManagement/GetKey": 1}),
              "aigw.v1.KeyManagement/GetKey")
    assert get.status_code == 2  # ERROR
    assert get.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]


async def test_a_ratio_of_zero_records_no_trace_started_here_but_keeps_a_callers_choice(
    receiver: OtlpReceiver, valkey_url: str, key_prefix: str, tmp_path: Path,
) -> None:
    opened = await open_traced(valkey_url, key_prefix, tmp_path, receiver.grpc_endpoint,
                               otel_sample_ratio=0.0)
    opened.receiver = receiver
    try:
        created = await opened.create_key()
        receiver.clear()
        await opened.admission.Authorize(adm_pb.AuthorizeRequest(secret=created.secret))
        await opened.admission.Authorize(
            adm_pb.AuthorizeRequest(secret=created.secret),
            metadata=(("traceparent", f"00-{'2' * 32}-{PARENT_ID}-00"),),
        )
        # The sampled call goes last: once its spans are in, the ones before would be.
        await opened.admission.Authorize(
            adm_pb.AuthorizeRequest(secret=created.secret),
            metadata=(("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),),
        )
        await opened.spans({AUTHORIZE: 1, "store authorize": 1})
        authorizes = [s for s in receiver.spans if s.name == AUTHORIZE]
        assert [s.trace_id for s in authorizes] == [TRACE_ID]
    finally:
        await opened.channel.close()
        await opened.sidecar.stop()


async def test_stopping_exports_the_spans_still_queued(
    receiver: OtlpReceiver, valkey_url: str, key_prefix: str, tmp_path: Path,
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")  # nothing leaves before stop
        sidecar = await start(Settings(
            listen="127.0.0.1:0", redis_url=valkey_url, key_prefix=key_prefix, data_dir=tmp_path,
            shutdown_grace_s=0.5, otel_endpoint=receiver.grpc_endpoint,
            otel_service_name="flushed-at-stop",
        ))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        await admission_pb2_grpc.AdmissionStub(channel).Authorize(
            adm_pb.AuthorizeRequest(secret="not-a-key")
        )
    await asyncio.sleep(0.2)
    assert not [s for s in receiver.spans if s.service == "flushed-at-stop"]
    await sidecar.stop()
    assert AUTHORIZE in [s.name for s in receiver.spans if s.service == "flushed-at-stop"]


def test_tracing_off_loads_no_tracing_sdk() -> None:
    """(redis-py imports OpenTelemetry's metrics API for its own, unused, observability.)"""
    assert start_tracing(Settings()) is None
    code = (
        "import sys\n"
        "from aigw_sidecar import bootstrap, cli\n"
        "from aigw_sidecar.settings import parse_settings\n"
        "bootstrap.start_tracing(parse_settings([]))\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk.trace',"
        " 'opentelemetry.exporter', 'opentelemetry.propagators', 'aigw_sidecar.server.tracing'"
        "))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(("text", "protocol", "target"), [
    ("grpc://collector:4317", "grpc", "collector:4317"),
    ("grpcs://collector.example:4317", "grpc", "collector.example:4317"),
    ("http://collector:4318", "http", "http://collector:4318/v1/traces"),
    ("https://otlp.example/custom/path", "http", "https://otlp.example/custom/path"),
])
def test_the_endpoints_scheme_picks_the_protocol(text: str, protocol: str, target: str) -> None:
    endpoint = parse_otel_endpoint(text)
    assert (endpoint.protocol, endpoint.target) == (protocol, target)
    assert endpoint.insecure == (text.startswith(("grpc://", "http://")))


@pytest.mark.parametrize(("argv", "message"), [
    (["--otel-endpoint", "collector:4317"], "--otel-endpoint"),
    (["--otel-endpoint", "grpc://collector"], "--otel-endpoint"),
    (["--otel-endpoint", "grpc://collector:4317/v1/traces"], "no path"),
    (["--otel-endpoint", "ftp://collector:21"], "scheme"),
    (["--otel-sample-ratio", "1.5"], "--otel-sample-ratio"),
    (["--otel-sample-ratio", "nan"], "--otel-sample-ratio"),
])
def test_bad_tracing_settings_are_usage_errors_naming_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_settings(argv, env={})
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_print_config_masks_a_password_in_the_endpoint() -> None:
    settings = parse_settings(["--otel-endpoint", "https://user:hunter2@otlp.example/v1/traces"],
                              env={})
    text = config_text(settings)
    assert "hunter2" not in text
    assert "otel-endpoint: https://user:****@otlp.example/v1/traces" in text


def test_no_attribute_is_longer_than_the_cap() -> None:
    """Defence in depth: attribute values come from requests (a model name is capped at
    128 characters where it is read, but a span never trusts that)."""
    exporter = InMemorySpanExporter()
    tracing = Tracing(Settings(otel_endpoint="grpc://127.0.0.1:1"), exporter=exporter)
    with tracing.tracer.start_as_current_span("x") as span:
        span.set_attribute("gen_ai.request.model", "m" * 5000)
    tracing.provider.force_flush()
    (finished,) = exporter.get_finished_spans()
    assert finished.attributes is not None
    assert finished.attributes["gen_ai.request.model"] == "m" * MAX_ATTRIBUTE_LENGTH
    tracing.provider.shutdown()


async def test_a_clients_own_sampled_flag_is_not_obeyed_but_envoys_is(
    receiver: OtlpReceiver, valkey_url: str, key_prefix: str, tmp_path: Path,
) -> None:
    """At ratio 0: a sampled traceparent in the HTTP request's headers (the client's
    own) records nothing; the same in the Check's gRPC metadata (Envoy's) is obeyed."""
    opened = await open_traced(valkey_url, key_prefix, tmp_path, receiver.grpc_endpoint,
                               otel_sample_ratio=0.0)
    opened.receiver = receiver
    try:
        created = await opened.create_key()
        sampled = f"00-{TRACE_ID}-{PARENT_ID}-01"
        from_client = "22222222222222222222222222222222"
        check = check_stub(opened.channel)
        await check(check_request(authorization=f"Bearer {created.secret}",
                                  traceparent=f"00-{from_client}-{PARENT_ID}-01"))
        # The sampled call goes last: once its span is in, the one before it would be.
        await check(check_request(authorization=f"Bearer {created.secret}"),
                    metadata=(("traceparent", sampled),))
        await opened.spans({CHECK: 1})
        checks = [s for s in receiver.spans if s.name == CHECK]
        assert [s.trace_id for s in checks] == [TRACE_ID]
    finally:
        await opened.channel.close()
        await opened.sidecar.stop()


async def test_a_collector_that_never_answers_does_not_hold_the_stop(
    valkey_url: str, key_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A listener that accepts and never replies: the exporter would wait its 10 s
    timeout (and retry); the stop waits TRACING_SHUTDOWN_S at most."""
    import socket
    import time

    from aigw_sidecar import bootstrap

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    monkeypatch.setattr(bootstrap, "TRACING_SHUTDOWN_S", 0.5)
    try:
        opened = await open_traced(valkey_url, key_prefix, tmp_path,
                                   f"grpc://127.0.0.1:{silent.getsockname()[1]}")
        await opened.admission.Authorize(adm_pb.AuthorizeRequest(secret="not-a-key"))
        await opened.channel.close()
        started = time.monotonic()
        await opened.sidecar.stop()
        # NOT_SERVING notice + a 0.5 s grace at most for calls, 0.5 s for spans.
        assert time.monotonic() - started < 3.0
    finally:
        silent.close()


def test_a_bad_endpoint_is_named_without_its_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        parse_settings(["--otel-endpoint", "ftp://user:hunter2@collector:21"], env={})
    err = capsys.readouterr().err
    assert "scheme" in err and "hunter2" not in err
