"""The fault-injection suite: store stalls and a restart under mixed load on two replicas.

A bounded run (about 15 s of load, under 40 s in all) of the engine behind
``make bench-faults`` (tests/bench/faults.py): its own Valkey, two ``aigw-sidecar
serve`` replicas on one key prefix, 12 clients sending Envoy-style Checks settled
by RecordUsage or ReleaseReservation, Authorize with and without request ids and
estimates, and usage reports retried until acknowledged; 10 % of the calls with a
0.05-0.2 s deadline and 5 % cancelled by the client. Meanwhile the store is
stopped (SIGSTOP) 10 times for 0.3-0.8 s and killed (-9) and started again once.

Afterwards every invariant must hold: no reply for another key or request, no
limit overshot (rpm window, token budget), nothing held a few seconds after the
last fault and every key admitting again, every acknowledged report counted
exactly once, no more admissions nobody saw than calls whose outcome was unknown,
and the sidecars' memory bounded. On a failure the message is the run's table
(each violation names the calls involved).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.faults import Config, run, table
from tests.servers import store_binaries


def _have_valkey() -> bool:
    try:
        store_binaries()
    except RuntimeError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _have_valkey(), reason="no Valkey/redis-server binary")


async def test_stalls_and_a_restart_under_mixed_load_leave_no_trace(tmp_path: Path) -> None:
    result = await run(Config(stalls=10, restarts=1, replica_restarts=0, seconds=15,
                              clients=12, rpm_wait=False), tmp_path)
    report = table(result)
    assert result["violations"] == [], report
    # The run really was under fault, with every kind of call and give-up.
    assert result["faults"]["stalls"] == 10 and len(result["faults"]["restarts_s"]) == 1, report
    by_kind = result["calls"]["by_kind"]
    assert {"check", "authorize", "record_usage", "release"} <= set(by_kind), report
    outcomes = {outcome.split(" ")[0] for kind in by_kind.values() for outcome in kind}
    assert {"allowed", "UNAVAILABLE", "503", "DEADLINE_EXCEEDED", "client_cancel"} <= outcomes
    assert result["calls_under_fault"]["total"] > 0, report
    assert all(u["acknowledged"] > 0 for u in result["usage_tokens"].values()), report
    assert result["time_to_unavailable"]["stall_all_ms"]["n"] > 0, report
