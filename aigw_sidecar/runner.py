"""How one sidecar process runs: its logs set up, the start-up heap frozen, the loop run.

Shared by the console script (``cli.py``: a lone sidecar) and the workers of the
``--workers`` supervisor (``python -m aigw_sidecar.supervisor``), so the supervisor
never reaches into the CLI and the CLI is the only one that starts a supervisor.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from aigw_sidecar.logs import configure_logging
from aigw_sidecar.settings import Settings, parse_settings


def configured_secrets(settings: Settings) -> list[str]:
    """Every configured token, for the log redaction layer to mask wherever it appears."""
    found = [settings.admin_token, settings.alert_webhook_secret]
    if settings.admin_token_file:
        try:
            text = Path(settings.admin_token_file).read_text(encoding="utf-8")
        except OSError:
            text = ""  # bootstrap reports the unreadable file
        for line in text.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                found.append(line.split()[-1])
    return [token for token in found if token]


def set_up_logging(settings: Settings) -> None:
    """The process's log level and format, with every configured secret redacted."""
    configure_logging(settings.log_level, settings.log_format, configured_secrets(settings))


def freeze_start_up_heap() -> None:
    """Take every object alive now, before serving, out of the collector's reach.

    A full collection walks every tracked object; in a serving sidecar, about
    47,000 of them are module-level objects from the imports, alive for as long
    as the process. Walking them paused the event loop 18-210 ms on this
    project's 2-vCPU machine, once or twice in a sidecar's first minutes and
    then now and again, and every call in flight waited the pause out (a p999 of
    tens of ms at 1,000 calls/s). Frozen (97 % of the heap once serving), a full
    collection walks the rest and took at most 1.2 ms. Measured with
    tests/bench/gcprobe.py and tests/bench/tails.py.
    """
    gc.collect()
    gc.freeze()


def run(settings: Settings) -> int:
    """Serve until SIGTERM or SIGINT on the event loop ``settings`` asks for; 0 when done."""
    # Imported here: --version, the pricing commands and a supervisor load no gRPC server.
    from aigw_sidecar.bootstrap import serve

    use_uvloop = settings.event_loop in ("auto", "uvloop")
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            if settings.event_loop == "uvloop":
                raise
        else:
            freeze_start_up_heap()
            uvloop.run(serve(settings))
            return 0
    freeze_start_up_heap()
    asyncio.run(serve(settings))
    return 0


def exit_code(body: Callable[[], int]) -> int:
    """``body``'s exit code: 0 after Ctrl-C, 1 (logged) when it refused to start."""
    try:
        return body()
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        logging.getLogger("aigw_sidecar").error("%s", exc)
        return 1


def run_worker(serve_args: Sequence[str]) -> int:
    """One of a supervisor's workers: the ``serve`` options, sharing the port, never supervising."""
    settings = replace(parse_settings(serve_args), workers=1, reuse_port=True)
    set_up_logging(settings)
    return exit_code(lambda: run(settings))
