"""The PLS formula, the both-games rule, tie policies and the bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest

from prefleak.pls import (
    WinRates,
    combine_games,
    estimate_pls,
    preference_leakage_score,
    win_rate,
)


def _prompts(wins_i: int, wins_j: int, ties: int = 0) -> np.ndarray:
    """One comparison per prompt: ``wins_i`` won by S_i, then S_j's wins, then ties."""
    rows = [(1, 0, 0)] * wins_i + [(0, 1, 0)] * wins_j + [(0, 0, 1)] * ties
    return np.array(rows, dtype=float)


def test_paper_worked_example() -> None:
    # GPT-4o: 55.1 % to its student, Gemini 36.8 % to it; Gemini: 63.2 % to its own, GPT-4o 44.9 %.
    score = preference_leakage_score(WinRates(ii=0.551, ij=0.368, jj=0.632, ji=0.449))
    assert score == pytest.approx(0.1842, abs=5e-4)


def test_estimate_reproduces_worked_example_from_counts() -> None:
    by_gpt = _prompts(551, 449)
    by_gemini = np.vstack([_prompts(368, 632)])
    estimate = estimate_pls(by_gpt, by_gemini, n_bootstrap=300)
    assert estimate.n_prompts == 1000
    assert estimate.win_rates == WinRates(ii=0.551, ij=0.368, jj=0.632, ji=0.449)
    assert estimate.pls == pytest.approx(0.1842, abs=5e-4)
    assert estimate.ci_low is not None and estimate.ci_high is not None
    assert 0.1 < estimate.ci_low < estimate.pls < estimate.ci_high < 0.3


def test_no_leakage_gives_zero_and_interval_covering_it() -> None:
    by_i = _prompts(500, 500)
    by_j = by_i[::-1].copy()  # the same rates, judged differently prompt by prompt
    estimate = estimate_pls(by_i, by_j, n_bootstrap=300)
    assert estimate.pls == pytest.approx(0.0)
    assert estimate.ci_low is not None and estimate.ci_high is not None
    assert estimate.ci_low < 0 < estimate.ci_high


def test_undefined_when_an_average_is_zero() -> None:
    never_wins = _prompts(0, 20)
    estimate = estimate_pls(never_wins, never_wins.copy())
    assert estimate.pls is None and estimate.ci_low is None
    assert estimate.undefined == "an average win rate is zero"
    assert preference_leakage_score(WinRates(0.0, 0.0, 0.5, 0.5)) is None


def test_undefined_with_too_few_prompts() -> None:
    estimate = estimate_pls(_prompts(3, 1), _prompts(1, 3), min_prompts=10)
    assert estimate.pls is None
    assert estimate.undefined == "too few prompts (4 < 10)"
    assert estimate.win_rates == WinRates(ii=0.75, ij=0.25, jj=0.75, ji=0.25)


def test_undefined_when_a_judge_never_compared() -> None:
    estimate = estimate_pls(_prompts(10, 10), np.zeros((20, 3)))
    assert estimate.pls is None
    assert estimate.undefined == "a judge has no comparison to rate"


def test_shapes_must_match() -> None:
    with pytest.raises(ValueError, match="same prompts"):
        estimate_pls(_prompts(5, 5), _prompts(2, 2))


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("loss", 0.4), ("half", 0.6), ("exclude", 4 / 6)],
)
def test_tie_policies(policy: str, expected: float) -> None:
    counts = _prompts(4, 2, ties=4)
    assert win_rate(counts, "i", policy) == pytest.approx(expected)  # type: ignore[arg-type]


def test_tie_policy_changes_pls() -> None:
    by_i, by_j = _prompts(50, 30, ties=20), _prompts(30, 50, ties=20)
    scores = {
        policy: estimate_pls(by_i, by_j, ties=policy, n_bootstrap=50).pls
        for policy in ("loss", "half", "exclude")
    }
    # loss: WR 0.5 vs 0.3 -> 0.25; half: 0.6 vs 0.4 -> 0.2; exclude: 0.625 vs 0.375 -> 0.25
    assert scores["loss"] == pytest.approx(0.25)
    assert scores["half"] == pytest.approx(0.2)
    assert scores["exclude"] == pytest.approx(0.25)


def test_bootstrap_is_reproducible_and_seeded() -> None:
    by_i, by_j = _prompts(60, 40), _prompts(45, 55)
    first = estimate_pls(by_i, by_j, seed=3)
    assert first == estimate_pls(by_i, by_j, seed=3)
    assert first.ci_low != estimate_pls(by_i, by_j, seed=4).ci_low


def test_bootstrap_handles_large_benchmarks_in_chunks() -> None:
    by_i, by_j = _prompts(6000, 4000), _prompts(4000, 6000)
    estimate = estimate_pls(by_i, by_j, n_bootstrap=400)
    assert estimate.ci_low is not None and estimate.ci_high is not None
    assert estimate.ci_low < 0.2 < estimate.ci_high


NONE = (0, 0, 0)


class TestBothGames:
    def test_agreeing_games_give_a_win(self) -> None:
        assert combine_games(NONE, (1, 0, 0), (1, 0, 0)) == (1, 0, 0)
        assert combine_games(NONE, (0, 1, 0), (0, 1, 0)) == (0, 1, 0)

    def test_disagreeing_games_give_a_tie(self) -> None:
        assert combine_games(NONE, (1, 0, 0), (0, 1, 0)) == (0, 0, 1)

    def test_a_tied_game_makes_the_comparison_a_tie(self) -> None:
        assert combine_games(NONE, (1, 0, 0), (0, 0, 1)) == (0, 0, 1)

    def test_a_single_game_counts_alone(self) -> None:
        assert combine_games(NONE, NONE, (0, 1, 0)) == (0, 1, 0)

    def test_verdicts_without_game_count_each(self) -> None:
        assert combine_games((2, 1, 1), (1, 0, 0), (1, 0, 0)) == (3, 1, 1)

    def test_repeated_games_must_all_agree(self) -> None:
        assert combine_games(NONE, (2, 0, 0), (1, 0, 0)) == (1, 0, 0)
        assert combine_games(NONE, (1, 1, 0), (1, 0, 0)) == (0, 0, 1)
