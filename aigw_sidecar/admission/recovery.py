"""Store calls whose outcome is unknown, finished once the store answers again.

A store that stalls past the timeout fails the call with ``StoreUnavailable``,
but its script may still run when the store resumes. Two kinds of calls matter:

* an **Authorize** that reserved or took a parallel slot under a request id
  nobody will settle: the proxy answered 503, a direct caller saw UNAVAILABLE
  for an id the sidecar made. Left alone, the slot and the reservation would
  hold the key until their lease ended (``--reservation-ttl-s``, 10 minutes),
  refusing it "Retry in 599 s" long after the fault. Such an id is **released**
  (idempotent by request id): as soon as the store answers, and once more a
  moment later, since a script queued behind the stall may run after the first
  release. Only ids the sidecar made are released this way: a caller's own id
  may be retried by that caller, and releasing it then would free a live slot.
* a **settlement** (RecordUsage or release of a proxied request) that failed:
  tried again until the store takes it (RecordUsage counts a request id once,
  so a report that did run is not counted twice).

What such an Authorize added to a requests-per-minute window stays there until
it leaves the window (at most 60 s): it was admitted by the store, and the
window does not record request ids.

Pending work is bounded (``max_pending``): past it the oldest is dropped and
counted, and its lease ends it as before.

``AdmittedChecks`` closes the last gap of the proxy path: a Check the store
answered but whose answer Envoy dropped (its client left while the reply was on
its way; grpc.aio gives the server no sign that a reply was not delivered). Envoy
still logs the request, without ext_authz's metadata; its request id (Envoy's
``x-request-id``, made fresh for every request by the shipped config) finds the
admission here, and it is released.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aigw_sidecar.errors import NotFound, StoreUnavailable

log = logging.getLogger(__name__)

Action = Callable[[], Awaitable[object]]
RETRY_S = 0.1  # how often the store is tried while it does not answer
CONFIRM_S = 2.0  # the second release, after any script queued behind the stall ran
MAX_PENDING = 100_000


@dataclass(slots=True)
class _Pending:
    action: Action
    due: float
    repeats: int  # further runs after the first success (1: release once more)


class AdmittedChecks:
    """Admissions made by Check that hold something, by Envoy's request id, until logged.

    One per process: a Check and its access log entry reach the same sidecar when
    Envoy has one (a sidecar per gateway pod); elsewhere a dropped answer is left to
    its lease, as before. A request id seen twice (a client's own, if Envoy keeps
    it) is ambiguous and forgotten: releasing by it could free a request still
    running. Bounded: ``max_entries``, and nothing older than ``ttl_s`` (the lease).
    """

    def __init__(
        self,
        *,
        max_entries: int = MAX_PENDING,
        ttl_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        self._clock = clock
        self._held: OrderedDict[str, tuple[str, str, float]] = OrderedDict()
        # Ids seen twice, with when: kept for the lease, whatever is logged meanwhile.
        self._ambiguous: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    def admitted(self, proxy_id: str, key_id: str, request_id: str) -> None:
        """A Check admitted ``request_id`` holding a slot or a reservation."""
        if not proxy_id:
            return
        now = self._clock()
        while self._held and (
            len(self._held) >= self._max_entries
            or next(iter(self._held.values()))[2] < now - self._ttl_s
        ):
            self._held.popitem(last=False)
        while self._ambiguous and (
            len(self._ambiguous) >= self._max_entries
            or next(iter(self._ambiguous.values())) < now - self._ttl_s
        ):
            self._ambiguous.popitem(last=False)
        if proxy_id in self._held or proxy_id in self._ambiguous:
            self._held.pop(proxy_id, None)
            self._ambiguous[proxy_id] = now
            self._ambiguous.move_to_end(proxy_id)
            return
        self._held[proxy_id] = (key_id, request_id, now)

    def logged(self, proxy_id: str, with_answer: bool) -> tuple[str, str] | None:
        """Envoy logged the request; (key id, request id) to release when it never
        applied the Check's answer, else None."""
        held = self._held.pop(proxy_id, None)
        if held is None or with_answer:
            return None
        return held[0], held[1]


class UnknownOutcomes:
    """Idempotent store actions to finish once the store answers again."""

    def __init__(
        self,
        *,
        retry_s: float = RETRY_S,
        confirm_s: float = CONFIRM_S,
        max_pending: int = MAX_PENDING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._retry_s = retry_s
        self._confirm_s = confirm_s
        self._max_pending = max_pending
        self._clock = clock
        self._pending: OrderedDict[tuple[str, str, str], _Pending] = OrderedDict()
        self._wake = asyncio.Event()
        self.counts: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._pending)

    def release_later(self, key_id: str, request_id: str, release: Action) -> None:
        """An Authorize that may have reserved under ``request_id``: release it, twice."""
        self._add(("release", key_id, request_id), _Pending(release, self._clock(), 1))

    def retry_later(self, key_id: str, request_id: str, settle: Action) -> None:
        """A settlement the store did not take: run it until it succeeds once."""
        self._add(("settle", key_id, request_id), _Pending(settle, self._clock(), 0))

    def _add(self, name: tuple[str, str, str], pending: _Pending) -> None:
        if name not in self._pending and len(self._pending) >= self._max_pending:
            self._pending.popitem(last=False)
            self.counts["dropped"] += 1
        self._pending[name] = pending
        self.counts[f"{name[0]}_remembered"] += 1
        self._wake.set()

    async def run_once(self) -> bool:
        """Run every action that is due; False when the store still does not answer.

        The due actions run concurrently: on the pipelined store connection a
        few hundred releases cost about one round trip.
        """
        now = self._clock()
        due = [(name, p) for name, p in self._pending.items() if p.due <= now]
        results = await asyncio.gather(*(p.action() for _, p in due), return_exceptions=True)
        answered = True
        for (name, pending), result in zip(due, results, strict=True):
            if isinstance(result, StoreUnavailable):
                answered = False  # still down: tried again next round
                continue
            if isinstance(result, Exception) and not isinstance(result, NotFound):
                # (NotFound: the key was deleted, so nothing is held any more.)
                self.counts["errors"] += 1
                log.error("finishing a %s of request %s on key %s failed (%s); its lease "
                          "will end it", name[0], name[2], name[1], type(result).__name__)
            if pending.repeats > 0:
                pending.repeats -= 1
                pending.due = now + self._confirm_s
                continue
            if self._pending.get(name) is pending:
                del self._pending[name]
            self.counts[f"{name[0]}_done"] += 1
        return answered

    async def drain(self, timeout_s: float) -> None:
        """Before a shutdown: finish what the store takes within ``timeout_s``."""
        deadline = self._clock() + timeout_s
        while self._pending and self._clock() < deadline:
            await self.run_once()
            await asyncio.sleep(self._retry_s)

    async def run(self) -> None:
        """Work through the pending actions for as long as the sidecar runs."""
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            await self.run_once()
            await asyncio.sleep(self._retry_s)
