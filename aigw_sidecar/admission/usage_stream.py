"""OpenAI-compatible request and response bodies, read for accounting (pure code, no I/O).

Two directions, both used by the Envoy adapters in ``server/``:

* **Requests** (ext_authz, before the request runs): ``read_request`` turns a chat or
  completions body into ``RequestFacts`` and an ``Estimate`` to reserve. The prompt
  estimate is deliberately cheap and on the high side of a tokenizer for English
  text: ``ceil(characters / 4)`` of every text in ``messages`` (string contents and
  text parts) or ``prompt``, plus 4 tokens per message for the chat framing. The
  output bound is ``max_completion_tokens``, else ``max_tokens``, else 0 (then only
  the prompt is reserved). A body cut short by the proxy (Envoy sends at most
  ``max_request_bytes``) is not JSON: its prompt is estimated as
  ``ceil(content-length / 4)`` (the whole body counted as text: an overestimate),
  and model and max tokens are picked out of the part that arrived when they are in it.
  ``with_usage_requested`` rewrites a streaming body to ask for the final usage chunk.
* **Responses** (ext_proc, after): ``UsageReader`` is fed the response body chunk by
  chunk as Envoy streams it and keeps only what it needs: the ``usage`` object of a
  JSON body, or of the last server-sent event that carries one (events are split on
  blank lines across chunks; ``[DONE]`` is ignored). Chat/completions usage
  (``prompt_tokens``, ``completion_tokens``, ``prompt_tokens_details.cached_tokens``)
  and Responses-API usage (``input_tokens``, ``output_tokens``,
  ``input_tokens_details.cached_tokens``, also inside a ``response.completed`` event)
  are both understood.

``settlement`` is the rule for a response that ended, completely or not.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aigw_sidecar.admission.decision import Estimate
from aigw_sidecar.keys import secrets
from aigw_sidecar.keys.model import MODEL_NAME_RE

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
MAX_TOKENS = 10**12  # the domain's bound on one token count
# A JSON response is kept whole up to this size; past it only the tail is kept
# (the usage object comes last in every OpenAI-compatible response).
MAX_JSON_BYTES = 4 * 1024 * 1024
TAIL_BYTES = 64 * 1024
# An SSE event longer than this is skipped (its chunks are dropped, not kept).
MAX_EVENT_BYTES = 1024 * 1024

_PARTIAL_MODEL_RE = re.compile(rb'"model"\s*:\s*"([\x21\x23-\x5b\x5d-\x7e]{1,128})"')
_PARTIAL_MAX_RE = re.compile(rb'"(max_completion_tokens|max_tokens)"\s*:\s*(\d{1,12})\b')
_PARTIAL_STREAM_RE = re.compile(rb'"stream"\s*:\s*true\b')
_USAGE_KEY_RE = re.compile(rb'"usage"\s*:\s*\{')
_EVENT_SPLIT_RE = re.compile(rb"\r\n\r\n|\n\n|\r\r")


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What a request body says about the cost of the request."""

    model: str = ""
    prompt_tokens: int = 0  # estimated
    max_output_tokens: int = 0  # 0: the request set no bound
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage was already true

    def estimate(self) -> Estimate:
        return Estimate(
            model=self.model,
            prompt_tokens=self.prompt_tokens,
            max_output_tokens=self.max_output_tokens,
        )


def _tokens_of_chars(chars: int) -> int:
    return min(-(-chars // CHARS_PER_TOKEN), MAX_TOKENS)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return min(value, MAX_TOKENS)


def _model(value: Any) -> str:
    """A model name the domain accepts (printable ASCII, 1-128 characters), else "".

    A secret pasted as the model is dropped here (the request names no model), so
    Check answers with an HTTP decision instead of refusing the estimate as bad input.
    """
    if not isinstance(value, str) or not MODEL_NAME_RE.match(value):
        return ""
    return "" if secrets.looks_like_ours(value) else value


def _text_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):  # content parts: count the text ones
        return sum(
            len(part["text"])
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return 0


def _prompt_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages")
    if isinstance(messages, list):
        chars = sum(_text_chars(m.get("content")) for m in messages if isinstance(m, dict))
        return min(_tokens_of_chars(chars) + TOKENS_PER_MESSAGE * len(messages), MAX_TOKENS)
    prompt = body.get("prompt", body.get("input"))
    if isinstance(prompt, list):
        return _tokens_of_chars(sum(_text_chars(p) for p in prompt))
    return _tokens_of_chars(_text_chars(prompt))


def _stream_options(body: dict[str, Any]) -> dict[str, Any]:
    options = body.get("stream_options")
    return options if isinstance(options, dict) else {}


def read_request(
    body: bytes, *, truncated: bool = False, content_length: int | None = None
) -> RequestFacts | None:
    """The facts of an OpenAI-style request body, or None when it is not one.

    Args:
        truncated: the proxy sent only the first part of the body.
        content_length: the whole body's length, when the request said it.
    """
    if truncated:
        return _read_partial(body, content_length)
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(parsed, dict):
        return None
    max_output = _count(parsed.get("max_completion_tokens")) or _count(
        parsed.get("max_tokens") or parsed.get("max_output_tokens")
    )
    return RequestFacts(
        model=_model(parsed.get("model")),
        prompt_tokens=_prompt_tokens(parsed),
        max_output_tokens=max_output,
        stream=parsed.get("stream") is True,
        include_usage=_stream_options(parsed).get("include_usage") is True,
    )


def _read_partial(head: bytes, content_length: int | None) -> RequestFacts:
    """A lenient reading of the first bytes of a body too large to be sent whole."""
    model = _PARTIAL_MODEL_RE.search(head)
    bounds = {m.group(1): int(m.group(2)) for m in _PARTIAL_MAX_RE.finditer(head)}
    max_output = bounds.get(b"max_completion_tokens") or bounds.get(b"max_tokens") or 0
    size = max(content_length or 0, len(head))
    return RequestFacts(
        model=_model(model.group(1).decode()) if model else "",
        prompt_tokens=_tokens_of_chars(size),
        max_output_tokens=min(max_output, MAX_TOKENS),
        stream=_PARTIAL_STREAM_RE.search(head) is not None,
    )


def with_usage_requested(body: bytes) -> bytes | None:
    """The body of a streaming request with ``stream_options.include_usage: true``.

    None when nothing needs changing: not JSON, not streaming, or already asked.
    A client that sent ``include_usage: false`` gets it turned on too: without the
    final usage chunk the request could only be charged its estimate.
    """
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(parsed, dict) or parsed.get("stream") is not True:
        return None
    options = _stream_options(parsed)
    if options.get("include_usage") is True:
        return None
    parsed["stream_options"] = {**options, "include_usage": True}
    return json.dumps(parsed, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Usage:
    """Usage as the upstream reported it."""

    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int = 0
    model: str = ""  # the model the response names, "" when it names none


def usage_of(message: Any) -> Usage | None:
    """The usage in one response object or SSE event, or None when it has none."""
    if not isinstance(message, dict):
        return None
    usage = message.get("usage")
    model = message.get("model")
    inner = message.get("response")  # Responses API: response.completed
    if not isinstance(usage, dict) and isinstance(inner, dict):
        usage, model = inner.get("usage"), inner.get("model")
    if not isinstance(usage, dict):
        return None
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        details = usage.get("prompt_tokens_details")
    elif "input_tokens" in usage or "output_tokens" in usage:
        prompt, completion = usage.get("input_tokens"), usage.get("output_tokens")
        details = usage.get("input_tokens_details")
    else:
        return None
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    prompt_tokens = _count(prompt)
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=_count(completion),
        cached_prompt_tokens=min(_count(cached), prompt_tokens),
        model=_model(model),
    )


def is_event_stream(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


class UsageReader:
    """Collects the usage of one response body, fed chunk by chunk (JSON or SSE)."""

    def __init__(self, content_type: str) -> None:
        self._sse = is_event_stream(content_type)
        self._buffer = bytearray()
        self._skipping = False  # inside an SSE event that grew past MAX_EVENT_BYTES
        self._overflowed = False  # a JSON body past MAX_JSON_BYTES: only its tail is kept
        self.usage: Usage | None = None
        self.bytes_seen = 0

    def feed(self, chunk: bytes) -> None:
        self.bytes_seen += len(chunk)
        if self._sse:
            self._feed_events(chunk)
            return
        self._buffer += chunk
        if len(self._buffer) > MAX_JSON_BYTES:
            self._overflowed = True
            del self._buffer[:-TAIL_BYTES]

    def finish(self) -> Usage | None:
        """The usage found once the body has ended (or was cut off)."""
        if self._sse:
            if self._buffer and not self._skipping:  # a last event without a blank line
                self._event(bytes(self._buffer))
            self._buffer.clear()
        elif self._buffer:
            self.usage = _json_usage(bytes(self._buffer), whole=not self._overflowed)
            self._buffer.clear()
        return self.usage

    def _feed_events(self, chunk: bytes) -> None:
        self._buffer += chunk
        while True:
            # A separator may straddle chunks, so search the whole buffer each time.
            split = _EVENT_SPLIT_RE.search(self._buffer)
            if split is None:
                break
            event = bytes(self._buffer[: split.start()])
            del self._buffer[: split.end()]
            if self._skipping:
                self._skipping = False
            else:
                self._event(event)
        if len(self._buffer) > MAX_EVENT_BYTES:
            self._skipping = True
            # Keep a few bytes so a separator split across chunks is still found.
            del self._buffer[:-4]

    def _event(self, event: bytes) -> None:
        data = [
            line[5:].removeprefix(b" ")
            for line in event.splitlines()
            if line.startswith(b"data:")
        ]
        payload = b"\n".join(data).strip()
        if not payload or payload == b"[DONE]":
            return
        try:
            found = usage_of(json.loads(payload))
        except (ValueError, UnicodeDecodeError):
            return
        if found is not None:
            self.usage = found


def _json_usage(body: bytes, *, whole: bool) -> Usage | None:
    if whole:
        try:
            return usage_of(json.loads(body))
        except (ValueError, UnicodeDecodeError):
            pass
    # Only a tail (or not JSON as a whole): decode the last "usage" object found.
    matches = list(_USAGE_KEY_RE.finditer(body))
    if not matches:
        return None
    start = matches[-1].end() - 1
    try:
        usage, _ = json.JSONDecoder().raw_decode(body[start:].decode("utf-8", "replace"))
    except ValueError:
        return None
    model = _PARTIAL_MODEL_RE.search(body)
    return usage_of({"usage": usage, "model": model.group(1).decode() if model else ""})


class Settlement(StrEnum):
    """How an admitted request that went through the proxy is settled."""

    CHARGE_USAGE = "charge_usage"  # the usage the upstream reported
    CHARGE_ESTIMATE = "charge_estimate"  # a success without usage: what was reserved
    RELEASE = "release"  # the upstream failed, or never answered: charge nothing


def settlement(status: int | None, usage: Usage | None) -> Settlement:
    """The settlement of a response that ended, completely or cut short.

    Reported usage is always charged, even when the stream broke after it. Without
    usage: a success (2xx) is charged its estimate, because the upstream did work
    it may bill (a client that hung up mid-stream, an upstream that crashed after
    sending tokens, an upstream that never reports usage); an error status, or no
    response at all, releases the reservation, as providers do not bill failures.
    """
    if usage is not None:
        return Settlement.CHARGE_USAGE
    if status is not None and 200 <= status < 300:
        return Settlement.CHARGE_ESTIMATE
    return Settlement.RELEASE
