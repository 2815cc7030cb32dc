"""Upstreams for ``make bench-envoy``: an Envoy answering by itself, or the Python mock.

The Python mock (tests/e2e/upstream.py, via tests/bench/bench_upstream.py) costs some
300-400 µs of CPU per request, on the same few cores as the Envoy under test, the
sidecar, the store and h2load: it takes a share of the machine that moves every ratio
the benchmark reports. ``envoy`` is a second, separate Envoy process (one worker)
whose listener answers with a ``direct_response`` (no upstream of its own):

* ``POST /v1/chat/completions``: 200, ``application/json``, a fixed OpenAI
  ``chat.completion`` whose usage is what the mock reports by default (11 prompt +
  5 completion tokens, ``"model": "mock"``), so the harness's charging check holds;
* the same with the request header ``x-mock-stream`` (any value): 200,
  ``text/event-stream``, the chat completion as SSE chunks with a final usage chunk
  and ``data: [DONE]`` (one body, not paced: a benchmark of the cost per request,
  not of streaming);
* anything else: 404, so a ``--path`` this upstream does not serve fails the run's
  non-2xx check instead of being measured.

Each request's body is read whole before the answer (the buffer filter), as a real
upstream does: a response sent before the request has ended would make Envoy close
the HTTP/1.1 connection and the gateway open a new one per request.

``python -m tests.bench.envoy_upstream``: print the upstream Envoy's config.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from tests.e2e import upstream as mock
from tests.e2e.envoy_process import EnvoyProcess

MODEL = "mock"
CREATED = 1_700_000_000  # fixed: the body is written once, into the config
WORDS = mock.WORDS
USAGE = mock.usage()  # the mock's default: 11 prompt + 5 completion = 16 tokens
PROMPT_TOKENS, COMPLETION_TOKENS = USAGE["prompt_tokens"], USAGE["completion_tokens"]
LISTENER = "mock_llm"
STREAM_HEADER = "x-mock-stream"
KINDS = ("envoy", "python")
# Envoy's default cap on a direct_response body (route_config.max_direct_response_body_size_bytes).
DIRECT_RESPONSE_LIMIT = 4096


def chat_completion() -> dict[str, Any]:
    """The mock's chat completion (tests/e2e/upstream.py), with a fixed ``created``."""
    return {**mock.completion(MODEL, USAGE), "created": CREATED}


def _chunk(delta: dict[str, Any], finish_reason: str | None = None,
           usage: dict[str, Any] | None = None) -> str:
    body: dict[str, Any] = {
        "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": CREATED,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}] if delta else [],
    }
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n"


def chat_stream() -> str:
    """The chat completion as SSE, as the mock streams it with include_usage."""
    last = len(WORDS) - 1
    events = [_chunk({"role": "assistant", "content": ""})]
    events += [_chunk({"content": w}, "stop" if i == last else None) for i, w in enumerate(WORDS)]
    events += [_chunk({}, usage=USAGE), "data: [DONE]\n\n"]
    return "".join(events)


def _direct(status: int, content_type: str, body: str) -> dict[str, Any]:
    if len(body.encode()) > DIRECT_RESPONSE_LIMIT:
        raise ValueError(f"a direct_response body over {DIRECT_RESPONSE_LIMIT} bytes")
    return {
        "direct_response": {"status": status, "body": {"inline_string": body}},
        "response_headers_to_add": [{
            "header": {"key": "content-type", "value": content_type},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }],
    }


def upstream_config() -> str:
    """The upstream Envoy's config: loopback, port 0 (listener and admin)."""
    def post() -> dict[str, Any]:  # a new dict each time: no YAML anchors in the dump
        return {"name": ":method", "string_match": {"exact": "POST"}}

    routes = [
        {"match": {"path": "/v1/chat/completions",
                   "headers": [post(), {"name": STREAM_HEADER, "present_match": True}]},
         **_direct(200, "text/event-stream", chat_stream())},
        {"match": {"path": "/v1/chat/completions", "headers": [post()]},
         **_direct(200, "application/json", json.dumps(chat_completion()))},
        {"match": {"prefix": "/"},
         **_direct(404, "application/json", json.dumps({"error": {
             "message": "the benchmark's Envoy upstream answers only POST /v1/chat/completions",
             "type": "invalid_request_error", "code": "not_found"}}))},
    ]
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                 "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": LISTENER,
        "route_config": {"name": LISTENER, "virtual_hosts": [
            {"name": LISTENER, "domains": ["*"], "routes": routes}]},
        "http_filters": [
            {"name": "envoy.filters.http.buffer", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                "max_request_bytes": 2097152}},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    }
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [{
            "name": LISTENER,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "per_connection_buffer_limit_bytes": 2097152,
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": hcm,
            }]}],
        }]},
    }
    return str(yaml.safe_dump(config, sort_keys=False))


class Upstream(Protocol):
    kind: str
    port: int

    def pid(self) -> int: ...
    def stats(self) -> dict[str, int]: ...
    def stop(self) -> None: ...


@dataclass
class EnvoyUpstream:
    """The upstream as a second Envoy process: one worker, its own admin, no hot restart
    (EnvoyProcess passes --disable-hot-restart, so no shared memory or --base-id clashes
    with the Envoys under test)."""

    workdir: Path
    kind: str = "envoy"
    port: int = 0
    envoy: EnvoyProcess | None = None

    def start(self) -> EnvoyUpstream:
        self.envoy = EnvoyProcess(upstream_config(), self.workdir, concurrency=1).start()
        self.port = self.envoy.ports[LISTENER]
        return self

    def pid(self) -> int:
        assert self.envoy and self.envoy.process
        return self.envoy.process.pid

    def stats(self) -> dict[str, int]:
        """Its listener's response classes (cumulative)."""
        assert self.envoy
        prefix = f"http.{LISTENER}."
        counters = self.envoy.stats(prefix)
        return {name[len(prefix):]: value for name, value in counters.items()
                if name[len(prefix):] in ("downstream_rq_total", "downstream_rq_2xx",
                                          "downstream_rq_4xx", "downstream_rq_5xx",
                                          "downstream_cx_total")}

    def stop(self) -> None:
        if self.envoy:
            self.envoy.stop()


@dataclass
class PythonUpstream:
    """The Python mock (tests/bench/bench_upstream.py), in its own process."""

    workdir: Path
    kind: str = "python"
    port: int = 0
    process: subprocess.Popen[str] | None = field(default=None, repr=False)

    def start(self) -> PythonUpstream:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "upstream.log", "wb") as log:  # the child keeps a copy
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.bench.bench_upstream"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.strip():
            self.stop()
            raise RuntimeError("the Python mock upstream printed no port:\n"
                               + (self.workdir / "upstream.log").read_text(errors="replace"))
        self.port = int(line)
        return self

    def pid(self) -> int:
        assert self.process
        return self.process.pid

    def stats(self) -> dict[str, int]:
        return {}

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_upstream(kind: str, workdir: Path) -> EnvoyUpstream | PythonUpstream:
    if kind == "envoy":
        return EnvoyUpstream(workdir).start()
    if kind == "python":
        return PythonUpstream(workdir).start()
    raise ValueError(f"unknown upstream {kind!r}: one of {', '.join(KINDS)}")


if __name__ == "__main__":
    print(upstream_config(), end="")
