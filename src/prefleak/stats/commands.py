"""The ``leaderboard`` and ``biases`` subcommands, and what ``report`` shares with them.

All three run one recompute (:func:`prefleak.stats.analysis.analyse`) over the stored verdicts,
configured as ``serve`` is (``--config``, ``PREFLEAK_*``), with flags for the usual knobs.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefleak.config import (
    Settings,
    StatisticsSettings,
    add_db_option,
    default_db,
    parse_duration,
    settings_or_exit,
)
from prefleak.daemon.recompute import statistics_options
from prefleak.lineage import Lineage
from prefleak.models.events import PROVENANCE_TYPES
from prefleak.pls import DEFAULT_BOOTSTRAP, DEFAULT_MIN_PROMPTS, TIE_POLICIES
from prefleak.stats.analysis import Analysis, analyse, horizon_cells
from prefleak.stats.cells import Cells
from prefleak.store import EventStore

EXIT_OK = 0
_DEFAULTS = StatisticsSettings()


def _duration(text: str) -> int:
    try:
        return int(parse_duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_statistics_options(parser: argparse.ArgumentParser) -> None:
    """Flags every analysing command takes; unset ones come from ``--config``, else defaults."""
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="take statistics.* and pls.* from this YAML file, as serve does "
                        "(docs/configuration.md); the flags below override it")  # fmt: skip
    parser.add_argument("--benchmark", help="only this benchmark")
    parser.add_argument("--window", type=_duration, metavar="D",
                        help=f"tumbling window: 1h, 1d, ... or seconds, whole hours "
                        f"(default {_DEFAULTS.window // 3600} h)")  # fmt: skip
    parser.add_argument("--horizon", type=_duration, metavar="D",
                        help=f"sliding horizon of the headline numbers "
                        f"(default {_DEFAULTS.horizon // 86_400} d)")  # fmt: skip
    parser.add_argument("--fdr", type=float,
                        help=f"false discovery rate of the significant flags "
                        f"(default {_DEFAULTS.fdr})")  # fmt: skip
    parser.add_argument("--ties", choices=TIE_POLICIES,
                        help="how a tie counts in win rates (default: loss)")  # fmt: skip
    parser.add_argument("--bootstrap", type=int, metavar="N",
                        help=f"PLS bootstrap resamples, 0: no interval "
                        f"(default {DEFAULT_BOOTSTRAP})")  # fmt: skip
    parser.add_argument("--model-bootstrap", type=int, metavar="N",
                        help=f"one-step bootstrap resamples of the leakage model "
                        f"(default {_DEFAULTS.model_bootstrap})")  # fmt: skip
    parser.add_argument("--min-prompts", type=int, metavar="N",
                        help=f"fewer shared prompts leave a PLS row undefined "
                        f"(default {DEFAULT_MIN_PROMPTS})")  # fmt: skip
    parser.add_argument("--reference", help="leaderboard reference model "
                        "(default: the candidate with the most comparisons)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="machine-readable output")


_FLAGS = {
    "window": ("statistics", "window"),
    "horizon": ("statistics", "horizon"),
    "fdr": ("statistics", "fdr"),
    "model_bootstrap": ("statistics", "model_bootstrap"),
    "reference": ("statistics", "reference"),
    "ties": ("pls", "ties"),
    "bootstrap": ("pls", "bootstrap"),
    "min_prompts": ("pls", "min_prompts"),
}
"""Flag → (settings section, key): the flags that override the configuration."""


def settings_of(args: argparse.Namespace) -> Settings:
    """Defaults < ``--config`` < ``PREFLEAK_*`` env vars < the flags given; exit 2 when invalid."""
    overrides: dict[str, Any] = {}
    for flag, (section, key) in _FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    if args.db is not None:
        overrides["db"] = args.db
    return settings_or_exit(args.config, overrides)


def analyse_store(args: argparse.Namespace) -> Analysis:
    """One recompute over the store, with the options of :func:`settings_of`."""
    return analyse_store_horizon(args)[0]


def analyse_store_horizon(args: argparse.Namespace) -> tuple[Analysis, Cells | None, Lineage]:
    """:func:`analyse_store`, with the horizon's cells and the lineage it used, for commands that
    look at single prompts after the statistics (explain, review): read once, not again."""
    options = statistics_options(settings_of(args))
    with EventStore(args.db or default_db()) as store:
        newest = store.newest_verdict_window()
        since = None if newest is None else options.kept_since(newest)
        cells = Cells.from_columns(store.verdict_columns(since, benchmark=args.benchmark))
        lineage = Lineage.from_events(store.events(PROVENANCE_TYPES))
    analysis = analyse(cells, lineage, options)
    return analysis, horizon_cells(cells, analysis), lineage


def envelope(schema: str, analysis: Analysis, generated_at: float | None = None) -> dict[str, Any]:
    """The keys every statistics JSON document starts with; ``generated_at`` is when the numbers
    were computed (now, for the CLI; the last recompute, for the service)."""
    when = datetime.now(UTC) if generated_at is None else datetime.fromtimestamp(generated_at, UTC)
    return {
        "schema": schema,
        "generated_at": when.isoformat(),
        "horizon": analysis.horizon_json(),
        "window_s": analysis.window_s,
    }


def report_document(analysis: Analysis, generated_at: float | None = None) -> dict[str, Any]:
    """``prefleak report --json`` and ``GET /v1/report``."""
    payload = envelope("prefleak.report/2", analysis, generated_at)
    payload.update({
        "ties": analysis.options.ties,
        "fdr": analysis.options.fdr,
        **analysis.tables_json(),
        "changes": [change.to_json() for change in analysis.changes],
    })  # fmt: skip
    return payload


def leaderboard_document(analysis: Analysis, generated_at: float | None = None) -> dict[str, Any]:
    """``prefleak leaderboard --json`` and ``GET /v1/leaderboard``."""
    payload = envelope("prefleak.leaderboard/1", analysis, generated_at)
    board = analysis.leaderboard
    payload.update(board.to_json() if board else {"reference": None, "rows": []})
    return payload


def biases_document(analysis: Analysis, generated_at: float | None = None) -> dict[str, Any]:
    """``prefleak biases --json`` and ``GET /v1/biases``."""
    payload = envelope("prefleak.biases/1", analysis, generated_at)
    payload["judges"] = [judge.to_json() for judge in analysis.biases]
    return payload


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    analysis = analyse_store(args)
    board = analysis.leaderboard
    if args.json:
        print(json.dumps(leaderboard_document(analysis), indent=2))
        return EXIT_OK
    if board is None:
        print("No verdicts in the horizon yet: nothing to rank.")
        return EXIT_OK
    print(f"Win rate against {board.reference} (ties count half), raw and with leakage removed:")
    header = ("rank", "model", "raw", "debiased", "raw rank", "moved", "comparisons")
    lines = [header]
    for row in board.rows:
        moved = row.raw_rank - row.debiased_rank
        lines.append((str(row.debiased_rank), row.model, f"{100 * row.raw_win_rate:.1f}%",
                      f"{100 * row.debiased_win_rate:.1f}%", str(row.raw_rank),
                      f"{moved:+d}" if moved else "", str(row.comparisons)))  # fmt: skip
    print(render(lines))
    return EXIT_OK


def _cmd_biases(args: argparse.Namespace) -> int:
    analysis = analyse_store(args)
    if args.json:
        print(json.dumps(biases_document(analysis), indent=2))
        return EXIT_OK
    if not analysis.biases:
        print("No verdicts in the horizon yet.")
        return EXIT_OK
    lines: list[tuple[str, ...]] = [("judge", "position (first wins)", "length (log-odds/doubling)",
              "self-preference (pp)", "human kappa", "error bias (pp)", "verdicts")]  # fmt: skip
    for judge in analysis.biases:
        lines.append((judge.judge, *(_estimate(e) for e in (
            judge.position_bias, judge.length_bias, judge.self_preference,
            judge.human_agreement, judge.error_bias)), str(judge.n_verdicts)))  # fmt: skip
    print(render(lines))
    print("\n'-' means the data cannot tell (docs/statistics.md says what each needs).")
    return EXIT_OK


def _estimate(estimate: Any) -> str:
    if estimate is None:
        return "-"
    if estimate.ci is None:
        return f"{estimate.value:.3g}"
    return f"{estimate.value:.3g} [{estimate.ci[0]:.3g}, {estimate.ci[1]:.3g}]"


def render(lines: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(line[c]) for line in lines) for c in range(len(lines[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


_LEADERBOARD_DETAILS = """\
Ranks candidates by their fitted strength against a reference model twice: as a naive
paired-comparison fit that ignores lineage (raw), and with every judge's leakage toward related
candidates, self-preference, position and length habits taken out (debiased). A rank that moves
is a rank that preference leakage bought. Model: docs/statistics.md.

example:
  prefleak leaderboard --horizon 7d --reference gpt-3.5-baseline"""

_BIASES_DETAILS = """\
Per judge, with 95 % prompt-bootstrap intervals: position bias (share of decisive verdicts won
by the response shown first; 0.5 = none), length bias (log-odds per doubling of the length
ratio), self-preference (points the judge gives its own answers above other judges), agreement
with humans (Cohen's kappa) and error bias toward related candidates versus humans. Read it
before blaming leakage: a judge that loves long answers is not necessarily leaking.

example:
  prefleak biases --json | jq '.judges[] | {judge, position_bias}'"""


def register(commands: Any) -> None:
    """Add ``leaderboard`` and ``biases`` to the CLI's subcommands."""
    for name, summary, details, handler in (
        ("leaderboard", "raw and debiased leaderboard", _LEADERBOARD_DETAILS, _cmd_leaderboard),
        ("biases", "position, length, self-preference and human agreement per judge",
         _BIASES_DETAILS, _cmd_biases),
    ):  # fmt: skip
        parser = commands.add_parser(
            name,
            help=summary,
            description=details,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_db_option(parser)
        add_statistics_options(parser)
        parser.set_defaults(handler=handler)
