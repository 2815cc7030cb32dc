"""Structured logs: JSON lines, request ids, and a redaction layer no secret gets past."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from aigw_sidecar.keys import secrets
from aigw_sidecar.logs import bind_request_id, configure_logging, request_id_var

ADMIN_TOKEN = "admin-token-with-\"quotes\"-and-\\-0123456789"
WEBHOOK_SECRET = "whsec-0123456789abcdef"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger writing JSON lines to a buffer, restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    configure_logging("DEBUG", "json", [ADMIN_TOKEN, WEBHOOK_SECRET], stream)
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def _raise(secret: str) -> None:
    raise ValueError(f"bad key {secret}")


def test_a_secret_is_masked_in_the_message_args_exception_extras_and_stack(
    captured: io.StringIO,
) -> None:
    secret = secrets.new_secret().secret
    log = logging.getLogger("aigw_sidecar.test")
    log.info(f"in the message {secret}")
    log.info("in the args %s and %r", secret, {"key": secret})
    try:
        _raise(secret)
    except ValueError:
        log.exception("in an exception")
    log.warning("in extras", extra={"header": f"Bearer {secret}", "nested": [{"s": secret}]})
    log.info("admin %s webhook %s", ADMIN_TOKEN, WEBHOOK_SECRET, stack_info=True)
    log.info("authorization: Bearer opaque-non-aigw-token-value and basic dXNlcjpwYXNz")
    log.info("half a secret %s", secret[:30])

    text = captured.getvalue()
    assert secret not in text
    assert secret[:30] not in text
    assert secret[-12:] not in text
    assert ADMIN_TOKEN not in text and json.dumps(ADMIN_TOKEN)[1:-1] not in text
    assert WEBHOOK_SECRET not in text
    assert "opaque-non-aigw-token-value" not in text and "dXNlcjpwYXNz" not in text
    lines = _lines(captured)
    assert len(lines) == 7
    assert f"sk-aigw-…{secret[-4:]}" in str(lines[0]["msg"])
    assert "ValueError" in str(lines[2]["exc"])  # the traceback is kept, redacted


def test_every_line_is_json_with_time_level_logger_and_message(captured: io.StringIO) -> None:
    logging.getLogger("aigw_sidecar.x").warning("store is %s", "unreachable", extra={"n": 3})
    (line,) = _lines(captured)
    assert line["level"] == "WARNING" and line["logger"] == "aigw_sidecar.x"
    assert line["msg"] == "store is unreachable" and line["n"] == 3
    assert str(line["ts"]).endswith("Z")
    assert "request_id" not in line  # not inside an RPC


async def test_each_task_carries_its_own_request_id(captured: io.StringIO) -> None:
    log = logging.getLogger("aigw_sidecar.rpc")

    async def rpc(request_id: str) -> None:
        bind_request_id(request_id)
        await asyncio.sleep(0)
        log.debug("one")
        await asyncio.sleep(0)
        log.debug("two")

    await asyncio.gather(rpc("req-a"), rpc("req-b"), rpc(""))
    lines = [line for line in _lines(captured) if line["logger"] == "aigw_sidecar.rpc"]
    ids = [line["request_id"] for line in lines]
    assert ids.count("req-a") == 2 and ids.count("req-b") == 2
    minted = [i for i in ids if i not in ("req-a", "req-b")]
    assert len(minted) == 2 and minted[0] == minted[1]  # minted once, then kept
    assert request_id_var.get() == ""


def test_text_format_for_a_terminal_is_redacted_too() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("INFO", "text", [ADMIN_TOKEN], stream)
        secret = secrets.new_secret().secret
        logging.getLogger("aigw_sidecar.t").info("key %s token %s", secret, ADMIN_TOKEN)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    text = stream.getvalue()
    assert " INFO aigw_sidecar.t key sk-aigw-…" in text
    assert secret not in text and ADMIN_TOKEN not in text
    assert not text.startswith("{")
