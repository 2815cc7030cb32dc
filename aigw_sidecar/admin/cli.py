"""The ``aigw-admin`` console script: KeyManagement from the command line.

Every RPC of ``aigw.v1.KeyManagement`` is a command (``aigw-admin create-key``,
``aigw-admin list-audit-entries`` ...), generated from the descriptor; the
friendly aliases (``aigw-admin keys create``, ``keys list`` ...) are the same
commands under shorter names. Errors print one line and exit non-zero: 1 for a
failed call (or a key name that names no key, or several), 2 for bad usage. When
the reader of the output goes away (``aigw-admin keys list | head -1``) it ends
quietly with 141, as a Unix tool killed by SIGPIPE does.

Where a command takes a key id it also takes the key's name: a value that is not
a key id is looked up with ListKeys in ``--workspace`` (default ``default``).
``aigw-admin completion bash|zsh|fish`` prints a completion script read from
the same parser.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import grpc

from aigw_sidecar.admin import completion, render
from aigw_sidecar.admin.commands import (
    LOOKUP_WORKSPACE_DEST,
    SECRET_FILE_DEST,
    Command,
    FieldFlag,
    commands,
)
from aigw_sidecar.api.v1 import keys_pb2 as keys_pb
from aigw_sidecar.keys import secrets
from aigw_sidecar.server.admin_auth import AUTH_NOTICE

PROG = "aigw-admin"
SERVICE = keys_pb.DESCRIPTOR.services_by_name["KeyManagement"]
# Friendly names: group -> alias -> RPC name.
ALIASES: dict[str, dict[str, str]] = {
    "keys": {
        "create": "CreateKey",
        "import-legacy": "ImportLegacyKey",
        "get": "GetKey",
        "list": "ListKeys",
        "update": "UpdateKey",
        "rotate": "RotateKeySecret",
        "enable": "EnableKey",
        "disable": "DisableKey",
        "delete": "DeleteKey",
        "overview": "GetKeyOverview",
        "history": "GetKeyUsageHistory",
    },
    "audit": {"list": "ListAuditEntries"},
    # tail: ListEvents polled with its cursor until interrupted (see _follow).
    "events": {"list": "ListEvents", "tail": "ListEvents"},
    "pricing": {"list": "ListModelPrices", "show": "GetModelPrice"},
}
_HINTS = {
    "UNAUTHENTICATED": " (pass --admin-token-file or set AIGW_ADMIN_TOKEN)",
    "UNAVAILABLE": " (is the sidecar running at --target?)",
}


# Shown when AUTH_NOTICE (admin_auth's trailing metadata) says the sidecar served the
# call without checking the token sent: it has none configured.
AUTH_NOTICE_WARNING = (
    "warning: the sidecar has no admin token configured: the token sent was ignored and "
    "the call ran as anonymous (any local caller can manage keys; set AIGW_ADMIN_TOKEN "
    "or --admin-token-file on the sidecar)"
)
INLINE_SECRET_WARNING = (
    "warning: a secret given with --secret shows in ps and in the shell history; "
    "prefer --secret-file PATH, or --secret-file - to read it from stdin"
)
EXIT_BROKEN_PIPE = 128 + 13  # as if killed by SIGPIPE
LOOKUP_PAGE_SIZE = 500  # ListKeys' maximum


class UsageError(Exception):
    """Bad command-line input; exit 2."""


class KeyNotResolved(Exception):
    """A key name that names no key, or several; exit 1 (like a key id not found)."""


# argparse quotes the offending value in these messages; the value may be a secret
# pasted into the wrong flag, so only the flag names and the choices are kept.
_ECHOING_MESSAGES = (
    (re.compile(r"invalid choice: .*? \(choose from ", re.S), "invalid choice (choose from "),
    (re.compile(r"invalid (\w+) value: .*", re.S), r"invalid \1 value"),
    (re.compile(r"ignored explicit argument .*", re.S), "ignored explicit argument"),
    (re.compile(r"ambiguous option: ([^=\s]*)=.*? could match", re.S),
     r"ambiguous option: \1 could match"),
)
_UNRECOGNIZED = "unrecognized arguments: "
_OUR_SECRET_RE = re.compile(re.escape(secrets.PREFIX) + r"[0-9A-Za-z_]*")


def without_values(message: str) -> str:
    """An argparse message with every command-line value it quoted taken out."""
    for pattern, replacement in _ECHOING_MESSAGES:
        message = pattern.sub(replacement, message)
    head, found, rest = message.partition(_UNRECOGNIZED)
    if found:
        words = rest.split()
        flags = [w.split("=", 1)[0] for w in words if w.startswith("-")]
        hidden = len(words) - len(flags)
        parts = [" ".join(flags)] if flags else []
        if hidden:
            parts.append(f"{hidden} value(s), not shown")
        message = head + found + ", ".join(parts)
    return message


def redact(line: str) -> str:
    """Anything shaped like one of our secrets, cut to its prefix (a last safety net)."""
    return _OUR_SECRET_RE.sub(secrets.PREFIX + "...", line)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line instead of usage text and a line.

    The line never quotes a value given on the command line (see ``without_values``).
    """

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {without_values(message)} (see --help)")


def _connection_options(parser: argparse.ArgumentParser, env: Mapping[str, str],
                        *, top: bool) -> None:
    """Options accepted before or after the command; the leaf's value wins."""

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("connection")
    group.add_argument("--target", default=default(env.get("AIGW_ADMIN_TARGET",
                                                           "127.0.0.1:50051")),
                       help="sidecar admin address, host:port or unix:/path "
                            "[env AIGW_ADMIN_TARGET; default 127.0.0.1:50051]")
    group.add_argument("--admin-token-file", default=default(env.get("AIGW_ADMIN_TOKEN_FILE",
                                                                     "")),
                       help="file holding the admin token [env AIGW_ADMIN_TOKEN_FILE]; "
                            "or set AIGW_ADMIN_TOKEN")
    group.add_argument("--tls", action=argparse.BooleanOptionalAction,
                       default=default(env.get("AIGW_ADMIN_TLS", "") in ("1", "true")),
                       help="connect with TLS [env AIGW_ADMIN_TLS=true]")
    group.add_argument("--tls-ca-file", default=default(env.get("AIGW_ADMIN_TLS_CA_FILE", "")),
                       help="PEM CA to verify the sidecar (implies --tls) "
                            "[env AIGW_ADMIN_TLS_CA_FILE]")
    group.add_argument("--timeout-s", type=float, default=default(10.0),
                       help="deadline of each call (default 10)")
    group.add_argument("--output", "-o", choices=["table", "json"], default=default("table"),
                       help="table (for people, default) or json (for scripts)")


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Manage the API keys of an aigw-sidecar (aigw.v1.KeyManagement).",
        epilog="Start with: aigw-admin keys create --help",
    )
    _connection_options(parser, env, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    by_rpc = {c.method.name: c for c in commands(SERVICE)}
    for group, aliases in ALIASES.items():
        gp = sub.add_parser(group, help=f"{group} commands (aliases of the RPC commands)")
        gsub = gp.add_subparsers(dest="alias", metavar="ACTION", required=True)
        for alias, rpc in aliases.items():
            _add_command(gsub, alias, by_rpc[rpc], env)
    for command in by_rpc.values():
        _add_command(sub, command.name, command, env)
    shell = sub.add_parser("completion", help="print a shell completion script",
                           description="Print a completion script for bash, zsh or fish "
                                       "(see docs/reference.md to install it).")
    shell.add_argument("shell", choices=completion.SHELLS)
    return parser


def _add_command(sub: Any, name: str, command: Command, env: Mapping[str, str]) -> None:
    doc = f"RPC {SERVICE.full_name}/{command.method.name}"
    parser = sub.add_parser(name, help=doc, description=doc)
    command.add_arguments(parser)
    _connection_options(parser, env, top=False)
    if name == "tail":
        parser.add_argument("--interval-s", type=float, default=2.0,
                            help="seconds between polls (default 2)")
        parser.add_argument("--polls", type=int, default=0, metavar="N",
                            help="stop after N polls (default: follow until interrupted)")
        parser.set_defaults(follow=True)
    parser.set_defaults(rpc=command)


def _admin_token(ns: argparse.Namespace, env: Mapping[str, str]) -> str:
    if ns.admin_token_file:
        try:
            text = Path(ns.admin_token_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{PROG}: cannot read admin token file: {exc.strerror}") from None
        for line in text.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                # Same format as the server's file: "<token>" or "<principal> <token>".
                return line.split()[-1]
        raise UsageError(f"{PROG}: admin token file {ns.admin_token_file} holds no token")
    return env.get("AIGW_ADMIN_TOKEN", "")


class _AuthNotice(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Warns once on stderr when the sidecar says it ignored the admin token sent."""

    def __init__(self, err: TextIO) -> None:
        self._err = err
        self._warned = False

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        outcome = continuation(details, request)  # a failed call's outcome is its RpcError
        trailing = outcome.trailing_metadata() or ()
        if not self._warned and AUTH_NOTICE in tuple(trailing):
            self._warned = True
            print(f"{PROG}: {AUTH_NOTICE_WARNING}", file=self._err)
        return outcome


def _channel(ns: argparse.Namespace, err: TextIO) -> grpc.Channel:
    if ns.tls or ns.tls_ca_file:
        root = None
        if ns.tls_ca_file:
            try:
                root = Path(ns.tls_ca_file).read_bytes()
            except OSError as exc:
                raise UsageError(f"{PROG}: cannot read CA file: {exc.strerror}") from None
        channel = grpc.secure_channel(ns.target, grpc.ssl_channel_credentials(root))
    else:
        channel = grpc.insecure_channel(ns.target)
    return grpc.intercept_channel(channel, _AuthNotice(err))


def _can_confirm(command: Command, ns: argparse.Namespace, stdin: TextIO) -> None:
    """A deletion without --yes needs a terminal; checked before any call is made."""
    if command.destructive and not ns.yes and not stdin.isatty():
        raise UsageError(f"{PROG}: refusing to delete without --yes "
                         "(no terminal to confirm on)")


def _confirm(command: Command, request: Any, ns: argparse.Namespace, stdin: TextIO,
             err: TextIO) -> bool:
    if not command.destructive or ns.yes:
        return True
    key_id = getattr(request, "key_id", "")
    # Only a real key id is printed back: the argument may be a secret pasted by mistake.
    what = key_id if secrets.is_valid_key_id(key_id) else "this key"
    print(f"Delete {what}? This cannot be undone. [y/N] ", end="", file=err, flush=True)
    return stdin.readline().strip().lower() in ("y", "yes")


def _read_secret(command: Command, ns: argparse.Namespace, stdin: TextIO,
                 err: TextIO) -> None:
    """``--secret-file PATH`` (``-``: stdin) into the secret field; warn on ``--secret``."""
    flag = command.secret_flag
    if flag is None:
        return
    if flag.dest in vars(ns):
        print(f"{PROG}: {INLINE_SECRET_WARNING}", file=err)
        return
    path = getattr(ns, SECRET_FILE_DEST, None)
    if path is None:
        return
    if path == "-":
        text = stdin.read()
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise UsageError(f"{PROG}: cannot read --secret-file: {reason}") from None
    # One trailing newline, as `echo` and editors leave it; anything else is the secret's.
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise UsageError(f"{PROG}: --secret-file holds no secret")
    setattr(ns, flag.dest, text)


def _resolve_key_id(command: Command, ns: argparse.Namespace, channel: grpc.Channel,
                    metadata: Any) -> None:
    """A key name given for ``key_id``, replaced by that key's id (ListKeys, paged).

    Never printed: the value may be a secret pasted into the wrong place.
    """
    flag: FieldFlag | None = command.key_id_flag
    value = getattr(ns, flag.dest, "") if flag is not None else ""
    if flag is None or not value or secrets.is_valid_key_id(value):
        return
    workspace = getattr(ns, LOOKUP_WORKSPACE_DEST)
    where = f"workspace {workspace}" if workspace else "any workspace"
    hint = f"see: {PROG} keys list" + (f" --workspace {workspace}" if workspace else "")
    list_keys = _rpc("ListKeys")
    request = keys_pb.ListKeysRequest(workspace=workspace, page_size=LOOKUP_PAGE_SIZE)
    found: list[keys_pb.ApiKey] = []
    while True:
        page = _call(channel, list_keys, request, metadata, ns.timeout_s)
        found += [key for key in page.keys if key.name == value]
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    if not found:
        raise KeyNotResolved(f"no key has that name in {where}, and it is not a key id "
                             f"(key_ and 20 characters) [NOT_FOUND] ({hint})")
    if len(found) > 1:
        spaces = ", ".join(sorted({key.workspace for key in found}))
        raise KeyNotResolved(f"{len(found)} keys have that name (workspaces {spaces}): "
                             f"pass --workspace, or the key id ({hint})")
    setattr(ns, flag.dest, found[0].key_id)


def _rpc(name: str) -> Command:
    return next(c for c in commands(SERVICE) if c.method.name == name)


def _call(channel: grpc.Channel, command: Command, request: Any, metadata: Any,
          timeout_s: float) -> Any:
    method = channel.unary_unary(
        command.path,
        request_serializer=command.request_class.SerializeToString,
        response_deserializer=command.response_class.FromString,
    )
    return method(request, timeout=timeout_s, metadata=metadata)


def run(argv: Sequence[str], env: Mapping[str, str], out: TextIO, err: TextIO,
        stdin: TextIO) -> int:
    parser = build_parser(env)
    ns = parser.parse_args(list(argv))
    if ns.command == "completion":
        print(completion.script(ns.shell, parser), file=out, end="")
        return 0
    command: Command = ns.rpc
    _read_secret(command, ns, stdin, err)
    _can_confirm(command, ns, stdin)
    token = _admin_token(ns, env)
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with _channel(ns, err) as channel:
        _resolve_key_id(command, ns, channel, metadata)
        request = command.build_request(ns)
        if getattr(ns, "follow", False):
            return _follow(ns, channel, command, request, metadata, out)
        if not _confirm(command, request, ns, stdin, err):
            print("aborted", file=err)
            return 1
        if (isinstance(request, keys_pb.ListKeysRequest) and not request.view
                and ns.output == "table"):
            # The table's USAGE column: the page's overviews come with it, in the same call.
            request.view = keys_pb.KEY_VIEW_WITH_USAGE
        response = _call(channel, command, request, metadata, ns.timeout_s)
    if ns.output == "json":
        print(render.to_json(response), file=out)
        if isinstance(response, keys_pb.CreateKeyResponse | keys_pb.RotateKeySecretResponse):
            print(f"WARNING: {render.SECRET_WARNING}", file=err)
        return 0
    if command.destructive:  # the call succeeded, so key_id is a real key id
        print(f"deleted {getattr(request, 'key_id', '')}".rstrip(), file=out)
    else:
        render.human(response, out, err)
    return 0


def _follow(ns: argparse.Namespace, channel: grpc.Channel, command: Command, request: Any,
            metadata: Any, out: TextIO) -> int:
    """``events tail``: print new events as they come, one line each, polling the cursor."""
    polls = 0
    try:
        while True:
            response = _call(channel, command, request, metadata, ns.timeout_s)
            for event in response.events:
                line = (render.to_json_line(event) if ns.output == "json"
                        else render.event_line(event))
                print(line, file=out, flush=True)
            request.after = response.next_cursor
            polls += 1
            if ns.polls and polls >= ns.polls:
                return 0
            time.sleep(ns.interval_s)
    except KeyboardInterrupt:
        return 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _quiet_broken_pipe() -> int:
    """The reader of stdout went away: end quietly, as a Unix tool killed by SIGPIPE does.

    stdout is pointed at /dev/null so the interpreter's flush at exit cannot fail again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        status = run(args, os.environ, sys.stdout, sys.stderr, sys.stdin)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return status
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except UsageError as exc:
        print(redact(_one_line(str(exc))), file=sys.stderr)
        return 2
    except KeyNotResolved as exc:  # it quotes --workspace: a pasted secret is cut too
        print(redact(f"{PROG}: error: {exc}"), file=sys.stderr)
        return 1
    except grpc.RpcError as exc:
        code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
        details = exc.details() if hasattr(exc, "details") else ""
        print(redact(f"{PROG}: error: {_one_line(details or code)} [{code}]"
                     f"{_HINTS.get(code, '')}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            return _quiet_broken_pipe()
        print(redact(f"{PROG}: error: {_one_line(str(exc)) or type(exc).__name__}"),
              file=sys.stderr)
        return 1
    except Exception as exc:  # the promise: one line, never a traceback
        print(redact(f"{PROG}: error: {_one_line(str(exc)) or type(exc).__name__}"),
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
