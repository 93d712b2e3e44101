"""The ``check`` and ``judges`` subcommands, added to the CLI by :func:`register`.

``check`` is a gate to run before an evaluation: exit 0 when no judge is related to a candidate at
or above ``--min-severity``, 1 when one is (or the store cannot be read, as for every command), 2
for wrong usage (including a ``--db`` that does not exist, so a typo never passes the gate).
``judges`` proposes a panel and exits 0 even when it finds fewer judges than asked. Both read the
relations from the stored provenance events (docs/check.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from prefleak.check import (
    DEFAULT_PANEL_SIZE,
    SEVERITIES,
    CheckResult,
    Panel,
    Severity,
    check,
    parse_severity,
    propose_panel,
)
from prefleak.config import CheckSettings, add_db_option, default_db
from prefleak.lineage import Lineage
from prefleak.store import EventStore

EXIT_OK, EXIT_BLOCKED, EXIT_USAGE = 0, 1, 2

_CHECK_DETAILS = """\
Lists every relation of each judge to each candidate, as prefleak's stored provenance events
(model, dataset, training) show it: its kind (same_model, inheritance, same_series,
same_family), the share of the candidate's training data behind it, the path that makes them
related, and the severity Li et al. 2025 lead one to expect (same_model and inheritance high,
same_series medium, same_family low). Models no provenance event mentions are listed as
"unknown to prefleak: no provenance seen": they cannot be checked, which is worth a look.

exit status: 0 no relation at or above --min-severity, 1 at least one (or the store could not
be read), 2 wrong usage (or no store at --db).

example (a CI step before the evaluation runs; exit 1 fails the job):
  prefleak check --db provenance.db --judge gpt-4o --judge claude-3.5-sonnet \\
      --candidates "$CANDIDATES" --min-severity medium

  # or keep the evidence as a build artifact and list what blocked:
  prefleak check --judge gpt-4o --candidates "$CANDIDATES" --json > check.json; status=$?
  jq -r '.relations[] | select(.blocking) | "\\(.judge) -> \\(.candidate): \\(.kind)"' check.json
  exit $status"""

_JUDGES_DETAILS = """\
Proposes judges for the candidates: models prefleak knows of (not candidates, not people), each
unrelated to every candidate and to every other judge proposed, so no two share a family. Says
why each other model was left out, and why when fewer than --size are available (exit 0 even
then).

example:
  prefleak judges --for student-a,student-b --size 3 --json | jq -r '.judges[]'"""


def _names(value: str) -> list[str]:
    """``A,B,C`` as a list; an empty list is a usage error."""
    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected model ids separated by commas, got {value!r}")
    return names


def _size(value: str) -> int:
    try:
        size = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if size < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {size}")
    return size


def _flat(groups: list[list[str]]) -> list[str]:
    return list(dict.fromkeys(name for group in groups for name in group))


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``check`` and ``judges`` to the CLI's subcommands."""
    formatter = argparse.RawDescriptionHelpFormatter
    summary = "Before an evaluation: fail when a judge is related to a candidate."
    description = f"{summary}\n\n{_CHECK_DETAILS}"
    parser = commands.add_parser(
        "check", help=summary, description=description, formatter_class=formatter
    )
    add_db_option(parser)
    parser.add_argument(
        "--judge",
        dest="judges",
        action="append",
        required=True,
        type=_names,
        metavar="J",
        help="a judge model; repeat it (or give J,K) for a panel",
    )
    parser.add_argument(
        "--candidates",
        action="append",
        required=True,
        type=_names,
        metavar="A,B,...",
        help="the models to be evaluated, separated by commas",
    )
    parser.add_argument(
        "--min-severity",
        choices=SEVERITIES,
        default=CheckSettings().min_severity,
        help="relations of this severity or above fail the check (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=_cmd_check)

    summary = "Propose judges unrelated to the candidates, each from a different family."
    description = f"{summary}\n\n{_JUDGES_DETAILS}"
    parser = commands.add_parser(
        "judges", help=summary, description=description, formatter_class=formatter
    )
    add_db_option(parser)
    parser.add_argument(
        "--for",
        dest="candidates",
        action="append",
        required=True,
        type=_names,
        metavar="A,B,...",
        help="the models to be evaluated, separated by commas",
    )
    parser.add_argument(
        "--size",
        type=_size,
        default=DEFAULT_PANEL_SIZE,
        metavar="N",
        help="judges wanted (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=_cmd_judges)


def _lineage(db: Path | None) -> Lineage | None:
    """The stored provenance, or None after saying on stderr that there is no store there."""
    from prefleak.cli import load_lineage  # cli.py imports this module: import when run

    path = db or default_db()
    if not path.exists():
        print(
            f"prefleak: no event store at {path} (give --db or set PREFLEAK_DB; "
            "`prefleak ingest` creates one)",
            file=sys.stderr,
        )
        return None
    with EventStore(path) as store:
        return load_lineage(store)


def _cmd_check(args: argparse.Namespace) -> int:
    lineage = _lineage(args.db)
    if lineage is None:
        return EXIT_USAGE
    min_severity = parse_severity(args.min_severity)
    result = check(lineage, _flat(args.judges), _flat(args.candidates))
    if args.json:
        for warning in result.warnings():
            print(f"prefleak: warning: {warning}", file=sys.stderr)
        print(json.dumps(result.to_json(min_severity), indent=2))
    else:
        print(render_check(result, min_severity))
    return EXIT_BLOCKED if result.blocking(min_severity) else EXIT_OK


def _cmd_judges(args: argparse.Namespace) -> int:
    lineage = _lineage(args.db)
    if lineage is None:
        return EXIT_USAGE
    panel = propose_panel(lineage, _flat(args.candidates), args.size)
    if args.json:
        print(json.dumps(panel.to_json(), indent=2))
    else:
        print(render_panel(panel))
    return EXIT_OK


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def render_check(result: CheckResult, min_severity: Severity) -> str:
    """The readable answer of ``prefleak check``."""
    lines = []
    if not result.findings:
        lines.append(
            f"no relation found between judge(s) {', '.join(result.judges)} and candidate(s) "
            f"{', '.join(result.candidates)}"
        )
    else:
        rows = [("judge", "candidate", "relation", "share", "severity", "expected PLS", "source",
                 "why")]  # fmt: skip
        for f in result.findings:
            rows.append((
                f.judge, f.candidate, f.relation.kind.value, f"{100 * f.relation.share:.3g}%",
                f.severity + (" *" if f.at_least(min_severity) else ""), f.expectation.label,
                f.source, "; ".join(f.relation.path),
            ))  # fmt: skip
        lines.extend(_table(rows))
    lines.extend(f"warning: {warning}" for warning in result.warnings())
    blocking = result.blocking(min_severity)
    lines.append("")
    if blocking:
        lines.append(
            f"FAIL: {len(blocking)} relation(s) at or above {min_severity} severity (marked *). "
            "Replace the judge (`prefleak judges --for ...` proposes some) or accept the risk "
            "with a higher --min-severity."
        )
    else:
        below = len(result.findings)
        lines.append(
            f"OK: no relation at or above {min_severity} severity"
            + (f" ({below} below it)." if below else ".")
        )
    return "\n".join(lines)


def render_panel(panel: Panel) -> str:
    """The readable answer of ``prefleak judges``."""
    lines = [f"proposed judges for {', '.join(panel.candidates)} ({panel.size} asked):"]
    lines.extend(f"  {n}. {judge}" for n, judge in enumerate(panel.judges, 1))
    if not panel.judges:
        lines.append("  (none)")
    if panel.alternates:
        lines.append(f"alternates: {', '.join(panel.alternates)}")
    if panel.excluded:
        lines.append("not proposed:")
        lines.extend(f"  {e.model}: {e.reason}" for e in panel.excluded)
    lines.extend(f"note: {note}" for note in panel.notes)
    return "\n".join(lines)
