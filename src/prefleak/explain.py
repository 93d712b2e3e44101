"""Why a judge pair, a judge or a candidate shows preference leakage: the on-call view (pure).

Takes one recompute (:class:`~prefleak.stats.analysis.Analysis`), the verdict projection it was
computed from (:class:`~prefleak.stats.cells.Cells`, optional: without it there is no per-prompt
evidence and no leaderboard without the judge) and the :class:`~prefleak.lineage.Lineage`, and
answers, most important first: is it real (q-value, minimum detectable effect), who (the PLS rows
of the subject), why they are related (lineage paths), since when (windows and change alarms),
which prompts show it, per category, the judges' other habits, and what to do (docs/explain.md).
The caller adds the envelope of :func:`prefleak.stats.commands.envelope` with :data:`SCHEMA`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from prefleak.check import propose_panel
from prefleak.lineage import Lineage, Relation
from prefleak.pls import TiePolicy, rate
from prefleak.report import PLSRow
from prefleak.segments import NO_LABEL
from prefleak.stats.analysis import POOLED, Analysis, LeakageRow, ScoredPLS
from prefleak.stats.biases import JudgeBiases
from prefleak.stats.cells import Cells
from prefleak.stats.estimate import round_sig
from prefleak.stats.leakage import fit_leakage
from prefleak.store import PromptTexts

SCHEMA = "prefleak.explain/1"
TOP_PROMPTS = 10
"""Prompts of evidence per PLS row."""
EVIDENCE_ROWS = 3
"""PLS rows that get per-prompt evidence (the most significant first)."""
NO_TEXT_NOTE = (
    "no texts: the verdicts of these prompts carried none (or only their hashes); prompts are "
    "identified by benchmark and prompt id, look the texts up in the evaluation's own records"
)
TextLookup = Callable[[Collection[tuple[str, str]]], Mapping[tuple[str, str], PromptTexts]]
"""(benchmark, prompt id) -> the texts verdicts carried for them."""
TEXTS_NOTE = (
    "texts are those the verdicts carried (prompt, response_a, response_b); null where none was "
    "stored or only its hash (privacy.store_texts: hashed)"
)
NO_CELLS_NOTE = (
    "per-prompt evidence needs the verdict projection, which this answer was computed without; "
    "run `prefleak explain` against the store for it"
)

SubjectKind = Literal["judges", "judge", "candidate"]
RowKey = tuple[str, str, str, str, str]
FloatArray = npt.NDArray[np.float64]


class SubjectError(ValueError):
    """The subject is not exactly one of a judge pair, a judge or a candidate."""


@dataclass(frozen=True)
class Subject:
    """What to explain: a judge pair, one judge or one candidate, optionally on one benchmark."""

    kind: SubjectKind
    names: tuple[str, ...]
    benchmark: str | None = None

    def involves(self, row: PLSRow) -> bool:
        if self.benchmark is not None and row.benchmark not in (self.benchmark, POOLED):
            return False
        if self.kind == "judges":
            return {row.judge_i, row.judge_j} == set(self.names)
        if self.kind == "judge":
            return self.names[0] in (row.judge_i, row.judge_j)
        return self.names[0] in (row.student_i, row.student_j)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "names": list(self.names), "benchmark": self.benchmark}

    def describe(self) -> str:
        if self.kind == "judges":
            text = f"judges {self.names[0]} and {self.names[1]}"
        else:
            text = f"{self.kind} {self.names[0]}"
        return text + (f" on {self.benchmark}" if self.benchmark else "")


def parse_subject(
    judges: Sequence[str] | None,
    judge: str | None,
    candidate: str | None,
    benchmark: str | None = None,
) -> Subject:
    """The subject from ``judges`` (``["I,J"]``, or ``["I", "J"]`` where a name has a comma),
    ``judge=J`` or ``candidate=C`` (exactly one given)."""
    given = [value for value in (judges, judge, candidate) if value is not None]
    if len(given) != 1:
        raise SubjectError("give exactly one subject: judges (I,J), judge (J) or candidate (C)")
    bench = benchmark.strip() if benchmark else None
    if judges is not None:
        parts = judges[0].split(",") if len(judges) == 1 else judges
        names = tuple(name.strip() for name in parts)
        if len(names) != 2 or not all(names) or names[0] == names[1]:
            shown = ",".join(judges) if len(judges) == 1 else list(judges)
            raise SubjectError(
                f"judges needs two different names, as I,J (or judges given twice when a name"
                f" has a comma), not {shown!r}"
            )
        return Subject("judges", names, bench)
    name = (judge if judge is not None else candidate or "").strip()
    if not name:
        raise SubjectError("the judge or candidate name is empty")
    return Subject("judge" if judge is not None else "candidate", (name,), bench)


# -- small helpers ---------------------------------------------------------------------------


def _num(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round_sig(value) if digits == 6 else round(value, digits)


def _key(row: PLSRow) -> RowKey:
    return (row.benchmark, row.judge_i, row.judge_j, row.student_i, row.student_j)


def _key_json(key: RowKey) -> dict[str, str]:
    return dict(
        zip(("benchmark", "judge_i", "judge_j", "student_i", "student_j"), key, strict=True)
    )


def _order(scored: ScoredPLS) -> tuple[float, float, RowKey]:
    """Most significant first: q-value, then the larger PLS."""
    q = scored.test.q_value
    pls = scored.row.pls
    return (
        q if q is not None else math.inf,
        -(pls if pls is not None else -math.inf),
        _key(scored.row),
    )


def _relation_json(judge: str, candidate: str, relation: Relation) -> dict[str, Any]:
    return {
        "judge": judge,
        "candidate": candidate,
        "kind": relation.kind.value,
        "share": relation.share,
        "source": relation.source,  # "inferred" for a relation event's (docs/fingerprints.md)
        "confidence": relation.confidence,
        "path": list(relation.path),
    }


def _pls_point(scored: ScoredPLS) -> dict[str, Any]:
    row = scored.row
    return {
        "pls": _num(row.pls),
        "ci_low": _num(row.ci_low),
        "ci_high": _num(row.ci_high),
        "n_prompts": row.n_prompts,
        "q_value": _num(scored.test.q_value),
        "significant": scored.test.significant,
        "min_detectable_pls": _num(scored.test.min_detectable),
        "undefined": row.undefined,
    }


def _leak_point(row: LeakageRow) -> dict[str, Any]:
    full = row.to_json()
    return {
        key: full[key]
        for key in (
            "relation",
            "log_odds",
            "log_odds_ci",
            "effect_pp",
            "effect_pp_ci",
            "q_value",
            "significant",
            "min_detectable_log_odds",
            "n_verdicts",
        )
    }


# -- the explanation -------------------------------------------------------------------------


def explain(
    analysis: Analysis,
    cells: Cells | None,
    lineage: Lineage,
    subject: Subject,
    *,
    ties: TiePolicy = "loss",
    top: int = TOP_PROMPTS,
    texts: TextLookup | None = None,
) -> dict[str, Any]:
    """Every section of the ``prefleak.explain/1`` document but the envelope (docs/explain.md).

    ``texts`` (:meth:`prefleak.store.EventStore.prompt_texts`) adds the stored texts of the
    evidence prompts; this module does no I/O of its own."""
    scored = [s for s in analysis.pls if subject.involves(s.row)]
    horizon = sorted((s for s in scored if s.slice == "horizon"), key=_order)
    keys = [_key(s.row) for s in horizon]
    wanted = set(keys)
    judges = _subject_judges(subject, horizon, analysis, lineage, cells)
    relations = _relations(subject, horizon, analysis, lineage, cells, judges)
    seen = {b.judge for b in analysis.biases} | set(
        () if analysis.fit is None else analysis.fit.comparisons
    )
    unknown = [name for name in subject.names if name not in seen]
    kinds = sorted({r["kind"] for r in relations})
    in_rows = {s for scored in horizon for s in (scored.row.student_i, scored.row.student_j)}
    candidates = sorted(in_rows or {r["candidate"] for r in relations})
    leak_horizon = [
        r
        for r in analysis.leakage
        if r.slice == "horizon" and r.benchmark == POOLED and r.relation in kinds
    ]
    changes = _changes(analysis, wanted, kinds, judges)
    document: dict[str, Any] = {
        "subject": subject.to_json(),
        "verdict": _verdict(subject, horizon, leak_horizon, relations, changes, unknown),
        "rows": [s.to_json() for s in horizon],
        "relations": relations,
        "timeline": {
            "pls": [
                {
                    **_key_json(key),
                    "windows": [
                        {"window": s.to_json()["window"], **_pls_point(s)}
                        for s in sorted(scored, key=lambda s: s.window or 0)
                        if s.slice == "window" and _key(s.row) == key
                    ],
                }
                for key in keys
            ],
            "leakage": {
                kind: [
                    {"window": r.to_json()["window"], **_leak_point(r)}
                    for r in sorted(analysis.leakage, key=lambda r: r.window or 0)
                    if r.slice == "window" and r.relation == kind
                ]
                for kind in kinds
            },
        },
        "changes": changes,
        "evidence": _with_texts(
            _evidence(
                cells,
                lineage,
                subject,
                horizon,
                None if cells is None else cells.prompts,
                ties,
                top,
            ),
            texts,
        ),
        "categories": {
            "pls": [
                {**_key_json(_key(s.row)), "category": s.category, **_pls_point(s)}
                for s in scored
                if s.slice == "breakdown" and s.category is not None and _key(s.row) in wanted
            ],
            "leakage": [
                {"category": r.category, **_leak_point(r)}
                for r in analysis.leakage
                if r.slice == "breakdown" and r.category is not None and r.relation in kinds
            ],
        },
        "biases": _biases(analysis.biases, judges),
        "leakage": [_leak_point(r) for r in leak_horizon],
    }
    document["recommendation"] = _recommendation(
        analysis, cells, lineage, subject, judges, candidates, relations
    )
    return document


def _models_judged(cells: Cells | None, judge: str, analysis: Analysis) -> list[str]:
    """Candidates the judge compared in the cells; without cells, every candidate of the fit."""
    if cells is None:
        return sorted(analysis.fit.comparisons) if analysis.fit is not None else []
    code = cells.model_code(judge)
    if code is None:
        return []
    mask = cells.judge == code
    found = np.unique(np.concatenate([cells.lo[mask], cells.hi[mask]]))
    return [cells.models[c] for c in found.tolist()]


def _subject_judges(
    subject: Subject,
    rows: list[ScoredPLS],
    analysis: Analysis,
    lineage: Lineage,
    cells: Cells | None,
) -> list[str]:
    """The judges whose relations and habits matter: the subject's, or a candidate's related."""
    if subject.kind != "candidate":
        return list(subject.names)
    candidate = subject.names[0]
    found = {s.row.judge_i if s.row.student_i == candidate else s.row.judge_j for s in rows}
    known = {b.judge for b in analysis.biases}
    if cells is not None:
        known.update(cells.models[c] for c in np.unique(cells.judge).tolist())
    found.update(j for j in known if lineage.relation(j, candidate).related)
    return sorted(j for j in found if not lineage.is_human(j))


def _relations(
    subject: Subject,
    rows: list[ScoredPLS],
    analysis: Analysis,
    lineage: Lineage,
    cells: Cells | None,
    judges: list[str],
) -> list[dict[str, Any]]:
    """Every relation behind the rows, then the subject judges' others, with ``in_rows``."""
    pairs: dict[tuple[str, str], bool] = {}
    for s in rows:
        pairs[(s.row.judge_i, s.row.student_i)] = True
        pairs[(s.row.judge_j, s.row.student_j)] = True
    for judge in judges:
        candidates = (
            [subject.names[0]]
            if subject.kind == "candidate"
            else _models_judged(cells, judge, analysis)
        )
        for candidate in candidates:
            pairs.setdefault((judge, candidate), False)
    found = []
    for (judge, candidate), in_rows in pairs.items():
        if subject.kind == "candidate" and candidate != subject.names[0]:
            continue
        relation = lineage.relation(judge, candidate)
        if relation.related:
            found.append({**_relation_json(judge, candidate, relation), "in_rows": in_rows})
    found.sort(key=lambda r: (not r["in_rows"], r["judge"], r["candidate"]))
    return found


def _changes(
    analysis: Analysis, keys: set[RowKey], kinds: list[str], judges: list[str]
) -> list[dict[str, Any]]:
    found = []
    for change in analysis.changes:
        labels = change.labels
        if change.subject == "pls":
            key = tuple(
                labels.get(k, "")
                for k in ("benchmark", "judge_i", "judge_j", "student_i", "student_j")
            )
            keep = key in keys
        elif change.subject == "leakage":
            keep = labels.get("relation") in kinds
        else:
            keep = labels.get("judge") in judges
        if keep:
            found.append(change.to_json())
    found.sort(key=lambda c: (not c["alarm"], c["subject"] != "pls", c["started_at"] or ""))
    return found


def _verdict(
    subject: Subject,
    rows: list[ScoredPLS],
    leakage: list[LeakageRow],
    relations: list[dict[str, Any]],
    changes: list[dict[str, Any]],
    unknown: list[str],
) -> dict[str, Any]:
    """The headline: is it real, who, since when; ``status`` one of ``significant``,
    ``not_significant``, ``undefined``, ``no_rows`` or ``no_relation``."""
    alarms = [c for c in changes if c["alarm"] and c["subject"] in ("pls", "leakage")]
    since = {
        "started_at": min((c["started_at"] for c in alarms if c["started_at"]), default=None),
        "detected_at": min((c["detected_at"] for c in alarms if c["detected_at"]), default=None),
        "alarms": len(alarms),
    }
    base: dict[str, Any] = {"row": None, "since": since}
    significant_kinds = [r.relation for r in leakage if r.test.significant and r.log_odds > 0]
    base["significant_relation_kinds"] = significant_kinds
    base["unknown"] = unknown
    if not relations and unknown:
        return {
            **base,
            "status": "no_relation",
            "related": False,
            "significant": False,
            "summary": f"no verdicts in the horizon name {', '.join(unknown)}: nothing to "
            "explain (check the spelling with `prefleak status`)",
        }
    if not relations:
        return {
            **base,
            "status": "no_relation",
            "related": False,
            "significant": False,
            "summary": f"no relation: {_no_relation(subject)}; preference leakage through "
            "lineage cannot arise, see biases for other habits",
        }
    if not rows:
        pairs = ", ".join(f"{r['judge']}→{r['candidate']} ({r['kind']})" for r in relations[:4])
        return {
            **base,
            "status": "no_rows",
            "related": True,
            "significant": False,
            "summary": f"related ({pairs}) but no PLS row qualifies: no judge pair where "
            "each judge is related to a student the other is not, compared on the "
            "same prompts; the leakage model per relation kind still applies",
        }
    best = rows[0]
    row, test = best.row, best.test
    who = (
        f"{row.judge_i} favours {row.student_i} ({row.relation_i}) and {row.judge_j} favours "
        f"{row.student_j} ({row.relation_j}) on {row.benchmark}"
    )
    details = {
        "row": {**_key_json(_key(row)), **_pls_point(best)},
        "related": True,
        "significant": test.significant,
        "significant_rows": sum(1 for s in rows if s.test.significant),
        "rows": len(rows),
    }
    if row.pls is None:
        status, summary = "undefined", f"PLS undefined ({row.undefined}) for {who}"
    elif test.significant:
        status = "significant"
        summary = f"real: PLS {100 * row.pls:+.1f}% (q {test.q_value:.2g}, significant), {who}"
    else:
        status = "not_significant"
        mde = test.min_detectable
        summary = (
            f"not shown: PLS {100 * row.pls:+.1f}% (q "
            f"{test.q_value if test.q_value is None else format(test.q_value, '.2g')}); "
            f"these {row.n_prompts} prompts could only detect a PLS of "
            f"{'?' if mde is None else format(100 * mde, '.1f') + '%'} or more, so this is "
            "not evidence of no leakage"
        )
    if significant_kinds and status != "significant":
        summary += (
            f"; the leakage model over all judges finds {', '.join(significant_kinds)} "
            "leakage significant"
        )
    if since["started_at"]:
        summary += f"; change alarm since {since['started_at']}"
    return {**base, **details, "status": status, "summary": summary}


def _no_relation(subject: Subject) -> str:
    if subject.kind == "judges":
        return (
            f"neither {subject.names[0]} nor {subject.names[1]} is related to a candidate it judged"
        )
    if subject.kind == "judge":
        return f"{subject.names[0]} is not related to any candidate it judged"
    return f"no judge is related to {subject.names[0]}"


# -- evidence --------------------------------------------------------------------------------


def _rates(cells: Cells, mask: npt.NDArray[np.bool_], student: int, ties: TiePolicy) -> FloatArray:
    """Per prompt code, the win rate of ``student`` in the masked cells (NaN: not judged)."""
    n = cells.n_prompts
    prompt, outcomes = cells.prompt[mask], cells.outcomes[mask]
    own = np.where((cells.lo[mask] == student)[:, None], outcomes, outcomes[:, [1, 0, 2]])
    wins, losses, tied = (
        np.bincount(prompt, own[:, k], minlength=n).astype(np.float64) for k in range(3)
    )
    return rate(wins, losses, tied, ties)


def _evidence(
    cells: Cells | None,
    lineage: Lineage,
    subject: Subject,
    rows: list[ScoredPLS],
    names: Sequence[str] | None,
    ties: TiePolicy,
    top: int,
) -> dict[str, Any]:
    if cells is None:
        return {"available": False, "texts": False, "note": NO_CELLS_NOTE, "rows": []}
    humans = np.array([lineage.is_human(m) for m in cells.models], dtype=bool)
    category = np.full(cells.n_prompts, NO_LABEL, dtype=np.int64)
    category[cells.prompt] = cells.category
    found = []
    for scored in rows[:EVIDENCE_ROWS]:
        row = scored.row
        codes = [
            cells.model_code(n) for n in (row.judge_i, row.judge_j, row.student_i, row.student_j)
        ]
        if row.benchmark not in cells.benchmarks or any(c is None for c in codes):
            continue
        i, j, s_i, s_j = (int(c) for c in codes if c is not None)
        pair = (
            (cells.benchmark == cells.benchmarks.index(row.benchmark))
            & (cells.lo == min(s_i, s_j))
            & (cells.hi == max(s_i, s_j))
        )
        rate = {
            (judge, student): _rates(cells, pair & (cells.judge == code), student, ties)
            for judge, code in (("i", i), ("j", j))
            for student in (s_i, s_j)
        }
        human_mask = pair & humans[cells.judge]
        human_i = _rates(cells, human_mask, s_i, ties)
        human_j = _rates(cells, human_mask, s_j, ties)
        part_i = rate[("i", s_i)] - rate[("j", s_i)]  # judge i for its student, beyond judge j
        part_j = rate[("j", s_j)] - rate[("i", s_j)]
        if subject.kind == "judges":
            contribution, ranked_by = part_i + part_j, "both judges' favour for their students"
        elif row.judge_i in subject.names or row.student_i in subject.names:
            contribution, ranked_by = part_i, f"{row.judge_i}'s favour for {row.student_i}"
        else:
            contribution, ranked_by = part_j, f"{row.judge_j}'s favour for {row.student_j}"
        usable = np.flatnonzero(np.isfinite(contribution) & (contribution > 0))
        order = usable[np.lexsort((usable, -contribution[usable]))]
        prompts = []
        for p in order[:top].tolist():
            name = names[p] if names is not None and p < len(names) else f"#{p}"
            prompts.append(
                {
                    "prompt": name.split("\x1f", 1)[-1],
                    "category": None if category[p] == NO_LABEL else cells.categories[category[p]],
                    "contribution": _num(float(contribution[p]), 4),
                    "judge_i_for_student_i": _num(float(rate[("i", s_i)][p]), 4),
                    "judge_j_for_student_i": _num(float(rate[("j", s_i)][p]), 4),
                    "judge_j_for_student_j": _num(float(rate[("j", s_j)][p]), 4),
                    "judge_i_for_student_j": _num(float(rate[("i", s_j)][p]), 4),
                    "humans_for_student_i": _num(float(human_i[p]), 4),
                    "humans_for_student_j": _num(float(human_j[p]), 4),
                }
            )
        found.append(
            {
                **_key_json(_key(row)),
                "ranked_by": ranked_by,
                "prompts_favouring": int(usable.size),
                "prompts_compared": int(np.isfinite(contribution).sum()),
                "prompts": prompts,
            }
        )
    return {"available": True, "texts": False, "note": NO_TEXT_NOTE, "rows": found}


def _with_texts(evidence: dict[str, Any], texts: TextLookup | None) -> dict[str, Any]:
    """The evidence with each prompt's stored texts: the prompt and both students' answers."""
    if texts is None or not evidence["rows"]:
        return evidence
    found = texts(
        {(row["benchmark"], p["prompt"]) for row in evidence["rows"] for p in row["prompts"]}
    )
    for row in evidence["rows"]:
        for prompt in row["prompts"]:
            stored = found.get((row["benchmark"], prompt["prompt"]), PromptTexts())
            shown = stored.to_json(row["student_i"], row["student_j"])
            prompt["texts"] = {"prompt": shown["prompt"], "answer_i": shown["response_a"],
                               "answer_j": shown["response_b"]}  # fmt: skip
    stored_any = any(
        any(v is not None for v in p["texts"].values())
        for r in evidence["rows"]
        for p in r["prompts"]
    )
    note = TEXTS_NOTE if stored_any else NO_TEXT_NOTE
    return {**evidence, "texts": stored_any, "note": note}


# -- biases and what to do -------------------------------------------------------------------


def _biases(biases: list[JudgeBiases], judges: list[str]) -> list[dict[str, Any]]:
    """The judges' other habits, with a note for each that is clearly there."""
    found = []
    for bias in biases:
        if bias.judge not in judges:
            continue
        notes = []
        if (
            bias.position_bias
            and bias.position_bias.ci
            and not (bias.position_bias.ci[0] <= 0.5 <= bias.position_bias.ci[1])
        ):
            notes.append(
                f"position bias: the first-shown answer wins "
                f"{100 * bias.position_bias.value:.0f}% of decisive verdicts"
            )
        for name, estimate in (
            ("length bias", bias.length_bias),
            ("self-preference", bias.self_preference),
        ):
            if estimate and estimate.ci and not (estimate.ci[0] <= 0 <= estimate.ci[1]):
                notes.append(f"{name} {estimate.value:+.3g} (interval excludes 0)")
        found.append({**bias.to_json(), "notes": notes})
    return found


def _recommendation(
    analysis: Analysis,
    cells: Cells | None,
    lineage: Lineage,
    subject: Subject,
    judges: list[str],
    candidates: list[str],
    relations: list[dict[str, Any]],
) -> dict[str, Any]:
    if subject.kind == "candidate" and subject.names[0] not in candidates:
        candidates = sorted({*candidates, subject.names[0]})
    panel = propose_panel(lineage, candidates) if candidates else None
    kappa = {b.judge: b.human_agreement for b in analysis.biases if b.human_agreement}
    judged = {b.judge for b in analysis.biases}
    options = [] if panel is None else [*panel.judges, *panel.alternates]
    ranked = sorted(
        options,
        key=lambda j: (-kappa[j].value if j in kappa else math.inf, j),
    )
    replacements = [
        {
            "judge": j,
            "human_agreement": kappa[j].to_json() if j in kappa else None,
            "on_panel": panel is not None and j in panel.judges,
            "judged_here": j in judged,
        }
        for j in ranked
    ]
    related = sorted({r["judge"] for r in relations if r["judge"] in judges})
    actions: list[str] = []
    status = ""
    without = [_without(analysis, cells, lineage, judge) for judge in related[:2]]
    if relations:
        best = next((r["judge"] for r in replacements if r["judged_here"]), None)
        best = best or (replacements[0]["judge"] if replacements else None)
        who = ", ".join(related) or "the related judges"
        if best:
            actions.append(
                f"judge {', '.join(candidates)} with {best} (unrelated to them"
                f"{', best human agreement' if best in kappa else ''}) instead of "
                f"{who}"
            )
        else:
            actions.append(
                f"no unrelated judge is known for {', '.join(candidates)}: register "
                "more models (with their family) or use human judges"
            )
        for moved in without:
            shifts = [r for r in moved.get("rows", []) if r["rank_change"]]
            if shifts:
                listed = ", ".join(
                    f"{r['model']} {r['raw_rank']}→{r['rank_without']}" for r in shifts[:4]
                )
                actions.append(f"without {moved['judge']} the leaderboard moves: {listed}")
            elif "rows" in moved:
                actions.append(f"without {moved['judge']} no rank on the leaderboard moves")
    else:
        status = "nothing to do on lineage grounds"
    return {
        "candidates": candidates,
        "related_judges": related,
        "replacements": replacements,
        "panel": None if panel is None else panel.to_json(),
        "without_judge": without,
        "actions": actions or [status],
    }


def _without(
    analysis: Analysis, cells: Cells | None, lineage: Lineage, judge: str
) -> dict[str, Any]:
    """The raw leaderboard of the horizon refitted without ``judge``, against the same reference."""
    board = analysis.leaderboard
    if cells is None or board is None or analysis.horizon is None:
        return {"judge": judge, "note": "needs the stored verdicts and a leaderboard"}
    code = cells.model_code(judge)
    windows = cells.window // analysis.window_s * analysis.window_s
    kept = cells.select(
        (windows >= analysis.horizon[0]) & (cells.judge != (-1 if code is None else code))
    )
    fit = fit_leakage(kept, lineage, relation_terms=False, n_bootstrap=0)
    if fit is None or board.reference not in fit.strengths:
        return {"judge": judge, "note": f"no verdicts on {board.reference} without {judge}"}
    present = [r for r in board.rows if r.model in fit.strengths]
    rates = {r.model: fit.win_rate(r.model, board.reference) for r in present}
    ordered = sorted(rates, key=lambda m: (-rates[m], m))
    rank = {m: k for k, m in enumerate(ordered, start=1)}
    raw = {r.model: r for r in present}
    rows = [
        {
            "model": m,
            "raw_win_rate": round_sig(raw[m].raw_win_rate),
            "win_rate_without": round_sig(rates[m]),
            "change_pp": round_sig(100 * (rates[m] - raw[m].raw_win_rate)),
            "debiased_win_rate": round_sig(raw[m].debiased_win_rate),
            "raw_rank": _raw_rank(board.rows, m),
            "rank_without": rank[m],
            "rank_change": _raw_rank(board.rows, m) - rank[m],
        }
        for m in ordered
    ]
    return {"judge": judge, "reference": board.reference, "rows": rows}


def _raw_rank(rows: Iterable[Any], model: str) -> int:
    return next(int(r.raw_rank) for r in rows if r.model == model)
