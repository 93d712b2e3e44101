"""Which comparisons a human label would help most: the on-call review queue (pure).

A comparison is one (benchmark, prompt, candidate pair). From the verdict projection
(:class:`~prefleak.stats.cells.Cells`) and the relation arrays
(:func:`~prefleak.stats.relations.relation_table`), every comparison that LLM judges decided and no
human judged yet gets a score of how much a human label would move the leakage estimate
(docs/review.md):

``score = 2 * leak + split + 0.5 * boundary``, each part in 0..1, where, with ``p`` a judge's
share of the comparison for ``model_a`` (ties count half, both-games rule applied):

* ``leak``: the largest ``share * (p_related - p_unrelated)`` toward the candidate a judge is
  related to, ``p_unrelated`` the mean over the judges related to neither candidate (0 when there
  is no unrelated judge or no related one) — the verdicts that carry the leakage signal;
* ``split``: ``2 * min(n_a, n_b) / (n_a + n_b)`` over the judges that did not call a tie — the
  judges disagree;
* ``boundary``: ``1 - 2 * |mean p - 0.5|`` over every LLM judge — the margin is close to a tie.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from prefleak.lineage import Lineage
from prefleak.pls import rate
from prefleak.segments import NO_LABEL
from prefleak.stats.cells import Cells, FloatArray, IntArray, composite_key
from prefleak.stats.relations import KINDS, RelationTable, relation_table

SCHEMA = "prefleak.review/1"
LEAK_WEIGHT, SPLIT_WEIGHT, BOUNDARY_WEIGHT = 2.0, 1.0, 0.5
"""Weights of the score's parts (each part is 0..1)."""
HUMAN_JUDGE = "human-<annotator>"
"""The judge of a verdict template: the annotation tool puts the person's id in."""


@dataclass(frozen=True)
class Item:
    """One comparison worth a human label, with its score and the judges' verdicts."""

    score: float
    reasons: tuple[str, ...]
    benchmark: str
    prompt_id: str
    category: str | None
    model_a: str
    model_b: str
    verdicts: tuple[dict[str, Any], ...]

    def to_json(self, rank: int) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "rank": rank,
            "score": round(self.score, 4),
            "reasons": list(self.reasons),
            "benchmark": self.benchmark,
            "prompt_id": self.prompt_id,
            "category": self.category,
            "model_a": self.model_a,
            "model_b": self.model_b,
            "verdicts": list(self.verdicts),
            "verdict_template": verdict_template(self),
        }


def verdict_template(item: Item) -> dict[str, Any]:
    """A ``verdict`` event for a human judge: valid once ``winner`` and the judge are filled."""
    return {
        "type": "verdict",
        "benchmark": item.benchmark,
        "prompt_id": item.prompt_id,
        "judge": HUMAN_JUDGE,
        "model_a": item.model_a,
        "model_b": item.model_b,
        "winner": None,
    }


def review_queue(cells: Cells, lineage: Lineage) -> list[Item]:
    """Every comparison that LLM judges decided and no human judged, highest score first."""
    if not len(cells):
        return []
    table = relation_table(lineage, cells.models, np.unique(cells.judge).tolist())
    human_cell = table.human[cells.judge]
    comparison = composite_key([cells.prompt, cells.lo, cells.hi])
    judged_by_humans = np.isin(comparison, np.unique(comparison[human_cell]))
    keep = ~human_cell & ~judged_by_humans
    cells = cells.select(keep)
    comparison = comparison[keep]
    if not len(cells):
        return []
    # one row per (comparison, judge), its outcomes summed over windows
    key = composite_key([comparison, cells.judge])
    groups, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    outcomes = np.stack(
        [np.bincount(inverse, cells.outcomes[:, k], minlength=groups.size) for k in range(3)],
        axis=1,
    ).astype(np.float64)
    p_a = rate(outcomes[:, 0], outcomes[:, 1], outcomes[:, 2], "half")
    category = np.full(cells.n_prompts, NO_LABEL, dtype=np.int64)
    category[cells.prompt] = cells.category
    items = []
    order = np.argsort(comparison[first], kind="stable")
    rows = first[order]
    starts = np.flatnonzero(np.r_[True, np.diff(comparison[rows]) != 0])
    for block in np.split(np.arange(rows.size), starts[1:]):
        row_idx = rows[block]
        p = p_a[order[block]]
        judges = cells.judge[row_idx]
        usable = np.isfinite(p)
        if not usable.any():
            continue
        item = _score(cells, table, int(row_idx[0]), judges[usable], p[usable], category)
        items.append(item)
    items.sort(key=lambda i: (-i.score, i.benchmark, i.prompt_id, i.model_a, i.model_b))
    return items


def _score(
    cells: Cells,
    table: RelationTable,
    row: int,
    judges: IntArray,
    p: FloatArray,
    category: IntArray,
) -> Item:
    """The item of one comparison from its LLM judges' shares for ``model_a`` (= lo)."""
    lo, hi = int(cells.lo[row]), int(cells.hi[row])
    related_lo = table.related[judges, lo]
    related_hi = table.related[judges, hi]
    unrelated = ~related_lo & ~related_hi
    reasons: list[str] = []
    verdicts = []
    leak, leak_reason = 0.0, ""
    p_unrelated = float(p[unrelated].mean()) if unrelated.any() else None
    for judge, share_a, j_lo, j_hi in zip(
        judges.tolist(), p.tolist(), related_lo.tolist(), related_hi.tolist(), strict=True
    ):
        winner = "a" if share_a > 0.5 else "b" if share_a < 0.5 else "tie"
        candidate = lo if j_lo and not j_hi else hi if j_hi and not j_lo else None
        if j_lo and j_hi:  # related to both: the stronger relation names it
            candidate = lo if table.share[judge, lo] >= table.share[judge, hi] else hi
        kind = None if candidate is None else KINDS[int(table.kind[judge, candidate])].value
        verdicts.append(
            {
                "judge": cells.models[judge],
                "winner": winner,
                "related_to": None if candidate is None else cells.models[candidate],
                "relation": kind,
            }
        )
        if candidate is not None and p_unrelated is not None and not (j_lo and j_hi):
            toward = share_a - p_unrelated if candidate == lo else p_unrelated - share_a
            part = float(table.share[judge, candidate]) * toward
            if part > leak:
                leak = part
                leak_reason = (
                    f"{cells.models[judge]} ({kind} of {cells.models[candidate]}, share "
                    f"{table.share[judge, candidate]:.2g}) favours it against the unrelated judges"
                )
    if leak > 0:
        reasons.append(leak_reason)
    decisive = p[p != 0.5]
    n_a, n_b = int((decisive > 0.5).sum()), int((decisive < 0.5).sum())
    split = 2 * min(n_a, n_b) / (n_a + n_b) if n_a + n_b else 0.0
    if split > 0:
        reasons.append(f"judges split {n_a}:{n_b}")
    boundary = 1 - 2 * abs(float(p.mean()) - 0.5)
    if boundary >= 0.5:
        reasons.append(f"margin near a tie (mean share for model_a {float(p.mean()):.2f})")
    score = LEAK_WEIGHT * leak + SPLIT_WEIGHT * split + BOUNDARY_WEIGHT * boundary
    benchmark, prompt_id = cells.prompts[int(cells.prompt[row])].split("\x1f", 1)
    code = int(category[cells.prompt[row]])
    return Item(
        score=score,
        reasons=tuple(reasons),
        benchmark=benchmark,
        prompt_id=prompt_id,
        category=None if code == NO_LABEL else cells.categories[code],
        model_a=cells.models[lo],
        model_b=cells.models[hi],
        verdicts=tuple(verdicts),
    )
