"""aigw-admin's first hour, as a subprocess against a live sidecar without an admin token.

Required flags and help from the .proto comments, key names wherever a key id
goes, a closed pipe, secrets from a file or stdin, and a token the sidecar ignores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import SidecarProcess

CLI = [sys.executable, "-m", "aigw_sidecar.admin.cli"]


@dataclass
class Admin:
    target: str
    env: dict[str, str]
    log_path: Path

    def __call__(self, *args: str, input: str | None = None,
                 token: str = "") -> subprocess.CompletedProcess[str]:
        env = dict(self.env)
        if token:
            env["AIGW_ADMIN_TOKEN"] = token
        return subprocess.run(
            [*CLI, *args], capture_output=True, text=True, env=env, timeout=60,
            input=input, stdin=None if input is not None else subprocess.DEVNULL,
        )

    def key_id(self, *args: str) -> str:
        created = self(*args, "-o", "json")
        assert created.returncode == 0, created.stderr
        return str(json.loads(created.stdout)["key"]["key_id"])


@pytest.fixture(scope="module")
def admin(valkey_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Admin]:
    folder = tmp_path_factory.mktemp("cli-usability")
    sidecar = SidecarProcess(valkey_url, "cli-usability", log_path=folder / "sidecar.log").start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIGW_")}
    env["AIGW_ADMIN_TARGET"] = sidecar.target
    yield Admin(sidecar.target, env, folder / "sidecar.log")
    sidecar.stop()


def _offline(*args: str) -> subprocess.CompletedProcess[str]:
    """aigw-admin pointed at a port nobody listens on: what fails here made no call."""
    return subprocess.run(
        [*CLI, "--target", "127.0.0.1:1", "--timeout-s", "2", *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("AIGW_")},
    )


# --- required flags and help from the .proto comments -------------------------------


def test_create_help_shows_the_proto_comments_and_name_as_required() -> None:
    shown = _offline("keys", "create", "--help")
    assert shown.returncode == 0
    usage, _, options = shown.stdout.partition("options:")
    assert " --name NAME" in usage and "[--name NAME]" not in usage
    assert "[--project PROJECT]" in usage
    help_of = " ".join(options.split())
    assert "--name NAME Required. Unique in its workspace" in help_of
    assert "--token-limit N Tokens (prompt + completion) per reset period." in help_of
    assert "--reset-period {never,daily,weekly,monthly,yearly} When the cost and token" in help_of


def test_create_without_a_name_is_a_usage_error_before_any_call() -> None:
    result = _offline("keys", "create", "--token-limit", "10")
    assert result.returncode == 2
    assert "required: --name" in result.stderr and len(result.stderr.splitlines()) == 1
