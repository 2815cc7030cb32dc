"""The ``aigw-sidecar`` console script."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from aigw_sidecar import __version__
from aigw_sidecar.runner import exit_code, run, set_up_logging
from aigw_sidecar.settings import Settings, config_text, parse_settings

USAGE = """usage: aigw-sidecar serve [options]   run the admission sidecar
       aigw-sidecar serve --help      list the options (flags and AIGW_* variables)
       aigw-sidecar serve --config aigw.yaml [--print-config]   settings from a file
       aigw-sidecar pricing import FILE [-o pricing.yaml]   convert LiteLLM/OpenRouter prices
       aigw-sidecar pricing show [MODEL ...]                 the price table in force
       aigw-sidecar --version"""


def supervise(settings: Settings, serve_args: Sequence[str]) -> int:
    """``--workers N``: a supervisor of N sidecars, serving their metrics with server/metrics'."""
    # Imported here: only a --workers run needs them (and --version loads no gRPC).
    from aigw_sidecar.server.metrics import MetricsEndpoint, mark_process_dead
    from aigw_sidecar.supervisor import Supervisor, WorkerMetrics

    metrics = WorkerMetrics(MetricsEndpoint.for_folder, mark_process_dead)
    return Supervisor(settings, serve_args, metrics).run()


def main(argv: Sequence[str] | None = None) -> int:
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
    if settings.print_config:
        sys.stdout.write(config_text(settings))
        return 0
    set_up_logging(settings)
    if settings.workers != 1:
        return exit_code(lambda: supervise(settings, args[1:]))
    return exit_code(lambda: run(settings))


if __name__ == "__main__":
    sys.exit(main())
