"""The ``aigw-sidecar`` console script."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace

from aigw_sidecar import __version__
from aigw_sidecar.settings import Settings, parse_settings

USAGE = """usage: aigw-sidecar serve [options]   run the admission sidecar
       aigw-sidecar serve --help      list the options (flags and AIGW_* variables)
       aigw-sidecar --version"""


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
            uvloop.run(serve(settings))
            return
    asyncio.run(serve(settings))


def main(argv: Sequence[str] | None = None, *, worker: bool = False) -> int:
    """Args:
    worker: run as one of a supervisor's workers (shares the port, never supervises).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--version"]:
        print(f"aigw-sidecar {__version__}")
        return 0
    if args[:1] != ["serve"]:
        print(USAGE, file=sys.stderr)
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    settings = parse_settings(args[1:])
    if worker:
        settings = replace(settings, workers=1, reuse_port=True)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
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
