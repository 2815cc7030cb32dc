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

import grpc
import pytest

from aigw_sidecar.api.v1 import admission_pb2, admission_pb2_grpc
from tests.servers import SidecarProcess

CLI = [sys.executable, "-m", "aigw_sidecar.admin.cli"]
IGNORED_TOKEN_WARNING = "the sidecar has no admin token configured"


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


def test_import_legacy_needs_its_secret_and_name_before_any_call() -> None:
    no_secret = _offline("keys", "import-legacy", "--name", "old")
    assert no_secret.returncode == 2
    assert "one of the arguments --secret --secret-file is required" in no_secret.stderr
    no_name = _offline("keys", "import-legacy", "--secret-file", "-")
    assert no_name.returncode == 2 and "required: --name" in no_name.stderr


# --- a key's name wherever a key id goes -------------------------------------------


def test_a_key_name_is_accepted_wherever_a_key_id_is(admin: Admin) -> None:
    key_id = admin.key_id("keys", "create", "--name", "by-name")
    got = admin("keys", "get", "by-name")
    assert got.returncode == 0 and key_id in got.stdout, got.stderr
    assert "next reset" in admin("keys", "overview", "by-name").stdout
    assert "10 tok" in admin("keys", "update", "by-name", "--token-limit", "10").stdout
    assert "disabled" in admin("keys", "disable", "by-name").stdout
    assert "enabled" in admin("keys", "enable", "by-name").stdout
    assert "secret: sk-aigw-" in admin("keys", "rotate", "by-name").stdout
    trail = json.loads(admin("-o", "json", "audit", "list", "--key-id", "by-name").stdout)
    assert {e["key_id"] for e in trail["entries"]} == {key_id}
    assert len(trail["entries"]) == 5
    deleted = admin("keys", "delete", "by-name", "--yes")
    assert deleted.returncode == 0 and f"deleted {key_id}" in deleted.stdout
    assert admin("keys", "get", "by-name").returncode == 1


def test_an_unknown_name_fails_with_a_hint_and_is_never_echoed(admin: Admin) -> None:
    result = admin("keys", "get", "no-such-key-name")
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1
    assert "[NOT_FOUND]" in result.stderr and "aigw-admin keys list" in result.stderr
    assert "no-such-key-name" not in result.stderr


def test_a_name_is_looked_up_in_the_workspace_given(admin: Admin) -> None:
    mine = admin.key_id("keys", "create", "--name", "twin")
    theirs = admin.key_id("keys", "create", "--name", "twin", "--workspace", "other")
    assert mine in admin("keys", "get", "twin").stdout
    assert theirs in admin("keys", "get", "twin", "--workspace", "other").stdout
    everywhere = admin("keys", "get", "twin", "--workspace", "")
    assert everywhere.returncode == 1
    assert "2 keys have that name (workspaces default, other)" in everywhere.stderr


def test_deleting_by_name_without_yes_refuses_before_any_call() -> None:
    result = _offline("keys", "delete", "some-name")
    assert result.returncode == 2 and "--yes" in result.stderr


# --- a closed pipe ------------------------------------------------------------------


def test_a_reader_that_goes_away_ends_the_command_quietly(admin: Admin) -> None:
    for name in ("pipe-1", "pipe-2"):
        admin.key_id("keys", "create", "--name", name)
    process = subprocess.Popen([*CLI, "keys", "list"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=admin.env)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # like `| head -1` after its line: nobody reads any more
    status = process.wait(timeout=60)
    assert process.stderr.read() == b""
    assert status == 141


def test_a_pipeline_into_head_prints_the_first_line_and_no_error(admin: Admin) -> None:
    shell = subprocess.run(
        ["bash", "-o", "pipefail", "-c",
         f"{' '.join(CLI)} keys list | head -1; echo status=$?"],
        capture_output=True, text=True, env=admin.env, timeout=60,
    )
    assert shell.stdout.startswith("NAME ")
    assert shell.stdout.rstrip().rsplit("status=", 1)[1] in ("0", "141")
    assert shell.stderr == ""


# --- secrets from a file or stdin ---------------------------------------------------


def _authorizes(target: str, secret: str) -> str:
    """The key id the sidecar admits ``secret`` as ("" when refused)."""
    with grpc.insecure_channel(target) as channel:
        reply = admission_pb2_grpc.AdmissionStub(channel).Authorize(
            admission_pb2.AuthorizeRequest(secret=secret), timeout=10)
    return reply.key_id if reply.allowed else ""


def test_secret_file_reads_the_secret_without_its_trailing_newline(
    admin: Admin, tmp_path: Path
) -> None:
    secret = "legacy-from-file-0123456789"
    path = tmp_path / "secret"
    path.write_text(secret + "\n")
    result = admin("keys", "import-legacy", "--secret-file", str(path), "--name", "from-file")
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    assert "warning" not in result.stderr
    key_id = next(line.split()[-1] for line in result.stdout.splitlines()
                  if line.startswith("key id"))
    assert _authorizes(admin.target, secret) == key_id


def test_secret_file_dash_reads_stdin(admin: Admin) -> None:
    secret = "legacy-from-stdin-0123456789"
    result = admin("-o", "json", "keys", "import-legacy", "--secret-file", "-",
                   "--name", "from-stdin", input=secret + "\n")
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    assert _authorizes(admin.target, secret) == json.loads(result.stdout)["key"]["key_id"]


def test_an_inline_secret_works_with_a_warning_that_does_not_echo_it(admin: Admin) -> None:
    secret = "legacy-inline-0123456789"
    result = admin("keys", "import-legacy", "--secret", secret, "--name", "inline")
    assert result.returncode == 0, result.stderr
    assert "--secret-file" in result.stderr and "ps" in result.stderr
    assert secret not in result.stdout + result.stderr


def test_an_unreadable_or_empty_secret_file_is_a_usage_error(tmp_path: Path) -> None:
    missing = _offline("keys", "import-legacy", "--secret-file", str(tmp_path / "nope"),
                       "--name", "x")
    assert missing.returncode == 2 and "cannot read --secret-file" in missing.stderr
    (tmp_path / "empty").write_text("\n")
    empty = _offline("keys", "import-legacy", "--secret-file", str(tmp_path / "empty"),
                     "--name", "x")
    assert empty.returncode == 2 and "holds no secret" in empty.stderr


# --- a token the sidecar ignores ----------------------------------------------------


def test_a_token_sent_to_a_sidecar_without_one_is_warned_about_once(admin: Admin) -> None:
    token = "a-token-nobody-configured-0123"
    admin.key_id("keys", "create", "--name", "token-ignored")
    # By name: two calls (ListKeys, then DisableKey), one warning.
    result = admin("keys", "disable", "token-ignored", token=token)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(IGNORED_TOKEN_WARNING) == 1
    assert token not in result.stderr
    trail = json.loads(admin("-o", "json", "audit", "list", "--key-id", "token-ignored").stdout)
    assert trail["entries"][0]["principal"] == "anonymous (token ignored: none configured)"
    assert IGNORED_TOKEN_WARNING not in admin("keys", "get", "token-ignored").stderr
    log = admin.log_path.read_text()
    assert log.count("carried an admin token, but the sidecar has none") == 1
    assert token not in log
