"""The ``review export`` subcommand: comparisons a human label would help most, as JSONL.

Runs the same recompute as ``report`` (:func:`prefleak.stats.commands.analyse_store_horizon`)
and ranks the comparisons of the horizon's cells it read with
:func:`prefleak.review.review_queue` (docs/review.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from prefleak.config import add_db_option, default_db
from prefleak.review import SCHEMA, review_queue
from prefleak.stats.commands import (
    add_statistics_options,
    analyse_store_horizon,
    envelope,
    render,
)
from prefleak.store import EventStore, PromptTexts

EXIT_OK, EXIT_USAGE = 0, 2
DEFAULT_LIMIT = 20


def _cmd_export(args: argparse.Namespace) -> int:
    if args.limit < 0:
        print("prefleak review export: --limit must be 0 (all) or more", file=sys.stderr)
        return EXIT_USAGE
    analysis, cells, lineage = analyse_store_horizon(args)
    items = [] if cells is None else review_queue(cells, lineage)
    if args.limit:
        items = items[: args.limit]
    head = envelope(SCHEMA, analysis)
    with EventStore(args.db or default_db()) as store:
        texts = store.prompt_texts({(item.benchmark, item.prompt_id) for item in items})
    lines = [
        {**item.to_json(rank), **_extra(head),
         "texts": texts.get((item.benchmark, item.prompt_id), PromptTexts()).to_json(
             item.model_a, item.model_b)}
        for rank, item in enumerate(items, 1)
    ]  # fmt: skip
    if args.out is None and not args.json:
        print(_table(lines))
        return EXIT_OK
    text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
    if args.out in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {len(lines)} comparisons to {args.out}", file=sys.stderr)
    return EXIT_OK


def _extra(head: dict[str, Any]) -> dict[str, Any]:
    """The envelope's keys after the item's (``schema`` is the item's own)."""
    return {key: value for key, value in head.items() if key != "schema"}


def _table(lines: list[dict[str, Any]]) -> str:
    if not lines:
        return "No comparison without a human verdict in the horizon: nothing to review."
    rows: list[tuple[str, ...]] = [("rank", "score", "benchmark", "prompt", "a", "b", "why")]
    for line in lines:
        rows.append(
            (
                str(line["rank"]),
                f"{line['score']:.2f}",
                line["benchmark"],
                line["prompt_id"],
                line["model_a"],
                line["model_b"],
                "; ".join(line["reasons"]) or "-",
            )
        )
    return render(rows) + "\n\n--out FILE (or -) writes the JSONL items (docs/review.md)."


_EXPORT_DETAILS = """\
Ranks the horizon's comparisons (benchmark, prompt, candidate pair) that no human judged yet by
how much a human label would move the leakage estimate: a judge related to one candidate that
disagrees with the unrelated judges (weighted by the relation share) counts most, then judges
that split, then a margin near a tie. Prints the top N; --out writes one prefleak.review/1 JSON
object per line, each with a ready-to-fill human `verdict` event (docs/review.md).

example:
  prefleak review export --limit 50 --out queue.jsonl"""


def register(commands: Any) -> None:
    """Add ``review`` (with ``export``) to the CLI's subcommands."""
    review = commands.add_parser(
        "review",
        help="comparisons where a human label would help most",
        description="On-call review: which comparisons to send to human annotators.",
    )
    actions = review.add_subparsers(dest="review_command", metavar="ACTION", required=True)
    export = actions.add_parser(
        "export",
        help="the comparisons to label, ranked, as JSONL",
        description=_EXPORT_DETAILS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_db_option(export)
    add_statistics_options(export)
    export.add_argument("--limit", type=int, default=DEFAULT_LIMIT, metavar="N",
                        help="comparisons to export (0: all)")  # fmt: skip
    export.add_argument("--out", metavar="FILE", help="write JSONL here (- for stdout)")
    export.set_defaults(handler=_cmd_export)
