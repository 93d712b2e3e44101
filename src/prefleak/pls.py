"""The Preference Leakage Score of Li et al. 2025 and its bootstrap uncertainty (pure, no I/O).

This module is the one place the PLS formula lives (docs/pls.md). For judges i, j and students
S_i, S_j compared head to head, WR(x, y) is the share of comparisons judge y awarded to S_x and

    PLS(i, j) = ½·[(WR(i,i) − AVG(i,j)) / AVG(i,j) + (WR(j,j) − AVG(j,i)) / AVG(j,i)],
    AVG(i, j) = (WR(i,i) + WR(i,j)) / 2.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import sparse

from prefleak.stats.estimate import poisson_weights

TiePolicy = Literal["loss", "half", "exclude"]
"""How a tie counts: ``loss`` (a non-win, the paper's rule), ``half`` a win, or ``exclude``."""
TIE_POLICIES: tuple[TiePolicy, ...] = ("loss", "half", "exclude")

Counts = npt.NDArray[np.float64]
"""Per-prompt outcomes of one judge, shape (prompts, 3): S_i wins, S_j wins, ties."""

DEFAULT_BOOTSTRAP = 1000
DEFAULT_MIN_PROMPTS = 10


@dataclass(frozen=True, slots=True)
class WinRates:
    """WR(x, y): share of head-to-head comparisons judge y awarded to student S_x."""

    ii: float
    ij: float
    jj: float
    ji: float


def _formula(
    ii: npt.ArrayLike, ij: npt.ArrayLike, jj: npt.ArrayLike, ji: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """The paper's PLS, elementwise; NaN where an average win rate is zero (undefined)."""
    ii, ij, jj, ji = (np.asarray(x, dtype=np.float64) for x in (ii, ij, jj, ji))
    avg_i, avg_j = (ii + ij) / 2, (jj + ji) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        score = ((ii - avg_i) / avg_i + (jj - avg_j) / avg_j) / 2
    return np.where((avg_i > 0) & (avg_j > 0), score, np.nan)


def preference_leakage_score(wr: WinRates) -> float | None:
    """The paper's PLS; ``None`` when an average win rate is zero (the score is undefined)."""
    score = float(_formula(wr.ii, wr.ij, wr.jj, wr.ji))
    return None if np.isnan(score) else score


Outcomes = tuple[int, int, int]
"""Wins of one candidate, wins of the other, ties."""


def both_games(loose: Counts, game_1: Counts, game_2: Counts) -> Counts:
    """Comparisons of each prompt from its verdicts without a game and in games 1 and 2.

    Rows are prompts (or projection cells), columns (wins of one candidate, of the other, ties).
    When both position-swapped games are present they form one comparison that a side wins only
    if every game verdict agrees, and otherwise a tie (the Arena-Hard convention). Verdicts that
    name no game, or a game whose twin is missing, count one comparison each.
    """
    played_1, played_2 = game_1.sum(axis=1), game_2.sum(axis=1)
    played = played_1 + played_2
    first_all = game_1[:, 0] + game_2[:, 0] == played
    second_all = game_1[:, 1] + game_2[:, 1] == played
    combined = np.stack(
        [first_all, second_all & ~first_all, ~first_all & ~second_all], axis=1
    ).astype(np.float64)
    paired = (played_1 > 0) & (played_2 > 0)
    return np.asarray(loose + np.where(paired[:, None], combined, game_1 + game_2))


def combine_games(loose: Outcomes, game_1: Outcomes, game_2: Outcomes) -> Outcomes:
    """:func:`both_games` of one prompt."""
    lo, hi, ties = (
        int(v) for v in both_games(*(np.array([g], float) for g in (loose, game_1, game_2)))[0]
    )
    return lo, hi, ties


def rate(
    wins: npt.NDArray[np.float64],
    losses: npt.NDArray[np.float64],
    ties: npt.NDArray[np.float64],
    policy: TiePolicy,
) -> npt.NDArray[np.float64]:
    """Win rates (vectorised over the last axis summed); NaN where there is nothing to rate."""
    if policy == "half":
        num, den = wins + ties / 2, wins + losses + ties
    elif policy == "exclude":
        num, den = wins, wins + losses
    else:
        num, den = wins, wins + losses + ties
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def win_rate(counts: Counts, student: Literal["i", "j"], policy: TiePolicy = "loss") -> float:
    """Win rate of S_i or S_j over all prompts of one judge; NaN when it made no comparison."""
    totals = counts.sum(axis=0)
    wins, losses = (totals[0], totals[1]) if student == "i" else (totals[1], totals[0])
    return float(rate(np.array(wins), np.array(losses), np.array(totals[2]), policy))


def _pls_many(
    by_i: npt.NDArray[np.float64], by_j: npt.NDArray[np.float64], policy: TiePolicy
) -> tuple[npt.NDArray[np.float64], dict[str, npt.NDArray[np.float64]]]:
    """PLS for many resamples at once: inputs are summed counts of shape (..., 3)."""
    rates = {
        "ii": rate(by_i[..., 0], by_i[..., 1], by_i[..., 2], policy),
        "ji": rate(by_i[..., 1], by_i[..., 0], by_i[..., 2], policy),
        "jj": rate(by_j[..., 1], by_j[..., 0], by_j[..., 2], policy),
        "ij": rate(by_j[..., 0], by_j[..., 1], by_j[..., 2], policy),
    }
    return _formula(rates["ii"], rates["ij"], rates["jj"], rates["ji"]), rates


@dataclass(frozen=True, slots=True)
class PLSEstimate:
    """A PLS with its bootstrap interval; ``undefined`` says why there is no score."""

    pls: float | None
    ci_low: float | None
    ci_high: float | None
    n_prompts: int
    win_rates: WinRates | None
    undefined: str | None = None
    se: float | None = None
    """Standard deviation of the bootstrap PLS: what significance and detectability use."""


def estimate_pls(
    by_judge_i: Counts,
    by_judge_j: Counts,
    *,
    ties: TiePolicy = "loss",
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    confidence: float = 0.95,
    min_prompts: int = DEFAULT_MIN_PROMPTS,
    seed: int = 0,
) -> PLSEstimate:
    """PLS of one judge pair and student pair, with a percentile bootstrap CI over prompts.

    Rows of both arrays are the same prompts (zeros where a judge did not compare the pair on a
    prompt); :func:`estimate_many` of one row.
    """
    if by_judge_j.shape != by_judge_i.shape:
        raise ValueError("both judges' counts must cover the same prompts")
    n_prompts = int(by_judge_i.shape[0])
    [estimate] = estimate_many(
        sparse.csc_matrix(np.hstack([by_judge_i, by_judge_j])),
        np.arange(n_prompts, dtype=np.uint64),
        np.array([n_prompts]),
        ties=ties,
        n_bootstrap=n_bootstrap,
        confidence=confidence,
        min_prompts=min_prompts,
        seed=seed,
    )
    return estimate


_ROWS_PER_BLOCK = 2048
"""PLS rows bootstrapped together: bounds the resample matrix at n_bootstrap x 6 x this."""


def estimate_many(
    by_prompt: sparse.csc_matrix,
    keys: npt.NDArray[np.uint64],
    n_prompts: npt.NDArray[np.int64],
    *,
    ties: TiePolicy = "loss",
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    confidence: float = 0.95,
    min_prompts: int = DEFAULT_MIN_PROMPTS,
    seed: int = 0,
) -> list[PLSEstimate]:
    """PLS with a percentile prompt-bootstrap interval for many judge-pair rows at once.

    ``by_prompt`` has one row per prompt (named by ``keys``) and six columns per PLS row: judge
    i's (S_i wins, S_j wins, ties), then judge j's. Each resample re-weights prompts with
    Poisson(1) weights that depend only on the prompt's key (:mod:`prefleak.stats.estimate`), so
    both judges of a row, and every row, see the same draw of a prompt: the interval reflects
    prompt-to-prompt variation, which is what a new benchmark would vary.
    """
    n_rows = by_prompt.shape[1] // 6
    totals = np.asarray(by_prompt.sum(axis=0)).reshape(n_rows, 6)
    scores, rates = _pls_many(totals[:, :3], totals[:, 3:], ties)
    low = np.full(n_rows, np.nan)
    high, se = low.copy(), low.copy()
    testable = np.flatnonzero(~np.isnan(scores) & (n_prompts >= min_prompts))
    alpha = (1 - confidence) / 2
    for start in range(0, testable.size if n_bootstrap > 0 else 0, _ROWS_PER_BLOCK):
        rows = testable[start : start + _ROWS_PER_BLOCK]
        columns = (6 * rows[:, None] + np.arange(6)).ravel()
        block = by_prompt[:, columns]
        used = np.flatnonzero(block.getnnz(axis=1))
        block = block[used]
        draws = np.concatenate(
            [
                _resampled(block, w, rows.size, ties)
                for w in poisson_weights(keys[used], n_bootstrap, seed)
            ]
        )
        finite = np.isfinite(draws).sum(axis=0)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, wanted
            quantiles = np.nanquantile(draws, [alpha, 1 - alpha], axis=0)
            spread = np.nanstd(draws, axis=0, ddof=1)
        low[rows] = np.where(finite > 0, quantiles[0], np.nan)
        high[rows] = np.where(finite > 0, quantiles[1], np.nan)
        se[rows] = np.where(finite > 1, spread, np.nan)
    # as Python floats (the same values): the per-row checks below are then cheap Python ones
    by_rate = {k: v.tolist() for k, v in rates.items()}
    score_list, low_list, high_list, se_list = (a.tolist() for a in (scores, low, high, se))
    prompt_list = np.asarray(n_prompts).tolist()
    return [
        _estimate(
            score_list[r],
            {k: v[r] for k, v in by_rate.items()},
            int(prompt_list[r]),
            min_prompts,
            low_list[r],
            high_list[r],
            se_list[r],
        )
        for r in range(n_rows)
    ]


def _resampled(
    block: sparse.csc_matrix, weights: npt.NDArray[np.float64], n_rows: int, ties: TiePolicy
) -> npt.NDArray[np.float64]:
    """PLS of each row under each resample (weights: resamples x prompts) → (resamples, rows)."""
    sums = np.asarray((block.T @ weights.T).T).reshape(-1, n_rows, 6)
    return _pls_many(sums[..., :3], sums[..., 3:], ties)[0]


def _estimate(
    score: float,
    rates: dict[str, float],
    n_prompts: int,
    min_prompts: int,
    low: float,
    high: float,
    se: float,
) -> PLSEstimate:
    """One row's estimate, with the reason when it has no score."""
    win_rates = (
        None
        if any(math.isnan(r) for r in rates.values())
        else WinRates(**{k: float(v) for k, v in rates.items()})
    )
    if n_prompts < min_prompts:
        reason = f"too few prompts ({n_prompts} < {min_prompts})"
        return PLSEstimate(None, None, None, n_prompts, win_rates, reason)
    if math.isnan(score):
        reason = (
            "a judge has no comparison to rate"
            if win_rates is None
            else "an average win rate is zero"
        )
        return PLSEstimate(None, None, None, n_prompts, win_rates, reason)
    if math.isnan(low):
        return PLSEstimate(float(score), None, None, n_prompts, win_rates)
    return PLSEstimate(
        float(score), float(low), float(high), n_prompts, win_rates,
        se=None if math.isnan(se) else float(se),
    )  # fmt: skip
