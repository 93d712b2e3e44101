"""The ``explain`` subcommand: why a judge pair, a judge or a candidate shows leakage (on-call).

Runs the same recompute as ``report`` (:func:`prefleak.stats.commands.analyse_store_horizon`),
takes the per-prompt evidence from the horizon's cells it read, and prints
:func:`prefleak.explain.explain` as short sections or as ``prefleak.explain/1`` JSON
(docs/explain.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from prefleak.config import add_db_option, default_db
from prefleak.explain import SCHEMA, SubjectError, explain, parse_subject
from prefleak.stats.commands import (
    add_statistics_options,
    analyse_store_horizon,
    envelope,
    render,
)
from prefleak.store import EventStore

EXIT_OK, EXIT_USAGE = 0, 2


def _cmd_explain(args: argparse.Namespace) -> int:
    try:
        subject = parse_subject(args.judges, args.judge, args.candidate, args.benchmark)
    except SubjectError as exc:
        print(f"prefleak explain: {exc}", file=sys.stderr)
        return EXIT_USAGE
    analysis, cells, lineage = analyse_store_horizon(args)
    document = envelope(SCHEMA, analysis)
    with EventStore(args.db or default_db()) as store:
        document.update(
            explain(analysis, cells, lineage, subject, ties=analysis.options.ties, top=args.top,
                    texts=store.prompt_texts)
        )  # fmt: skip
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(render_text(document))
    return EXIT_OK


# -- text ------------------------------------------------------------------------------------


def _pct(value: Any, sign: bool = True) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.1f}%" if sign else f"{100 * value:.1f}%"


def _clip(text: str, width: int = 90) -> str:
    """One line of a stored text for the terminal (``--json`` has it whole)."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _q(value: Any) -> str:
    return "-" if value is None else f"{value:.2g}"


def _ci(low: Any, high: Any) -> str:
    return "-" if low is None or high is None else f"[{_pct(low)}, {_pct(high)}]"


def _rate(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _kappa(estimate: Any) -> str:
    return "-" if estimate is None else f"{estimate['value']:.2f}"


def render_text(doc: dict[str, Any]) -> str:
    """The sections an on-call person reads, the most important first."""
    out: list[str] = []
    lines: list[tuple[str, ...]]
    subject = doc["subject"]
    names = " and ".join(subject["names"])
    horizon = doc["horizon"]
    span = f"{horizon['start']} .. {horizon['end']}" if horizon else "no verdicts yet"
    out.append(
        f"prefleak explain {subject['kind']} {names}"
        f"{' on ' + subject['benchmark'] if subject['benchmark'] else ''} ({span})"
    )
    verdict = doc["verdict"]
    out += ["", "IS IT REAL", f"  {verdict['summary']}"]
    if verdict.get("rows"):
        out.append(
            f"  {verdict['significant_rows']} of {verdict['rows']} PLS rows significant "
            "(Benjamini-Hochberg q-values)"
        )
    for leak in doc["leakage"]:
        ci = leak["effect_pp_ci"]
        out.append(
            f"  leakage model, {leak['relation']}: {leak['effect_pp']:+.1f} win-rate points"
            f"{f' [{ci[0]:+.1f}, {ci[1]:+.1f}]' if ci else ''}, q {_q(leak['q_value'])}"
            f"{' *' if leak['significant'] else ''}"
        )
    if doc["rows"]:
        out += ["", "WHO (PLS rows, most significant first; * = significant)"]
        lines = [("judge i", "judge j", "S_i", "S_j", "PLS", "95% CI", "q", "MDE", "prompts")]
        for row in doc["rows"]:
            star = " *" if row["significant"] else ""
            lines.append(
                (
                    row["judge_i"],
                    row["judge_j"],
                    f"{row['student_i']} ({row['relation_i']})",
                    f"{row['student_j']} ({row['relation_j']})",
                    _pct(row["pls"]) + star,
                    _ci(row["ci_low"], row["ci_high"]),
                    _q(row["q_value"]),
                    _pct(row["min_detectable_pls"], False),
                    str(row["n_prompts"]),
                )
            )
        out += ["  " + line for line in render(lines).splitlines()]
    out += ["", "WHY RELATED"]
    if not doc["relations"]:
        out.append("  no relation: the lineage links no judge here to a candidate it judged")
    for rel in doc["relations"]:
        extra = "" if rel["in_rows"] else " (not in a PLS row)"
        out.append(
            f"  {rel['judge']} -> {rel['candidate']}: {rel['kind']} (share {rel['share']:g}){extra}"
        )
        out += [f"      {step}" for step in rel["path"]]
    out += ["", "SINCE WHEN"]
    since = verdict["since"]
    if since["alarms"]:
        out.append(
            f"  change alarm: started {since['started_at']}, detected "
            f"{since['detected_at']} ({since['alarms']} series)"
        )
    else:
        out.append("  no change alarm on these PLS or leakage series")
    for change in doc["changes"]:
        if change["alarm"] and change["subject"] not in ("pls", "leakage"):
            out.append(
                f"  also: {change['subject']} of {change.get('judge')} changed "
                f"{change['direction']} from {change['started_at']}"
            )
    timeline = doc["timeline"]["pls"]
    if timeline and timeline[0]["windows"]:
        top = timeline[0]
        out.append(
            f"  windows of {top['judge_i']} / {top['judge_j']}, "
            f"{top['student_i']} vs {top['student_j']}:"
        )
        lines = [("window", "PLS", "95% CI", "prompts")]
        for point in top["windows"]:
            lines.append(
                (
                    point["window"],
                    _pct(point["pls"]),
                    _ci(point["ci_low"], point["ci_high"]),
                    str(point["n_prompts"]),
                )
            )
        out += ["    " + line for line in render(lines).splitlines()]
    evidence = doc["evidence"]
    if doc["rows"]:
        out += ["", "TOP PROMPTS"]
    if doc["rows"] and not evidence["available"]:
        out.append(f"  {evidence['note']}")
    for row in evidence["rows"]:
        out.append(
            f"  {row['judge_i']} / {row['judge_j']}, {row['student_i']} vs "
            f"{row['student_j']}: {row['prompts_favouring']} of "
            f"{row['prompts_compared']} prompts favour, ranked by {row['ranked_by']}"
        )
        if row["prompts"]:
            lines = [
                (
                    "prompt",
                    "category",
                    "contribution",
                    "i->S_i",
                    "j->S_i",
                    "j->S_j",
                    "i->S_j",
                    "humans->S_i",
                )
            ]
            for p in row["prompts"]:
                lines.append(
                    (
                        p["prompt"],
                        p["category"] or "-",
                        f"{p['contribution']:+.2f}",
                        _rate(p["judge_i_for_student_i"]),
                        _rate(p["judge_j_for_student_i"]),
                        _rate(p["judge_j_for_student_j"]),
                        _rate(p["judge_i_for_student_j"]),
                        _rate(p["humans_for_student_i"]),
                    )
                )
            out += ["    " + line for line in render(lines).splitlines()]
            out += [
                f"    {p['prompt']}: {_clip(p['texts']['prompt'])}"
                for p in row["prompts"]
                if p.get("texts", {}).get("prompt")
            ]
    if evidence["available"] and evidence["rows"]:
        out.append(f"  ({evidence['note']})")
    categories = doc["categories"]["pls"]
    if categories:
        out += ["", "BY CATEGORY"]
        lines = [("category", "judge i", "judge j", "S_i", "S_j", "PLS", "95% CI", "prompts")]
        for c in categories:
            lines.append(
                (
                    c["category"],
                    c["judge_i"],
                    c["judge_j"],
                    c["student_i"],
                    c["student_j"],
                    _pct(c["pls"]) + (" *" if c["significant"] else ""),
                    _ci(c["ci_low"], c["ci_high"]),
                    str(c["n_prompts"]),
                )
            )
        out += ["  " + line for line in render(lines).splitlines()]
    out += ["", "OTHER BIASES (so leakage is not confused with them)"]
    if not doc["biases"]:
        out.append("  none measured for these judges")
    for bias in doc["biases"]:
        kappa = bias["human_agreement"]
        habits = "; ".join(bias["notes"]) or "no clear position, length or self-preference bias"
        out.append(f"  {bias['judge']}: human kappa {_kappa(kappa)}; {habits}")
    rec = doc["recommendation"]
    out += ["", "WHAT TO DO"]
    out += [f"  - {action}" for action in rec["actions"]]
    if rec["replacements"]:
        listed = ", ".join(
            f"{r['judge']} (kappa {_kappa(r['human_agreement'])})" for r in rec["replacements"][:5]
        )
        out.append(f"  unrelated judges, best human agreement first: {listed}")
    for moved in rec["without_judge"]:
        if "rows" not in moved:
            continue
        out.append(f"  leaderboard against {moved['reference']} without {moved['judge']}:")
        lines = [("model", "raw", "without", "change", "raw rank", "rank without")]
        for r in moved["rows"]:
            lines.append(
                (
                    r["model"],
                    _rate(r["raw_win_rate"]),
                    _rate(r["win_rate_without"]),
                    f"{r['change_pp']:+.1f}pp",
                    str(r["raw_rank"]),
                    str(r["rank_without"]),
                )
            )
        out += ["    " + line for line in render(lines).splitlines()]
    return "\n".join(out)


_DETAILS = """\
Explains preference leakage for one subject, most important first: is it real (q-value and the
smallest PLS the prompts could detect), who (the PLS rows of the subject), why the judges are
related to the students (lineage paths), since when (per-window PLS and change alarms), the
prompts that show it (per-prompt win rates; prefleak stores no texts), per category, the judges'
position/length/self-preference habits, and what to do (unrelated judges with the best human
agreement, and the leaderboard without the related judge). Sections: docs/explain.md.

Give exactly one of --judges, --judge or --candidate (exit 2 otherwise).

examples:
  prefleak explain --judges gpt-4o,gemini-1.5-pro
  prefleak explain --judge gpt-4o --benchmark alpacaeval
  prefleak explain --candidate student-gpt4o --json | jq .verdict"""


def register(commands: Any) -> None:
    """Add ``explain`` to the CLI's subcommands."""
    parser = commands.add_parser(
        "explain",
        help="why a judge pair, judge or candidate shows leakage (on-call)",
        description=_DETAILS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_db_option(parser)
    parser.add_argument(
        "--judges",
        metavar="I,J",
        action="append",
        help="a judge pair; give --judges twice (--judges I --judges J) when a name has a comma",
    )
    parser.add_argument("--judge", metavar="J", help="one judge, against every other judge")
    parser.add_argument("--candidate", metavar="C", help="one candidate (student)")
    parser.add_argument("--top", type=int, default=10, help="prompts of evidence per PLS row")
    add_statistics_options(parser)
    parser.set_defaults(handler=_cmd_explain)
