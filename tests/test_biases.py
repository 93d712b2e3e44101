"""Judge biases on worlds with known effects: position, self-preference, human agreement, error."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from prefleak.ingest import Ingestor
from prefleak.lineage import Lineage
from prefleak.models.events import (
    PROVENANCE_TYPES,
    DatasetEvent,
    DatasetShare,
    ModelEvent,
    TrainingEvent,
)
from prefleak.simulate import Scenario, simulate
from prefleak.stats.biases import JudgeBiases, _labels, judge_biases
from prefleak.stats.cells import Cells
from prefleak.stats.estimate import Estimate
from prefleak.store import EventStore, VerdictCounts

N_BOOTSTRAP = 300
FAIR = (0.45, 0.45, 0.10)
"""(lo wins, hi wins, tie) of a judge with no preference."""

Probabilities = Callable[[str, str], tuple[float, float, float]]
"""(lo, hi) -> probabilities of lo wins, hi wins, tie."""


def _row(
    judge: str,
    lo: str,
    hi: str,
    prompt: str,
    outcome: Sequence[int],
    *,
    lo_first: Sequence[int] = (0, 0, 0),
    hi_first: Sequence[int] = (0, 0, 0),
    window: int = 0,
) -> VerdictCounts:
    assert lo < hi
    return VerdictCounts(
        window, "bench", judge, lo, hi, prompt, *outcome, 0, 0, 0, 0, 0, 0, *lo_first, *hi_first
    )


def _one_hot(label: int) -> tuple[int, int, int]:
    counts = [0, 0, 0]
    counts[label] = 1
    return counts[0], counts[1], counts[2]


def _world(
    judges: dict[str, Probabilities],
    pairs: Sequence[tuple[str, str]],
    n_prompts: int,
    seed: int,
) -> list[VerdictCounts]:
    """One verdict (order of presentation unknown) per judge, prompt and pair."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(n_prompts):
        for judge, probabilities in judges.items():
            for lo, hi in pairs:
                label = int(rng.choice(3, p=probabilities(lo, hi)))
                rows.append(_row(judge, lo, hi, f"p{index}", _one_hot(label)))
    return rows


def _by_judge(biases: list[JudgeBiases]) -> dict[str, JudgeBiases]:
    return {b.judge: b for b in biases}


def _covers(estimate: Estimate | None, value: float) -> bool:
    assert estimate is not None and estimate.ci is not None
    return bool(estimate.ci[0] <= value <= estimate.ci[1])


def _model(name: str, kind: str | None = None) -> ModelEvent:
    return ModelEvent.model_validate({"type": "model", "model": name, "kind": kind})


# -- position bias ------------------------------------------------------------------------------


def _positioned(judge: str, first_wins: float, n_prompts: int, seed: int) -> list[VerdictCounts]:
    """Both games per prompt; ``first_wins`` is the share of decisive verdicts won by the first."""
    rng = np.random.default_rng(seed)
    p = (0.9 * first_wins, 0.9 * (1 - first_wins), 0.1)  # first wins, second wins, tie
    rows = []
    for index in range(n_prompts):
        first, second, tie = _one_hot(int(rng.choice(3, p=p)))
        lo_first = (first, second, tie)  # lo shown first: the first-shown response is lo
        first, second, tie = _one_hot(int(rng.choice(3, p=p)))
        hi_first = (second, first, tie)
        total = tuple(a + b for a, b in zip(lo_first, hi_first, strict=True))
        rows.append(_row(judge, "a", "b", f"p{index}", total, lo_first=lo_first, hi_first=hi_first))
    return rows


def test_position_bias_recovers_first_position_share() -> None:
    rows = _positioned("biased", 0.7, 1500, seed=1) + _positioned("even", 0.5, 1500, seed=2)
    biases = _by_judge(judge_biases(Cells.from_rows(rows), Lineage(), n_bootstrap=N_BOOTSTRAP))
    biased, even = biases["biased"].position_bias, biases["even"].position_bias
    assert biased is not None and even is not None
    assert biased.value == pytest.approx(0.7, abs=0.03)
    assert _covers(biased, 0.7)
    assert not _covers(biased, 0.5)
    assert even.value == pytest.approx(0.5, abs=0.03)
    assert _covers(even, 0.5)
    assert biases["biased"].n_verdicts == 3000


def test_position_bias_counts_first_shown_wins_exactly() -> None:
    # lo shown first: 3 lo wins (first), 1 hi win (second); hi shown first: 2 hi wins (first),
    # 2 lo wins (second), 5 ties that do not count.
    row = _row("j", "a", "b", "p", (5, 3, 5), lo_first=(3, 1, 0), hi_first=(2, 2, 5))
    (bias,) = judge_biases(Cells.from_rows([row]), Lineage(), n_bootstrap=0)
    assert bias.position_bias == Estimate(5 / 8, None)


def test_position_bias_is_none_without_known_order() -> None:
    rows = _world({"j": lambda lo, hi: FAIR}, [("a", "b")], 30, seed=0)
    (bias,) = judge_biases(Cells.from_rows(rows), Lineage(), n_bootstrap=50)
    assert bias.position_bias is None
    assert bias.n_verdicts == 30


# -- human agreement ----------------------------------------------------------------------------


def _agreement_world(n_prompts: int, seed: int) -> list[VerdictCounts]:
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(n_prompts):
        human = int(rng.choice(3, p=(0.4, 0.4, 0.2)))
        coin = int(rng.choice(3, p=(0.4, 0.4, 0.2)))
        prompt = f"p{index}"
        rows.append(_row("human-panel", "a", "b", prompt, _one_hot(human)))
        rows.append(_row("twin", "a", "b", prompt, _one_hot(human)))
        rows.append(_row("coin", "a", "b", prompt, _one_hot(coin)))
        if index < 9:
            rows.append(_row("rare", "a", "b", prompt, _one_hot(human)))
    return rows


def test_kappa_is_one_for_a_copy_of_humans_and_zero_for_a_coin() -> None:
    cells = Cells.from_rows(_agreement_world(600, seed=3))
    biases = _by_judge(judge_biases(cells, Lineage(), n_bootstrap=N_BOOTSTRAP))
    twin, coin = biases["twin"].human_agreement, biases["coin"].human_agreement
    assert twin is not None and twin.value == pytest.approx(1.0)
    assert twin.ci is not None and twin.ci[0] == pytest.approx(1.0)
    assert coin is not None and abs(coin.value) < 0.08
    assert _covers(coin, 0.0)
    assert biases["human-panel"].human_agreement is None  # humans are the reference
    assert biases["rare"].human_agreement is None  # 9 < 10 shared comparisons


def test_labels_break_ties_towards_tie() -> None:
    outcomes = np.array([[2, 1, 1], [1, 2, 0], [1, 1, 0], [2, 0, 2], [0, 0, 1], [0, 0, 0]], float)
    assert _labels(outcomes).tolist() == [0, 1, 2, 2, 2, 2]


def test_comparisons_are_summed_over_windows() -> None:
    # The judge says lo once and hi twice across windows: its label is hi, as the humans'.
    rows = []
    for index in range(12):
        prompt = f"p{index}"
        human = (1, 0, 0) if index % 2 else (0, 1, 0)
        rows.append(_row("human-panel", "a", "b", prompt, human))
        rows.append(_row("j", "a", "b", prompt, (human[1], human[0], 0), window=0))
        rows.append(_row("j", "a", "b", prompt, (2 * human[0], 2 * human[1], 0), window=3600))
    biases = _by_judge(judge_biases(Cells.from_rows(rows), Lineage(), n_bootstrap=0))
    assert biases["j"].human_agreement == Estimate(1.0, None)


# -- error bias ---------------------------------------------------------------------------------


def _leaky_lineage() -> Lineage:
    """``leaky`` wrote the data of s-leaky, ``clean`` that of s-clean; s-human's data is human."""
    events = [_model("human-panel", "human")]
    for generator, dataset in (("leaky", "d-leaky"), ("clean", "d-clean"), (None, "d-human")):
        events.append(DatasetEvent(type="dataset", dataset=dataset, generator=generator))
        student = "s-" + dataset.removeprefix("d-")
        share = DatasetShare(dataset=dataset, share=1.0)
        events.append(
            TrainingEvent(
                type="training", model=student, base="base-7b", method="sft", datasets=[share]
            )
        )
    return Lineage.from_events(events)


def _favour(student: str, win: float) -> Probabilities:
    """A judge that gives ``student`` a win with probability ``win`` (a loss 0.9 - win)."""

    def probabilities(lo: str, hi: str) -> tuple[float, float, float]:
        if student == lo:
            return win, 0.9 - win, 0.1
        if student == hi:
            return 0.9 - win, win, 0.1
        return FAIR

    return probabilities


STUDENT_PAIRS = [("s-clean", "s-human"), ("s-clean", "s-leaky"), ("s-human", "s-leaky")]


def test_error_bias_finds_a_bonus_towards_the_related_candidate() -> None:
    judges: dict[str, Probabilities] = {
        "human-panel": lambda lo, hi: FAIR,
        "leaky": _favour("s-leaky", 0.6),
        "clean": lambda lo, hi: FAIR,
        "outsider": lambda lo, hi: FAIR,
    }
    lineage = _leaky_lineage()
    assert lineage.relation("leaky", "s-leaky").related
    assert not lineage.relation("leaky", "s-clean").related
    cells = Cells.from_rows(_world(judges, STUDENT_PAIRS, 800, seed=4))
    biases = _by_judge(judge_biases(cells, lineage, n_bootstrap=N_BOOTSTRAP))
    leaky, clean = biases["leaky"].error_bias, biases["clean"].error_bias
    assert leaky is not None and leaky.value == pytest.approx(15.0, abs=6.0)
    assert leaky.ci is not None and leaky.ci[0] > 5.0
    assert clean is not None and abs(clean.value) < 5.0
    assert _covers(clean, 0.0)
    assert biases["outsider"].error_bias is None  # related to no candidate
    assert biases["human-panel"].error_bias is None
    assert biases["outsider"].human_agreement is not None


def test_error_bias_and_agreement_are_none_without_humans() -> None:
    judges: dict[str, Probabilities] = {"leaky": _favour("s-leaky", 0.6)}
    cells = Cells.from_rows(_world(judges, STUDENT_PAIRS, 50, seed=5))
    (bias,) = judge_biases(cells, _leaky_lineage(), n_bootstrap=50)
    assert bias.error_bias is None
    assert bias.human_agreement is None
    assert bias.self_preference is None  # never a candidate


# -- self-preference ----------------------------------------------------------------------------


SELF_PAIRS = [("alpha", "s1"), ("alpha", "s2"), ("beta", "s1"), ("beta", "s2"), ("s1", "s2")]


def test_self_preference_of_a_judge_that_favours_itself() -> None:
    judges: dict[str, Probabilities] = {
        "alpha": _favour("alpha", 0.6),
        "beta": lambda lo, hi: FAIR,
        "gamma": lambda lo, hi: FAIR,
    }
    cells = Cells.from_rows(_world(judges, SELF_PAIRS, 800, seed=6))
    biases = _by_judge(judge_biases(cells, Lineage(), n_bootstrap=N_BOOTSTRAP))
    alpha, beta = biases["alpha"].self_preference, biases["beta"].self_preference
    assert alpha is not None and alpha.value == pytest.approx(15.0, abs=5.0)
    assert alpha.ci is not None and alpha.ci[0] > 5.0
    assert beta is not None and abs(beta.value) < 5.0
    assert _covers(beta, 0.0)
    assert biases["gamma"].self_preference is None  # never a candidate


def test_self_preference_is_none_when_no_other_judge_saw_the_comparisons() -> None:
    rows = _world({"alpha": _favour("alpha", 0.6)}, [("alpha", "s1")], 40, seed=7)
    rows += _world({"gamma": lambda lo, hi: FAIR}, [("s1", "s2")], 40, seed=8)
    biases = _by_judge(judge_biases(Cells.from_rows(rows), Lineage(), n_bootstrap=50))
    assert biases["alpha"].self_preference is None


def test_humans_are_never_scored_for_self_preference() -> None:
    rows = _world(
        {"human-x": _favour("human-x", 0.6), "j": lambda lo, hi: FAIR}, [("a", "human-x")], 30, 9
    )
    biases = _by_judge(judge_biases(Cells.from_rows(rows), Lineage(), n_bootstrap=50))
    assert biases["human-x"].self_preference is None
    assert biases["j"].self_preference is None


# -- shape and pass-through ---------------------------------------------------------------------


def test_json_shape_sorting_and_length_pass_through() -> None:
    rows = _positioned("zeta", 0.6, 40, seed=10) + _positioned("human-panel", 0.5, 40, seed=11)
    length = {"zeta": Estimate(0.25, (0.1, 0.4))}
    biases = judge_biases(Cells.from_rows(rows), Lineage(), length=length, n_bootstrap=50)
    assert [b.judge for b in biases] == ["human-panel", "zeta"]
    human, zeta = biases
    assert zeta.length_bias == length["zeta"]
    assert human.length_bias is None
    payload = json.loads(json.dumps(zeta.to_json()))
    assert list(payload) == [
        "judge",
        "position_bias",
        "length_bias",
        "self_preference",
        "human_agreement",
        "error_bias",
        "n_verdicts",
    ]
    assert payload["judge"] == "zeta" and payload["n_verdicts"] == 80
    assert payload["length_bias"] == {"value": 0.25, "ci": [0.1, 0.4]}
    assert set(payload["position_bias"]) == {"value", "ci"}
    assert payload["self_preference"] is None and payload["error_bias"] is None
    assert human.to_json()["human_agreement"] is None


def test_empty_view_gives_no_rows() -> None:
    assert judge_biases(Cells.from_rows([]), Lineage()) == []


def test_same_seed_same_answer() -> None:
    cells = Cells.from_rows(_positioned("j", 0.6, 100, seed=12))
    first = judge_biases(cells, Lineage(), n_bootstrap=100, seed=5)
    assert judge_biases(cells, Lineage(), n_bootstrap=100, seed=5) == first


# -- end to end through the store ---------------------------------------------------------------


def test_simulated_stream_through_the_store(tmp_path: Path) -> None:
    events = list(simulate(Scenario(seed=2, prompts_per_benchmark=25, human_fraction=0.5)))
    with EventStore(tmp_path / "events.db") as store:
        Ingestor(store).ingest_lines([json.dumps(e).encode() for e in events], source="sim")
        cells = Cells.from_rows(store.verdict_counts())
        lineage = Lineage.from_events(store.events(PROVENANCE_TYPES))
    biases = _by_judge(judge_biases(cells, lineage, n_bootstrap=200))
    assert set(biases) == {
        "gpt-4o",
        "gpt-4o-mini",
        "gemini-1.5-pro",
        "llama-3.3-70b",
        "claude-3.5-sonnet",
        "human-panel",
    }
    llama = biases["llama-3.3-70b"].position_bias  # the strongest simulated position effect
    assert llama is not None and llama.ci is not None and llama.ci[0] > 0.5
    assert biases["human-panel"].position_bias is not None
    assert biases["human-panel"].human_agreement is None
    for name, bias in biases.items():
        assert bias.self_preference is None  # no judge is a candidate in the default world
        if name != "human-panel":
            assert bias.human_agreement is not None and 0.0 < bias.human_agreement.value < 1.0
    assert biases["gpt-4o"].error_bias is not None  # it wrote student-gpt4o's data


def test_simulated_self_preference_without_position_bias(tmp_path: Path) -> None:
    scenario = Scenario(
        seed=1,
        prompts_per_benchmark=80,
        benchmarks=("alpacaeval",),
        judges_as_candidates=True,
        self_preference=1.0,
        position_scale=0.0,
    )
    events = list(simulate(scenario))
    with EventStore(tmp_path / "events.db") as store:
        Ingestor(store).ingest_lines([json.dumps(e).encode() for e in events], source="sim")
        cells = Cells.from_rows(store.verdict_counts())
        lineage = Lineage.from_events(store.events(PROVENANCE_TYPES))
    biases = _by_judge(judge_biases(cells, lineage, n_bootstrap=200))
    for name, bias in biases.items():
        assert bias.position_bias is not None
        assert bias.position_bias.value == pytest.approx(0.5, abs=0.04)
        if name == "human-panel":
            assert bias.self_preference is None
            continue
        preference = bias.self_preference  # +1 log-odds towards its own answers
        assert preference is not None and preference.ci is not None and preference.ci[0] > 0.0
