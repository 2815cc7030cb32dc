"""OpenAI-compatible request bodies and reported usage, read for accounting (pure code, no I/O).

Two directions, both used by the Envoy adapters in ``server/``:

* **Requests** (ext_authz, before the request runs): ``read_request`` reads the
  whole body of a chat, completions, embeddings or responses request, strictly,
  and turns it into ``RequestFacts``: the model the upstream will be asked for,
  a prompt estimate, the output bound, and whether a streaming request must be
  asked for its usage. A body that a lenient upstream might read differently
  from us is refused (``BodyRefused``), never guessed at: not UTF-8, not one
  JSON object, a key given twice in any object, a non-finite number, or an
  accounting field of the wrong type (``model``, ``stream``, ``stream_options``,
  the token bounds, ``n``). So the model admitted is the model charged and the
  model the upstream gets.

  The prompt estimate is deliberately cheap and on the high side of a tokenizer
  for English text: ``ceil(characters / 4)`` of every text in ``messages``
  (string contents and text parts), ``prompt``, ``input`` or ``instructions``,
  plus 4 tokens per message for the chat framing. The output bound is
  ``max_completion_tokens``, else ``max_tokens`` (``max_output_tokens`` for the
  Responses API), times ``n`` (or ``best_of``) choices; ``None`` when the request
  sets none (the caller then applies a bounded default). Embeddings have no output.
* **Responses** (after, from the proxy's capture): ``usage_of`` reads the ``usage``
  object an upstream reported: chat/completions usage (``prompt_tokens``,
  ``completion_tokens``, ``prompt_tokens_details.cached_tokens``), Responses-API
  usage (``input_tokens``, ``output_tokens``, ``input_tokens_details``) and
  embeddings usage (``prompt_tokens`` only).

``settlement`` is the rule for a proxied request that ended, completely or not.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from aigw_sidecar.admission.decision import Estimate
from aigw_sidecar.keys import secrets
from aigw_sidecar.keys.model import MODEL_NAME_RE

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
MAX_TOKENS = 10**12  # the domain's bound on one token count
MAX_CHOICES = 128
# The object a streaming request gets when it did not ask for its usage.
INCLUDE_USAGE = b'"stream_options":{"include_usage":true},'


class Endpoint(StrEnum):
    """The OpenAI-compatible endpoints whose usage the gateway can read."""

    CHAT = "chat"  # POST /v1/chat/completions
    COMPLETIONS = "completions"  # POST /v1/completions
    EMBEDDINGS = "embeddings"  # POST /v1/embeddings
    RESPONSES = "responses"  # POST /v1/responses

    @staticmethod
    def of_path(path: str) -> Endpoint | None:
        """The endpoint a request path names (query string ignored); None for another path."""
        return _ENDPOINT_OF_PATH.get(path.split("?", 1)[0])


_ENDPOINT_OF_PATH = {
    "/v1/chat/completions": Endpoint.CHAT,
    "/v1/completions": Endpoint.COMPLETIONS,
    "/v1/embeddings": Endpoint.EMBEDDINGS,
    "/v1/responses": Endpoint.RESPONSES,
}


class BodyRefused(ValueError):
    """A request body the gateway will not forward; the message names the problem."""


@dataclass(frozen=True, slots=True)
class UsageRewrite:
    """How a streaming request's body is changed to ask for its usage.

    ``offset`` set: insert ``INCLUDE_USAGE`` right after the object's opening
    brace at that byte offset (the body has no ``stream_options``); otherwise
    ``body`` replaces the whole body (its ``stream_options`` gained
    ``include_usage: true``). ``length`` is the size of the body this was
    computed for: the proxy rewrites only that exact body.
    """

    length: int
    offset: int | None = None
    body: str = ""  # ASCII JSON


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What a request body says about the cost of the request."""

    model: str = ""
    prompt_tokens: int = 0  # estimated
    max_output_tokens: int | None = None  # None: the request sets no bound
    stream: bool = False
    choices: int = 1  # n / best_of: the output bound is per choice
    rewrite: UsageRewrite | None = None  # set: ask the upstream for the usage

    def estimate(self, default_max_output_tokens: int = 0) -> Estimate:
        """The estimate to reserve; ``default_max_output_tokens`` bounds an unbounded request."""
        bound = self.max_output_tokens
        if bound is None:
            bound = default_max_output_tokens * self.choices
        return Estimate(
            model=self.model,
            prompt_tokens=self.prompt_tokens,
            max_output_tokens=min(bound, MAX_TOKENS),
        )


def _tokens_of_chars(chars: int) -> int:
    return min(-(-chars // CHARS_PER_TOKEN), MAX_TOKENS)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return min(value, MAX_TOKENS)


def _model(value: Any) -> str:
    """A model name the domain accepts (printable ASCII, 1-128 characters), else ""."""
    if not isinstance(value, str) or not MODEL_NAME_RE.match(value):
        return ""
    return "" if secrets.looks_like_ours(value) else value


def _text_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):  # content parts, prompt lists, response input items
        return sum(_text_chars(part) for part in content)
    if isinstance(content, dict):
        return sum(_text_chars(content.get(name)) for name in ("text", "content"))
    return 0


def _prompt_tokens(body: dict[str, Any], endpoint: Endpoint) -> int:
    messages = body.get("messages")
    if endpoint is Endpoint.CHAT and isinstance(messages, list):
        chars = sum(_text_chars(m.get("content")) for m in messages if isinstance(m, dict))
        return min(_tokens_of_chars(chars) + TOKENS_PER_MESSAGE * len(messages), MAX_TOKENS)
    chars = sum(_text_chars(body.get(name)) for name in ("prompt", "input", "instructions"))
    if isinstance(body.get("input"), list) and endpoint is Endpoint.RESPONSES:
        chars += TOKENS_PER_MESSAGE * CHARS_PER_TOKEN * len(body["input"])
    return _tokens_of_chars(chars)


# --- strict reading -----------------------------------------------------------


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise BodyRefused(f"The request body has the key {_shown(name)} twice.")
            seen.add(name)
    return obj


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BodyRefused("The request body holds a number too large to represent.")
    return value


def _no_constant(name: str) -> Any:
    raise BodyRefused(f"The request body holds {name}, which is not JSON.")


_PLAIN_NAME_RE = re.compile(r"^[a-z_]{1,40}\Z")


def _shown(name: str) -> str:
    """A key name for a message: only a plain field name, never text from a value."""
    return repr(name) if _PLAIN_NAME_RE.match(name) else "(one of its keys)"


def _parse(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyRefused("The request body is not valid UTF-8.") from None
    try:
        parsed = json.loads(
            text, object_pairs_hook=_unique_keys, parse_float=_finite,
            parse_constant=_no_constant,
        )
    except BodyRefused:
        raise
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "too deeply nested"
        raise BodyRefused(f"The request body is not valid JSON ({reason}).") from None
    if not isinstance(parsed, dict):
        raise BodyRefused("The request body must be a JSON object.")
    return parsed


def _optional(body: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = body.get(name)
    if value is None:
        return None
    # bool is an int in Python; only a field that asks for a boolean takes one.
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise BodyRefused(f"'{name}' must be {what}.")
    return value


def _bound(body: dict[str, Any], name: str) -> int | None:
    value = _optional(body, name, int, "a non-negative integer")
    if value is not None and value < 0:
        raise BodyRefused(f"'{name}' must be a non-negative integer.")
    return None if value is None else min(value, MAX_TOKENS)


def _output_bound(body: dict[str, Any], endpoint: Endpoint) -> int | None:
    if endpoint is Endpoint.EMBEDDINGS:
        return 0
    if endpoint is Endpoint.RESPONSES:
        return _bound(body, "max_output_tokens")
    completion, legacy = _bound(body, "max_completion_tokens"), _bound(body, "max_tokens")
    return completion if completion is not None else legacy


def _choices(body: dict[str, Any]) -> int:
    choices = 1
    for name in ("n", "best_of"):
        value = _optional(body, name, int, f"an integer from 1 to {MAX_CHOICES}")
        if value is not None and not 1 <= value <= MAX_CHOICES:
            raise BodyRefused(f"'{name}' must be an integer from 1 to {MAX_CHOICES}.")
        choices = max(choices, value or 1)
    return choices


def _usage_rewrite(body: bytes, parsed: dict[str, Any]) -> UsageRewrite | None:
    options = _optional(parsed, "stream_options", dict, "an object")
    if options is None:
        if "stream_options" not in parsed:
            # The cheap, common case: insert the option after the opening brace.
            return UsageRewrite(len(body), offset=len(body) - len(body.lstrip()))
        options = {}
    include = _optional(options, "include_usage", bool, "a boolean")
    if include is True:
        return None
    # ensure_ascii: any lone surrogate or odd character is re-encoded as an escape.
    new = {**parsed, "stream_options": {**options, "include_usage": True}}
    return UsageRewrite(len(body), body=json.dumps(new, separators=(",", ":")))


def read_request(body: bytes, endpoint: Endpoint = Endpoint.CHAT) -> RequestFacts:
    """The facts of an OpenAI-style request body; ``BodyRefused`` when it is not one.

    The caller must pass the whole body: a prefix is refused by the parser.
    """
    parsed = _parse(body)
    raw_model = _optional(parsed, "model", str, "a string")
    model = _model(raw_model) if raw_model is not None else ""
    if raw_model is not None and not model:
        raise BodyRefused("'model' must be 1-128 printable ASCII characters without spaces.")
    stream = _optional(parsed, "stream", bool, "a boolean") is True
    _optional(parsed, "stream_options", dict, "an object")
    bound = _output_bound(parsed, endpoint)
    choices = _choices(parsed) if endpoint in (Endpoint.CHAT, Endpoint.COMPLETIONS) else 1
    rewrite = None
    if stream and endpoint in (Endpoint.CHAT, Endpoint.COMPLETIONS):
        rewrite = _usage_rewrite(body, parsed)
    return RequestFacts(
        model=model,
        prompt_tokens=_prompt_tokens(parsed, endpoint),
        max_output_tokens=None if bound is None else min(bound * choices, MAX_TOKENS),
        stream=stream,
        choices=choices,
        rewrite=rewrite,
    )


def with_usage_requested(body: bytes, rewrite: UsageRewrite) -> bytes:
    """``body`` as the proxy sends it upstream after ``rewrite`` (the proxy's rule, in Python)."""
    if rewrite.offset is None:
        return rewrite.body.encode()
    cut = rewrite.offset + 1
    return body[:cut] + INCLUDE_USAGE + body[cut:]


# --- reported usage -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Usage:
    """Usage as the upstream reported it."""

    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int = 0
    model: str = ""  # the model the response names, "" when it names none
    # What the upstream says the request cost (OpenRouter's usage.cost, a gateway's
    # x-litellm-response-cost header), in micro-USD rounded up; None: it says nothing.
    reported_cost_micro_usd: int | None = None


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
        reported_cost_micro_usd=usd_to_micro(usage.get("cost")),
    )


MAX_REPORTED_MICRO_USD = 10**15  # the domain's bound on one report's cost


def usd_to_micro(value: Any) -> int | None:
    """A cost in USD as an upstream writes it (a JSON number or a decimal string) in
    micro-USD, rounded up; None when it is not a finite, non-negative amount."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount < 0:
        return None
    micro = math.ceil(amount * 1_000_000)
    return micro if micro <= MAX_REPORTED_MICRO_USD else None


def captured_usage(usage_json: str, model: str = "", cost_header: str = "") -> Usage | None:
    """The usage object the proxy captured from a response (JSON text), or None.

    ``cost_header``: a cost the upstream sent as a response header (USD), used when
    the usage object carries none.
    """
    try:
        usage = json.loads(usage_json)
    except (ValueError, RecursionError):
        return None
    found = usage_of({"usage": usage, "model": model})
    header_cost = usd_to_micro(cost_header) if cost_header else None
    if found is not None and found.reported_cost_micro_usd is None and header_cost is not None:
        found = replace(found, reported_cost_micro_usd=header_cost)
    return found


class Settlement(StrEnum):
    """How an admitted request that went through the proxy is settled."""

    CHARGE_USAGE = "charge_usage"  # the usage the upstream reported
    CHARGE_ESTIMATE = "charge_estimate"  # no usage to read: what was reserved
    RELEASE = "release"  # the upstream failed, or never got the request: charge nothing


def settlement(status: int | None, usage: Usage | None, upstream_started: bool) -> Settlement:
    """The settlement of a proxied request that ended, completely or cut short.

    Reported usage is always charged, even when the stream broke after it. Without
    usage, the request is charged its estimate (a bounded, conservative amount)
    whenever the upstream may have done work it bills: a success (2xx) whose
    usage could not be read (a client that hung up mid-stream, an upstream that
    crashed after sending tokens or reports none), or no response at all after
    the upstream got the whole request (the client left while it ran). An
    error status, or a request that never reached the upstream, releases the
    reservation: providers do not bill failures.
    """
    if usage is not None:
        return Settlement.CHARGE_USAGE
    if status is not None and 200 <= status < 300:
        return Settlement.CHARGE_ESTIMATE
    if status is None and upstream_started:
        return Settlement.CHARGE_ESTIMATE
    return Settlement.RELEASE
