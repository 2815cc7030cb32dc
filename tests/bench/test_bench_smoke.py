"""``make bench`` keeps working: a tiny run of it, with no assertion on any timing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import REPO

pytestmark = pytest.mark.skipif(
    shutil.which("h2load") is None or shutil.which("redis-benchmark") is None,
    reason="needs h2load (nghttp2-client) and redis-benchmark; .ci/run installs them",
)


def test_the_benchmark_runs_end_to_end_and_writes_every_row(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench.bench", "--smoke", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())
    names = {row["name"] for row in results["rows"]}
    assert {
        "noop", "authorize", "authorize_1_in_flight", "authorize_at_1000_per_s",
        "authorize_at_half_peak", "store_floor", "record_usage_py",
    } <= names
    assert all(row["errors"] == 0 for row in results["rows"])
    assert "added_by_sidecar" in results["envoy"]


def test_the_tracing_benchmark_runs_and_every_traced_call_reaches_the_receiver(
    tmp_path: Path,
) -> None:
    out = tmp_path / "tracing.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench.tracing_overhead", "--seconds", "1", "--rounds", "1",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())
    assert set(results["variants"]) == {"off", "on_ratio_1", "on_ratio_0.01"}
    assert all(row["calls_per_s"] > 0 for row in results["variants"].values())
    # Every span the fully sampled sidecar made was exported (the batch queue dropped none).
    spans = results["spans"]
    assert spans["made_at_ratio_1_and_0.01"] >= spans["expected_at_ratio_1"] > 0
