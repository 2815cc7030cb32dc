"""Reset-period arithmetic: the Python reference, and the Lua in the real servers against it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from importlib import resources

import pytest
from redis.asyncio import Redis

from aigw_sidecar.keys.model import KeySpec, Limits
from aigw_sidecar.keys.service import KeyService
from aigw_sidecar.limits.periods import ResetPeriod, period_bounds
from tests.conftest import Clock

CALENDAR = (ResetPeriod.DAILY, ResetPeriod.WEEKLY, ResetPeriod.MONTHLY, ResetPeriod.YEARLY)


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()) * 1000


def test_never_is_one_period_from_the_epoch_without_an_end() -> None:
    assert period_bounds(ResetPeriod.NEVER, ms(2031, 5, 17, 13)) == (0, None)


def test_a_day_runs_from_midnight_to_midnight_utc() -> None:
    assert period_bounds(ResetPeriod.DAILY, ms(2027, 3, 14, 15, 9, 26) + 535) == (
        ms(2027, 3, 14), ms(2027, 3, 15)
    )


def test_the_last_millisecond_of_a_day_still_belongs_to_it() -> None:
    assert period_bounds(ResetPeriod.DAILY, ms(2027, 3, 15) - 1) == (
        ms(2027, 3, 14), ms(2027, 3, 15)
    )


def test_midnight_starts_the_next_day() -> None:
    assert period_bounds(ResetPeriod.DAILY, ms(2027, 3, 15))[0] == ms(2027, 3, 15)


def test_a_month_ends_on_the_first_of_the_next_month_after_a_31st() -> None:
    assert period_bounds(ResetPeriod.MONTHLY, ms(2027, 1, 31, 23, 59, 59) + 999) == (
        ms(2027, 1, 1), ms(2027, 2, 1)
    )


def test_february_of_a_leap_year_has_a_29th() -> None:
    feb29 = ms(2028, 2, 29, 12)
    assert period_bounds(ResetPeriod.MONTHLY, feb29) == (ms(2028, 2, 1), ms(2028, 3, 1))
    assert period_bounds(ResetPeriod.DAILY, feb29) == (ms(2028, 2, 29), ms(2028, 3, 1))


def test_february_of_a_common_year_ends_after_the_28th() -> None:
    assert period_bounds(ResetPeriod.MONTHLY, ms(2027, 2, 28, 23)) == (
        ms(2027, 2, 1), ms(2027, 3, 1)
    )


def test_a_week_starts_on_monday_at_midnight_utc() -> None:
    # 2028-01-02 is a Sunday: its week started on Monday 2027-12-27.
    assert period_bounds(ResetPeriod.WEEKLY, ms(2028, 1, 2, 23, 59, 59) + 999) == (
        ms(2027, 12, 27), ms(2028, 1, 3)
    )


def test_monday_midnight_starts_a_new_week() -> None:
    assert period_bounds(ResetPeriod.WEEKLY, ms(2028, 1, 3)) == (ms(2028, 1, 3), ms(2028, 1, 10))


def test_a_week_across_a_leap_day_is_still_seven_days() -> None:
    start, end = period_bounds(ResetPeriod.WEEKLY, ms(2028, 2, 29))
    assert (start, end) == (ms(2028, 2, 28), ms(2028, 3, 6))


def test_december_ends_on_the_first_of_january_of_the_next_year() -> None:
    assert period_bounds(ResetPeriod.MONTHLY, ms(2027, 12, 31, 23, 59, 59) + 999) == (
        ms(2027, 12, 1), ms(2028, 1, 1)
    )


def test_a_year_runs_from_one_first_of_january_to_the_next() -> None:
    assert period_bounds(ResetPeriod.YEARLY, ms(2028, 12, 31, 23, 59, 59) + 999) == (
        ms(2028, 1, 1), ms(2029, 1, 1)
    )
    assert period_bounds(ResetPeriod.YEARLY, ms(2029, 1, 1))[0] == ms(2029, 1, 1)


def test_every_period_holds_the_instant_it_was_computed_for() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        now = rng.randrange(0, ms(2200, 1, 1))
        for period in CALENDAR:
            start, end = period_bounds(period, now)
            assert end is not None
            assert start <= now < end


# --- the Lua prelude, run by the real servers --------------------------------

_PROBE = """
local out = {}
for i = 2, #ARGV do
  local s, e = period_bounds(ARGV[1], tonumber(ARGV[i]))
  out[#out + 1] = s
  out[#out + 1] = e
end
return out
"""


def _prelude() -> str:
    return (resources.files("aigw_sidecar.store") / "lua" / "_prelude.lua").read_text("utf-8")


def _boundary_instants() -> list[int]:
    """Every 1st of a month and every Monday from 1970 to 2200, each -1, 0 and +1 ms,
    plus random instants."""
    edges: list[int] = []
    for year in range(1970, 2200):
        for month in range(1, 13):
            edges.append(ms(year, month, 1))
    monday = datetime(1970, 1, 5, tzinfo=UTC)
    end = datetime(2200, 1, 1, tzinfo=UTC)
    while monday < end:
        edges.append(int(monday.timestamp()) * 1000)
        monday += timedelta(days=7)
    edges.append(ms(2028, 2, 29))
    edges.append(ms(2000, 2, 29))
    instants = [t + d for t in edges for d in (-1, 0, 1) if t + d >= 0]
    rng = random.Random(11)
    instants += [rng.randrange(0, ms(2200, 1, 1)) for _ in range(3000)]
    return instants


@pytest.mark.parametrize("period", list(ResetPeriod))
async def test_the_lua_period_bounds_agree_with_python_at_every_boundary(
    redis_client: Redis, period: ResetPeriod
) -> None:
    script = redis_client.register_script(_prelude() + _PROBE)
    instants = _boundary_instants()
    for i in range(0, len(instants), 2000):
        batch = instants[i : i + 2000]
        flat = await script(args=[period.value, *batch])
        for n, now in enumerate(batch):
            start, end = period_bounds(period, now)
            assert (flat[2 * n], flat[2 * n + 1]) == (start, -1 if end is None else end), now


@pytest.mark.parametrize("period", CALENDAR)
async def test_the_overview_reports_the_python_period_around_its_boundaries(
    keys: KeyService, clock: Clock, period: ResetPeriod
) -> None:
    clock.set_s(ms(2027, 12, 1) / 1000)
    key, _secret = await keys.create(
        KeySpec(name="p", limits=Limits(token_limit=10, reset_period=period))
    )
    for edge in (ms(2028, 1, 1), ms(2028, 1, 3), ms(2028, 2, 29), ms(2028, 3, 1)):
        for now in (edge - 1, edge, edge + 1):
            clock.now_us = now * 1000
            overview = await keys.overview(key.key_id)
            assert (overview.period_start_ms, overview.next_reset_ms) == period_bounds(
                period, now
            )
