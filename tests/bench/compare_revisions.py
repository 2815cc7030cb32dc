"""``make bench-compare``: ``make bench`` on an older revision and on this tree, in one run.

A change must not make the benchmark slower, and on a shared 2-vCPU machine two
runs minutes apart differ more than most changes do. So this checks the older
revision out into a temporary git worktree and runs ``tests.bench.bench``
(without Envoy) in the two trees alternately, ``--rounds`` times each, on the
same machine in the same minutes; then prints, for the rows that matter, the
median of each tree, the spread, and the ratio this tree / the older one
(throughput: higher is better; latency: lower is better).

    python -m tests.bench.compare_revisions --rev cf5b5ea --rounds 3

Each tree runs its own code: the bench starts the sidecar with ``python -m
aigw_sidecar.cli`` from the tree's folder, and the bench itself is imported
from there too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# (row, field, "higher" or "lower" is better)
METRICS: tuple[tuple[str, str, str], ...] = (
    ("noop", "calls_per_s", "higher"),
    ("authorize", "calls_per_s", "higher"),
    ("authorize", "p50_ms", "lower"),
    ("authorize", "p99_ms", "lower"),
    ("authorize_1_in_flight", "p50_ms", "lower"),
    ("authorize_at_1000_per_s", "p99_ms", "lower"),
    ("store_floor", "calls_per_s", "higher"),
    ("store_floor_pipelined", "calls_per_s", "higher"),
    ("record_usage_py", "calls_per_s", "higher"),
)
RATIOS = ("authorize_over_noop", "authorize_over_store_floor", "record_usage_over_noop_py")


def run_bench(tree: Path, out: Path, bench_args: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "tests.bench.bench", "--no-envoy", "--json", str(out),
           *bench_args]
    subprocess.run(cmd, cwd=tree, check=True, stdout=subprocess.DEVNULL)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def values(runs: list[dict[str, Any]], row: str, field: str) -> list[float]:
    found = []
    for run in runs:
        for item in run["rows"]:
            if item["name"] == row and item.get(field):
                found.append(float(item[field]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default="HEAD~1", help="the older revision (default HEAD~1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("bench-compare.json"))
    parser.add_argument("bench_args", nargs="*", default=[
        "--seconds", "4", "--steady-rounds", "1", "--quiet-wait", "10", "--memory-keys", "200",
    ], help="passed to tests.bench.bench (after --)")
    args = parser.parse_args()
    rev = subprocess.run(["git", "rev-parse", "--short", args.rev], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="aigw-bench-") as tmp:
        old_tree = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", str(old_tree), rev], cwd=REPO,
                       check=True, capture_output=True)
        try:
            runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
            for number in range(args.rounds):
                for label, tree in (("old", old_tree), ("new", REPO)):
                    print(f"round {number + 1}: {label} ({rev if label == 'old' else 'this tree'})",
                          flush=True)
                    runs[label].append(
                        run_bench(tree, Path(tmp) / f"{label}-{number}.json", args.bench_args)
                    )
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=REPO,
                           check=False, capture_output=True)
    table: list[dict[str, Any]] = []
    print(f"\nmedian [min..max] of {args.rounds} rounds; ratio = this tree / {rev}")
    for row, field, better in METRICS:
        old, new = values(runs["old"], row, field), values(runs["new"], row, field)
        if not old or not new:
            continue
        o, n = statistics.median(old), statistics.median(new)
        entry = {"row": row, "field": field, "old": old, "new": new, "ratio": n / o,
                 "better": better}
        table.append(entry)
        print(f"{row:<25}{field:<12}{rev} {o:9.2f} [{min(old):.4g}..{max(old):.4g}]  "
              f"new {n:9.2f} [{min(new):.4g}..{max(new):.4g}]  ratio {n / o:.3f} "
              f"({better} is better)")
    for name in RATIOS:
        old = [run["ratios"][name] for run in runs["old"]]
        new = [run["ratios"][name] for run in runs["new"]]
        o, n = statistics.median(old), statistics.median(new)
        table.append({"ratio_name": name, "old": old, "new": new, "ratio": n / o})
        print(f"{name:<37}{rev} {o:9.3f}  new {n:9.3f}  ratio {n / o:.3f} (higher is better)")
    args.json.write_text(json.dumps({"rev": rev, "rounds": args.rounds, "table": table},
                                    indent=2))
    print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
