"""The Preference Leakage Score of Li et al. 2025 and its bootstrap uncertainty (pure, no I/O).

This module is the one place the PLS formula lives (docs/pls.md). For judges i, j and students
S_i, S_j compared head to head, WR(x, y) is the share of comparisons judge y awarded to S_x and

    PLS(i, j) = ½·[(WR(i,i) − AVG(i,j)) / AVG(i,j) + (WR(j,j) − AVG(j,i)) / AVG(j,i)],
    AVG(i, j) = (WR(i,i) + WR(i,j)) / 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

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


def _rate(
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
    return float(_rate(np.array(wins), np.array(losses), np.array(totals[2]), policy))


def _pls_many(
    by_i: npt.NDArray[np.float64], by_j: npt.NDArray[np.float64], policy: TiePolicy
) -> tuple[npt.NDArray[np.float64], dict[str, npt.NDArray[np.float64]]]:
    """PLS for many resamples at once: inputs are summed counts of shape (..., 3)."""
    rates = {
        "ii": _rate(by_i[..., 0], by_i[..., 1], by_i[..., 2], policy),
        "ji": _rate(by_i[..., 1], by_i[..., 0], by_i[..., 2], policy),
        "jj": _rate(by_j[..., 1], by_j[..., 0], by_j[..., 2], policy),
        "ij": _rate(by_j[..., 0], by_j[..., 1], by_j[..., 2], policy),
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
    prompt); each resample draws prompts with replacement and uses the same draw for both judges,
    so the interval reflects prompt-to-prompt variation, which is what a new benchmark would vary.
    """
    n_prompts = int(by_judge_i.shape[0])
    if by_judge_j.shape != by_judge_i.shape:
        raise ValueError("both judges' counts must cover the same prompts")
    score, rates = _pls_many(by_judge_i.sum(axis=0), by_judge_j.sum(axis=0), ties)
    win_rates = (
        None
        if any(np.isnan(r) for r in rates.values())
        else WinRates(**{k: float(v) for k, v in rates.items()})
    )
    if n_prompts < min_prompts:
        return PLSEstimate(
            None, None, None, n_prompts, win_rates, f"too few prompts ({n_prompts} < {min_prompts})"
        )
    if np.isnan(score):
        reason = (
            "a judge has no comparison to rate"
            if win_rates is None
            else "an average win rate is zero"
        )
        return PLSEstimate(None, None, None, n_prompts, win_rates, reason)
    boot = _bootstrap(by_judge_i, by_judge_j, ties, n_bootstrap, seed)
    if boot.size == 0:
        return PLSEstimate(float(score), None, None, n_prompts, win_rates)
    alpha = (1 - confidence) / 2
    low, high = (float(q) for q in np.quantile(boot, [alpha, 1 - alpha]))
    se = float(boot.std(ddof=1)) if boot.size > 1 else None
    return PLSEstimate(float(score), low, high, n_prompts, win_rates, se=se)


_RESAMPLE_CELLS = 1 << 21
"""Resample weights held at once while bootstrapping, to keep memory flat for large benchmarks."""


def _bootstrap(
    by_i: Counts, by_j: Counts, ties: TiePolicy, n_bootstrap: int, seed: int
) -> npt.NDArray[np.float64]:
    """PLS of each resample of prompts (the same draw for both judges); undefined ones dropped.

    A resample is a vector of how often each prompt was drawn; the summed counts of both judges
    are then one matrix product each, instead of gathering every drawn prompt's rows.
    """
    n_prompts = by_i.shape[0]
    rng = np.random.default_rng(seed)
    step = max(1, _RESAMPLE_CELLS // n_prompts)
    scores = []
    for start in range(0, n_bootstrap, step):
        rows = min(step, n_bootstrap - start)
        draws = rng.integers(0, n_prompts, size=(rows, n_prompts))
        draws += np.arange(rows)[:, None] * n_prompts
        weights = np.bincount(draws.ravel(), minlength=rows * n_prompts).reshape(rows, n_prompts)
        score, _ = _pls_many(weights @ by_i, weights @ by_j, ties)
        scores.append(score)
    boot = np.concatenate(scores) if scores else np.empty(0)
    return boot[~np.isnan(boot)]
