"""The ``prefleak`` command line.

Exit codes: 0 done (also when some input lines were rejected: they are in ``prefleak rejected``),
1 the command could not do its work (a file missing, the database unusable), 2 wrong usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from prefleak import __version__
from prefleak.check_commands import register as register_check
from prefleak.config import add_db_option, default_db
from prefleak.daemon.commands import register as register_daemon
from prefleak.dbtools import register as register_dbtools
from prefleak.diversity.commands import register as register_diversity
from prefleak.explain_commands import register as register_explain
from prefleak.fingerprint_commands import register as register_fingerprint
from prefleak.ingest import Ingestor, open_lines
from prefleak.lineage import Lineage
from prefleak.models.events import PROVENANCE_TYPES
from prefleak.probes.commands import register as register_probe
from prefleak.retention import hash_texts_from_settings
from prefleak.retention import register as register_retention
from prefleak.review_commands import register as register_review
from prefleak.stats.analysis import ScoredPLS
from prefleak.stats.commands import add_statistics_options, analyse_store, render, report_document
from prefleak.stats.commands import register as register_statistics
from prefleak.store import AppendResult, EventStore, StoreError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_DESCRIPTION = """\
prefleak watches LLM evaluations for preference leakage: a judge that favours students trained on
data it (or a related model) generated. Feed it provenance and verdict events, then read the
Preference Leakage Score (PLS, Li et al. 2025) of every judge pair that can show it.

typical first run:
  prefleak simulate --out demo.jsonl     # a synthetic stream with known leakage
  prefleak ingest demo.jsonl             # validate and store it (./prefleak.db)
  prefleak report                        # the PLS table with 95 % bootstrap intervals
"""

_EPILOG = """\
The database is --db, else $PREFLEAK_DB, else ./prefleak.db.
Exit codes: 0 done (rejected lines included), 1 could not do the work, 2 wrong usage.
Event schema: docs/events.md. Relatedness rules: docs/relatedness.md. PLS: docs/pls.md."""


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples' layout and shows every default."""


def _store(args: argparse.Namespace) -> EventStore:
    return EventStore(args.db or default_db())


# -- ingest -------------------------------------------------------------------------------------


class _Progress:
    """A one-line progress report on a terminal; silent when stderr is not one."""

    def __init__(self, label: str, total_bytes: int | None, stream: IO[str]) -> None:
        self.label, self.total, self.stream = label, total_bytes, stream
        self.enabled = stream.isatty()
        self.read_bytes = 0
        self.started = time.monotonic()
        self.counts = AppendResult()

    def lines(self, lines: Iterator[bytes]) -> Iterator[bytes]:
        for line in lines:
            self.read_bytes += len(line)
            yield line

    def batch(self, result: AppendResult) -> None:
        self.counts.add(result)
        if not self.enabled:
            return
        done = self.counts.accepted + self.counts.duplicate + self.counts.rejected
        rate = done / max(time.monotonic() - self.started, 1e-9)
        share = f"{100 * self.read_bytes / self.total:5.1f}% " if self.total else ""
        self.stream.write(f"\r{self.label}: {share}{done:,} events ({rate:,.0f}/s)   ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")


PARALLEL_FROM_BYTES = 16 * 1024 * 1024
"""Files at least this large are validated in a second process by default."""


def _workers(requested: int | None, size: int | None) -> int:
    """Validating processes for one input: as asked, else two for a large file on 2+ cores.

    Two, not one, even on two cores: the writer spends part of its time waiting on SQLite, and
    a second validator fills it (measured: 48k → 55k lines/s on two cores).
    """
    if requested is not None:
        return requested
    large = size is not None and size >= PARALLEL_FROM_BYTES
    return 2 if large and (os.cpu_count() or 1) >= 2 else 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    hash_texts = args.hash_texts or hash_texts_from_settings()
    with _store(args) as store:
        total = AppendResult()
        for name in args.files:
            size = None if name == "-" else Path(name).stat().st_size
            ingestor = Ingestor(
                store,
                max_message_bytes=args.max_line_bytes,
                workers=_workers(args.workers, size),
                hash_texts=hash_texts,
            )
            progress = _Progress(name, size, sys.stderr)
            try:
                with open_lines(name) as lines:
                    result = ingestor.ingest_lines(
                        progress.lines(iter(lines)) if progress.enabled else lines,
                        source="stdin" if name == "-" else f"file:{Path(name).resolve()}",
                        on_batch=progress.batch,
                    )
            finally:
                progress.close()
            total.add(result)
            print(
                f"{name}: {result.accepted} accepted, {result.duplicate} duplicate, "
                f"{result.rejected} rejected"
            )
            for error in result.errors[: args.show_errors]:
                print(f"  rejected {error.location}: {error.error}")
            if len(result.errors) > args.show_errors:
                print(f"  ... see all with: prefleak rejected --db {store.path}")
        if len(args.files) > 1:
            print(
                f"total: {total.accepted} accepted, {total.duplicate} duplicate, "
                f"{total.rejected} rejected"
            )
    return EXIT_OK


# -- report -------------------------------------------------------------------------------------


def load_lineage(store: EventStore) -> Lineage:
    """Relatedness as of every provenance event stored, whatever order they arrived in."""
    return Lineage.from_events(store.events(PROVENANCE_TYPES))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f}%"


def _render_table(rows: Sequence[ScoredPLS]) -> str:
    header = ("benchmark", "judge i", "judge j", "S_i (relation)", "S_j (relation)", "PLS",
              "95% CI", "q", "MDE", "prompts", "WR ii/ij/jj/ji", "human bias i/j")  # fmt: skip
    lines = [header]
    for scored in rows:
        row, test = scored.row, scored.test
        wr = row.win_rates
        rates = (
            "n/a"
            if wr is None
            else "/".join(f"{100 * r:.0f}" for r in (wr.ii, wr.ij, wr.jj, wr.ji))
        )
        human = (
            "-" if row.human is None
            else f"{_pct(row.human.error_bias_i)}/{_pct(row.human.error_bias_j)}"
        )  # fmt: skip
        ci = (
            row.undefined or ""
            if row.ci_low is None
            else f"[{_pct(row.ci_low)}, {_pct(row.ci_high)}]"
        )
        q = "-" if test.q_value is None else f"{test.q_value:.2g}"
        lines.append((
            row.benchmark, row.judge_i, row.judge_j,
            f"{row.student_i} ({row.relation_i} {row.share_i:.0%})",
            f"{row.student_j} ({row.relation_j} {row.share_j:.0%})",
            _pct(row.pls) + (" *" if test.significant else ""), ci, q,
            _pct(test.min_detectable).lstrip("+"), str(row.n_prompts), rates, human,
        ))  # fmt: skip
    return render(lines)


def _cmd_report(args: argparse.Namespace) -> int:
    analysis = analyse_store(args)
    horizon_pls = [s for s in analysis.pls if s.slice == "horizon"]
    if args.json:
        print(json.dumps(report_document(analysis), indent=2))
        return EXIT_OK
    if analysis.horizon is None:
        print("No verdicts stored yet. Check `prefleak status` for what is stored.")
        return EXIT_OK
    start, end = (_iso(t) for t in analysis.horizon)
    fdr, ties = analysis.options.fdr, analysis.options.ties
    print(f"Horizon {start} .. {end}; q-values at FDR {fdr:g}; ties count as {ties}.\n")
    if horizon_pls:
        print(_render_table(horizon_pls))
    else:
        print(
            "No judge pair qualifies for PLS: it needs judges i, j and students S_i related to i "
            "only and S_j to j only, judged head to head. The leakage model below needs no such "
            "pair."
        )
    pooled = [r for r in analysis.leakage if r.slice == "horizon"]
    if pooled:
        print("\nLeakage effect per relation kind (paired-comparison model, any comparison graph):")
        lines = [("benchmark", "relation", "log-odds [95% CI]", "win-rate points [95% CI]",
                  "q", "verdicts")]  # fmt: skip
        for r in pooled:
            ci, pp = r.log_odds_ci, r.effect_pp_ci
            lines.append((r.benchmark, r.relation,
                          f"{r.log_odds:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""),
                          f"{r.effect_pp:+.1f}" + (f" [{pp[0]:+.1f}, {pp[1]:+.1f}]" if pp else ""),
                          "-" if r.test.q_value is None else f"{r.test.q_value:.2g}"
                          + (" *" if r.test.significant else ""), str(r.n_verdicts)))  # fmt: skip
        print(render(lines))
    alarms = [c for c in analysis.changes if c.state.alarm]
    for change in alarms:
        labels = ", ".join(f"{k}={v}" for k, v in change.labels.items())
        started = change.state.started_at
        print(f"\nCHANGE {change.subject} ({labels}): since "
              f"{'?' if started is None else _iso(started)}")  # fmt: skip
    print(
        f"\n* = significant at FDR {fdr:g}. PLS as a fraction of the average win rate; MDE = "
        "the smallest PLS these prompts could detect (80 % power). `--json` has every window, "
        "category and track."
    )
    return EXIT_OK


# -- status, rejected, rebuild -------------------------------------------------------------------


def _cmd_status(args: argparse.Namespace) -> int:
    with _store(args) as store:
        newest = store.newest_event_ts()
        status: dict[str, Any] = {
            "schema": "prefleak.status/1",
            "db": str(store.path),
            "events": store.event_counts(),
            "rejected": store.rejected_count(),
            "newest_event": None if newest is None else _iso(newest),
            "offsets": [
                {"source": source, "partition": part, "position": pos}
                for (source, part), pos in store.offsets().items()
            ],
        }
    if args.json:
        print(json.dumps(status, indent=2))
        return EXIT_OK
    print(f"database: {status['db']}")
    events = status["events"]
    print(f"events: {sum(events.values())} ({', '.join(f'{k} {v}' for k, v in events.items())})")
    print(f"rejected: {status['rejected']}")
    print(f"newest event: {status['newest_event'] or '-'}")
    for offset in status["offsets"]:
        print(f"offset {offset['source']}[{offset['partition']}]: {offset['position']}")
    return EXIT_OK


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _cmd_rejected(args: argparse.Namespace) -> int:
    with _store(args) as store:
        rows = store.rejections(limit=args.limit)
    if args.json:
        print(json.dumps({"schema": "prefleak.rejected/1", "rejected": [
            {"seq": r.seq, "received_at": _iso(r.received_at), "source": r.source,
             "location": r.location, "error": r.error, "raw_size": r.raw_size,
             "raw": r.raw.decode("utf-8", errors="replace")}
            for r in rows
        ]}, indent=2))  # fmt: skip
        return EXIT_OK
    if not rows:
        print("no rejected messages")
    for r in rows:
        raw = r.raw[:120].decode("utf-8", errors="replace")
        cut = " ..." if r.raw_size > 120 else ""
        print(f"#{r.seq} {_iso(r.received_at)} {r.source} {r.location}\n  error: {r.error}")
        print(f"  raw ({r.raw_size} bytes): {raw}{cut}")
    return EXIT_OK


def _cmd_rebuild(args: argparse.Namespace) -> int:
    with _store(args) as store:
        started = time.monotonic()
        replayed = store.rebuild()
    print(f"rebuilt projections from {replayed} events in {time.monotonic() - started:.1f} s")
    return EXIT_OK


# -- simulate -----------------------------------------------------------------------------------


def _cmd_simulate(args: argparse.Namespace) -> int:
    from prefleak.simulate import Scenario, parse_assignments, simulate

    def _split(items: list[str]) -> Iterator[str]:
        return (name.strip() for item in items for name in item.split(",") if name.strip())

    try:
        scenario = Scenario(
            seed=args.seed,
            prompts_per_benchmark=args.prompts,
            leakage=args.leakage,
            rounds=args.rounds,
            with_texts=args.texts,
            days=args.days,
            relation_weights=parse_assignments(args.relation_weight, "--relation-weight") or None,
            method_factors=parse_assignments(args.method_factor, "--method-factor") or None,
            position_scale=args.position_scale,
            length_scale=args.length_scale,
            response_noise=args.response_noise,
            equal_acuity=args.equal_acuity,
            category_skill=args.category_skill,
            self_preference=args.self_preference,
            judges_as_candidates=args.judges_as_candidates,
            topology=args.topology,
            change_at=args.change_at,
            leakage_after=args.leakage_after,
            benchmarks=None if args.benchmarks is None else tuple(_split(args.benchmarks)),
        )
    except ValueError as exc:
        print(f"prefleak simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out = sys.stdout.buffer if args.out in (None, "-") else Path(args.out).open("wb")  # noqa: SIM115
    count = 0
    try:
        for event in simulate(scenario):
            out.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")
            count += 1
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    if args.out not in (None, "-"):
        print(f"wrote {count} events to {args.out}", file=sys.stderr)
    return EXIT_OK


# -- demo ---------------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    from prefleak.demo import DemoOptions, run_demo
    from prefleak.devbroker import BrokerUnavailable

    if args.fresh:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{args.db}{suffix}").unlink(missing_ok=True)
    options = DemoOptions(
        db=args.db, port=args.port, rate=args.rate, duration=args.duration,
        seed=args.seed, leakage=args.leakage,
    )  # fmt: skip
    try:
        return run_demo(options)
    except (BrokerUnavailable, RuntimeError, TimeoutError) as exc:
        print(f"prefleak: demo stopped: {exc}", file=sys.stderr)
        return EXIT_FAILED


# -- wiring -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefleak", description=_DESCRIPTION, epilog=_EPILOG, formatter_class=_Formatter
    )
    parser.add_argument("--version", action="version", version=f"prefleak {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], summary: str, details: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=summary, description=f"{summary}\n\n{details}", formatter_class=_Formatter
        )
        sub.set_defaults(handler=handler)
        return sub

    ingest = command(
        "ingest",
        _cmd_ingest,
        "Validate and store events from JSONL files or stdin.",
        "One JSON event per line (.jsonl, or .jsonl.gz). Lines already stored are counted as\n"
        "duplicates, so re-ingesting a file changes nothing. Invalid lines are kept with their\n"
        "error in the dead-letter table (`prefleak rejected`) and ingestion goes on.\n\n"
        "example:\n  prefleak simulate | prefleak ingest -",
    )
    add_db_option(ingest)
    ingest.add_argument("files", nargs="+", metavar="FILE", help="JSONL file, or - for stdin")
    ingest.add_argument(
        "--max-line-bytes",
        type=int,
        default=1024 * 1024,
        help="reject lines longer than this without parsing them",
    )
    ingest.add_argument(
        "--hash-texts",
        action="store_true",
        help="store verdicts' prompt and responses as sha256:<hex> (also "
        "PREFLEAK_PRIVACY__STORE_TEXTS=hashed; docs/storage.md)",
    )
    ingest.add_argument(
        "--show-errors", type=int, default=5, metavar="N", help="rejections to print per file"
    )
    ingest.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="processes validating while this one writes (default: 1 for files of 16 MiB or "
        "more on a machine with 2+ cores, else 0)",
    )

    report = command(
        "report",
        _cmd_report,
        "Print the Preference Leakage Score of every qualifying judge and student pair.",
        "A row needs judges i, j and students S_i, S_j with S_i related to i but not j, S_j\n"
        "related to j but not i, and both judges comparing S_i with S_j. PLS is a fraction\n"
        "(0.184 = 18.4 %); the interval is a prompt bootstrap. Same model ~24 %, same series\n"
        "~9 %, unrelated ~3 % in the paper. Below it, the leakage effect per relation kind\n"
        "from a paired-comparison model of all verdicts (works where PLS is undefined), with\n"
        "Benjamini-Hochberg q-values, the smallest detectable PLS, and change alarms over the\n"
        "windows (docs/statistics.md). Time is event time: the horizon ends with the newest\n"
        "verdict's window.\n\n"
        "example:\n  prefleak report --window 1d --horizon 7d --json | jq '.leakage[0]'",
    )
    add_db_option(report)
    add_statistics_options(report)

    status = command(
        "status",
        _cmd_status,
        "Show what the store holds.",
        "Events by type, rejected messages, the newest event time and stored source offsets.",
    )
    add_db_option(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    rejected = command(
        "rejected",
        _cmd_rejected,
        "List dead-lettered messages, newest first, with their errors.",
        "Every message that failed validation is kept here with its source and location.",
    )
    add_db_option(rejected)
    rejected.add_argument("--limit", type=int, default=50, metavar="N", help="0 for all")
    rejected.add_argument("--json", action="store_true", help="machine-readable output")

    rebuild = command(
        "rebuild",
        _cmd_rebuild,
        "Recompute every projection from the event log.",
        "Safe at any time: events are the truth and projections are derived from them.",
    )
    add_db_option(rebuild)

    sim = command(
        "simulate",
        _cmd_simulate,
        "Write a realistic synthetic event stream with known, injected leakage.",
        "Generators, students on data mixtures, several judges and benchmarks, ties,\n"
        "position-swapped games and a human panel. --leakage 0 gives a clean stream.\n\n"
        "example:\n  prefleak simulate --seed 7 --leakage 0 --out clean.jsonl",
    )
    sim.add_argument("--seed", type=int, default=0, help="random seed (same seed, same stream)")
    sim.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    sim.add_argument("--prompts", type=int, default=300, help="prompts per benchmark")
    sim.add_argument("--leakage", type=float, default=1.0, help="scale of injected leakage")
    sim.add_argument("--rounds", type=int, default=1, help="times the prompt set is re-judged")
    sim.add_argument("--texts", action="store_true", help="include prompt and response texts")
    from prefleak.simulate import RESPONSE_NOISE  # stdlib only: cheap to import here

    sim.add_argument("--days", type=float, default=7.0, help="event-time span of the stream")
    sim.add_argument(
        "--benchmarks",
        nargs="+",
        metavar="B",
        help="only these benchmarks (alpacaeval, mtbench, arena-hard; space or comma separated)",
    )
    sim.add_argument(
        "--relation-weight",
        action="append",
        default=[],
        metavar="KIND=W",
        help="log-odds bonus at leakage 1 and share 1 for one relation kind (same_model, "
        "inheritance, same_series, same_family), 0 turns it off; repeatable; kinds not given "
        "keep their default (0.25, 0.2, 0.1, 0.04)",
    )
    sim.add_argument(
        "--method-factor",
        action="append",
        default=[],
        metavar="METHOD=F",
        help="factor on leakage for students trained by METHOD (sft 1.0, dpo 0.6 by default); "
        "repeatable; dpo=1 for a well-specified world",
    )
    sim.add_argument(
        "--position-scale",
        type=float,
        default=1.0,
        help="multiplies every judge's bias for the response shown first (0 turns it off)",
    )
    sim.add_argument(
        "--length-scale",
        type=float,
        default=1.0,
        help="multiplies every judge's bias for longer responses (0 turns it off)",
    )
    sim.add_argument(
        "--response-noise",
        type=float,
        default=RESPONSE_NOISE,
        help="spread of each response's quality around its model's (log-odds; 0 for none)",
    )
    sim.add_argument(
        "--equal-acuity", action="store_true", help="every judge weighs quality gaps alike (1.0)"
    )
    sim.add_argument(
        "--category-skill",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="some students are better in some categories; --no-category-skill with "
        "--response-noise 0, --equal-acuity and --method-factor dpo=1 makes the stream exactly "
        "the paired-comparison model",
    )
    sim.add_argument(
        "--judges-as-candidates",
        action="store_true",
        help="the LLM judges' own answers also compete: each meets one or two students per "
        "prompt, rated by every judge",
    )
    sim.add_argument(
        "--self-preference",
        type=float,
        default=0.0,
        help="log-odds a judge adds to its own answers (needs --judges-as-candidates)",
    )
    sim.add_argument(
        "--topology",
        choices=("round_robin", "baseline"),
        default="round_robin",
        help="round_robin: students meet pairwise; baseline: each student meets only "
        "baseline-ref, a model unrelated to every judge (PLS undefined, leakage still there)",
    )
    sim.add_argument(
        "--change-at",
        type=float,
        metavar="SHARE",
        help="step change: from start + SHARE * days on (0..1), leakage is --leakage-after",
    )
    sim.add_argument(
        "--leakage-after",
        type=float,
        metavar="SCALE",
        help="scale of injected leakage after --change-at (give both or neither)",
    )

    demo = command(
        "demo",
        _cmd_demo,
        "Run the whole service locally on a live simulated stream with known leakage.",
        "Starts a local Kafka-protocol broker (Tansu, from the demo extra), `prefleak serve`\n"
        "reading from it, and a producer sending the simulated world's events in real time.\n"
        "Prints where the metrics are and a live summary; Ctrl-C stops all of it.\n\n"
        "example:\n  prefleak demo --duration 60 --port 9464",
    )
    demo.add_argument("--db", type=Path, default=Path("demo.db"), help="event store to fill")
    demo.add_argument("--fresh", action="store_true", help="delete --db first")
    demo.add_argument("--port", type=int, default=9464, help="metrics, health and API port")
    demo.add_argument("--rate", type=float, default=2000.0, help="events produced per second")
    demo.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    demo.add_argument("--seed", type=int, default=1, help="simulation seed")
    demo.add_argument("--leakage", type=float, default=1.0, help="scale of injected leakage")

    register_daemon(commands)
    register_diversity(commands)
    register_dbtools(commands)
    register_statistics(commands)
    register_explain(commands)
    register_check(commands)
    register_retention(commands)
    register_review(commands)
    register_probe(commands)
    register_fingerprint(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except StoreError as exc:
        print(f"prefleak: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except sqlite3.DatabaseError as exc:  # damage found past opening, e.g. a corrupt page
        db = getattr(args, "db", None) or default_db()
        print(f"prefleak: event store {db} is unusable: {exc} (see prefleak check-db)",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    except OSError as exc:
        print(
            f"prefleak: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr
        )
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    return code
