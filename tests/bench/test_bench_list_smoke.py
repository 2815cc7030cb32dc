"""``make bench-list`` keeps working: a tiny run of it, with no assertion on any timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.servers import REPO


def test_the_list_page_benchmark_runs_end_to_end_and_writes_every_row(tmp_path: Path) -> None:
    out = tmp_path / "bench-list.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench.list_page", "--smoke", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {
        f"{case}/{view}" for case in ("first", "middle", "project")
        for view in ("basic", "with_usage")
    }
    for name, row in rows.items():
        assert row["keys"] > 0 and row["server"]["p50_ms"] > 0, name
    # A page's usage costs at most one store round trip more than the page alone.
    for case in ("first", "middle", "project"):
        assert rows[f"{case}/with_usage"]["round_trips"] <= rows[f"{case}/basic"]["round_trips"] + 1
