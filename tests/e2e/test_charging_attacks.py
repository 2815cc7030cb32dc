"""Hostile clients trying to escape charging, through real Envoy with the shipped config.

Each test is one way a client could make the upstream do work the key is not
charged for (or charged less than the upstream reported), and asserts it is
closed: the key is charged exactly what the upstream reported, or the request is
refused before the upstream sees it and nothing is charged, or, where no usage can
exist (the client left first), a conservative non-zero amount at least what the
upstream did. Every test also checks that no reservation is left behind.

The upstream reports 11 prompt + 299 completion = 310 tokens unless a test says
otherwise (``x-mock-completion-tokens: 299``); requests that bound their output ask
for 400 tokens, so an estimate (about 407) is told apart from the exact charge.
Attacks the ``openai`` SDK cannot send go over raw sockets (in a thread: the
sidecar runs on this event loop). Each request carries a unique marker header, so
a test can tell which requests the shared mock upstream received.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from aigw_sidecar.api.v1 import keys_pb2
from tests.e2e.conftest import Gateway, close_gateway, open_gateway
from tests.e2e.test_usage_envoy import no_reservation, overview, settled
from tests.e2e.upstream import (
    PROMPT_TOKENS,
    WORDS,
    MockUpstream,
    SeenRequest,
    decompress,
    parse_lenient,
)

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello"}]
MARKER = "x-e2e-marker"
COMPLETION_TOKENS = 299
CHARGED = PROMPT_TOKENS + COMPLETION_TOKENS  # what the upstream reports: 310
REPORT = {"x-mock-completion-tokens": str(COMPLETION_TOKENS)}
MAX_TOKENS = 400  # the request's bound: its estimate is about 407, never 310
TEXT = "".join(WORDS)
BUDGET = 1_000_000
DEFAULT_MAX_OUTPUT = 600  # the bounded gateway's default_max_output_tokens
PRICING = """\
unknown_model: zero
models:
  mock: {input: "1.00", output: "2.00", cached_input: "0.50"}
  gpt-4o-mini: {input: "0.15", output: "0.60"}
  gpt-4o: {input: "2.50", output: "10.00"}
"""
# 11 prompt tokens at 0.15 USD/M + 299 completion tokens at 0.60 USD/M, rounded up.
MINI_COST = -(-(PROMPT_TOKENS * 150_000 + COMPLETION_TOKENS * 600_000) // 1_000_000)


# -- gateways -------------------------------------------------------------------------


async def _open(
    valkey_url: str, upstream: MockUpstream, workdir: Path, **settings: object
) -> Gateway:
    pricing = workdir / "pricing.yaml"
    pricing.write_text(PRICING)
    return await open_gateway(
        valkey_url, upstream, workdir, pricing_file=str(pricing), **settings
    )


@pytest_asyncio.fixture(scope="module")
async def gateway(
    valkey_url: str, upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    """The shipped config, with a pricing table for the models used here."""
    gw = await _open(valkey_url, upstream, tmp_path_factory.mktemp("attacks"))
    yield gw
    await close_gateway(gw)


@pytest_asyncio.fixture(scope="module")
async def bounded_gateway(
    valkey_url: str, upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    """The same, reserving 600 output tokens for a request without max_tokens."""
    gw = await _open(
        valkey_url, upstream, tmp_path_factory.mktemp("attacks-bounded"),
        default_max_output_tokens=DEFAULT_MAX_OUTPUT,
    )
    yield gw
    await close_gateway(gw)


async def new_key(gw: Gateway, **limits: Any) -> keys_pb2.CreateKeyResponse:
    limits.setdefault("token_limit", BUDGET)
    reply: keys_pb2.CreateKeyResponse = await gw.keys.CreateKey(
        keys_pb2.CreateKeyRequest(
            name=f"attack-{uuid.uuid4().hex[:12]}", project="chat",
            limits=keys_pb2.Limits(**limits),
        )
    )
    return reply


def charged(ov: keys_pb2.KeyOverview) -> bool:
    """Settled: something charged and nothing still reserved."""
    return ov.tokens.used > 0 and no_reservation(ov)


async def charged_exactly(
    gw: Gateway, key: keys_pb2.CreateKeyResponse,
    prompt: int = PROMPT_TOKENS, completion: int = COMPLETION_TOKENS,
) -> keys_pb2.KeyOverview:
    ov = await settled(gw, key.key.key_id, charged)
    assert (ov.period_prompt_tokens, ov.period_completion_tokens) == (prompt, completion)
    assert ov.tokens.used == prompt + completion
    assert no_reservation(ov)
    return ov


def marker() -> str:
    return uuid.uuid4().hex


def seen(gw: Gateway, mark: str) -> list[SeenRequest]:
    return gw.upstream.seen_with(MARKER, mark)


def chat_body(**fields: Any) -> bytes:
    return json.dumps({"model": "mock", "messages": MESSAGES, **fields}).encode()


def sdk(
    gw: Gateway, key: keys_pb2.CreateKeyResponse, mark: str, *, identity: bool = True,
    headers: dict[str, str] | None = None,
) -> openai.AsyncOpenAI:
    """The official SDK as a client uses it, marked. ``identity``: ask for an
    uncompressed response (the SDK asks for gzip; compression is its own attack)."""
    extra = {MARKER: mark, **(headers or {})}
    if identity:
        extra["accept-encoding"] = "identity"
    return gw.client(key.secret, default_headers=extra)


# -- raw HTTP -------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes  # as received: content-encoding not undone

    def __repr__(self) -> str:
        head = self.body[:400]
        return f"Reply({self.status}, {self.headers}, {len(self.body)} bytes: {head!r})"

    def decoded(self) -> bytes:
        return decompress(self.headers.get("content-encoding", ""), self.body)

    def error(self) -> dict[str, Any]:
        assert self.headers.get("content-type", "").startswith("application/json"), self
        error: dict[str, Any] = json.loads(self.decoded())["error"]
        return error


def _exchange(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes | None,
    chunked: bool,
) -> Reply:
    head = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1", "connection: close"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    payload = b""
    if body is not None and chunked:
        head.append("transfer-encoding: chunked")
        step = 16 * 1024
        for at in range(0, len(body), step):
            part = body[at : at + step]
            payload += b"%x\r\n%s\r\n" % (len(part), part)
        payload += b"0\r\n\r\n"
    elif body is not None:
        head.append(f"content-length: {len(body)}")
        payload = body
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    try:
        try:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered (413) before the whole body was read: read the answer
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        data = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        sock.close()


async def raw(
    gw: Gateway, method: str, path: str, headers: dict[str, str], body: bytes | None = None,
    *, chunked: bool = False,
) -> Reply:
    """One request over its own connection, exactly as given (in a thread)."""
    port = gw.envoy.ports["llm_gateway"]
    return await asyncio.to_thread(_exchange, port, method, path, headers, body, chunked)


def auth(key: keys_pb2.CreateKeyResponse, mark: str, **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key.secret}", MARKER: mark, **extra}


def sse_text(data: bytes) -> str:
    """The text of a chat or completions SSE stream."""
    out = []
    for line in data.decode().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line[6:]).get("choices", []):
                out.append((choice.get("delta") or {}).get("content") or choice.get("text") or "")
    return "".join(out)


async def assert_refused_before_upstream(
    gw: Gateway, key: keys_pb2.CreateKeyResponse, mark: str, model: str = "mock"
) -> None:
    """The refused request never reached the upstream, and the key was charged
    nothing for it: a sentinel request sent after it is the only charge (settlements
    arrive in order, so the refused one's would have come first)."""
    assert seen(gw, mark) == []
    ov = await overview(gw, key.key.key_id)
    assert (ov.tokens.used, ov.lifetime_cost_micro_usd) == (0, 0)
    assert no_reservation(ov)
    sentinel = await raw(
        gw, "POST", "/v1/chat/completions", auth(key, marker(), **REPORT),
        json.dumps({"model": model, "messages": MESSAGES, "max_tokens": MAX_TOKENS}).encode(),
    )
    assert sentinel.status == 200, sentinel
    await charged_exactly(gw, key)
    assert seen(gw, mark) == []


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def assert_invalid_body(reply: Reply) -> dict[str, Any]:
    assert reply.status == 400, reply
    error = reply.error()
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_request_body"
    assert isinstance(error["message"], str) and error["message"]
    return error


# -- 1, 2: chunked request bodies -------------------------------------------------------


async def test_a_chunked_streaming_request_is_charged_its_exact_usage(gateway: Gateway) -> None:
    key, mark = await new_key(gateway), marker()
    reply = await raw(
        gateway, "POST", "/v1/chat/completions", auth(key, mark, **REPORT),
        chat_body(stream=True, max_tokens=MAX_TOKENS), chunked=True,
    )
    assert reply.status == 200, reply
    assert sse_text(reply.decoded()) == TEXT
    [request] = seen(gateway, mark)
    assert parse_lenient(request.body)["stream_options"]["include_usage"] is True
    await charged_exactly(gateway, key)


async def test_a_large_chunked_streaming_prompt_is_charged_its_exact_usage(
    gateway: Gateway,
) -> None:
    key, mark = await new_key(gateway), marker()
    messages = [{"role": "user", "content": "word " * 28_800}]  # 144 KB
    body = json.dumps({"model": "mock", "messages": messages, "stream": True}).encode()
    assert len(body) > 144_000
    reply = await raw(
        gateway, "POST", "/v1/chat/completions",
        auth(key, mark, **REPORT, **{"x-mock-prompt-tokens": "36000"}), body, chunked=True,
    )
    assert reply.status == 200, reply
    [request] = seen(gateway, mark)
    assert parse_lenient(request.body)["stream_options"]["include_usage"] is True
    await charged_exactly(gateway, key, prompt=36_000)


# -- 3, 4, 5: bodies read differently by a strict and a lenient parser ------------------

_MESSAGES_JSON = json.dumps(MESSAGES).encode()
LENIENTLY_READ = {
    "a_5000_digit_integer": (
        b'{"model":"mock","messages":' + _MESSAGES_JSON
        + b',"stream":true,"seed":' + b"7" * 5000 + b"}"
    ),
    "an_invalid_utf8_byte": (
        b'{"model":"mock","messages":[{"role":"user","content":"Say \xff hello"}],'
        b'"stream":true}'
    ),
    "trailing_data": (
        b'{"model":"mock","messages":' + _MESSAGES_JSON + b',"stream":true}'
        b'{"model":"gpt-4o","stream":false}'
    ),
}


@pytest.mark.parametrize("body", LENIENTLY_READ.values(), ids=LENIENTLY_READ.keys())
async def test_a_body_a_lenient_upstream_reads_is_refused_before_the_upstream(
    gateway: Gateway, body: bytes
) -> None:
    assert parse_lenient(body)["model"] == "mock"  # what a lenient upstream reads
    key, mark = await new_key(gateway), marker()
    reply = await raw(gateway, "POST", "/v1/chat/completions", auth(key, mark, **REPORT), body)
    assert_invalid_body(reply)
    await assert_refused_before_upstream(gateway, key, mark)


async def test_a_lone_surrogate_escape_still_gets_its_usage_requested_and_charged(
    gateway: Gateway,
) -> None:
    key, mark = await new_key(gateway), marker()
    body = (
        b'{"model":"mock","messages":[{"role":"user","content":"Say hello \\ud800"}],'
        b'"stream":true,"max_tokens":400}'
    )
    json.loads(body)  # valid JSON (a lone surrogate cannot be encoded back to UTF-8)
    reply = await raw(gateway, "POST", "/v1/chat/completions", auth(key, mark, **REPORT), body)
    assert reply.status == 200, reply
    assert sse_text(reply.decoded()) == TEXT
    [request] = seen(gateway, mark)
    assert parse_lenient(request.body)["stream_options"]["include_usage"] is True
    await charged_exactly(gateway, key)


async def test_a_stream_flag_given_as_a_string_is_refused_naming_stream(
    gateway: Gateway,
) -> None:
    key, mark = await new_key(gateway), marker()
    reply = await raw(
        gateway, "POST", "/v1/chat/completions", auth(key, mark, **REPORT),
        chat_body(stream="true", max_tokens=MAX_TOKENS),
    )
    error = assert_invalid_body(reply)
    assert "stream" in error["message"]
    await assert_refused_before_upstream(gateway, key, mark)


# -- 6: model decoys against an allow-list ----------------------------------------------

PAD = "x" * 40_000  # pushes the body past 32 KiB, the old partial-read limit


async def test_a_second_top_level_model_is_refused_as_a_duplicate_key(gateway: Gateway) -> None:
    key, mark = await new_key(gateway, allowed_models=["gpt-4o-mini"]), marker()
    body = (
        b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + PAD.encode()
        + b'"}],"max_tokens":400,"model":"gpt-4o"}'
    )
    assert len(body) > 32 * 1024
    assert parse_lenient(body)["model"] == "gpt-4o"  # the last one wins upstream
    reply = await raw(gateway, "POST", "/v1/chat/completions", auth(key, mark, **REPORT), body)
    error = assert_invalid_body(reply)
    assert "model" in error["message"]
    await assert_refused_before_upstream(gateway, key, mark, model="gpt-4o-mini")


@pytest.mark.parametrize("pad", ["", PAD], ids=["small", "over_32k"])
async def test_a_nested_decoy_model_does_not_pass_the_allow_list(
    gateway: Gateway, pad: str
) -> None:
    key, mark = await new_key(gateway, allowed_models=["gpt-4o-mini"]), marker()
    body = {  # the decoy comes first in the body
        "metadata": {"model": "gpt-4o-mini"},
        "messages": [{"role": "user", "content": f"Say hello{pad}"}],
        "model": "gpt-4o",
    }
    async with sdk(gateway, key, mark, headers=REPORT) as client:
        with pytest.raises(openai.PermissionDeniedError) as refused:
            await client.post("/chat/completions", cast_to=ChatCompletion, body=body)
    assert refused.value.code == "model_not_allowed"
    await assert_refused_before_upstream(gateway, key, mark, model="gpt-4o-mini")


@pytest.mark.parametrize("pad", ["", PAD], ids=["small", "over_32k"])
async def test_the_allowed_model_is_charged_despite_a_nested_decoy(
    gateway: Gateway, pad: str
) -> None:
    key, mark = await new_key(gateway, allowed_models=["gpt-4o-mini"]), marker()
    body = {
        "metadata": {"model": "gpt-4o"},
        "messages": [{"role": "user", "content": f"Say hello{pad}"}],
        "model": "gpt-4o-mini",
        "max_tokens": MAX_TOKENS,
    }
    async with sdk(gateway, key, mark, headers=REPORT) as client:
        reply = await client.post("/chat/completions", cast_to=ChatCompletion, body=body)
    assert reply.choices[0].message.content == TEXT
    [request] = seen(gateway, mark)
    assert parse_lenient(request.body)["model"] == "gpt-4o-mini"
    ov = await charged_exactly(gateway, key)
    assert [(m.model, m.tokens, m.cost_micro_usd) for m in ov.per_model] == [
        ("gpt-4o-mini", CHARGED, MINI_COST)
    ]


# -- 7, 8: compressed and large responses -----------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_response_compressed_for_the_sdk_is_charged_its_exact_usage(
    gateway: Gateway, stream: bool
) -> None:
    key, mark = await new_key(gateway), marker()
    text = ""
    async with sdk(gateway, key, mark, identity=False, headers=REPORT) as client:
        if stream:
            events = await client.chat.completions.create(
                model="mock", messages=MESSAGES, stream=True, max_tokens=MAX_TOKENS,
            )
            async for event in events:
                if event.choices and event.choices[0].delta.content:
                    text += event.choices[0].delta.content
        else:
            reply = await client.chat.completions.create(
                model="mock", messages=MESSAGES, max_tokens=MAX_TOKENS,
            )
            text = reply.choices[0].message.content or ""
    assert text == TEXT
    [request] = seen(gateway, mark)  # the SDK asked for gzip; the upstream is asked for none
    assert request.headers.get("accept-encoding") == "identity"
    await charged_exactly(gateway, key)


def readable_text(reply: Reply, stream: bool) -> str:
    data = reply.decoded()
    if stream:
        return sse_text(data)
    content: str = json.loads(data)["choices"][0]["message"]["content"]
    return content


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
async def test_a_response_compressed_unasked_is_charged_exactly_and_stays_readable(
    gateway: Gateway, encoding: str, stream: bool
) -> None:
    key, mark = await new_key(gateway), marker()
    reply = await raw(
        gateway, "POST", "/v1/chat/completions",
        auth(key, mark, **REPORT, **{"x-mock-encoding": encoding}),
        chat_body(stream=stream, max_tokens=MAX_TOKENS),
    )
    assert reply.status == 200, reply
    assert readable_text(reply, stream) == TEXT
    await charged_exactly(gateway, key)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_deflate_response_is_never_charged_less_than_its_usage(
    gateway: Gateway, stream: bool
) -> None:
    key, mark = await new_key(gateway), marker()
    reply = await raw(
        gateway, "POST", "/v1/chat/completions",
        auth(key, mark, **REPORT, **{"x-mock-encoding": "deflate"}),
        chat_body(stream=stream, max_tokens=MAX_TOKENS),
    )
    assert reply.status == 200, reply
    assert readable_text(reply, stream) == TEXT
    ov = await settled(gateway, key.key.key_id, charged)
    # Exactly its usage when read, else its estimate (prompt estimate + max_tokens).
    assert ov.tokens.used == CHARGED or ov.tokens.used >= MAX_TOKENS, ov
    assert no_reservation(ov)


async def test_a_large_json_reply_in_one_chunk_is_charged_its_exact_usage(
    gateway: Gateway,
) -> None:
    key, mark = await new_key(gateway), marker()
    async with sdk(gateway, key, mark, headers={**REPORT, "x-mock-pad-bytes": "300000"}) as client:
        reply = await client.chat.completions.create(
            model="mock", messages=MESSAGES, max_tokens=MAX_TOKENS,
        )
    assert len(reply.choices[0].message.content or "") == len(TEXT) + 300_000
    await charged_exactly(gateway, key)


# -- 9, 12: requests without max_tokens -------------------------------------------------


async def test_concurrent_streams_without_max_tokens_stay_within_the_token_budget(
    bounded_gateway: Gateway,
) -> None:
    gw = bounded_gateway
    key, mark = await new_key(gw, token_limit=3000), marker()

    async def one(client: openai.AsyncOpenAI) -> bool:
        try:
            stream = await client.chat.completions.create(
                model="mock", messages=MESSAGES, stream=True,
            )
        except openai.RateLimitError as exc:
            assert exc.code == "token_limit"
            return False
        async for _ in stream:
            pass
        return True

    async with sdk(gw, key, mark, headers=REPORT) as client:
        admitted = sum(await asyncio.gather(*(one(client) for _ in range(30))))
    # Every admitted request reserves at least the 600-token default: at most 4 fit.
    assert 1 <= admitted <= 3000 // DEFAULT_MAX_OUTPUT
    assert len(seen(gw, mark)) == admitted
    ov = await settled(gw, key.key.key_id, no_reservation)
    assert no_reservation(ov)
    # Every admitted request charged exactly its 310 tokens, all within the budget.
    assert ov.period_completion_tokens == admitted * COMPLETION_TOKENS
    assert ov.tokens.used == admitted * CHARGED <= 3000


async def test_a_streaming_body_over_192_kib_is_charged_its_exact_usage(
    gateway: Gateway,
) -> None:
    key, mark = await new_key(gateway), marker()
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "word " * 40_000}  # 200 KB
    ]
    headers = {**REPORT, "x-mock-prompt-tokens": "50000"}
    async with sdk(gateway, key, mark, headers=headers) as client:
        stream = await client.chat.completions.create(
            model="mock", messages=messages, stream=True,
        )
        async for _ in stream:
            pass
    [request] = seen(gateway, mark)
    assert len(request.body) > 192 * 1024
    assert request.headers["content-length"] == str(len(request.body))
    await charged_exactly(gateway, key, prompt=50_000)


# -- 10, 11: clients that leave before the usage ----------------------------------------


async def test_a_client_leaving_between_the_last_chunk_and_the_usage_is_charged_the_estimate(
    gateway: Gateway,
) -> None:
    key, mark = await new_key(gateway), marker()
    headers = {**REPORT, "x-mock-usage-delay": "1.0"}
    finished = False
    async with sdk(gateway, key, mark, headers=headers) as client:
        stream = await client.chat.completions.create(
            model="mock", messages=MESSAGES, stream=True, max_tokens=MAX_TOKENS,
        )
        async for event in stream:
            if event.choices and event.choices[0].finish_reason == "stop":
                finished = True
                break
        await stream.close()
    assert finished
    ov = await settled(gateway, key.key.key_id, charged)
    # No usage ever reached the gateway: the estimate (at least the work done).
    assert ov.tokens.used >= CHARGED
    assert no_reservation(ov)


async def test_a_client_leaving_before_a_slow_reply_is_charged_the_estimate(
    gateway: Gateway,
) -> None:
    key, mark = await new_key(gateway), marker()
    headers = {**REPORT, "x-mock-delay": "1.0"}
    async with sdk(gateway, key, mark, headers=headers) as client:
        request = asyncio.create_task(
            client.chat.completions.create(model="mock", messages=MESSAGES, max_tokens=MAX_TOKENS)
        )
        # The client gives up (as a 0.3 s timeout would) once the upstream is at work,
        # so a slow admission on a loaded machine cannot make it leave earlier.
        await until(lambda: bool(seen(gateway, mark)))
        await asyncio.sleep(0.3)
        assert not request.done()
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
    await until(lambda: bool(gateway.upstream.completed_with(MARKER, mark)))
    [done] = gateway.upstream.completed_with(MARKER, mark)  # the upstream did the work
    assert done.usage is not None
    ov = await settled(gateway, key.key.key_id, charged)
    assert ov.tokens.used >= done.usage["total_tokens"] == CHARGED
    assert no_reservation(ov)


# -- 13, 14, 15: other endpoints and headers --------------------------------------------


async def test_embeddings_are_charged_their_exact_prompt_tokens(gateway: Gateway) -> None:
    key, mark = await new_key(gateway), marker()
    async with sdk(gateway, key, mark, headers={"x-mock-prompt-tokens": "452"}) as client:
        reply = await client.embeddings.create(model="text-embedding-3-small", input="Say hello")
    assert len(reply.data[0].embedding) == 2
    await charged_exactly(gateway, key, prompt=452, completion=0)


async def test_identity_headers_spelled_with_underscores_never_reach_the_upstream(
    gateway: Gateway,
) -> None:
    key, mark = await new_key(gateway), marker()
    forged = {"x_aigw_key_id": "key_fake", "x_aigw_workspace": "evil", "X_AIGW_PROJECT": "evil"}
    reply = await raw(
        gateway, "POST", "/v1/chat/completions", auth(key, mark, **REPORT, **forged),
        chat_body(max_tokens=MAX_TOKENS),
    )
    assert reply.status == 200, reply
    [request] = seen(gateway, mark)
    identity = [n for n in request.headers if n.replace("_", "-").startswith("x-aigw-")]
    assert sorted(identity) == ["x-aigw-key-id", "x-aigw-project", "x-aigw-workspace"]
    assert request.headers["x-aigw-key-id"] == key.key.key_id
    assert request.headers["x-aigw-workspace"] == key.key.workspace
    assert request.headers["x-aigw-project"] == "chat"
    assert not {"key_fake", "evil"} & set(request.headers.values())
    await charged_exactly(gateway, key)


async def _batches(client: openai.AsyncOpenAI) -> object:
    return await client.batches.create(
        completion_window="24h", endpoint="/v1/chat/completions", input_file_id="file-abc"
    )


async def _transcriptions(client: openai.AsyncOpenAI) -> object:  # multipart/form-data
    audio = b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00" + bytes(32)
    return await client.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio))


async def _files(client: openai.AsyncOpenAI) -> object:
    return await client.files.list()


UNSERVED = {"batches": _batches, "audio_transcriptions": _transcriptions, "files": _files}


@pytest.mark.parametrize("call", UNSERVED.values(), ids=UNSERVED.keys())
async def test_an_endpoint_whose_usage_cannot_be_read_is_refused_with_404(
    gateway: Gateway, call: Any
) -> None:
    key, mark = await new_key(gateway), marker()
    async with sdk(gateway, key, mark) as client:
        with pytest.raises(openai.NotFoundError) as refused:
            await call(client)
    assert refused.value.code == "endpoint_not_supported"
    assert refused.value.response.headers["content-type"].startswith("application/json")
    await assert_refused_before_upstream(gateway, key, mark)


# -- the other metered endpoints, and the size limit ------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_the_responses_api_is_charged_its_exact_usage(
    gateway: Gateway, stream: bool
) -> None:
    key, mark = await new_key(gateway), marker()
    async with sdk(gateway, key, mark, headers=REPORT) as client:
        if stream:
            text = ""
            events = await client.responses.create(
                model="mock", input="Say hello", max_output_tokens=MAX_TOKENS, stream=True
            )
            async for event in events:
                if event.type == "response.output_text.delta":
                    text += event.delta
        else:
            reply = await client.responses.create(
                model="mock", input="Say hello", max_output_tokens=MAX_TOKENS
            )
            text = reply.output_text
    assert text == TEXT
    await charged_exactly(gateway, key)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_legacy_completions_are_charged_their_exact_usage(
    gateway: Gateway, stream: bool
) -> None:
    key, mark = await new_key(gateway), marker()
    async with sdk(gateway, key, mark, headers=REPORT) as client:
        if stream:
            text = ""
            events = await client.completions.create(
                model="mock", prompt="Say hello", max_tokens=MAX_TOKENS, stream=True
            )
            async for event in events:
                text += "".join(choice.text for choice in event.choices)
        else:
            reply = await client.completions.create(
                model="mock", prompt="Say hello", max_tokens=MAX_TOKENS
            )
            text = reply.choices[0].text
    assert text == TEXT
    await charged_exactly(gateway, key)


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
async def test_a_body_over_1_mib_is_refused_with_413_before_the_upstream(
    gateway: Gateway, chunked: bool
) -> None:
    key, mark = await new_key(gateway), marker()
    messages = [{"role": "user", "content": "word " * 220_000}]  # 1.1 MB
    body = json.dumps({"model": "mock", "messages": messages, "stream": True}).encode()
    assert len(body) > 1024 * 1024
    reply = await raw(
        gateway, "POST", "/v1/chat/completions", auth(key, mark, **REPORT), body,
        chunked=chunked,
    )
    assert reply.status == 413, reply
    error = reply.error()
    assert error["type"] == "invalid_request_error"
    assert isinstance(error["message"], str) and error["message"]
    await assert_refused_before_upstream(gateway, key, mark)
