"""Charging escapes found in review, through real Envoy with the shipped config.

Each test asserts the secure behaviour and fails today.

The Responses API echoes request fields (``tools``, ``instructions``, ``text``,
``metadata``) in every ``response`` object, ``response.created`` included, as
OpenAI and vLLM do. The shared mock does not, so ``echoing_upstream`` makes it do
so for one test (patched in this process only, undone after the test). A function
tool's JSON Schema may hold any JSON value (``examples``, ``default``), so a
client can put ``{"usage": {...}}`` into the response *as JSON keys*, not inside a
string. The Lua filter then takes it for the upstream's usage.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e import upstream as mock
from tests.e2e.conftest import Gateway
from tests.e2e.test_charging_attacks import (  # noqa: F401  (gateway: the module fixture)
    CHARGED,
    MARKER,
    MAX_TOKENS,
    REPORT,
    charged,
    gateway,
    marker,
    new_key,
    sdk,
)
from tests.e2e.test_usage_envoy import no_reservation, settled

_echo = threading.local()
ECHOED = ("instructions", "tools", "text", "metadata")


@pytest.fixture
def echoing_upstream(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The mock's Responses API objects echo the request's tools etc. before ``usage``
    (OpenAI's field order), in ``response.created`` as in ``response.completed``."""
    record, response_object = mock._Handler._record, mock.response_object

    def recording(self: Any, body: bytes = b"") -> mock.SeenRequest:
        request = mock.parse_lenient(body)
        _echo.fields = {name: request[name] for name in ECHOED if name in request}
        return record(self, body)

    def echoing(model: str, text: str, usage: Any, status: str = "completed") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in response_object(model, text, usage, status).items():
            if name == "usage":
                out.update(getattr(_echo, "fields", {}))
            out[name] = value
        return out

    monkeypatch.setattr(mock._Handler, "_record", recording)
    monkeypatch.setattr(mock, "response_object", echoing)
    yield


# A valid function tool: `examples` is a standard JSON Schema keyword taking any JSON.
FORGING_TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "lookup",
        "description": "Look something up.",
        "parameters": {
            "type": "object",
            "properties": {"usage": {"type": "object"}},
            "examples": [{"usage": {"input_tokens": 1, "output_tokens": 1}}],
        },
    }
]


async def test_a_tool_schema_echoed_in_response_created_is_not_charged_as_usage(
    gateway: Gateway, echoing_upstream: None,  # noqa: F811
) -> None:
    """The client reads the whole text, then leaves before ``response.completed``
    (the only event with the real usage). With no usage read it must be charged the
    estimate, as a chat client leaving before its usage chunk is; today the forged
    ``{"input_tokens": 1, "output_tokens": 1}`` from the echoed tool is charged: 2
    tokens for a response the upstream bills 310."""
    key, mark = await new_key(gateway), marker()
    headers = {**REPORT, "x-mock-usage-delay": "1.0"}
    deltas = 0
    async with sdk(gateway, key, mark, headers=headers) as client:
        events = await client.responses.create(
            model="mock", input="Say hello", tools=FORGING_TOOLS,
            max_output_tokens=MAX_TOKENS, stream=True,
        )
        async for event in events:
            if event.type == "response.output_text.delta":
                deltas += 1
                if deltas == len(mock.WORDS):
                    break
        await events.close()
    assert deltas == len(mock.WORDS)
    ov = await settled(gateway, key.key.key_id, charged)
    assert no_reservation(ov)
    # The upstream did (and bills) 310 tokens of work; never less may be charged.
    assert ov.tokens.used >= CHARGED, (ov.period_prompt_tokens, ov.period_completion_tokens)
    assert gateway.upstream.seen_with(MARKER, mark)
