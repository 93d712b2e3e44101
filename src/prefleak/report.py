"""The PLS table: which judge pairs and student pairs qualify, and their scores (pure).

Takes the verdict projection rows and a :class:`~prefleak.lineage.Lineage`; the caller fetches both.
A quadruple (judges i, j; students S_i, S_j) qualifies when S_i is related to i but not to j, S_j is
related to j but not to i, and both judges compared S_i with S_j on the same benchmark.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from prefleak.lineage import Lineage, Relation
from prefleak.pls import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_MIN_PROMPTS,
    Counts,
    PLSEstimate,
    TiePolicy,
    WinRates,
    estimate_pls,
    win_rate,
)
from prefleak.stats.cells import Cells, IntArray


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

    @property
    def significant(self) -> bool:
        """The whole confidence interval lies above zero."""
        return self.ci_low is not None and self.ci_low > 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _per_prompt(cells: Cells, rows: IntArray, prompts: IntArray, i_is_lo: bool) -> Counts:
    """(S_i wins, S_j wins, ties) of the given cells summed per prompt, aligned to ``prompts``."""
    out = np.zeros((prompts.size, 3))
    outcomes = cells.outcomes[rows]
    if not i_is_lo:
        outcomes = outcomes[:, [1, 0, 2]]
    np.add.at(out, np.searchsorted(prompts, cells.prompt[rows]), outcomes)
    return out


def _assign(
    lineage: Lineage, x: str, y: str, lo: str, hi: str
) -> tuple[str, str, str, str, Relation, Relation] | None:
    """Judges and students ordered as (i, j, S_i, S_j) if the pair qualifies, else None."""
    for i, j in ((x, y), (y, x)):
        for s_i, s_j in ((lo, hi), (hi, lo)):
            rel_i, rel_j = lineage.relation(i, s_i), lineage.relation(j, s_j)
            if (
                rel_i.related
                and rel_j.related
                and not lineage.relation(j, s_i).related
                and not lineage.relation(i, s_j).related
            ):
                return i, j, s_i, s_j, rel_i, rel_j
    return None


def _seed(*parts: str) -> int:
    """A stable per-row seed, so the same data always gives the same interval."""
    return zlib.crc32("\x1f".join(parts).encode())


def _comparisons(cells: Cells) -> Iterator[tuple[str, str, str, dict[str, IntArray]]]:
    """(benchmark, lo, hi, judge → its cells' indices) for every compared pair."""
    order = np.lexsort((cells.judge, cells.hi, cells.lo, cells.benchmark))
    keys = np.stack([cells.benchmark, cells.lo, cells.hi], axis=1)[order]
    starts = np.flatnonzero(np.any(np.diff(keys, axis=0) != 0, axis=1)) + 1
    for rows in np.split(order, starts):
        if rows.size == 0:
            continue
        first = rows[0]
        by_judge: dict[str, list[int]] = defaultdict(list)
        for row, judge in zip(rows.tolist(), cells.judge[rows].tolist(), strict=True):
            by_judge[cells.models[judge]].append(row)
        yield (
            cells.benchmarks[cells.benchmark[first]],
            cells.models[cells.lo[first]],
            cells.models[cells.hi[first]],
            {judge: np.array(found) for judge, found in by_judge.items()},
        )


def pls_table(
    cells: Cells,
    lineage: Lineage,
    *,
    ties: TiePolicy = "loss",
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    min_prompts: int = DEFAULT_MIN_PROMPTS,
) -> list[PLSRow]:
    """Every qualifying quadruple with its PLS, CI and (where humans judged) error bias."""
    table: list[PLSRow] = []
    for benchmark, lo, hi, by_judge in _comparisons(cells):
        humans = sorted(j for j in by_judge if lineage.is_human(j))
        machines = sorted(j for j in by_judge if not lineage.is_human(j))
        for a, x in enumerate(machines):
            for y in machines[a + 1 :]:
                assigned = _assign(lineage, x, y, lo, hi)
                if assigned is None:
                    continue
                i, j, s_i, s_j, rel_i, rel_j = assigned
                i_is_lo = s_i == lo
                prompts = np.unique(cells.prompt[np.concatenate([by_judge[i], by_judge[j]])])
                estimate = estimate_pls(
                    _per_prompt(cells, by_judge[i], prompts, i_is_lo),
                    _per_prompt(cells, by_judge[j], prompts, i_is_lo),
                    ties=ties,
                    n_bootstrap=n_bootstrap,
                    min_prompts=min_prompts,
                    seed=_seed(benchmark, i, j, s_i, s_j),
                )
                table.append(
                    PLSRow(
                        benchmark=benchmark,
                        judge_i=i,
                        judge_j=j,
                        student_i=s_i,
                        student_j=s_j,
                        relation_i=rel_i.kind.value,
                        relation_j=rel_j.kind.value,
                        share_i=rel_i.share,
                        share_j=rel_j.share,
                        pls=estimate.pls,
                        ci_low=estimate.ci_low,
                        ci_high=estimate.ci_high,
                        n_prompts=estimate.n_prompts,
                        win_rates=estimate.win_rates,
                        undefined=estimate.undefined,
                        human=_human_bias(cells, by_judge, humans, i_is_lo, estimate, ties),
                        se=estimate.se,
                    )
                )
    table.sort(key=lambda r: (r.benchmark, r.judge_i, r.judge_j, r.student_i, r.student_j))
    return table


def _human_bias(
    cells: Cells,
    by_judge: dict[str, IntArray],
    humans: list[str],
    student_i_is_lo: bool,
    estimate: PLSEstimate,
    ties: TiePolicy,
) -> HumanBias | None:
    """Error bias of each related judge against the pooled human verdicts on the same pair."""
    if not humans:
        return None
    rows = np.concatenate([by_judge[human] for human in humans])
    pooled = _per_prompt(cells, rows, np.unique(cells.prompt[rows]), student_i_is_lo)
    human_i, human_j = win_rate(pooled, "i", ties), win_rate(pooled, "j", ties)
    rates = estimate.win_rates

    def bias(judge_rate: float | None, human_rate: float) -> float | None:
        if judge_rate is None or np.isnan(human_rate):
            return None
        return judge_rate - human_rate

    return HumanBias(
        judges=tuple(humans),
        n_prompts=int(pooled.shape[0]),
        error_bias_i=bias(rates.ii if rates else None, human_i),
        error_bias_j=bias(rates.jj if rates else None, human_j),
    )
