"""The ``aigw-sidecar`` console script."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from aigw_sidecar import __version__
from aigw_sidecar.logs import configure_logging
from aigw_sidecar.settings import Settings, parse_settings

USAGE = """usage: aigw-sidecar serve [options]   run the admission sidecar
       aigw-sidecar serve --help      list the options (flags and AIGW_* variables)
       aigw-sidecar pricing import FILE [-o pricing.yaml]   convert LiteLLM/OpenRouter prices
       aigw-sidecar pricing show [MODEL ...]                 the price table in force
       aigw-sidecar --version"""


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


def _run(settings: Settings) -> None:
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
            return
    freeze_start_up_heap()
    asyncio.run(serve(settings))


def main(argv: Sequence[str] | None = None, *, worker: bool = False) -> int:
    """Args:
    worker: run as one of a supervisor's workers (shares the port, never supervises).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--version"]:
        print(f"aigw-sidecar {__version__}")
        return 0
    if args[:1] == ["pricing"]:
        from aigw_sidecar.pricing.cli import main as pricing_main

        return pricing_main(args[1:])
    if args[:1] != ["serve"]:
        print(USAGE, file=sys.stderr)
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    settings = parse_settings(args[1:])
    if worker:
        settings = replace(settings, workers=1, reuse_port=True)
    configure_logging(settings.log_level, settings.log_format, configured_secrets(settings))
    try:
        if settings.workers != 1:
            from aigw_sidecar.supervisor import Supervisor

            return Supervisor(settings, args[1:]).run()
        _run(settings)
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        logging.getLogger("aigw_sidecar").error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
