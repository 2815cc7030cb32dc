"""The README's code blocks run as written, in order, against a live `make run`-like sidecar.

The shell blocks of README.md (except those that run `make`, which the test
stands in for) and the client example of docs/reference.md, in that order,
against a sidecar with the README's defaults (no admin token, the HTTP admin API
on), its addresses put in place of 127.0.0.1:50051 and 127.0.0.1:8080 and
`.venv/bin/` pointing at this interpreter's folder.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import REPO, SidecarProcess, free_port

BLOCK = re.compile(r"^```(sh|python)\n(.*?)^```", re.S | re.M)


def _blocks(path: Path, kind: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(path.read_text()) if lang == kind]


def _runnable(block: str) -> bool:
    first = next(line for line in block.splitlines() if line.strip())
    return not first.startswith("make ")


@pytest.fixture(scope="module")
def sidecar(valkey_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    folder = tmp_path_factory.mktemp("readme")
    http = f"127.0.0.1:{free_port()}"
    proc = SidecarProcess(valkey_url, "readme", extra_args=["--admin-http-listen", http],
                          log_path=folder / "sidecar.log").start()
    yield proc.target, http
    proc.stop()


def _in_place(block: str, target: str, http: str) -> str:
    return (block.replace("127.0.0.1:50051", target).replace("127.0.0.1:8080", http)
            .replace(".venv/bin/", f"{Path(sys.executable).parent}/"))


def test_the_readme_blocks_run_in_order(sidecar: tuple[str, str], tmp_path: Path) -> None:
    target, http = sidecar
    env = {**os.environ, "AIGW_ADMIN_TARGET": target}
    for name in ("AIGW_ADMIN_TOKEN", "AIGW_ADMIN_TOKEN_FILE"):
        env.pop(name, None)
    shell = [b for b in _blocks(REPO / "README.md", "sh") if _runnable(b)]
    assert shell, "no runnable shell block in README.md"
    for block in shell:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", _in_place(block, target, http)],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        assert done.returncode == 0, f"{block}\n--- stderr:\n{done.stderr}"
    (example,) = _blocks(REPO / "docs" / "reference.md", "python")
    done = subprocess.run([sys.executable, "-c", _in_place(example, target, http)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
