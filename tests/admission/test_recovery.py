"""Unknown outcomes and dropped Check answers, on their own (no store, no Envoy)."""

from __future__ import annotations

from aigw_sidecar.admission.recovery import AdmittedChecks, UnknownOutcomes
from aigw_sidecar.errors import NotFound, StoreUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_logged_request_without_its_answer_is_released_once() -> None:
    checks = AdmittedChecks()
    checks.admitted("rid-1", "key_a", "rid-1.x")
    assert checks.logged("rid-1", with_answer=False) == ("key_a", "rid-1.x")
    assert checks.logged("rid-1", with_answer=False) is None
    assert len(checks) == 0


def test_a_logged_request_with_its_answer_is_left_to_settlement() -> None:
    checks = AdmittedChecks()
    checks.admitted("rid-1", "key_a", "rid-1.x")
    assert checks.logged("rid-1", with_answer=True) is None
    assert len(checks) == 0


def test_a_request_id_seen_twice_is_never_released_by() -> None:
    # A client's own x-request-id on two requests: releasing by it could free the
    # other, still running one.
    checks = AdmittedChecks()
    checks.admitted("same", "key_a", "same.1")
    checks.admitted("same", "key_a", "same.2")
    assert checks.logged("same", with_answer=False) is None
    checks.admitted("same", "key_a", "same.3")  # still ambiguous until logged
    assert checks.logged("same", with_answer=False) is None


def test_admissions_are_bounded_by_count_and_age() -> None:
    clock = Clock()
    checks = AdmittedChecks(max_entries=3, ttl_s=10, clock=clock)
    for i in range(5):
        checks.admitted(f"r{i}", "key_a", f"r{i}.x")
    assert len(checks) == 3 and checks.logged("r0", with_answer=False) is None
    clock.now += 11
    checks.admitted("late", "key_a", "late.x")
    assert len(checks) == 1


async def test_releases_wait_for_the_store_and_run_twice() -> None:
    clock = Clock()
    outcomes = UnknownOutcomes(retry_s=0, confirm_s=2, clock=clock)
    calls: list[str] = []
    down = True

    async def release() -> bool:
        calls.append("release")
        if down:
            raise StoreUnavailable("down")
        return True

    outcomes.release_later("key_a", "r1", release)
    assert not await outcomes.run_once()  # the store does not answer yet
    down = False
    assert await outcomes.run_once()
    assert len(outcomes) == 1  # the second release is due later
    await outcomes.run_once()
    assert calls == ["release"] * 2
    clock.now += 2
    await outcomes.run_once()
    assert calls == ["release"] * 3 and len(outcomes) == 0


async def test_a_settlement_is_retried_until_taken_and_a_deleted_key_ends_it() -> None:
    outcomes = UnknownOutcomes(retry_s=0)

    async def gone() -> None:
        raise NotFound("no key")

    outcomes.retry_later("key_a", "r1", gone)
    assert await outcomes.run_once()
    assert len(outcomes) == 0 and outcomes.counts["settle_done"] == 1


async def test_pending_work_is_bounded() -> None:
    outcomes = UnknownOutcomes(max_pending=2)

    async def nothing() -> None:
        return None

    for i in range(3):
        outcomes.release_later("key_a", f"r{i}", nothing)
    assert len(outcomes) == 2 and outcomes.counts["dropped"] == 1
