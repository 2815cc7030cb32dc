"""The alert webhook: budget events POSTed as signed JSON, from a background task.

``WebhookSink.offer`` only puts the event on a bounded queue and returns: a slow
or failing receiver never slows admission. One task delivers the queue in order;
each event is tried up to ``attempts`` times with exponential backoff (0.5 s,
1 s, 2 s, ...), then dropped with an ERROR line. A full queue drops the new event
(WARNING). Delivery is at least once: a receiver dedupes on ``dedupe_key``.

Each POST carries ``X-Aigw-Signature: t=<unix seconds>,v1=<hex>``, where hex is
HMAC-SHA256 over ``"<t>." + body`` with the configured secret (as Stripe signs
its webhooks): a receiver recomputes it, compares in constant time and rejects
old timestamps. The HTTP call itself runs in a worker thread (urllib), off the
event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from aigw_sidecar.event_fields import encode_event
from aigw_sidecar.limits.alerts import BudgetEvent

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Aigw-Signature"
DEFAULT_ATTEMPTS = 5
DEFAULT_TIMEOUT_S = 5.0
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
QUEUE_SIZE = 1000


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, max_age_s: float = 300.0) -> bool:
    """What a receiver does (kept here for tests and the README's example)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > max_age_s:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def event_body(event: BudgetEvent) -> bytes:
    """The JSON body: the stream fields plus the event id and time."""
    body: dict[str, Any] = {
        "event_id": event.event_id,
        "occurred_at_ms": event.occurred_at_ms,
        **encode_event(event),
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


class WebhookSink:
    """Delivers budget events to one URL, in order, in the background."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        attempts: int = DEFAULT_ATTEMPTS,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        first_backoff_s: float = FIRST_BACKOFF_S,
        on_result: Callable[[str], None] = lambda result: None,
    ) -> None:
        """Args:
        on_result: told "delivered", "failed" (given up) or "dropped" (queue full).
        """
        if not url.startswith(("http://", "https://")):
            raise ValueError("the alert webhook URL must be http:// or https://")
        self._url = url
        self._secret = secret
        self._attempts = attempts
        self._timeout_s = timeout_s
        self._first_backoff_s = first_backoff_s
        self._on_result = on_result
        self._queue: asyncio.Queue[BudgetEvent] = asyncio.Queue(QUEUE_SIZE)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def offer(self, event: BudgetEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._on_result("dropped")
            log.warning("alert webhook queue full; event dropped",
                        extra={"dedupe_key": event.dedupe_key})

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            await self._deliver(event)

    async def _deliver(self, event: BudgetEvent) -> None:
        body = event_body(event)
        delay = self._first_backoff_s
        for attempt in range(1, self._attempts + 1):
            try:
                status = await asyncio.to_thread(self._post, body)
            except (OSError, urllib.error.URLError, ValueError) as exc:
                status, reason = 0, type(exc).__name__
            else:
                reason = f"HTTP {status}"
            if 200 <= status < 300:
                self._on_result("delivered")
                log.info("alert webhook delivered", extra={"dedupe_key": event.dedupe_key})
                return
            if attempt < self._attempts:
                log.warning("alert webhook attempt %d failed (%s); retrying in %.1f s",
                            attempt, reason, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
        self._on_result("failed")
        log.error("alert webhook gave up after %d attempts", self._attempts,
                  extra={"dedupe_key": event.dedupe_key})

    def _post(self, body: bytes) -> int:
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self._url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "aigw-sidecar",
                SIGNATURE_HEADER: sign(self._secret, int(time.time()), body),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as reply:  # noqa: S310
                return int(reply.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
