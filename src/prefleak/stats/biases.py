"""Per-judge biases that are not preference leakage but confound it or reveal a bad judge (pure).

A judge that prefers the first response, longer responses or itself, or that disagrees with people,
can produce win-rate gaps that look like leakage. :func:`judge_biases` reports, for every judge of
a :class:`~prefleak.stats.cells.Cells` view, one number per bias with a 95 % interval from the
prompt bootstrap of :mod:`prefleak.stats.estimate` (the same Poisson weights for every judge and
every measure, since the seed and the prompt vocabulary are shared). A measure is None when the
data cannot tell (no verdict to compute it from); its interval is None with fewer than 20 usable
resamples (see :func:`~prefleak.stats.estimate.percentile_ci`).

A *comparison* is one (benchmark, prompt, candidate pair); the verdicts of one judge on it are
summed over all windows. Win rates count ties as non-wins and use the comparisons of ``outcomes``
(both-games rule), the same counts PLS uses.

``position_bias`` (share, 0..1; 0.5 = none)
    Among the judge's decisive (non-tie) verdicts whose order of presentation is known, the share
    won by the response shown first: first-shown wins / (first-shown wins + second-shown wins),
    every game counted. 0.6 means the first response wins 60 % of decisive verdicts. When each
    candidate is shown first about as often as second (swapped games), quality cancels out and the
    distance from 0.5 is the position effect.
    None when the judge has no decisive verdict with known order. Humans are included.

``length_bias`` (whatever the caller's model reports)
    Passed through from the ``length`` mapping: the paired-comparison model estimates it per
    judge while holding candidate quality fixed. It is not estimated here because longer responses
    are often better ones, so a descriptive "longer wins" share mixes length bias with quality.
    None when the mapping has no entry for the judge.

``self_preference`` (percentage points; 0 = none)
    For a machine judge J that is itself a candidate: J's win rate for itself minus the win rate
    the *other* machine judges (not J, not humans) gave J on the same comparisons (those J judged
    and at least one other machine judge judged too), pooled as ratios of sums. +7.5 means J rates
    itself 7.5 points higher than its peers rate it on the very same prompts and pairs. When two
    self-preferring judges meet head to head, each one's bias lowers the other's baseline, so both
    are overstated there; peers related to J count as peers, so a shared taste shrinks the gap.
    None for humans, when J is never a candidate, or when no other machine judge saw a
    comparison of J's.

``human_agreement`` (Cohen's kappa, -1..1; 1 = perfect, 0 = chance)
    Agreement between the judge and the human judges (``Lineage.is_human``, pooled: their
    outcomes on a comparison are summed) on the comparisons both judged. Each side's label for a
    comparison is its most frequent outcome of lo wins / hi wins / tie, ties between counts broken
    towards tie; kappa = (p_o - p_e) / (1 - p_e) over the 3 × 3 table of labels, one count per
    comparison. None for humans, with fewer than 10 shared comparisons, or when both sides always
    give one and the same label (p_e = 1: agreement beyond chance is undefined).

``error_bias`` (percentage points; 0 = none)
    On comparisons the humans also judged where the judge is related (by lineage, any kind but
    ``unrelated``; being the candidate counts) to exactly one of the two candidates: the judge's
    win rate for the related candidate minus the humans' win rate for it on the same comparisons.
    +10 means the judge hands its relatives 10 points more wins than people do, i.e. its errors
    lean their way: leakage measured against human ground truth. None for humans and when there
    is no such comparison (the judge is related to no candidate, or humans judged none of them).

``n_verdicts`` is every verdict the judge gave in the view, every game counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from prefleak.lineage import Lineage
from prefleak.stats.cells import Cells, composite_key, key_groups
from prefleak.stats.estimate import Estimate, KeyArray, bootstrap_sums, percentile_ci

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

MIN_SHARED_COMPARISONS = 10
"""Comparisons shared with humans below which kappa is not reported: it would be noise."""

Statistic = Literal["share", "difference", "kappa"]
"""First-shown share of two totals, difference of two rates in points, or Cohen's kappa."""

LO, HI, TIE = 0, 1, 2
"""Labels of a comparison, in the column order of ``outcomes``."""


@dataclass(frozen=True)
class JudgeBiases:
    """Every bias of one judge; None where the data cannot tell (see the module docstring)."""

    judge: str
    position_bias: Estimate | None
    length_bias: Estimate | None
    self_preference: Estimate | None
    human_agreement: Estimate | None
    error_bias: Estimate | None
    n_verdicts: int

    def to_json(self) -> dict[str, Any]:
        def encode(estimate: Estimate | None) -> dict[str, Any] | None:
            return None if estimate is None else estimate.to_json()

        return {
            "judge": self.judge,
            "position_bias": encode(self.position_bias),
            "length_bias": encode(self.length_bias),
            "self_preference": encode(self.self_preference),
            "human_agreement": encode(self.human_agreement),
            "error_bias": encode(self.error_bias),
            "n_verdicts": self.n_verdicts,
        }


@dataclass(frozen=True)
class _Comparisons:
    """The cells of a view summed over windows: one row per (judge, comparison)."""

    judge: IntArray
    prompt: IntArray
    lo: IntArray
    hi: IntArray
    comparison: IntArray
    """Code of (prompt, lo, hi); the prompt code already names the benchmark."""
    outcomes: FloatArray
    n_comparisons: int

    @classmethod
    def of(cls, cells: Cells) -> _Comparisons:
        keys = composite_key([cells.judge, cells.prompt, cells.lo, cells.hi])
        unique, first, inverse = key_groups(keys)  # the key names every column read at first
        outcomes = np.stack(
            [np.bincount(inverse, cells.outcomes[:, k], minlength=len(unique)) for k in range(3)],
            axis=1,
        ).astype(np.float64)
        prompt, lo, hi = cells.prompt[first], cells.lo[first], cells.hi[first]
        pairs, comparison = np.unique(composite_key([prompt, lo, hi]), return_inverse=True)
        return cls(
            judge=cells.judge[first],
            prompt=prompt,
            lo=lo,
            hi=hi,
            comparison=comparison.reshape(-1),
            outcomes=outcomes,
            n_comparisons=len(pairs),
        )

    def pooled(self, mask: BoolArray) -> FloatArray:
        """Outcomes per comparison summed over the rows where ``mask`` holds."""
        return np.stack(
            [
                np.bincount(
                    self.comparison[mask], self.outcomes[mask, k], minlength=self.n_comparisons
                )
                for k in range(3)
            ],
            axis=1,
        )


def judge_biases(
    cells: Cells,
    lineage: Lineage,
    *,
    length: Mapping[str, Estimate] | None = None,
    n_bootstrap: int = 500,
    seed: int = 0,
) -> list[JudgeBiases]:
    """The biases of every judge in ``cells``, sorted by judge name (module docstring)."""
    if len(cells) == 0:
        return []
    comparisons = _Comparisons.of(cells)
    human = np.array([lineage.is_human(m) for m in cells.models], dtype=np.bool_)
    row_human = human[comparisons.judge]
    humans = comparisons.pooled(row_human)
    machines = comparisons.pooled(~row_human)
    # the humans' outcomes on each row's comparison, and which rows both sides judged: the same
    # for every judge, so gathered once (a 7-day horizon has 250k rows)
    theirs = humans[comparisons.comparison]
    judged = (comparisons.outcomes.sum(axis=1) > 0) & (theirs.sum(axis=1) > 0)
    codes = sorted(np.unique(cells.judge).tolist(), key=lambda c: cells.models[c])
    results = []
    for code in codes:
        name = cells.models[code]
        mine = np.flatnonzero(cells.judge == code)
        measures: list[_Measure | None] = [_position(cells, mine)]
        if not human[code]:
            rows = comparisons.judge == code
            related = np.array([lineage.relation(name, m).related for m in cells.models])
            measures += [
                _self_preference(comparisons, rows, code, machines),
                _agreement(comparisons, rows, theirs, judged),
                _error(comparisons, rows, related, theirs, judged),
            ]
        else:
            measures += [None, None, None]
        position, self_pref, agreement, error = _estimate(
            measures, cells.prompt_keys, n_bootstrap, seed
        )
        results.append(
            JudgeBiases(
                judge=name,
                position_bias=position,
                length_bias=None if length is None else length.get(name),
                self_preference=self_pref,
                human_agreement=agreement,
                error_bias=error,
                n_verdicts=round(float(cells.verdicts.take(mine, axis=0).sum())),
            )
        )
    return results


# -- measures: per-prompt sums and the statistic of those sums -------------------------------


@dataclass(frozen=True)
class _Measure:
    """Per-prompt column sums (prompts given as codes) and the statistic of their totals."""

    prompt: IntArray
    columns: FloatArray
    """(rows, k): one row per cell or comparison, summed by prompt before resampling."""
    statistic: Statistic


def _position(cells: Cells, mine: IntArray) -> _Measure | None:
    """First-shown wins and second-shown wins of the judge's positioned verdicts (``mine``: the
    positions of its cells)."""
    lo_first, hi_first = cells.lo_first.take(mine, axis=0), cells.hi_first.take(mine, axis=0)
    first = lo_first[:, LO] + hi_first[:, HI]
    second = lo_first[:, HI] + hi_first[:, LO]
    if first.sum() + second.sum() <= 0:
        return None
    return _Measure(cells.prompt.take(mine), np.stack([first, second], axis=1), "share")


def _self_preference(
    comparisons: _Comparisons, rows: BoolArray, code: int, machines: FloatArray
) -> _Measure | None:
    """The judge's wins and comparisons for itself, and the other machine judges' for it."""
    mine = rows & ((comparisons.lo == code) | (comparisons.hi == code))
    own = comparisons.outcomes[mine]
    others = machines[comparisons.comparison[mine]] - own
    as_lo = comparisons.lo[mine] == code
    keep = (own.sum(axis=1) > 0) & (others.sum(axis=1) > 0)
    if not keep.any():
        return None
    columns = np.stack(
        [
            np.where(as_lo, own[:, LO], own[:, HI]),
            own.sum(axis=1),
            np.where(as_lo, others[:, LO], others[:, HI]),
            others.sum(axis=1),
        ],
        axis=1,
    )
    return _Measure(comparisons.prompt[mine][keep], columns[keep], "difference")


def _agreement(
    comparisons: _Comparisons, rows: BoolArray, theirs: FloatArray, judged: BoolArray
) -> _Measure | None:
    """One count per shared comparison in the 3 × 3 table (judge label, human label); ``theirs``
    are the humans' outcomes per row, ``judged`` the rows both sides judged."""
    shared = rows & judged
    if shared.sum() < MIN_SHARED_COMPARISONS:
        return None
    cell = 3 * _labels(comparisons.outcomes[shared]) + _labels(theirs[shared])
    table = np.zeros((cell.size, 9))
    table[np.arange(cell.size), cell] = 1.0
    return _Measure(comparisons.prompt[shared], table, "kappa")


def _error(
    comparisons: _Comparisons,
    rows: BoolArray,
    related: BoolArray,
    theirs: FloatArray,
    judged: BoolArray,
) -> _Measure | None:
    """Wins for the related candidate, by the judge and by humans, on comparisons both judged
    (``theirs`` and ``judged`` as for :func:`_agreement`)."""
    lo_related, hi_related = related[comparisons.lo], related[comparisons.hi]
    keep = rows & (lo_related != hi_related) & judged
    if not keep.any():
        return None
    own, theirs, as_lo = comparisons.outcomes[keep], theirs[keep], lo_related[keep]
    columns = np.stack(
        [
            np.where(as_lo, own[:, LO], own[:, HI]),
            own.sum(axis=1),
            np.where(as_lo, theirs[:, LO], theirs[:, HI]),
            theirs.sum(axis=1),
        ],
        axis=1,
    )
    return _Measure(comparisons.prompt[keep], columns, "difference")


def _labels(outcomes: FloatArray) -> IntArray:
    """Most frequent outcome per row; any tie between the largest counts is a tie."""
    lo, hi, tie = outcomes[:, LO], outcomes[:, HI], outcomes[:, TIE]
    labels = np.full(len(outcomes), TIE, dtype=np.int64)
    labels[(lo > hi) & (lo > tie)] = LO
    labels[(hi > lo) & (hi > tie)] = HI
    return labels


def _statistic(kind: Statistic, totals: FloatArray) -> FloatArray:
    """The statistic of column totals (..., k); NaN where it is undefined."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "share":
            return totals[..., 0] / (totals[..., 0] + totals[..., 1])
        if kind == "difference":
            return 100.0 * (totals[..., 0] / totals[..., 1] - totals[..., 2] / totals[..., 3])
        table = totals.reshape(*totals.shape[:-1], 3, 3)
        n = table.sum(axis=(-2, -1))
        observed = np.trace(table, axis1=-2, axis2=-1) / n
        expected = (table.sum(axis=-1) * table.sum(axis=-2)).sum(axis=-1) / n**2
        kappa = (observed - expected) / (1.0 - expected)
        return np.where(1.0 - expected > 1e-12, kappa, np.nan)


def _estimate(
    measures: list[_Measure | None], keys: KeyArray, n_bootstrap: int, seed: int
) -> list[Estimate | None]:
    """Every measure's value and interval from one joint prompt bootstrap."""
    present = [m for m in measures if m is not None]
    if not present:
        return [None] * len(measures)
    n_prompts = keys.size
    by_prompt = np.concatenate(
        [
            np.stack([np.bincount(m.prompt, c, minlength=n_prompts) for c in m.columns.T], axis=1)
            for m in present
        ],
        axis=1,
    )
    draws = bootstrap_sums(by_prompt, n_bootstrap, seed, keys)
    totals = by_prompt.sum(axis=0)
    estimates: list[Estimate | None] = []
    start = 0
    for measure in measures:
        if measure is None:
            estimates.append(None)
            continue
        stop = start + measure.columns.shape[1]
        value = float(_statistic(measure.statistic, totals[start:stop]))
        ci = percentile_ci(_statistic(measure.statistic, draws[:, start:stop]))
        estimates.append(None if not np.isfinite(value) else Estimate(value, ci))
        start = stop
    return estimates
