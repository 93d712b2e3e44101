"""The ``fingerprint`` subcommand, added to the CLI by :func:`register` (docs/fingerprints.md).

Exit codes as in the rest of the CLI: 0 done (also when the data is too thin to infer anything:
the notes say so), 1 could not do the work (database unusable, probe extra not installed), 2 wrong
usage or an invalid ``--config``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from prefleak.config import add_db_option, default_db, settings_or_exit
from prefleak.store import EventStore

EXIT_OK, EXIT_FAILED = 0, 1

_DETAILS = """\
Trains a classifier (TF-IDF of character 2-5-grams, logistic regression) on the sampled texts of
every generator (`sample` events of datasets whose `dataset` event names a generator), reports how
well it tells the generators apart (cross-validated accuracy with a 95 % interval, per generator
recall, chance), then scores each candidate's sampled answers (`sample` events with `model`): the
mean probability per generator that they are in its style, with a bootstrap interval. Where a judge
of a candidate is a generator whose style the candidate carries (lower bound above
fingerprint.min_confidence and chance) and no declared provenance relates them, it infers an
`inheritance` relation; --record appends it as a `relation` event (deterministic id: recording
twice stores it once). Needs the probe extra (scikit-learn).

examples:
  prefleak fingerprint
  prefleak fingerprint --record --json | jq '.inferred'"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fingerprint`` to the CLI's subcommands."""
    summary = "Style fingerprints: which generator's style each candidate carries; infer relations."
    parser = commands.add_parser(
        "fingerprint",
        help=summary,
        description=f"{summary}\n\n{_DETAILS}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_db_option(parser)
    parser.add_argument(
        "--config", type=Path, help="YAML file whose fingerprint section to use (as for serve)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--record", action="store_true", help="append the inferred relations as relation events"
    )
    parser.set_defaults(handler=_cmd_fingerprint)


def _cmd_fingerprint(args: argparse.Namespace) -> int:
    from prefleak.fingerprint import FingerprintUnavailable, fingerprint, load_inputs, record

    settings = settings_or_exit(args.config).fingerprint
    with EventStore(args.db or default_db()) as store:
        inputs, lineage = load_inputs(store, settings)
        try:
            report = fingerprint(inputs, lineage, settings)
        except FingerprintUnavailable as exc:
            print(f"prefleak: {exc} (pip install 'prefleak[probe]')", file=sys.stderr)
            return EXIT_FAILED
        recorded = record(store, report) if args.record else None
    if args.json:
        data = report.to_json()
        if recorded is not None:
            data["recorded"] = {"accepted": recorded.accepted, "duplicate": recorded.duplicate,
                                "rejected": recorded.rejected}  # fmt: skip
        print(json.dumps(data, indent=2))
    else:
        print(render(report.to_json()))
        if recorded is not None:
            print(
                f"\nrecorded {recorded.accepted} relation event(s) "
                f"({recorded.duplicate} already stored, {recorded.rejected} rejected)"
            )
    return EXIT_OK


def _pct(interval: dict[str, float]) -> str:
    return f"{interval['value']:.2f} [{interval['low']:.2f}, {interval['high']:.2f}]"


def render(report: dict[str, object]) -> str:
    """The ``prefleak.fingerprint/1`` document as text: separability, lineage, inferences."""
    lines: list[str] = []
    separability = report["separability"]
    if isinstance(separability, dict):
        lines.append(
            f"separability ({separability['method']}, {separability['folds']}-fold CV over "
            f"{separability['texts']} texts): accuracy {_pct(separability['accuracy'])}, "
            f"chance {separability['chance']:.2f}"
        )
        for score in separability["per_generator"]:
            lines.append(
                f"  {score['generator']}: recall {_pct(score['recall'])} ({score['texts']} texts)"
            )
    candidates = report["candidates"]
    if isinstance(candidates, list) and candidates:
        lines.append(
            "\nstylistic lineage (mean probability per generator, 95 % interval; share of texts "
            "typical of the generator's):"
        )
        for style in candidates:
            typical = style["typicality"]
            ranked = ", ".join(
                f"{g} {_pct(p)} typical {typical[g]:.2f}" for g, p in style["probabilities"].items()
            )
            lines.append(f"  {style['candidate']} ({style['texts']} texts): {ranked}")
    inferred = report["inferred"]
    if isinstance(inferred, list):
        lines.append(f"\ninferred relations: {len(inferred) or 'none'}")
        for item in inferred:
            state = "new" if item["new"] else "already recorded"
            lines.append(
                f"  {item['judge']} -> {item['candidate']}: {item['kind']} (inferred), confidence "
                f"{item['confidence']:.2f}, probability {_pct(item['probability'])}, "
                f"chance {item['chance']:.2f}, typical {item['typicality']:.2f} ({state})"
            )
    notes = report["notes"]
    if isinstance(notes, list):
        lines.extend(f"note: {note}" for note in notes)
    return "\n".join(lines)
