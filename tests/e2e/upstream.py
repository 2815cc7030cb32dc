"""A small OpenAI-compatible upstream on loopback: chat completions (JSON and SSE).

It records the headers and body of every request it receives, so tests can prove
what Envoy forwarded. SSE chunks are sent ``chunk_delay_s`` apart, each flushed on
its own, so a test can tell a streamed response from a buffered one.

Usage is reported like OpenAI does: in every JSON completion, and in a stream only
as a final chunk (empty ``choices``) when the request asked for it with
``stream_options.include_usage``. Request headers steer the rest:
``x-mock-completion-tokens`` / ``x-mock-cached-tokens`` set the usage reported
(default 5 completion tokens, none cached; prompt tokens are always 11),
``x-mock-mode: crash`` cuts the stream (or the JSON body) mid-way by closing the
connection, ``slow`` spaces stream chunks 0.5 s apart, and ``error`` answers 500.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WORDS = ("Hello", " from", " the", " mock", " upstream")
PROMPT_TOKENS = 11
SLOW_CHUNK_DELAY_S = 0.5


@dataclass(frozen=True, slots=True)
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


def usage(completion_tokens: int = 5, cached_tokens: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion_tokens,
        "total_tokens": PROMPT_TOKENS + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def completion(model: str, reported: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(WORDS)},
                "finish_reason": "stop",
            }
        ],
        "usage": reported or usage(),
    }


def chunk(model: str, delta: dict[str, Any], usage: dict[str, int] | None = None) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}] if delta else [],
    }
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n".encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else every keep-alive request waits ~40 ms
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self, body: bytes = b"") -> dict[str, str]:
        headers = {name.lower(): value for name, value in self.headers.items()}
        with self.server.lock:
            self.server.seen.append(SeenRequest(self.command, self.path, headers, body))
        return headers

    def _crash(self) -> None:
        """Drop the connection mid-response, as a crashing upstream would."""
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._record()
        if self.path.startswith("/v1/models"):
            self._json(200, {"object": "list", "data": [{"id": "mock", "object": "model"}]})
        else:
            self._json(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        headers = self._record(raw)
        request = json.loads(raw or b"{}")
        model = str(request.get("model", "mock"))
        mode = headers.get("x-mock-mode", "")
        reported = usage(
            int(headers.get("x-mock-completion-tokens", "5")),
            int(headers.get("x-mock-cached-tokens", "0")),
        )
        if not self.path.startswith("/v1/chat/completions"):
            self._json(404, {"error": {"message": "not found"}})
        elif mode == "error":
            self._json(500, {"error": {"message": "upstream failed", "type": "server_error"}})
        elif request.get("stream"):
            options = request.get("stream_options") or {}
            self._stream(model, reported if options.get("include_usage") else None, mode)
        elif mode == "crash":
            data = json.dumps(completion(model, reported)).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self._crash()
        else:
            self._json(200, completion(model, reported))

    def _stream(self, model: str, reported: dict[str, Any] | None, mode: str) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        events = [chunk(model, {"role": "assistant", "content": ""})]
        events += [chunk(model, {"content": word}) for word in WORDS]
        if reported is not None:
            events.append(chunk(model, {}, reported))
        events.append(b"data: [DONE]\n\n")
        delay = SLOW_CHUNK_DELAY_S if mode == "slow" else self.server.chunk_delay_s
        try:
            for i, event in enumerate(events):
                if 1 < i <= len(WORDS):
                    time.sleep(delay)
                if mode == "crash" and i == 3:
                    self._crash()
                    return
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:  # the client (Envoy) went away
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    lock: threading.Lock
    seen: list[SeenRequest]
    chunk_delay_s: float


@dataclass
class MockUpstream:
    """The mock upstream, serving from a background thread on a free loopback port."""

    chunk_delay_s: float = 0.12
    _server: _Server | None = None
    _thread: threading.Thread | None = None
    port: int = 0
    seen: list[SeenRequest] = field(default_factory=list)

    def start(self) -> MockUpstream:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.lock = threading.Lock()
        server.seen = self.seen
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
