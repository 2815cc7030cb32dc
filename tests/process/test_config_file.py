"""serve --config FILE: keys are the long flag names; flag, then env, then file, then default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aigw_sidecar.settings import DEFAULT_ADMIN_HTTP_LISTEN, config_text, parse_settings
from tests.servers import REPO


def _file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "aigw.yaml"
    path.write_text(text)
    return str(path)


def test_the_file_sets_what_flags_and_variables_do_not(tmp_path: Path) -> None:
    path = _file(tmp_path, "listen: 127.0.0.1:6000\nreservation-ttl-s: 120\n"
                           "envoy-include-usage: false\nno-default-pricing: true\n")
    settings = parse_settings(["--config", path], env={})
    assert (settings.listen, settings.reservation_ttl_s) == ("127.0.0.1:6000", 120)
    assert (settings.envoy_include_usage, settings.default_pricing) == (False, False)
    assert settings.admin_http_listen == DEFAULT_ADMIN_HTTP_LISTEN  # not in the file


def test_precedence_is_flag_then_environment_then_file_then_default(tmp_path: Path) -> None:
    path = _file(tmp_path, "listen: 127.0.0.1:6000\nkey-prefix: from-file\nlog-level: DEBUG\n")
    env = {"AIGW_KEY_PREFIX": "from-env", "AIGW_LISTEN": "127.0.0.1:7000"}
    settings = parse_settings(["--config", path, "--listen", "127.0.0.1:8000"], env=env)
    assert settings.listen == "127.0.0.1:8000"  # the flag
    assert settings.key_prefix == "from-env"  # the environment over the file
    assert settings.log_level == "DEBUG"  # the file over the default


def test_aigw_config_names_the_file_too(tmp_path: Path) -> None:
    path = _file(tmp_path, "key-prefix: via-env-var\n")
    assert parse_settings([], env={"AIGW_CONFIG": path}).key_prefix == "via-env-var"


@pytest.mark.parametrize(("text", "message"), [
    ("colour: red\n", "unknown setting 'colour'"),
    ("- listen\n", "expected a mapping"),
    ("listen: [a, b]\n", "expected a single value"),
    ("reservation-ttl-s: soon\n", "reservation-ttl-s"),
    ("listen: {\n", "not valid YAML"),
])
def test_a_bad_file_is_a_usage_error_naming_the_setting(
    tmp_path: Path, text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_settings(["--config", _file(tmp_path, text)], env={})
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_print_config_shows_the_settings_in_force_with_secrets_masked(tmp_path: Path) -> None:
    path = _file(tmp_path, "redis-url: redis://app:hunter2-secret@db:6379/0\n")
    done = subprocess.run(
        [sys.executable, "-m", "aigw_sidecar.cli", "serve", "--config", path, "--print-config",
         "--listen", "127.0.0.1:6001"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "AIGW_ADMIN_TOKEN": "admin-token-never-shown-0123"},
    )
    assert done.returncode == 0, done.stderr
    assert "hunter2-secret" not in done.stdout and "admin-token-never-shown" not in done.stdout
    shown = yaml.safe_load(done.stdout)
    assert shown["redis-url"] == "redis://app:****@db:6379/0"
    assert shown["listen"] == "127.0.0.1:6001"
    assert "# admin_token: (set, not shown)" in done.stdout
    # What it prints is a config file that gives the same settings back.
    again = parse_settings(["--config", _file(tmp_path, done.stdout)], env={})
    assert again.listen == "127.0.0.1:6001"


def test_the_printed_config_reads_back_as_the_same_settings(tmp_path: Path) -> None:
    settings = parse_settings(["--key-prefix", "round-trip", "--workers", "3"], env={})
    again = parse_settings(["--config", _file(tmp_path, config_text(settings))], env={})
    assert (again.key_prefix, again.workers) == ("round-trip", 3)
