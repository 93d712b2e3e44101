"""``prefleak probe run`` and ``prefleak probe status``, added to the CLI by :func:`register`.

Exit codes as in the rest of the CLI: 0 done, 1 the run failed (its reason is recorded and
printed), 2 wrong usage or invalid configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from prefleak.config import (
    Settings,
    add_db_option,
    default_db,
    settings_or_exit,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_RUN_DETAILS = """\
A probe measures preference leakage directly. For every generator with at least
probe.min_samples instruction/response `sample` events (in datasets whose `dataset` event names
the generator), it trains a small LoRA student on that generator's data, lets every student
answer the probe prompts, and has every configured judge compare every pair of students on every
prompt in both orders. The students' provenance and the verdicts are stored as ordinary events
(track `probe`, benchmark `probe:<prompt_set>`), so `prefleak report` shows the judges' PLS.

The run executes in a separate process; one that fails, exceeds probe.max_run_s or is killed is
recorded failed with its reason (`prefleak probe status`). Settings: the `probe` section of the
config file (docs/probes.md, docs/configuration.md).

examples:
  prefleak probe run --once --config config/probe-cpu.yaml --db probes.db   # one cycle, then exit
  prefleak probe run --config config/probe-gpu.yaml        # on probe.schedule until Ctrl-C
  prefleak report --db probes.db --benchmark probe:default  # the judges' leakage"""

_STATUS_DETAILS = """\
Lists recorded probe runs, the newest first: status (running, succeeded, failed), when, the
generators and sizes, verdicts and unparseable judgements, and why a failed run failed.

example:
  prefleak probe status --db probes.db --json | jq '.runs[0]'"""


_DATA_DETAILS = """\
JSONL events of the simulated world (`prefleak simulate`): its three generators (gpt-4o,
gemini-1.5-pro, llama-3.3-70b) with their datasets, and `sample` events of instruction/response
pairs, each generator in a style of its own, plus an eval dataset of prompts no sample uses.

example (the CPU example of docs/probes.md):
  prefleak probe example-data --out samples.jsonl
  prefleak ingest samples.jsonl --db probes.db
  prefleak probe run --once --config config/probe-cpu.yaml --db probes.db"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``probe run`` and ``probe status`` to the CLI's subcommands."""
    formatter = argparse.RawDescriptionHelpFormatter
    summary = "Leakage probes: train students per generator and judge them."
    probe = commands.add_parser("probe", help=summary, description=summary)
    actions = probe.add_subparsers(dest="probe_command", metavar="ACTION", required=True)

    summary = "Run probe cycles: once, or on probe.schedule until Ctrl-C."
    run = actions.add_parser(
        "run", help=summary, description=f"{summary}\n\n{_RUN_DETAILS}", formatter_class=formatter
    )
    run.add_argument("--once", action="store_true", help="run one cycle now, then exit")
    run.add_argument("--config", type=Path, metavar="FILE", help="YAML settings (a probe section)")
    add_db_option(run)
    run.set_defaults(handler=_cmd_run)

    summary = "List recorded probe runs."
    status = actions.add_parser(
        "status",
        help=summary,
        description=f"{summary}\n\n{_STATUS_DETAILS}",
        formatter_class=formatter,
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--limit", type=int, default=20, help="newest N runs (0: all)")
    add_db_option(status)
    status.set_defaults(handler=_cmd_status)

    summary = "Write generator samples to probe: the data of the CPU example."
    data = actions.add_parser(
        "example-data",
        help=summary,
        description=f"{summary}\n\n{_DATA_DETAILS}",
        formatter_class=formatter,
    )
    data.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    data.add_argument("--samples", type=int, default=64, help="samples per generator")
    data.add_argument("--prompts", type=int, default=20, help="eval prompts (at most 20)")
    data.add_argument("--seed", type=int, default=0, help="random seed")
    data.set_defaults(handler=_cmd_example_data)


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {} if args.db is None else {"db": args.db}  # else db, $PREFLEAK_DB or the default
    return settings_or_exit(args.config, overrides)


def _cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not settings.probe.judges:
        print(
            "prefleak: no judges: add probe.judges to the config (docs/probes.md)", file=sys.stderr
        )
        return EXIT_USAGE
    from prefleak.daemon.commands import LOG_FORMAT
    from prefleak.probes.worker import ProbeRunner, ProbeScheduler, recover_interrupted

    logging.basicConfig(level=settings.log_level, format=LOG_FORMAT, stream=sys.stderr)
    runner = ProbeRunner(settings.probe, settings.db, hash_texts=settings.privacy.hashed)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    if args.once:
        recover_interrupted(settings.db)
        outcome = runner.run_once(stop)
        print(
            f"probe run {outcome.run_id} "
            + ("succeeded" if outcome.succeeded else f"failed: {outcome.reason}")
            + f" ({outcome.verdicts} verdicts, {outcome.unparseable} unparseable, "
            f"{outcome.duration_s:.0f} s)"
        )
        return EXIT_OK if outcome.succeeded else EXIT_FAILED
    ProbeScheduler(runner).run(stop)
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    from prefleak.store import EventStore

    with EventStore(args.db or default_db()) as store:
        runs = [_run_json(row) for row in store.probe_runs(args.limit or None)]
    if args.json:
        print(json.dumps({"schema": "prefleak.probe_runs/1", "runs": runs}, indent=2))
        return EXIT_OK
    if not runs:
        print("no probe runs recorded (prefleak probe run --once --config FILE)")
        return EXIT_OK
    for run in runs:
        generators = ", ".join(run.get("generators", [])) or "-"
        line = (
            f"{run['id']:>4}  {run['status']:<9}  {run['started']}  "
            f"{_duration(run['duration_s']):>7}  generators {generators}; "
            f"{run['verdicts']} verdicts, {run['unparseable']} unparseable"
        )
        print(line + (f"\n      reason: {run['reason']}" if run["reason"] else ""))
    return EXIT_OK


def _cmd_example_data(args: argparse.Namespace) -> int:
    from prefleak.simulate import generator_samples

    if args.samples < 1 or args.prompts < 1:
        print("prefleak: --samples and --prompts must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    events = generator_samples(args.samples, args.prompts, seed=args.seed)
    lines = "".join(json.dumps(event) + "\n" for event in events)
    if args.out in (None, "-"):
        sys.stdout.write(lines)
    else:
        Path(args.out).write_text(lines, encoding="utf-8")
    return EXIT_OK


def _run_json(row: Any) -> dict[str, Any]:
    detail = json.loads(row.detail)
    return {
        **detail,
        "id": row.id,
        "status": row.status,
        "started": _iso(row.started),
        "ended": None if row.ended is None else _iso(row.ended),
        "duration_s": None if row.ended is None else round(row.ended - row.started, 3),
        "verdicts": row.verdicts,
        "unparseable": row.unparseable,
        "reason": row.reason,
    }


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.0f} s"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
