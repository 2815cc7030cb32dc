"""What the Makefile's entry points do on a fresh clone (dry runs: `make -n`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.servers import REPO


def _dry_run(target: str, venv: Path) -> str:
    # Run from `make test` too: no MAKEFLAGS/MAKELEVEL, or the sub-make talks about directories.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    done = subprocess.run(["make", "--no-print-directory", "-n", target, f"VENV={venv}"],
                          cwd=REPO, capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_run_installs_only_what_serving_needs(tmp_path: Path) -> None:
    commands = _dry_run("run", tmp_path / "venv")
    assert "pip install" in commands and "-e . -e clients/python" in commands
    assert "[dev]" not in commands
    assert "PYTHONWARNINGS=ignore" in commands  # no setuptools notice for users
    assert commands.strip().endswith("aigw-sidecar serve")


def test_make_test_installs_the_dev_tools_on_top(tmp_path: Path) -> None:
    commands = _dry_run("test", tmp_path / "venv")
    assert "-e . -e clients/python" in commands and "'.[dev]'" in commands


def test_make_bench_installs_or_names_its_tools(tmp_path: Path) -> None:
    commands = _dry_run("bench", tmp_path / "venv")
    assert "h2load" in commands and "nghttp2-client" in commands
    assert "apt-get install" in commands
