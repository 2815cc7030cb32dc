"""A small OpenAI-compatible upstream on loopback, as lenient and as realistic as real ones.

It records the method, path, headers and raw body of every request it receives
(``seen``; chunked request bodies are de-chunked), so tests can prove what Envoy
forwarded, and every response it produced (``completed``), so a test can show the
upstream did the work even when the client had gone. SSE events are sent
``chunk_delay_s`` apart, each flushed on its own, so a test can tell a streamed
response from a buffered one.

Endpoints:

* ``POST /v1/chat/completions`` and ``POST /v1/completions`` (legacy): JSON, or SSE
  when the body says ``"stream": true`` (or the string ``"true"``, as some upstreams
  coerce it). Usage is reported like OpenAI does: in every JSON reply, and in a
  stream only as a final chunk (empty ``choices``) when the request asked for it with
  ``stream_options.include_usage``. The last content chunk carries
  ``finish_reason: "stop"``.
* ``POST /v1/embeddings``: one embedding (base64 when ``encoding_format`` is
  ``base64``, as the ``openai`` SDK asks), usage ``prompt_tokens`` = ``total_tokens``.
* ``POST /v1/responses`` (Responses API): JSON, or with ``stream`` SSE with
  ``event:`` lines: ``response.created`` (usage null), one
  ``response.output_text.delta`` per word, then ``response.completed`` carrying the
  whole response and its usage (``input_tokens``/``output_tokens``).
* ``GET /v1/models``; any other method or path (``/v1/batches``, ``/v1/files``,
  multipart ``/v1/audio/transcriptions``, ...) answers 200 with a small JSON body,
  so a test sees in ``seen`` anything the gateway should not have forwarded.

Bodies are parsed leniently, never crashing: invalid UTF-8 is replaced, integers of
any length are accepted (as strings past 4,000 digits, without touching the
process-wide int limit the sidecar's strict parser relies on), data after the first
JSON value is ignored, and a body that is not a JSON object counts as ``{}``.

Responses are compressed like real servers do: with the first of gzip, deflate, br
and zstd that the request's ``accept-encoding`` names (``content-encoding`` set,
``vary: accept-encoding``); SSE incrementally, flushed after every event.

Request headers steer the rest:

* ``x-mock-prompt-tokens: N`` / ``x-mock-completion-tokens: N`` /
  ``x-mock-cached-tokens: N``: the usage reported (default 11 prompt, 5 completion,
  none cached). Embeddings report N prompt tokens and no completion tokens.
* ``x-mock-mode: crash`` cuts the stream (or the JSON body) mid-way by closing the
  connection, ``slow`` spaces stream chunks 0.5 s apart, ``error`` answers 500.
* ``x-mock-encoding: gzip|deflate|br|zstd`` compresses the response with that
  encoding whatever the request accepts (``identity``: never compress).
* ``x-mock-pad-bytes: N``: the JSON reply's text is N bytes longer; the body is
  written in one write (one big chunk on the wire).
* ``x-mock-usage-delay: S``: in a stream, sleep S seconds after the last content
  chunk (the one with ``finish_reason``) before the usage chunk (Responses API:
  before ``response.completed``).
* ``x-mock-delay: S``: sleep S seconds before answering (the response is still
  produced and recorded in ``completed`` when the client has gone).

``x-mock-usage-cost: USD`` adds ``cost`` to the reported usage (as OpenRouter
does); ``x-mock-cost-header: USD`` sends ``x-litellm-response-cost`` (JSON replies).
"""

from __future__ import annotations

import base64
import json
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import brotli  # type: ignore[import-untyped]
import zstandard

WORDS = ("Hello", " from", " the", " mock", " upstream")
PROMPT_TOKENS = 11
SLOW_CHUNK_DELAY_S = 0.5
ENCODINGS = ("gzip", "deflate", "br", "zstd")
# Integers longer than this are kept as strings: int() refuses more than 4,300
# digits by default, and raising that limit would change it for the whole process
# (the in-process sidecar's strict parser included).
_MAX_INT_DIGITS = 4000


@dataclass(frozen=True, slots=True)
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Completed:
    """A response the mock produced: its request, the usage it reported, whether it
    was written to the end without the connection failing."""

    request: SeenRequest
    usage: dict[str, Any] | None
    delivered: bool


def usage(
    completion_tokens: int = 5, cached_tokens: int = 0, prompt_tokens: int = PROMPT_TOKENS
) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def responses_usage(reported: dict[str, Any]) -> dict[str, Any]:
    """Chat-style usage as the Responses API reports it."""
    prompt, completion = reported["prompt_tokens"], reported["completion_tokens"]
    cached = reported["prompt_tokens_details"]["cached_tokens"]
    return {
        "input_tokens": prompt,
        "output_tokens": completion,
        "total_tokens": prompt + completion,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens_details": {"reasoning_tokens": 0},
    }


def completion(
    model: str, reported: dict[str, Any] | None = None, text: str = "".join(WORDS)
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": reported or usage(),
    }


def text_completion(model: str, reported: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "id": "cmpl-mock",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
        "usage": reported,
    }


def response_object(
    model: str, text: str, usage: dict[str, Any] | None, status: str = "completed"
) -> dict[str, Any]:
    """A Responses API ``response`` object."""
    return {
        "id": "resp_mock",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": [
            {
                "id": "msg_mock",
                "type": "message",
                "status": status,
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ] if text else [],
        "usage": usage,
    }


def embeddings(model: str, prompt_tokens: int, encoding_format: Any) -> dict[str, Any]:
    vector = [0.1, 0.2]
    embedding: Any = vector
    if encoding_format == "base64":
        embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": embedding}],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def chunk(
    model: str,
    delta: dict[str, Any],
    usage: dict[str, int] | None = None,
    finish_reason: str | None = None,
) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": (
            [{"index": 0, "delta": delta, "finish_reason": finish_reason}] if delta else []
        ),
    }
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n".encode()


def text_chunk(
    model: str, text: str | None, usage: dict[str, Any] | None = None,
    finish_reason: str | None = None,
) -> bytes:
    body: dict[str, Any] = {
        "id": "cmpl-mock",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": (
            [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}]
            if text is not None else []
        ),
    }
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n".encode()


def response_event(kind: str, sequence: int, **fields: Any) -> bytes:
    body = {"type": kind, "sequence_number": sequence, **fields}
    return f"event: {kind}\ndata: {json.dumps(body)}\n\n".encode()


# -- lenient request parsing ------------------------------------------------------


def _lenient_int(text: str) -> int | str:
    return int(text) if len(text.lstrip("-")) <= _MAX_INT_DIGITS else text


_DECODER = json.JSONDecoder(parse_int=_lenient_int)


def parse_lenient(raw: bytes) -> dict[str, Any]:
    """The first JSON value of ``raw`` if it is an object, else ``{}``; never raises."""
    try:
        text = raw.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
        value, _ = _DECODER.raw_decode(text)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def truthy(value: Any) -> bool:
    """``true``, or the string ``"true"`` (any case), as lenient upstreams read it."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _number(headers: dict[str, str], name: str, default: float) -> float:
    try:
        return float(headers.get(name, default))
    except ValueError:
        return default


def _int(headers: dict[str, str], name: str, default: int) -> int:
    try:
        return int(headers.get(name, default))
    except ValueError:
        return default


# -- compression ------------------------------------------------------------------


class _Compressor(Protocol):
    def chunk(self, data: bytes) -> bytes: ...
    def finish(self) -> bytes: ...


class _Identity:
    def chunk(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""


class _Zlib:
    def __init__(self, wbits: int) -> None:
        self._c = zlib.compressobj(wbits=wbits)

    def chunk(self, data: bytes) -> bytes:
        return self._c.compress(data) + self._c.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._c.flush(zlib.Z_FINISH)


class _Brotli:
    def __init__(self) -> None:
        self._c = brotli.Compressor()

    def chunk(self, data: bytes) -> bytes:
        out: bytes = self._c.process(data) + self._c.flush()
        return out

    def finish(self) -> bytes:
        out: bytes = self._c.finish()
        return out


class _Zstd:
    def __init__(self) -> None:
        self._c = zstandard.ZstdCompressor().compressobj()

    def chunk(self, data: bytes) -> bytes:
        return self._c.compress(data) + self._c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def finish(self) -> bytes:
        return self._c.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


def compressor(encoding: str) -> _Compressor:
    """A streaming compressor for an HTTP content-coding ('' or 'identity': none)."""
    factories: dict[str, Callable[[], _Compressor]] = {
        "gzip": lambda: _Zlib(31),  # gzip wrapper
        "deflate": lambda: _Zlib(15),  # HTTP "deflate" is the zlib format (RFC 9110)
        "br": _Brotli,
        "zstd": _Zstd,
    }
    factory = factories.get(encoding)
    return factory() if factory else _Identity()


def compress(encoding: str, data: bytes) -> bytes:
    c = compressor(encoding)
    return c.chunk(data) + c.finish()


def decompress(encoding: str, data: bytes) -> bytes:
    """The inverse of ``compress`` (for tests reading a response as a client would)."""
    encoding = encoding.strip().lower()
    if encoding == "gzip":
        return zlib.decompress(data, wbits=31)
    if encoding == "deflate":
        try:
            return zlib.decompress(data, wbits=15)
        except zlib.error:  # some servers send raw deflate
            return zlib.decompress(data, wbits=-15)
    if encoding == "br":
        out: bytes = brotli.decompress(data)
        return out
    if encoding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def negotiate(headers: dict[str, str]) -> str:
    """The content-coding of the response: forced, else the first one accepted."""
    forced = headers.get("x-mock-encoding", "").strip().lower()
    if forced:
        return forced if forced in ENCODINGS else ""
    for item in headers.get("accept-encoding", "").split(","):
        name, _, params = item.partition(";")
        name = name.strip().lower()
        q = params.strip()
        if q.startswith("q=") and q[2:].strip() in ("0", "0.0", "0.00", "0.000"):
            continue
        if name in ENCODINGS:
            return name
    return ""


# -- the server -------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else every keep-alive request waits ~40 ms
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self, body: bytes = b"") -> SeenRequest:
        headers = {name.lower(): value for name, value in self.headers.items()}
        seen = SeenRequest(self.command, self.path, headers, body)
        with self.server.lock:
            self.server.seen.append(seen)
        return seen

    def _completed(
        self, seen: SeenRequest, reported: dict[str, Any] | None, delivered: bool
    ) -> None:
        with self.server.lock:
            self.server.completed.append(Completed(seen, reported, delivered))

    def _read_body(self) -> bytes:
        """The request body, de-chunked when it came with transfer-encoding: chunked."""
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            parts: list[bytes] = []
            while True:
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self.close_connection = True
                    break
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            self.close_connection = True
            return b""
        return self.rfile.read(length) if length > 0 else b""

    def _crash(self) -> None:
        """Drop the connection mid-response, as a crashing upstream would."""
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def _json(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None,
        crash: bool = False,
    ) -> bool:
        """Answer with a JSON body, compressed as negotiated, in one write.

        False when the connection failed (the client, Envoy, went away).
        """
        encoding = negotiate(headers or {})
        data = compress(encoding, json.dumps(body).encode())
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            if getattr(self, "_cost_header", ""):  # LiteLLM's response header
                self.send_header("x-litellm-response-cost", self._cost_header)
            if encoding:
                self.send_header("content-encoding", encoding)
                self.send_header("vary", "accept-encoding")
            self.end_headers()
            if crash:
                self.wfile.write(data[: len(data) // 2])
                self._crash()
                return False
            self.wfile.write(data)
            return True
        except OSError:
            self.close_connection = True
            return False

    def do_GET(self) -> None:
        seen = self._record(self._read_body())
        if self.path.split("?", 1)[0].rstrip("/") == "/v1/models":
            self._json(
                200, {"object": "list", "data": [{"id": "mock", "object": "model"}]},
                seen.headers,
            )
        else:
            self._other(seen)

    def _other(self, seen: SeenRequest) -> None:
        """Any endpoint the mock does not model: 200 with a small JSON body."""
        body = {"object": "mock", "method": self.command, "path": self.path, "ok": True}
        delivered = self._json(200, body, seen.headers)
        self._completed(seen, None, delivered)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def do_POST(self) -> None:
        raw = self._read_body()
        seen = self._record(raw)
        headers = seen.headers
        path = self.path.split("?", 1)[0].rstrip("/")
        if path not in (
            "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"
        ):
            self._other(seen)
            return
        request = parse_lenient(raw)
        model = str(request.get("model", "mock"))
        mode = headers.get("x-mock-mode", "")
        reported = usage(
            _int(headers, "x-mock-completion-tokens", 5),
            _int(headers, "x-mock-cached-tokens", 0),
            _int(headers, "x-mock-prompt-tokens", PROMPT_TOKENS),
        )
        if "x-mock-usage-cost" in headers:  # OpenRouter reports the cost in the usage
            reported["cost"] = float(headers["x-mock-usage-cost"])
        self._cost_header = headers.get("x-mock-cost-header", "")
        delay = _number(headers, "x-mock-delay", 0.0)
        if delay > 0:
            time.sleep(delay)
        if mode == "error":
            error = {"error": {"message": "upstream failed", "type": "server_error"}}
            self._completed(seen, None, self._json(500, error, headers))
            return
        if path == "/v1/embeddings":
            prompt = reported["prompt_tokens"]
            body = embeddings(model, prompt, request.get("encoding_format"))
            self._completed(seen, body["usage"], self._json(200, body, headers))
            return
        stream = truthy(request.get("stream"))
        if path == "/v1/responses":
            if stream:
                self._stream(seen, self._response_events(model, reported, headers), reported)
                return
            body = response_object(model, self._text(headers), responses_usage(reported))
            delivered = self._json(200, body, headers, crash=mode == "crash")
            self._completed(seen, body["usage"], delivered)
            return
        if stream:
            options = request.get("stream_options")
            wanted = isinstance(options, dict) and truthy(options.get("include_usage"))
            sent = reported if wanted else None
            if path == "/v1/completions":
                events = self._text_events(model, sent, headers)
            else:
                events = self._chat_events(model, sent, headers)
            self._stream(seen, events, sent)
            return
        text = self._text(headers)
        if path == "/v1/completions":
            body = text_completion(model, reported, text)
        else:
            body = completion(model, reported, text)
        self._completed(seen, reported, self._json(200, body, headers, crash=mode == "crash"))

    @staticmethod
    def _text(headers: dict[str, str]) -> str:
        pad = max(0, _int(headers, "x-mock-pad-bytes", 0))
        return "".join(WORDS) + "x" * pad

    def _word_delay(self, headers: dict[str, str]) -> float:
        if headers.get("x-mock-mode", "") == "slow":
            return SLOW_CHUNK_DELAY_S
        return self.server.chunk_delay_s

    def _chat_events(
        self, model: str, reported: dict[str, Any] | None, headers: dict[str, str]
    ) -> list[tuple[float, bytes]]:
        """(seconds to wait before, event) of a chat completion stream."""
        delay = self._word_delay(headers)
        last = len(WORDS) - 1
        events = [(0.0, chunk(model, {"role": "assistant", "content": ""}))]
        events += [
            (delay if i > 0 else 0.0,
             chunk(model, {"content": word}, finish_reason="stop" if i == last else None))
            for i, word in enumerate(WORDS)
        ]
        if reported is not None:
            events.append((_number(headers, "x-mock-usage-delay", 0.0), chunk(model, {}, reported)))
        events.append((0.0, b"data: [DONE]\n\n"))
        return events

    def _text_events(
        self, model: str, reported: dict[str, Any] | None, headers: dict[str, str]
    ) -> list[tuple[float, bytes]]:
        """(seconds to wait before, event) of a legacy completion stream."""
        delay = self._word_delay(headers)
        last = len(WORDS) - 1
        events = [
            (delay if i > 0 else 0.0,
             text_chunk(model, word, finish_reason="stop" if i == last else None))
            for i, word in enumerate(WORDS)
        ]
        if reported is not None:
            wait = _number(headers, "x-mock-usage-delay", 0.0)
            events.append((wait, text_chunk(model, None, reported)))
        events.append((0.0, b"data: [DONE]\n\n"))
        return events

    def _response_events(
        self, model: str, reported: dict[str, Any], headers: dict[str, str]
    ) -> list[tuple[float, bytes]]:
        """(seconds to wait before, event) of a Responses API stream."""
        delay = self._word_delay(headers)
        created = response_object(model, "", None, status="in_progress")
        events = [(0.0, response_event("response.created", 0, response=created))]
        for i, word in enumerate(WORDS):
            events.append((
                delay if i > 0 else 0.0,
                response_event(
                    "response.output_text.delta", i + 1, item_id="msg_mock", output_index=0,
                    content_index=0, delta=word,
                ),
            ))
        done = response_object(model, "".join(WORDS), responses_usage(reported))
        events.append((
            _number(headers, "x-mock-usage-delay", 0.0),
            response_event("response.completed", len(WORDS) + 1, response=done),
        ))
        return events

    def _stream(
        self, seen: SeenRequest, events: list[tuple[float, bytes]],
        reported: dict[str, Any] | None,
    ) -> None:
        """Send SSE events as HTTP chunks, each compressed (as negotiated) and flushed."""
        headers = seen.headers
        mode = headers.get("x-mock-mode", "")
        encoding = negotiate(headers)
        encoder = compressor(encoding)
        delivered = False
        try:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            if encoding:
                self.send_header("content-encoding", encoding)
                self.send_header("vary", "accept-encoding")
            self.end_headers()
            for i, (wait, event) in enumerate(events):
                if wait > 0:
                    time.sleep(wait)
                if mode == "crash" and i == 3:
                    self._crash()
                    return
                data = encoder.chunk(event)
                if data:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
            tail = encoder.finish()
            if tail:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(tail), tail))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            delivered = True
        except OSError:  # the client (Envoy) went away
            self.close_connection = True
        finally:
            self._completed(seen, reported, delivered)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    lock: threading.Lock
    seen: list[SeenRequest]
    completed: list[Completed]
    chunk_delay_s: float


@dataclass
class MockUpstream:
    """The mock upstream, serving from a background thread on a free loopback port."""

    chunk_delay_s: float = 0.12
    _server: _Server | None = None
    _thread: threading.Thread | None = None
    port: int = 0
    seen: list[SeenRequest] = field(default_factory=list)
    completed: list[Completed] = field(default_factory=list)

    def start(self) -> MockUpstream:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.lock = threading.Lock()
        server.seen = self.seen
        server.completed = self.completed
        server.chunk_delay_s = self.chunk_delay_s
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def last(self) -> SeenRequest:
        assert self._server is not None
        with self._server.lock:
            return self.seen[-1]

    def seen_with(self, header: str, value: str) -> list[SeenRequest]:
        """The requests received so far whose ``header`` (lower case) is ``value``."""
        assert self._server is not None
        with self._server.lock:
            return [s for s in self.seen if s.headers.get(header) == value]

    def completed_with(self, header: str, value: str) -> list[Completed]:
        """The responses produced so far for requests whose ``header`` is ``value``."""
        assert self._server is not None
        with self._server.lock:
            return [c for c in self.completed if c.request.headers.get(header) == value]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def main() -> None:
    """``python -m tests.e2e.upstream``: serve on a free port, print it, stop on EOF of stdin."""
    import sys

    server = MockUpstream().start()
    print(server.port, flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
