"""The PLS table: which judge pairs and student pairs qualify, and their scores (pure).

Takes the verdict projection rows and a :class:`~prefleak.lineage.Lineage`; the caller fetches both.
A quadruple (judges i, j; students S_i, S_j) qualifies when S_i is related to i but not to j, S_j is
related to j but not to i, and both judges compared S_i with S_j on the same benchmark.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse

from prefleak.lineage import Lineage
from prefleak.pls import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_MIN_PROMPTS,
    PLSEstimate,
    TiePolicy,
    WinRates,
    estimate_many,
    win_rate,
)
from prefleak.stats.cells import Cells, IntArray, composite_key, key_groups
from prefleak.stats.relations import KINDS, RelationTable, relation_table


@dataclass(frozen=True, slots=True)
class HumanBias:
    """How far each related judge's win rate for its own student is from the humans'."""

    judges: tuple[str, ...]
    n_prompts: int
    error_bias_i: float | None
    error_bias_j: float | None


@dataclass(frozen=True, slots=True)
class PLSRow:
    """One line of the PLS table."""

    benchmark: str
    judge_i: str
    judge_j: str
    student_i: str
    student_j: str
    relation_i: str
    relation_j: str
    share_i: float
    share_j: float
    pls: float | None
    ci_low: float | None
    ci_high: float | None
    n_prompts: int
    win_rates: WinRates | None
    undefined: str | None
    human: HumanBias | None
    se: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _JudgeCounts:
    """Outcomes summed per (benchmark, lo, hi, judge, prompt), sorted so each (benchmark, lo, hi,
    judge) is one contiguous slice ``[start, end)``."""

    prompt: IntArray
    outcomes: npt.NDArray[np.float64]
    benchmark: IntArray
    lo: IntArray
    hi: IntArray
    judge: IntArray
    start: IntArray
    end: IntArray
    pair: IntArray
    """Per slice: index of its (benchmark, lo, hi)."""


def _judge_counts(cells: Cells) -> _JudgeCounts:
    key = composite_key([cells.benchmark, cells.lo, cells.hi, cells.judge, cells.prompt])
    unique, first, inverse = key_groups(key)  # the key names every column read at first
    outcomes = np.stack(
        [np.bincount(inverse, cells.outcomes[:, k], minlength=unique.size) for k in range(3)],
        axis=1,
    ).astype(np.float64)
    benchmark, lo, hi = cells.benchmark[first], cells.lo[first], cells.hi[first]
    judge = cells.judge[first]
    slice_key = composite_key([benchmark, lo, hi, judge])
    start = np.flatnonzero(np.r_[True, slice_key[1:] != slice_key[:-1]])
    end = np.r_[start[1:], unique.size]
    pair_key = composite_key([benchmark[start], lo[start], hi[start]])
    pair = np.cumsum(np.r_[False, pair_key[1:] != pair_key[:-1]])
    return _JudgeCounts(
        cells.prompt[first], outcomes, benchmark[start], lo[start], hi[start], judge[start],
        start, end, pair,
    )  # fmt: skip


def _ranges(starts: IntArray, ends: IntArray) -> tuple[IntArray, IntArray]:
    """Concatenated ``range(start, end)`` of every pair, and which pair each element came from."""
    lengths = ends - starts
    owner = np.repeat(np.arange(starts.size), lengths)
    offsets = np.cumsum(lengths) - lengths
    return np.arange(lengths.sum()) - np.repeat(offsets - starts, lengths), owner


@dataclass(frozen=True)
class _Quadruples:
    """Qualifying rows: slices of judges i and j, and whether S_i is the lower-sorted candidate."""

    slice_i: IntArray
    slice_j: IntArray
    i_is_lo: npt.NDArray[np.bool_]


def _qualifying(counts: _JudgeCounts, relations: RelationTable) -> _Quadruples:
    """Every (pair, judge x < judge y) where S_i is related to i only and S_j to j only.

    Among the four ways to name i, j, S_i and S_j, the first that qualifies is taken, in the
    order (x, y) before (y, x) and lo before hi as S_i.
    """
    n_pairs = int(counts.pair.max(initial=-1)) + 1
    machines = sorted({int(j) for j in counts.judge if not relations.human[j]})
    slot = np.full((n_pairs, len(relations.human)), -1, dtype=np.int64)
    slot[counts.pair, counts.judge] = np.arange(counts.pair.size)
    pair_lo = np.zeros(n_pairs, dtype=np.int64)
    pair_hi = np.zeros(n_pairs, dtype=np.int64)
    pair_lo[counts.pair], pair_hi[counts.pair] = counts.lo, counts.hi
    related = relations.related
    found: list[tuple[IntArray, IntArray, npt.NDArray[np.bool_]]] = []
    for a, x in enumerate(machines):
        for y in machines[a + 1 :]:
            both = np.flatnonzero((slot[:, x] >= 0) & (slot[:, y] >= 0))
            lo, hi = pair_lo[both], pair_hi[both]
            left = np.ones(both.size, dtype=bool)
            for i, j in ((x, y), (y, x)):
                for s_i, s_j, lo_is_i in ((lo, hi, True), (hi, lo, False)):
                    hit = left & related[i, s_i] & related[j, s_j]
                    hit &= ~related[j, s_i] & ~related[i, s_j]
                    if hit.any():
                        rows = both[hit]
                        found.append((slot[rows, i], slot[rows, j], np.full(rows.size, lo_is_i)))
                        left &= ~hit
    if not found:
        empty = np.zeros(0, dtype=np.int64)
        return _Quadruples(empty, empty, np.zeros(0, dtype=bool))
    slice_i, slice_j, i_is_lo = (np.concatenate(parts) for parts in zip(*found, strict=True))
    return _Quadruples(slice_i, slice_j, i_is_lo.astype(bool))


def _by_prompt(
    counts: _JudgeCounts, quads: _Quadruples, n_prompts: int
) -> tuple[sparse.csc_matrix, IntArray]:
    """Per prompt, six columns per row (judge i's then judge j's S_i wins, S_j wins, ties), and
    each row's number of distinct prompts (both judges, union)."""
    rows, columns, values, prompts, owners = [], [], [], [], []
    for side, slices in ((0, quads.slice_i), (1, quads.slice_j)):
        entries, owner = _ranges(counts.start[slices], counts.end[slices])
        outcomes = counts.outcomes[entries]
        flip = ~quads.i_is_lo[owner]
        oriented = np.where(flip[:, None], outcomes[:, [1, 0, 2]], outcomes)
        for k in range(3):
            rows.append(counts.prompt[entries])
            columns.append(6 * owner + 3 * side + k)
            values.append(oriented[:, k])
        prompts.append(counts.prompt[entries])
        owners.append(owner)
    matrix = sparse.csc_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))),
        shape=(n_prompts, 6 * quads.slice_i.size),
    )
    seen = np.unique(np.concatenate(owners) * n_prompts + np.concatenate(prompts))
    distinct = np.bincount(seen // n_prompts, minlength=quads.slice_i.size)
    return matrix, distinct


def pls_table(
    cells: Cells,
    lineage: Lineage,
    *,
    ties: TiePolicy = "loss",
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    min_prompts: int = DEFAULT_MIN_PROMPTS,
    relations: RelationTable | None = None,
) -> list[PLSRow]:
    """Every qualifying quadruple with its PLS, CI and (where humans judged) error bias.

    Vectorised over all rows: one aggregation, one qualification pass per judge pair, and one
    bootstrap (:func:`prefleak.pls.estimate_many`). ``relations`` (of the cells' vocabulary)
    saves asking the lineage again when the caller computes many tables.
    """
    if len(cells) == 0:
        return []
    if relations is None:
        relations = relation_table(lineage, cells.models, np.unique(cells.judge).tolist())
    counts = _judge_counts(cells)
    quads = _qualifying(counts, relations)
    if quads.slice_i.size == 0:
        return []
    matrix, distinct = _by_prompt(counts, quads, cells.n_prompts)
    estimates = estimate_many(
        matrix, cells.prompt_keys, distinct, ties=ties, n_bootstrap=n_bootstrap,
        min_prompts=min_prompts,
    )  # fmt: skip
    humans = _human_outcomes(counts, relations, cells.models)
    human_rates: dict[tuple[int, bool], tuple[float, float]] = {}  # see _human_bias
    models, table = cells.models, []
    for r, estimate in enumerate(estimates):
        s_i_slice, s_j_slice = int(quads.slice_i[r]), int(quads.slice_j[r])
        i, j = int(counts.judge[s_i_slice]), int(counts.judge[s_j_slice])
        lo, hi = int(counts.lo[s_i_slice]), int(counts.hi[s_i_slice])
        s_i, s_j = (lo, hi) if quads.i_is_lo[r] else (hi, lo)
        pair = int(counts.pair[s_i_slice])
        table.append(
            PLSRow(
                benchmark=cells.benchmarks[counts.benchmark[s_i_slice]],
                judge_i=models[i],
                judge_j=models[j],
                student_i=models[s_i],
                student_j=models[s_j],
                relation_i=KINDS[relations.kind[i, s_i]].value,
                relation_j=KINDS[relations.kind[j, s_j]].value,
                share_i=float(relations.share[i, s_i]),
                share_j=float(relations.share[j, s_j]),
                pls=estimate.pls,
                ci_low=estimate.ci_low,
                ci_high=estimate.ci_high,
                n_prompts=estimate.n_prompts,
                win_rates=estimate.win_rates,
                undefined=estimate.undefined,
                human=_human_bias(
                    humans.get(pair), bool(quads.i_is_lo[r]), estimate, ties, human_rates, pair
                ),
                se=estimate.se,
            )
        )
    table.sort(key=lambda r: (r.benchmark, r.judge_i, r.judge_j, r.student_i, r.student_j))
    return table


_Humans = tuple[tuple[str, ...], int, npt.NDArray[np.float64]]
"""Human judges of a pair, their distinct prompts, and their pooled (lo, hi, ties) totals."""


def _human_outcomes(
    counts: _JudgeCounts, relations: RelationTable, models: tuple[str, ...]
) -> dict[int, _Humans]:
    """Per (benchmark, lo, hi) that humans judged: who, on how many prompts, with what outcome."""
    found: dict[int, tuple[list[int], set[int], npt.NDArray[np.float64]]] = {}
    for s in np.flatnonzero(relations.human[counts.judge]).tolist():
        entries = slice(int(counts.start[s]), int(counts.end[s]))
        judges, prompts, totals = found.setdefault(int(counts.pair[s]), ([], set(), np.zeros(3)))
        judges.append(int(counts.judge[s]))
        prompts.update(counts.prompt[entries].tolist())
        totals += counts.outcomes[entries].sum(axis=0)
    return {
        pair: (tuple(sorted(models[j] for j in judges)), len(prompts), totals)
        for pair, (judges, prompts, totals) in found.items()
    }


def _human_bias(
    humans: _Humans | None,
    student_i_is_lo: bool,
    estimate: PLSEstimate,
    ties: TiePolicy,
    rates_of: dict[tuple[int, bool], tuple[float, float]],
    pair: int,
) -> HumanBias | None:
    """Error bias of each related judge against the pooled human verdicts on the same pair;
    ``rates_of`` keeps the humans' win rates per (pair, orientation) for the pair's other rows."""
    if humans is None:
        return None
    names, n_prompts, totals = humans
    known = rates_of.get((pair, student_i_is_lo))
    if known is None:
        oriented = totals if student_i_is_lo else totals[[1, 0, 2]]
        known = rates_of[pair, student_i_is_lo] = (
            win_rate(oriented[None], "i", ties),
            win_rate(oriented[None], "j", ties),
        )
    human_i, human_j = known
    rates = estimate.win_rates

    def bias(judge_rate: float | None, human_rate: float) -> float | None:
        if judge_rate is None or np.isnan(human_rate):
            return None
        return judge_rate - human_rate

    return HumanBias(
        judges=names,
        n_prompts=n_prompts,
        error_bias_i=bias(rates.ii if rates else None, human_i),
        error_bias_j=bias(rates.jj if rates else None, human_j),
    )
