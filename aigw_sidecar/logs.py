"""Structured logs: JSON lines or plain text, request ids, and a redaction layer.

``configure_logging`` installs one handler on the root logger. Its filter and
formatter make it impossible for a secret-shaped value to reach the output,
whatever path it takes (the message, its args, an exception, an ``extra=`` field):
our ``sk-aigw-`` secrets, ``Bearer``/``Basic`` credentials, and every configured
token (admin tokens, the webhook signing secret) are replaced by a masked form.
The filter rewrites the record, and the formatter redacts the final line again.

A request id lives in a context variable, set per RPC by the transport; every
line logged while serving that RPC carries it. Lines per request are DEBUG only.
"""

from __future__ import annotations

import json
import logging
import re
import secrets as random_tokens
import sys
import time
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any, TextIO

# "" outside an RPC; _PENDING inside one that brought no id (the first line mints one).
request_id_var: ContextVar[str] = ContextVar("aigw_request_id", default="")
_PENDING = "\x00"
_MAX_REQUEST_ID = 128
_MASK = "***"
# Our secrets, also truncated or malformed: the prefix and what follows it (not
# an already masked one, so that redacting twice changes nothing).
_SECRET_RE = re.compile(r"sk-aigw-(?!…)[A-Za-z0-9_\-]*")
# HTTP credentials in any casing, quoted or not.
_CREDENTIAL_RE = re.compile(r"(?i)\b(bearer|basic)(\s+|%20|\+)([^\s\"',;]+)")
# Attributes every LogRecord has; anything else came in through ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "request_id", "taskName",
}


def bind_request_id(value: str) -> None:
    """Carry ``value`` (cut to 128 characters; "" mints one if needed) on every line
    logged in the current context, i.e. the current RPC."""
    request_id_var.set(value[:_MAX_REQUEST_ID] if value else _PENDING)


def current_request_id() -> str:
    """The current RPC's request id (minted on first use), or "" outside an RPC."""
    value = request_id_var.get()
    if value == _PENDING:
        value = random_tokens.token_hex(8)
        request_id_var.set(value)
    return value


def _mask_secret(match: re.Match[str]) -> str:
    text = match.group(0)
    # Like the masked secret of a key listing; short fragments show nothing.
    return f"sk-aigw-…{text[-4:]}" if len(text) >= 24 else "sk-aigw-…"


class Redactor:
    """Replaces every secret-shaped value in a text by a masked form."""

    def __init__(self, tokens: Iterable[str] = ()) -> None:
        # Longest first, so a token containing another is replaced whole.
        self._tokens = sorted({t for t in tokens if t}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for token in self._tokens:
            if token in text:
                text = text.replace(token, _MASK)
        if "sk-aigw-" in text:
            text = _SECRET_RE.sub(_mask_secret, text)
        return _CREDENTIAL_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{_MASK}", text)


class RedactionFilter(logging.Filter):
    """Rewrites a record so that no part of it holds a secret-shaped value."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        redact = self._redact
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the line
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.exc_info = None  # from here on only the redacted text exists
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name, value in list(vars(record).items()):
            if name not in _RECORD_ATTRS:
                setattr(record, name, _redact_value(redact, value))
        return True


def _redact_value(redact: Redactor, value: Any) -> Any:
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        return [_redact_value(redact, v) for v in value]
    if isinstance(value, dict):
        return {redact(str(k)): _redact_value(redact, v) for k, v in value.items()}
    return redact(str(value))


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS}


def _timestamp(created: float) -> str:
    ms = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{ms:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id, extras, exc."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = current_request_id()
        if request_id:
            line["request_id"] = request_id
        line.update(_extras(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        return self._redact(json.dumps(line, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """``time LEVEL logger [request id] message key=value...`` for people at a terminal."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        head, sep, tail = text.partition("\n")
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        request_id = current_request_id()
        if request_id:
            head = f"{head} request_id={request_id}"
        if extras:
            head = f"{head} {extras}"
        return self._redact(head + sep + tail)


def configure_logging(
    level: str = "INFO",
    log_format: str = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Install the one redacting handler on the root logger and return it.

    Args:
        log_format: ``json``, ``text``, or ``auto`` (text on a terminal, else JSON).
        secrets: configured tokens to mask wherever they appear.
    """
    stream = stream or sys.stderr
    if log_format == "auto":
        log_format = "text" if stream.isatty() else "json"
    redact = Redactor(secrets)
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactionFilter(redact))
    handler.setFormatter(
        JsonFormatter(redact) if log_format == "json" else TextFormatter(redact)
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
