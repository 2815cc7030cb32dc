"""A rolling restart of two replicas on one store, under a light load, drops no request.

Runs ``tests/bench/rolling_restart.py`` with 4 clients pausing 10 ms between calls:
A then B get SIGTERM and are started again while the clients, retrying a failed
call once on the other replica, keep calling Authorize.
"""

from __future__ import annotations

from pathlib import Path

from tests.bench.rolling_restart import LIMIT, run


async def test_a_rolling_restart_under_light_load_drops_nothing_and_admits_the_limit_exactly(
    tmp_path: Path,
) -> None:
    result = await run(clients=4, pause_s=0.01, folder=tmp_path)
    print(f"\nrolling restart: {result}")
    assert result["retried"], "the restarts never interrupted a call"
    assert (result["dropped"], result["other_errors"]) == (0, 0), result
    assert result["limited_admitted"] == LIMIT, result
