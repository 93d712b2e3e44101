"""The ``serve`` and ``config show`` subcommands, added to the CLI by :func:`register`.

Exit codes as in the rest of the CLI: 0 done (``serve``: stopped by SIGTERM/SIGINT), 1 could not
run (database unusable, port taken), 2 wrong usage or invalid configuration.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from prefleak.config import settings_or_exit

EXIT_OK, EXIT_FAILED = 0, 1
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_SERVE_DETAILS = """\
Runs until SIGTERM or SIGINT: takes events over HTTP (POST /v1/events), from a watched
directory and from Kafka (each when configured), recomputes the PLS table every
recompute.interval_s, and serves /metrics, /healthz, /readyz, /v1/pls and /v1/status on one
port. Settings: defaults < --config FILE < PREFLEAK_* env vars < these flags
(docs/configuration.md). Metrics: docs/metrics.md.

example:
  prefleak serve --config config/prefleak.example.yaml --watch ./incoming
  curl -s localhost:9464/metrics | grep prefleak_pls_ratio"""

_SHOW_DETAILS = """\
Prints the configuration `prefleak serve` would use, as YAML, after merging defaults, the
file, PREFLEAK_* env vars and the flags. Kafka client options whose name contains password,
secret, token or key are masked.

example:
  PREFLEAK_HTTP__PORT=9500 prefleak config show --config config/prefleak.example.yaml"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve`` and ``config show`` to the CLI's subcommands."""
    formatter = argparse.RawDescriptionHelpFormatter
    summary = "Run the service: ingest, recompute, serve metrics and the API."
    serve = commands.add_parser(
        "serve",
        help=summary,
        description=f"{summary}\n\n{_SERVE_DETAILS}",
        formatter_class=formatter,
    )
    _settings_options(serve)
    serve.set_defaults(handler=_cmd_serve)

    summary = "Inspect the service configuration."
    config = commands.add_parser("config", help=summary, description=summary)
    actions = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    summary = "Print the effective configuration as YAML, secrets masked."
    show = actions.add_parser(
        "show", help=summary, description=f"{summary}\n\n{_SHOW_DETAILS}", formatter_class=formatter
    )
    _settings_options(show)
    show.set_defaults(handler=_cmd_config_show)


def _settings_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE", help="YAML settings file")
    parser.add_argument("--db", type=Path, metavar="PATH", help="SQLite event store (overrides db)")
    parser.add_argument(
        "--kafka",
        metavar="HOST:PORT[,...]",
        help="Kafka bootstrap servers; turns Kafka on (overrides kafka.bootstrap_servers)",
    )
    parser.add_argument("--port", type=int, metavar="N", help="HTTP port (overrides http.port)")
    parser.add_argument(
        "--watch", type=Path, metavar="DIR", help="directory to ingest (overrides watch.directory)"
    )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, shaped like the YAML file (flags not given leave the layers below)."""
    overrides: dict[str, Any] = {}
    if args.db is not None:
        overrides["db"] = args.db
    if args.kafka is not None:
        overrides["kafka"] = {"bootstrap_servers": args.kafka}
    if args.port is not None:
        overrides["http"] = {"port": args.port}
    if args.watch is not None:
        overrides["watch"] = {"directory": args.watch}
    return overrides


def _cmd_config_show(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args.config, _overrides(args))
    print(yaml.safe_dump(settings.shown(), sort_keys=False), end="")
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args.config, _overrides(args))
    logging.basicConfig(level=settings.log_level, format=LOG_FORMAT, stream=sys.stderr)
    if settings.log_level != "DEBUG":
        # kafka-python logs every failed reconnect at ERROR, with tracebacks, many times a second
        # while a broker is down; prefleak's own "kafka:" lines say what happened once each.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    from prefleak.daemon.service import Service  # the service's imports only when serving
    from prefleak.store import StoreError

    try:
        service = Service(settings)
    except StoreError as exc:
        logging.getLogger(__name__).error("%s", exc)
        return EXIT_FAILED
    except OSError as exc:
        logging.getLogger(__name__).error(
            "cannot listen on %s:%d: %s",
            settings.http.host,
            settings.http.port,
            exc.strerror or exc,
        )
        return EXIT_FAILED
    return service.run()
