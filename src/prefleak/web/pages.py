"""HTML of the web view, from the documents the JSON API serves (pure).

Every string from a document goes through :func:`html.escape` here, or into the page's JSON data
block through :func:`script_json`; the page script (``/static/web.js``) draws the charts from
that block and escapes what it hands to plotly.js, which reads a little HTML in labels.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlencode

NULL_BIAS = {
    "position_bias": 0.5,
    "length_bias": 0.0,
    "self_preference": 0.0,
    "error_bias": 0.0,
}
"""Each judge habit's value for "no habit": a habit whose interval excludes it is flagged."""
_CHANGE_FIELDS = frozenset(
    {"subject", "alarm", "statistic", "direction", "started_at", "detected_at", "baseline",
     "n_windows"}
)  # fmt: skip
"""Keys of a change that are not labels of its series."""


def esc(value: object) -> str:
    """Text for HTML content and quoted attributes."""
    return html.escape(str(value), quote=True)


def script_json(document: Any) -> str:
    """JSON to place inside ``<script type="application/json">``.

    ``<``, ``>`` and ``&`` become ``\\u003c``-style escapes (JSON.parse reads them back), so no
    ``</script>``, ``<!--`` or ``]]>`` in a string can end the block or change how it is parsed;
    ``ensure_ascii`` escapes U+2028 and U+2029 as well.
    """
    text = json.dumps(document, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def explain_href(
    *, judges: Sequence[str] = (), judge: str = "", candidate: str = "", benchmark: str = ""
) -> str:
    """The explain page of one subject: a judge pair, a judge or a candidate (and a benchmark).

    A pair is ``judges=I,J``, or ``judges`` twice when a name has a comma."""
    query: list[tuple[str, str]] = []
    if judges:
        together = not any("," in name for name in judges)
        query += [("judges", ",".join(judges))] if together else [("judges", n) for n in judges]
    query += [(k, v) for k, v in (("judge", judge), ("candidate", candidate)) if v]
    query += [("benchmark", benchmark)] if benchmark else []
    return "/explain?" + urlencode(query)


def _link(text: str, href: str) -> str:
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def _pct(value: float | None, signed: bool = True) -> str:
    if value is None:
        return "–"
    return f"{100 * value:+.1f}%" if signed else f"{100 * value:.1f}%"


def _number(value: float | None, fmt: str = "{:.3g}") -> str:
    return "–" if value is None else fmt.format(value)


def _interval(low: float | None, high: float | None, fmt: str = "{:+.1f}") -> str:
    if low is None or high is None:
        return ""
    return f"[{fmt.format(low)}, {fmt.format(high)}]"


def _estimate(estimate: dict[str, Any] | None) -> str:
    if estimate is None:
        return "–"
    ci = estimate.get("ci")
    value = _number(estimate["value"])
    return value if ci is None else f"{value} {_interval(ci[0], ci[1], '{:.3g}')}"


def _excludes(estimate: dict[str, Any] | None, null: float) -> bool:
    """Whether an estimate's interval excludes ``null``: a habit the data clearly shows."""
    ci = None if estimate is None else estimate.get("ci")
    return ci is not None and not ci[0] <= null <= ci[1]


def _table(headers: Sequence[str], rows: Iterable[tuple[bool, Sequence[str]]]) -> str:
    """A table of HTML cells; a row flagged True is marked as alert-worthy."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        ("<tr class=alert>" if flagged else "<tr>") + "".join(f"<td>{c}</td>" for c in cells)
        + "</tr>"
        for flagged, cells in rows
    )  # fmt: skip
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _page(title: str, body: str, data: Any = None) -> str:
    """A whole page; with ``data`` (a document for the charts) it loads plotly.js and the page
    script, which draw them from the embedded block."""
    scripts, block = "", ""
    if data is not None:
        scripts = (
            '<script src="/static/plotly.min.js" defer></script>'
            '<script src="/static/web.js" defer></script>'
        )
        block = f'<script type="application/json" id="page-data">{script_json(data)}</script>'
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{esc(title)} · prefleak</title>"
        f'<link rel="stylesheet" href="/static/web.css">{scripts}'
        '</head><body><header><a href="/">prefleak</a> · preference leakage, read-only view'
        f"</header><main>{body}</main>{block}</body></html>\n"
    )


def error_page(message: str) -> str:
    """Why there is no page (the first recompute is not done, a bad subject)."""
    return _page("not available", f"<h1>Not available</h1><p class=error>{esc(message)}</p>")


# -- the overview ---------------------------------------------------------------------------------


def overview_page(analysis: dict[str, Any], diversity: dict[str, Any] | None) -> str:
    """What on-call looks at first: every finding of the last recompute (``GET /v1/pls``: the
    report with biases and leaderboard) worth an alert, each linking to the explain page of its
    judges or candidates; alert-worthy rows first, marked."""
    horizon = analysis["horizon"]
    when = (
        "no verdicts in the horizon yet" if horizon is None
        else f"horizon {horizon['start']} .. {horizon['end']}"
    )  # fmt: skip
    body = (
        "<h1>Preference leakage: overview</h1>"
        f"<p class=meta>Computed at {esc(analysis['generated_at'])}; {esc(when)}; "
        f"significance at FDR {esc(analysis['fdr'])}. "
        '<a href="/v1/report">report JSON</a> · <a href="/openapi.json">API</a></p>'
        + _pls_section(analysis["pls"])
        + _leakage_section(analysis["leakage"])
        + _changes_section(analysis["changes"])
        + _biases_section(analysis["biases"])
        + _leaderboard_section(analysis["leaderboard"])
        + _diversity_section(diversity)
    )
    return _page("overview", body)


def _q_order(row: dict[str, Any]) -> tuple[bool, float]:
    return (not row["significant"], row["q_value"] if row["q_value"] is not None else 2.0)


def _evidence_section(evidence: dict[str, Any]) -> str:
    """The prompts that drive each PLS row, most contributing first (docs/explain.md)."""
    parts = ["<section id=evidence><h2>Which prompts drive it</h2>"]
    if not evidence["available"] or not evidence["rows"]:
        parts.append(f"<p>{esc(evidence.get('note') or 'No prompt favours a related judge.')}</p>")
    for row in evidence["rows"]:
        parts.append(
            f"<h3>{esc(row['benchmark'])}: {esc(row['judge_i'])} vs {esc(row['judge_j'])} — "
            f"{row['prompts_favouring']} of {row['prompts_compared']} prompts favour "
            f"({esc(row['ranked_by'])})</h3>"
        )
        lines = [(False, (
            esc(p["prompt"]), esc((p.get("texts") or {}).get("prompt") or "–"),
            esc(p["category"] or "–"), _number(p["contribution"], "{:+.2f}"),
            _pct(p["judge_i_for_student_i"], signed=False),
            _pct(p["judge_j_for_student_i"], signed=False),
            _pct(p["judge_j_for_student_j"], signed=False),
            _pct(p["judge_i_for_student_j"], signed=False),
        )) for p in row["prompts"]]  # fmt: skip
        headers = ("prompt", "text", "category", "contribution", "i for S_i", "j for S_i",
                   "j for S_j", "i for S_j")  # fmt: skip
        parts.append(_table(headers, lines))
    return "".join(parts) + "</section>"


def _pls_section(rows: list[dict[str, Any]]) -> str:
    found = sum(row["significant"] for row in rows)
    lines = []
    for row in sorted(rows, key=_q_order):
        pair = (row["judge_i"], row["judge_j"])
        lines.append((row["significant"], (
            esc(row["benchmark"]),
            _link(f"{row['judge_i']} vs {row['judge_j']}", explain_href(judges=pair)),
            _link(row["student_i"], explain_href(candidate=row["student_i"]))
            + f" ({esc(row['relation_i'])})",
            _link(row["student_j"], explain_href(candidate=row["student_j"]))
            + f" ({esc(row['relation_j'])})",
            _pct(row["pls"]),
            esc(row["undefined"] or f"[{_pct(row['ci_low'])}, {_pct(row['ci_high'])}]"),
            _number(row["q_value"], "{:.2g}"), _pct(row["min_detectable_pls"], signed=False),
            str(row["n_prompts"]),
        )))  # fmt: skip
    headers = ("benchmark", "judges", "S_i", "S_j", "PLS", "95% CI", "q", "MDE", "prompts")
    return (
        f"<section id=pls><h2>PLS: {found} significant of {len(rows)} judge pairs</h2>"
        + (_table(headers, lines) if rows else "<p>No judge pair qualifies for a PLS.</p>")
        + "</section>"
    )


def _leakage_section(rows: list[dict[str, Any]]) -> str:
    lines = [(row["significant"], (
        esc(row["benchmark"]), esc(row["relation"]),
        f"{row['effect_pp']:+.1f} "
        + (_interval(*row["effect_pp_ci"]) if row["effect_pp_ci"] else ""),
        _number(row["q_value"], "{:.2g}"), str(row["n_verdicts"]),
    )) for row in sorted(rows, key=_q_order)]  # fmt: skip
    headers = ("benchmark", "relation", "effect (win-rate points, 95% CI)", "q", "verdicts")
    return (
        "<section id=leakage><h2>Leakage per relation kind (all judges)</h2>"
        + (_table(headers, lines) if rows else "<p>No leakage estimate yet.</p>")
        + "</section>"
    )


def _change_subject_link(change: dict[str, Any]) -> str:
    labels = {k: v for k, v in change.items() if k not in _CHANGE_FIELDS and v is not None}
    text = ", ".join(f"{k}={v}" for k, v in labels.items())
    if "judge_i" in labels and "judge_j" in labels:
        return _link(text, explain_href(judges=(labels["judge_i"], labels["judge_j"])))
    if "judge" in labels:
        return _link(text, explain_href(judge=labels["judge"]))
    return esc(text)


def _changes_section(changes: list[dict[str, Any]]) -> str:
    alarms = [change for change in changes if change["alarm"]]
    lines = [(True, (
        esc(change["subject"]), _change_subject_link(change), esc(change["direction"] or ""),
        esc(change["started_at"] or "?"), esc(change["detected_at"] or "?"),
    )) for change in alarms]  # fmt: skip
    headers = ("series", "of", "direction", "started", "detected")
    return (
        f"<section id=changes><h2>Change alarms: {len(alarms)} of {len(changes)} series</h2>"
        + (_table(headers, lines) if alarms else "<p>No series has shifted.</p>")
        + "</section>"
    )


def _biases_section(judges: list[dict[str, Any]]) -> str:
    lines = []
    for judge in judges:
        clear = [name for name, null in NULL_BIAS.items() if _excludes(judge[name], null)]
        lines.append((bool(clear), (
            _link(judge["judge"], explain_href(judge=judge["judge"])),
            esc(", ".join(name.replace("_", " ") for name in clear) or "none clear"),
            *(_estimate(judge[name]) for name in (*NULL_BIAS, "human_agreement")),
            str(judge["n_verdicts"]),
        )))  # fmt: skip
    lines.sort(key=lambda line: not line[0])
    flagged = sum(flag for flag, _ in lines)
    headers = ("judge", "clear habits", "position (first wins)", "length", "self-preference",
               "error bias", "human kappa", "verdicts")  # fmt: skip
    return (
        f"<section id=biases><h2>Judge habits: {flagged} of {len(judges)} judges show one</h2>"
        + (_table(headers, lines) if judges else "<p>No verdicts in the horizon yet.</p>")
        + "</section>"
    )


def _leaderboard_section(leaderboard: dict[str, Any] | None) -> str:
    rows = [] if leaderboard is None else leaderboard["rows"]
    moved = sum(row["rank_change"] != 0 for row in rows)
    lines = [(row["rank_change"] != 0, (
        str(row["debiased_rank"]), _link(row["model"], explain_href(candidate=row["model"])),
        _pct(row["raw_win_rate"], signed=False), _pct(row["debiased_win_rate"], signed=False),
        str(row["raw_rank"]), f"{row['rank_change']:+d}" if row["rank_change"] else "",
    )) for row in rows]  # fmt: skip
    headers = ("rank", "model", "raw win rate", "debiased", "raw rank", "moved")
    reference = None if leaderboard is None else leaderboard["reference"]
    return (
        f"<section id=leaderboard><h2>Leaderboard: {moved} ranks moved by leakage</h2>"
        + (f"<p class=meta>Win rates against {esc(reference)}.</p>" if reference else "")
        + (_table(headers, lines) if rows else "<p>Nothing to rank yet.</p>")
        + "</section>"
    )


def _diversity_section(diversity: dict[str, Any] | None) -> str:
    if diversity is None:
        return "<section id=diversity><h2>Diversity</h2><p>No diversity report yet.</p></section>"
    datasets = []
    for row in diversity["datasets"]:
        test = row["drift"]["test"] if row["drift"] else None
        p_value = None if test is None else test["p_value"]
        drifted = p_value is not None and p_value < 0.05
        datasets.append((drifted or bool(row["notes"]), (
            esc(row["dataset"]), esc(row["role"]), _number(row["generation"], "{}"),
            str(row["n_samples"]), _number(p_value), esc("; ".join(row["notes"])),
        )))  # fmt: skip
    coverage = [(True, (
        esc(row["eval"]), esc(row["production"]),
        _pct(row["uncovered"]["value"], signed=False),
        esc("; ".join(", ".join(c["terms"][:5]) for c in row["clusters"][:3])),
    )) for row in diversity["coverage"] if row["uncovered"]["value"] > 0]  # fmt: skip
    overlap = [(True, (
        esc(row["eval"]), esc(row["training"]), _pct(row["overlapping"]["value"], signed=False),
    )) for row in diversity["overlap"] if row["overlapping"]["value"] > 0]  # fmt: skip
    return (
        "<section id=diversity><h2>Diversity, drift and coverage</h2>"
        + (_table(("dataset", "role", "generation", "samples", "drift p", "notes"), datasets)
           if datasets else "<p>No samples stored yet.</p>")
        + ("<h3>Coverage gaps</h3>" + _table(
            ("eval", "production", "uncovered", "uncovered clusters (terms)"), coverage)
           if coverage else "")
        + ("<h3>Training data in eval sets</h3>"
           + _table(("eval", "training", "overlapping"), overlap) if overlap else "")
        + "</section>"
    )  # fmt: skip


# -- one explain subject --------------------------------------------------------------------------


def _describe(subject: dict[str, Any]) -> str:
    names = subject["names"]
    text = f"judges {names[0]} and {names[1]}" if subject["kind"] == "judges" else (
        f"{subject['kind']} {names[0]}")  # fmt: skip
    return text + (f" on {subject['benchmark']}" if subject["benchmark"] else "")


def explain_page(document: dict[str, Any]) -> str:
    """The ``prefleak.explain/1`` answer of one subject: the verdict, the charts (drawn by the
    page script from the embedded document) and the tables behind them."""
    title = _describe(document["subject"])
    verdict = document["verdict"]
    body = (
        f"<h1>Explain {esc(title)}</h1>"
        f"<p class=meta>Computed at {esc(document['generated_at'])}. "
        f'<a href="{esc("/v1" + _subject_href(document["subject"]))}">JSON</a></p>'
        f'<p class="verdict {esc(verdict["status"])}"><strong>{esc(verdict["status"])}'
        f"</strong>: {esc(verdict['summary'])}</p>"
        "<section><h2>Since when: PLS and leakage per window</h2>"
        "<div id=chart-pls class=chart></div><div id=chart-leakage class=chart></div></section>"
        "<section><h2>Why related: lineage</h2><div id=chart-lineage class=chart></div>"
        + _relations_table(document["relations"])
        + "</section><section><h2>Win rates: related judge against the other</h2>"
        "<div id=chart-winrates class=chart></div></section>"
        + _evidence_section(document["evidence"])
        + _pls_section(document["rows"])
        + _biases_section(document["biases"])
        + _actions(document["recommendation"])
    )
    return _page(f"explain {title}", body, document)


def _subject_href(subject: dict[str, Any]) -> str:
    """The explain page of an explain document's subject."""
    names, benchmark = subject["names"], subject["benchmark"] or ""
    if subject["kind"] == "judges":
        return explain_href(judges=names, benchmark=benchmark)
    return explain_href(**{subject["kind"]: names[0]}, benchmark=benchmark)


def _relations_table(relations: list[dict[str, Any]]) -> str:
    if not relations:
        return "<p>No lineage relates these judges to a candidate they judged.</p>"
    lines = [(relation["in_rows"], (
        _link(relation["judge"], explain_href(judge=relation["judge"])),
        _link(relation["candidate"], explain_href(candidate=relation["candidate"])),
        esc(relation["kind"]) + _inferred(relation),
        f"{relation['share']:.0%}", "<br>".join(esc(step) for step in relation["path"]),
    )) for relation in relations]  # fmt: skip
    return _table(("judge", "candidate", "relation", "share", "path"), lines)


def _inferred(relation: dict[str, Any]) -> str:
    """The mark of a relation inferred (a ``relation`` event), not declared by provenance."""
    if relation.get("source") != "inferred":
        return ""
    return f" (inferred, confidence {relation['confidence']:.2f})"


def _actions(recommendation: dict[str, Any]) -> str:
    actions = "".join(f"<li>{esc(action)}</li>" for action in recommendation["actions"])
    return f"<section><h2>What to do</h2><ul>{actions}</ul></section>"
