"""Shell completion for aigw-admin: bash, zsh and fish scripts from the parser itself.

The parser is the descriptor walk (``commands.py``) under argparse, so the scripts
are read from it: every group, command and flag, the choices of enum flags, files
for the ``*-file`` flags. ``nodes`` flattens the parser into one ``Node`` per
command path; each shell's script is one text built from the nodes. The scripts
find where the cursor is the same way: the words typed so far that extend a known
command path (``aigw-admin keys create``) make the path; any other word (a flag,
a flag's value, a key id) is skipped.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

SHELLS = ("bash", "zsh", "fish")


@dataclass(frozen=True, slots=True)
class Option:
    flags: tuple[str, ...]  # "--output", "-o"
    help: str
    takes_value: bool
    choices: tuple[str, ...]
    files: bool  # the value is a path


@dataclass(frozen=True, slots=True)
class Node:
    """One command path and what may follow it."""

    path: str  # "aigw-admin keys create"
    commands: tuple[tuple[str, str], ...]  # (word, help): its subcommands, or fixed words
    options: tuple[Option, ...]


def nodes(parser: argparse.ArgumentParser, path: str) -> Iterator[Node]:
    """The node of ``parser`` at ``path``, then those of its subcommands, depth first."""
    options: list[Option] = []
    commands: list[tuple[str, str]] = []
    children: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, child in action.choices.items():
                commands.append((name, helps.get(name, "")))
                children.append((name, child))
        elif not action.option_strings and action.choices:  # a positional of fixed words
            commands += [(str(choice), _one_line(action.help)) for choice in action.choices]
        elif action.option_strings:
            options.append(Option(
                flags=tuple(action.option_strings),
                help=_one_line(action.help),
                takes_value=action.nargs != 0,
                choices=tuple(str(c) for c in action.choices or ()),
                files=str(action.dest).endswith("file"),
            ))
    yield Node(path, tuple(commands), tuple(options))
    for name, child in children:
        yield from nodes(child, f"{path} {name}")


def _one_line(text: str | None) -> str:
    """A help text as a short description: its first sentence, at most 70 characters."""
    if not text or text == argparse.SUPPRESS:
        return ""
    text = " ".join(text.replace("%%", "%").split())
    text = re.split(r"(?<=\.)\s", text, maxsplit=1)[0].rstrip(".")
    return text if len(text) <= 70 else text[:67].rstrip() + "..."


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    """The completion script of ``shell`` for this parser."""
    prog = parser.prog
    found = list(nodes(parser, prog))
    writers: dict[str, Callable[[str, list[Node]], str]] = {
        "bash": _bash, "zsh": _zsh, "fish": _fish,
    }
    return writers[shell](prog, found)


def _function(prog: str) -> str:
    return "_" + re.sub(r"\W", "_", prog)


def _sh_quote(text: str) -> str:
    """Single-quoted for bash and zsh."""
    return "'" + text.replace("'", "'\\''") + "'"


def _patterns(patterns: list[str]) -> str:
    """Alternatives of a ``case`` arm (bash and zsh), one a line."""
    return " |\\\n        ".join(_sh_quote(p) for p in patterns)


def _paths_case(nodes_: list[Node], var: str) -> str:
    """The ``case`` (bash and zsh) that extends ``var`` by a word that is a command."""
    paths = _patterns([n.path for n in nodes_[1:]])
    return (f'        case "${var} $word" in\n        {paths})\n'
            f'            {var}="${var} $word" ;;\n        esac\n')


def _value_cases(nodes_: list[Node], on_choices: Callable[[Option], str],
                 on_files: str, on_value: str) -> str:
    """``case`` arms on "<path> <previous word>" for every flag that takes a value."""
    arms: dict[str, list[str]] = {}  # what to do -> the "<path> <flag>" it is done for
    for node in nodes_:
        for option in node.options:
            if not option.takes_value:
                continue
            if option.choices:
                action = on_choices(option)
            elif option.files:
                action = on_files
            else:
                action = on_value
            arms.setdefault(action, []).extend(f"{node.path} {flag}" for flag in option.flags)
    return "\n".join(f"        {_patterns(patterns)})\n            {action}; return 0 ;;"
                     for action, patterns in arms.items())


def _long_flags(option: Option) -> list[str]:
    return [f for f in option.flags if f.startswith("--")] or list(option.flags)


def _bash(prog: str, nodes_: list[Node]) -> str:
    fn = _function(prog)
    words = []
    for node in nodes_:
        commands = " ".join(name for name, _ in node.commands)
        flags = " ".join(f for o in node.options for f in _long_flags(o))
        words.append(f"        {_sh_quote(node.path)}) commands={_sh_quote(commands)}; "
                     f"flags={_sh_quote(flags)} ;;")
    values = _value_cases(
        nodes_,
        lambda o: f'COMPREPLY=($(compgen -W {_sh_quote(" ".join(o.choices))} -- "$cur"))',
        'compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur"))',
        ":",
    )
    return f"""# bash completion for {prog}; generated by `{prog} completion bash`.
# Install: source <({prog} completion bash)   (e.g. in ~/.bashrc)
{fn}() {{
    local cur prev word i cmdpath commands flags
    COMPREPLY=()
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    cmdpath={_sh_quote(prog)}
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
{_paths_case(nodes_, "cmdpath")}    done
    case "$cmdpath $prev" in
{values}
    esac
    case "$cmdpath" in
{chr(10).join(words)}
    esac
    if [[ "$cur" == -* || -z "$commands" ]]; then
        COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$commands" -- "$cur"))
    fi
    return 0
}}
complete -F {fn} {prog}
"""


def _zsh_item(name: str, help_: str) -> str:
    return _sh_quote(name.replace(":", "\\:") + (f":{help_}" if help_ else ""))


def _zsh(prog: str, nodes_: list[Node]) -> str:
    fn = _function(prog)
    arms = []
    for node in nodes_:
        commands = " ".join(_zsh_item(name, _one_line(h)) for name, h in node.commands)
        flags = " ".join(_zsh_item(f, o.help) for o in node.options for f in _long_flags(o))
        arms.append(f"        {_sh_quote(node.path)}) cmds=({commands}); opts=({flags}) ;;")
    values = _value_cases(
        nodes_,
        lambda o: "compadd -- " + " ".join(_sh_quote(c) for c in o.choices),
        "_files",
        "_message value",
    )
    return f"""#compdef {prog}
# zsh completion for {prog}; generated by `{prog} completion zsh`.
# Install: {prog} completion zsh > "${{fpath[1]}}/_{prog}"   (then restart zsh),
# or after compinit: source <({prog} completion zsh)
{fn}() {{
    local cmdpath word i
    local prev="${{words[CURRENT-1]}}" cur="${{words[CURRENT]}}"
    local -a cmds opts
    cmdpath={_sh_quote(prog)}
    for ((i = 2; i < CURRENT; i++)); do
        word="${{words[i]}}"
{_paths_case(nodes_, "cmdpath")}    done
    case "$cmdpath $prev" in
{values}
    esac
    case "$cmdpath" in
{chr(10).join(arms)}
    esac
    if [[ "$cur" == -* || ${{#cmds}} -eq 0 ]]; then
        _describe -t options option opts
    else
        _describe -t commands command cmds
    fi
}}
compdef {fn} {prog}
# Autoloaded from fpath (not sourced): complete now as well.
if [[ "$funcstack[1]" == "_{prog}" ]]; then
    {fn} "$@"
fi
"""


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish(prog: str, nodes_: list[Node]) -> str:
    at = f"__{_function(prog).lstrip('_')}_at"
    lines = [f"complete -c {prog} -f"]
    for node in nodes_:
        condition = _fish_quote(f"{at} {_sh_quote(node.path)}")
        for name, help_ in node.commands:
            lines.append(f"complete -c {prog} -n {condition} -a {_fish_quote(name)} "
                         f"-d {_fish_quote(_one_line(help_))}")
        for option in node.options:
            parts = [f"complete -c {prog} -n {condition}"]
            for flag in option.flags:
                parts.append(f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}")
            if option.choices:
                parts.append(f"-x -a {_fish_quote(' '.join(option.choices))}")
            elif option.files:
                parts.append("-r -F")
            elif option.takes_value:
                parts.append("-x")
            if option.help:
                parts.append(f"-d {_fish_quote(option.help)}")
            lines.append(" ".join(parts))
    paths = " ".join(_fish_quote(n.path) for n in nodes_[1:])
    body = "\n".join(lines)
    return f"""# fish completion for {prog}; generated by `{prog} completion fish`.
# Install: {prog} completion fish > ~/.config/fish/completions/{prog}.fish
function {at} --description 'is the command line at this {prog} command path?'
    set -l cmdpath {_fish_quote(prog)}
    for word in (commandline -opc)[2..-1]
        if contains -- "$cmdpath $word" {paths}
            set cmdpath "$cmdpath $word"
        end
    end
    test "$cmdpath" = "$argv[1]"
end
{body}
"""
