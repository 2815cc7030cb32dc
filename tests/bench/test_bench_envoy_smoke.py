"""``make bench-envoy`` keeps working: a tiny run of it, with no assertion on any timing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.envoy_latency import GRPC_NOOP, VARIANTS
from tests.servers import REPO

pytestmark = pytest.mark.skipif(
    shutil.which("h2load") is None,
    reason="needs h2load (nghttp2-client); .ci/run installs it",
)


@pytest.mark.timeout(180)
def test_the_envoy_benchmark_runs_end_to_end_and_counts_every_response(tmp_path: Path) -> None:
    out = tmp_path / "bench-envoy.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench.envoy_latency", "--smoke", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=170,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())
    rows = {(row["variant"], row["in_flight"]): row for row in results["rows"]}
    assert set(rows) == {(v, n) for v in (GRPC_NOOP, *VARIANTS) for n in (1, 64)}
    for row in rows.values():
        assert row["non_2xx"] == 0, row
        assert row["requests"] > 0, row
        assert row["req_per_s"]["median"] > 0, row
        assert {"sidecar", "store", "upstream", "client"} <= set(row["cpu_us_per_request"]), row
        if row["variant"] != GRPC_NOOP:
            assert "envoy" in row["cpu_us_per_request"], row
            assert row["sidecar_resets"] is not None, row
    # Only the variants with the sidecar's filters talk to it.
    assert rows[("envoy_alone", 64)]["sidecar_rpcs_per_request"] == 0
    assert rows[("ext_authz_only", 64)]["sidecar_rpcs_per_request"] > 0
    assert results["problems"] == []
    assert set(results["verdicts"]) == {
        "throughput_shipped_over_ext_authz_64", "added_p50_ms_shipped_over_alone_1",
        "sidecar_cpu_shipped_over_noop_64", "sidecar_resets_beyond_cut",
    }
    assert "added_by_sidecar" in results  # read by tests.bench.bench
    for row in rows.values():
        assert row["variant"] in proc.stdout
