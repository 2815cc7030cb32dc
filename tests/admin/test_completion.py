"""`aigw-admin completion bash|zsh|fish`: scripts read from the parser, valid in their shell."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aigw_sidecar.admin import completion
from aigw_sidecar.admin.cli import build_parser
from aigw_sidecar.admin.commands import enum_choices
from aigw_sidecar.api.v1 import keys_pb2


def _script(shell: str) -> str:
    return completion.script(shell, build_parser({}))


def _every_command(parser: argparse.ArgumentParser) -> set[str]:
    """Every group, alias and RPC command name, at every level."""
    return {word for node in completion.nodes(parser, "aigw-admin")
            for word in node.path.split()[1:]}


@pytest.mark.parametrize("shell", completion.SHELLS)
def test_the_script_names_every_command_flag_and_enum_choice(shell: str) -> None:
    parser = build_parser({})
    script = _script(shell)
    commands = _every_command(parser)
    assert {"keys", "create", "create-key", "get-key-overview", "audit", "completion"} <= commands
    for command in commands:
        assert command in script, command
    for flag in ("name", "reset-period", "secret-file", "workspace", "admin-token-file"):
        assert flag in script, flag
    reset_period = keys_pb2.Limits.DESCRIPTOR.fields_by_name["reset_period"]
    for choice in enum_choices(reset_period):
        assert choice in script, choice


def _check_syntax(shell: str, tmp_path: Path) -> None:
    binary = shutil.which(shell)
    if binary is None:
        pytest.skip(f"{shell} is not installed")
    path = tmp_path / f"aigw-admin.{shell}"
    path.write_text(_script(shell))
    flag = "--no-execute" if shell == "fish" else "-n"
    checked = subprocess.run([binary, flag, str(path)], capture_output=True, text=True,
                             timeout=30)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("shell", completion.SHELLS)
def test_the_script_is_valid_in_its_shell(shell: str, tmp_path: Path) -> None:
    _check_syntax(shell, tmp_path)


def _bash_complete(script: Path, *words: str) -> list[str]:
    """What bash offers after ``words`` (the last one is the word being completed)."""
    quoted = " ".join(f"'{w}'" for w in words)
    program = (f"source '{script}'; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; "
               "_aigw_admin; printf '%s\\n' \"${COMPREPLY[@]}\"")
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", program],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completes_commands_flags_and_choices_where_the_cursor_is(tmp_path: Path) -> None:
    script = tmp_path / "aigw-admin.bash"
    script.write_text(_script("bash"))
    assert _bash_complete(script, "aigw-admin", "ke") == ["keys"]
    assert _bash_complete(script, "aigw-admin", "keys", "cr") == ["create"]
    assert _bash_complete(script, "aigw-admin", "-o", "json", "keys", "get", "--works") == [
        "--workspace"]
    assert _bash_complete(script, "aigw-admin", "keys", "create", "--name", "ci",
                          "--reset-period", "") == ["never", "daily", "weekly", "monthly",
                                                    "yearly"]
    assert _bash_complete(script, "aigw-admin", "completion", "") == ["bash", "zsh", "fish"]


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completes_where_the_cursor_is(tmp_path: Path) -> None:
    script = tmp_path / "aigw-admin.fish"
    script.write_text(_script("fish"))
    done = subprocess.run(
        ["fish", "--no-config", "-c",
         f"source '{script}'; complete -C 'aigw-admin keys cr'; "
         "complete -C 'aigw-admin keys create --reset-period '"],
        capture_output=True, text=True, timeout=30)
    offered = [line.split("\t")[0] for line in done.stdout.splitlines()]
    assert offered == ["create", "daily", "monthly", "never", "weekly", "yearly"], done.stderr


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completes_where_the_cursor_is(tmp_path: Path) -> None:
    """The function run outside a completion widget: its zsh helpers replaced by printers."""
    script = tmp_path / "_aigw-admin"
    script.write_text(_script("zsh"))
    program = f"""
compdef() {{ : }}
_describe() {{ local arr=${{@[-1]}}; print -rl -- ${{(P)arr}} }}
compadd() {{ shift; print -rl -- "$@" }}
source '{script}'
words=(aigw-admin keys cr); CURRENT=3; _aigw_admin
print -- ---
words=(aigw-admin keys create --reset-period ''); CURRENT=5; _aigw_admin
"""
    done = subprocess.run(["zsh", "-f", "-c", program], capture_output=True, text=True,
                          timeout=30)
    commands, choices = done.stdout.split("---\n")
    # _describe gets every candidate ("name:help"); zsh itself narrows them to the prefix.
    assert "create:RPC aigw.v1.KeyManagement/CreateKey" in commands.splitlines(), done.stderr
    assert choices.split() == ["never", "daily", "weekly", "monthly", "yearly"]


def test_the_completion_command_prints_the_script(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "aigw_sidecar.admin.cli", "completion", "bash"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == _script("bash")
    assert "complete -F _aigw_admin aigw-admin" in done.stdout
