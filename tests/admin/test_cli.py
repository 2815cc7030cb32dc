"""aigw-admin as a subprocess against a live sidecar process with an admin token."""

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

from aigw_sidecar.admin.cli import SERVICE, build_parser
from aigw_sidecar.admin.commands import kebab
from aigw_sidecar.api.v1 import admission_pb2 as adm
from aigw_sidecar.api.v1.admission_pb2_grpc import AdmissionStub
from tests.servers import SidecarProcess

TOKEN = "cli-test-token-0123456789abcdef"


@dataclass
class Admin:
    target: str
    env: dict[str, str]

    def __call__(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        env = dict(self.env)
        if token is not None:
            env["AIGW_ADMIN_TOKEN"] = token
        return subprocess.run(
            [sys.executable, "-m", "aigw_sidecar.admin.cli", *args],
            capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL,
        )


@pytest.fixture(scope="module")
def admin(valkey_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Admin]:
    folder = tmp_path_factory.mktemp("cli")
    token_file = folder / "tokens"
    token_file.write_text(f"cli-admin {TOKEN}\n")
    sidecar = SidecarProcess(valkey_url, "cli", extra_args=["--admin-token-file", str(token_file)],
                             log_path=folder / "sidecar.log").start()
    env = {**os.environ, "AIGW_ADMIN_TARGET": sidecar.target, "AIGW_ADMIN_TOKEN": TOKEN}
    env.pop("AIGW_ADMIN_TOKEN_FILE", None)
    yield Admin(sidecar.target, env)
    sidecar.stop()


def _json(result: subprocess.CompletedProcess[str]) -> dict:  # type: ignore[type-arg]
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_every_rpc_of_key_management_has_a_command() -> None:
    parser = build_parser({})
    sub = next(a for a in parser._actions if a.dest == "command")
    names = set(sub.choices)  # type: ignore[arg-type]
    for method in SERVICE.methods:
        command = sub.choices[kebab(method.name)]  # type: ignore[index]
        assert command.get_default("rpc").method.full_name == method.full_name
    assert {"keys", "audit"} <= names


def test_key_lifecycle_create_list_overview_disable_enable_delete(admin: Admin) -> None:
    created = admin("keys", "create", "--name", "lifecycle", "--project", "web",
                    "--cost-limit-usd", "25.50", "--token-limit", "100000",
                    "--requests-per-minute", "60", "--reset-period", "monthly",
                    "--expires-at", "30d", "--labels", "team=ml", "--labels", "tier=gold")
    assert created.returncode == 0, created.stderr
    assert "secret: sk-aigw-" in created.stdout
    assert "shown only this once" in created.stderr
    key_id = next(line.split()[-1] for line in created.stdout.splitlines()
                  if line.startswith("key id"))

    listed = admin("keys", "list", "--project", "web")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()[:2]
    assert header.split()[:4] == ["NAME", "KEY", "ID", "KEY"]
    assert "lifecycle" in row and key_id in row and "$25.50" in row and "100k tok" in row
    assert "sk-aigw-…" in row

    overview = admin("keys", "overview", key_id)
    assert overview.returncode == 0, overview.stderr
    assert "next reset" in overview.stdout and "monthly" in overview.stdout

    assert "disabled" in admin("keys", "disable", key_id).stdout
    assert "enabled" in admin("keys", "enable", key_id).stdout
    deleted = admin("keys", "delete", key_id, "--yes")
    assert deleted.returncode == 0 and f"deleted {key_id}" in deleted.stdout
    gone = admin("keys", "get", key_id)
    assert gone.returncode == 1 and "[NOT_FOUND]" in gone.stderr


def test_keys_list_shows_usage_that_came_with_the_page(admin: Admin) -> None:
    created = _json(admin("-o", "json", "keys", "create", "--name", "Usage-Column",
                          "--project", "usage", "--cost-limit-usd", "5"))
    key_id = created["key"]["key_id"]
    with grpc.insecure_channel(admin.target) as channel:
        AdmissionStub(channel).RecordUsage(adm.RecordUsageRequest(
            key_id=key_id, request_id="r1", prompt_tokens=100, cost_usd="1.25"), timeout=10)

    listed = admin("keys", "list", "--project", "usage")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split()[-1] == "USAGE"
    assert row.endswith("$1.25/$5.00 · 100 tok")
    basic = admin("keys", "list", "--project", "usage", "--view", "basic")
    assert basic.stdout.splitlines()[1].endswith("-")
    found = admin("keys", "list", "--name-contains", "usage-col")
    assert key_id in found.stdout and "$1.25/$5.00" in found.stdout

    as_json = _json(admin("-o", "json", "keys", "list", "--project", "usage",
                          "--view", "with_usage"))
    assert [ov["key"]["key_id"] for ov in as_json["overviews"]] == [key_id]
    assert as_json["overviews"][0]["cost_micro_usd"]["used"] == "1250000"
    assert _json(admin("-o", "json", "keys", "list", "--project", "usage"))["overviews"] == []


def test_json_output_parses_and_update_mask_comes_from_flags(admin: Admin) -> None:
    key = _json(admin("create-key", "--name", "json-key", "--token-limit", "10", "-o", "json"))
    key_id = key["key"]["key_id"]
    assert key["secret"].startswith("sk-aigw-")
    updated = _json(admin("update-key", key_id, "--cost-limit-usd", "1.25",
                          "--clear", "limits.token_limit", "--output", "json"))
    assert updated["key"]["limits"]["cost_limit_usd"] == "1.25"
    assert "token_limit" not in updated["key"]["limits"]
    listed = _json(admin("-o", "json", "list-keys"))
    assert key_id in [k["key_id"] for k in listed["keys"]]
    audit = _json(admin("audit", "list", "--key-id", key_id, "-o", "json"))
    assert [e["action"] for e in audit["entries"]] == ["update_key", "create_key"]
    assert {e["principal"] for e in audit["entries"]} == {"cli-admin"}
    assert key["secret"] not in json.dumps(audit)


def test_import_legacy_key_shows_it_as_legacy(admin: Admin) -> None:
    imported = _json(admin("keys", "import-legacy", "--secret", "old-legacy-secret-123456",
                           "--name", "from-old-gateway", "-o", "json"))
    assert imported["key"]["legacy"] is True
    listed = admin("keys", "list")
    row = next(r for r in listed.stdout.splitlines() if "from-old-gateway" in r)
    assert " yes " in row


@pytest.mark.parametrize("args", [
    ["keys", "create", "--name", "x", "--token-limit", "lots"],
    ["keys", "create", "--name", "x", "--cost-limit-usd", "ten"],
    ["keys", "create", "--name", "x", "--expires-at", "next tuesday"],
    ["keys", "create", "--name", "x", "--reset-period", "hourly"],
    ["keys", "create", "--labels", "no-equals-sign"],
    ["keys", "frobnicate"],
])
def test_bad_flag_value_is_one_line_and_exit_2(admin: Admin, args: list[str]) -> None:
    result = admin(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_server_side_errors_are_one_line_and_exit_1(admin: Admin) -> None:
    assert admin("keys", "create", "--name", "dup").returncode == 0
    cases = {
        "[ALREADY_EXISTS]": admin("keys", "create", "--name", "dup"),
        "[NOT_FOUND]": admin("keys", "get", "key_00000000000000000000"),
        "[INVALID_ARGUMENT]": admin("keys", "create", "--name", "p", "--project", "not ok"),
        "[UNAUTHENTICATED]": admin("keys", "list", token="wrong-token-0123456789"),
    }
    for marker, result in cases.items():
        assert result.returncode == 1, (marker, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert marker in result.stderr


def test_unreachable_sidecar_is_one_line(admin: Admin) -> None:
    result = admin("--target", "127.0.0.1:1", "--timeout-s", "2", "keys", "list")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1


def test_delete_without_yes_refuses_when_there_is_no_terminal(admin: Admin) -> None:
    key_id = _json(admin("keys", "create", "--name", "keep-me", "-o", "json"))["key"]["key_id"]
    refused = admin("keys", "delete", key_id)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert admin("keys", "get", key_id).returncode == 0


def test_token_file_flag_works_after_the_command(admin: Admin, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"cli-admin {TOKEN}\n")
    result = admin("keys", "list", "--admin-token-file", str(token_file), token="")
    assert result.returncode == 0, result.stderr


def test_help_works_at_every_level(admin: Admin) -> None:
    for args in ([], ["keys"], ["keys", "create"], ["update-key"], ["audit", "list"]):
        result = admin(*args, "--help")
        assert result.returncode == 0 and "usage: aigw-admin" in result.stdout


PASTED = "sk-aigw-0123456789abcdefghjk_PastedIntoTheWrongFlag0123456789"


@pytest.mark.parametrize("args", [
    ["keys", "create", "--name", "n", "--cost-limit-usd", PASTED],
    ["keys", "create", "--name", "n", "--reset-period", PASTED],
    ["keys", "create", "--name", "n", "--expires-at", PASTED],
    ["keys", "create", "--name", "n", "--labels", PASTED],
    ["keys", "create", "--name", "n", "--token-limit", PASTED],
    ["keys", "create", "--name", "n", "--timeout-s", PASTED],
    ["keys", "create", "--name", "n", PASTED],
    ["keys", "create", "--name", "n", f"--secret={PASTED}"],
    ["keys", "create", "--name", "n", f"--t={PASTED}"],
    ["keys", "update", "key_x", "--clear", PASTED],
    ["keys", "delete", PASTED],
    ["keys", PASTED],
    [PASTED],
])
def test_a_usage_error_never_prints_the_value_given(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aigw_sidecar.admin.cli", "--target", "127.0.0.1:1", *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("AIGW_")},
    )
    assert result.returncode == 2, result.stderr
    assert "(see --help)" in result.stderr or "without --yes" in result.stderr
    assert "PastedIntoTheWrongFlag" not in result.stdout + result.stderr


def test_pricing_list_and_show_read_the_table_in_force(admin: Admin) -> None:
    listed = admin("pricing", "list", "--contains", "gpt-4o-mini")
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if x.startswith("gpt-4o-mini "))
    assert line.split()[1:4] == ["0.15", "0.6", "0.075"]  # USD per million tokens
    assert "litellm" in listed.stdout and "table:" in listed.stderr
    # A name as requests send it: provider prefix and snapshot date resolved.
    shown = _json(admin("-o", "json", "pricing", "show", "--model",
                        "openai/gpt-4o-mini-2024-07-18"))
    assert shown["priced"] is True and shown["price"]["input_usd"] == "0.15"
    unknown = admin("pricing", "show", "--model", "no-such-model")
    assert unknown.returncode == 0 and "no price" in unknown.stdout
    bad = admin("pricing", "show", "--model", "has space")
    assert bad.returncode == 1 and "model" in bad.stderr
