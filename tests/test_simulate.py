"""The simulator is the yardstick for detection, so its stream must be valid, reproducible and
carry exactly the leakage its ground truth claims."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from itertools import islice, pairwise
from typing import Any

import pytest

from prefleak.models.events import PROVENANCE_TYPES, parse_object
from prefleak.simulate import Scenario, injected_leakage, judges, simulate, students

SMALL = Scenario(prompts_per_benchmark=12, human_fraction=0.5)


def _verdicts(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "verdict"]


def _comparison_key(event: dict[str, Any]) -> str:
    """Both games of one comparison share the id up to the game suffix."""
    return str(event["id"]).rsplit("-g", 1)[0]


def _shown_first(event: dict[str, Any]) -> str:
    return str(event["model_a"] if event["first"] == "a" else event["model_b"])


def paper_pls(
    events: list[dict[str, Any]], judge_i: str, judge_j: str, student_i: str, student_j: str
) -> float:
    """PLS of Li et al. 2025 from the verdicts; a student wins only if both games agree."""
    games: dict[str, dict[int, tuple[str, str | None]]] = defaultdict(dict)
    for e in events:
        if e["type"] != "verdict" or e["judge"] not in (judge_i, judge_j):
            continue
        if {e["model_a"], e["model_b"]} != {student_i, student_j}:
            continue
        winner = None if e["winner"] == "tie" else e["model_" + e["winner"]]
        games[_comparison_key(e)][e["game"]] = (e["judge"], winner)
    wins: dict[tuple[str, str], int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for pair in games.values():
        if len(pair) < 2:
            continue
        (judge, first), (_, second) = pair[1], pair[2]
        total[judge] += 1
        if first is not None and first == second:
            wins[(first, judge)] += 1

    def wr(student: str, judge: str) -> float:
        return wins[(student, judge)] / total[judge]

    avg_i = (wr(student_i, judge_i) + wr(student_i, judge_j)) / 2
    avg_j = (wr(student_j, judge_j) + wr(student_j, judge_i)) / 2
    return 0.5 * (
        (wr(student_i, judge_i) - avg_i) / avg_i + (wr(student_j, judge_j) - avg_j) / avg_j
    )


def test_same_seed_same_events_other_seed_other_outcomes() -> None:
    assert list(simulate(SMALL)) == list(simulate(SMALL))
    other = Scenario(seed=1, prompts_per_benchmark=12, human_fraction=0.5)
    winners = [e.get("winner") for e in simulate(SMALL)]
    assert winners != [e.get("winner") for e in simulate(other)]


def test_every_event_validates_and_has_id_and_ts() -> None:
    scenario = Scenario(prompts_per_benchmark=8, with_texts=True, duplicate_fraction=0.05)
    events = list(simulate(scenario))
    for raw in events:
        assert "id" in raw and "ts" in raw
        event = parse_object(raw)
        assert event.id == raw["id"]
        assert event.ts is not None and event.ts.utcoffset() is not None
    verdicts = _verdicts(events)
    assert all(v["prompt"] and v["response_a"] and v["response_b"] for v in verdicts)
    assert {e["model"] for e in events if e["type"] == "model"} >= set(judges()) | set(students())


def test_verdict_time_increases_and_late_provenance_arrives_after_verdicts() -> None:
    scenario = Scenario(prompts_per_benchmark=20, days=2.0)
    events = list(simulate(scenario))
    stamps = [datetime.fromisoformat(v["ts"]) for v in _verdicts(events)]
    assert all(a < b for a, b in pairwise(stamps))
    assert stamps[0] > scenario.start
    assert (stamps[-1] - scenario.start).total_seconds() <= 2.0 * 86_400
    types = [e["type"] for e in events]
    first_verdict = types.index("verdict")
    late = [e for e in events[first_verdict:] if e["type"] in PROVENANCE_TYPES]
    assert {e["model"] for e in late} == {"claude-3.5-sonnet", "student-mix"}
    assert types.index("verdict") < events.index(late[0]) < len(events) - 1
    assert all(datetime.fromisoformat(e["ts"]) < stamps[0] for e in late)
    in_order = list(simulate(Scenario(prompts_per_benchmark=20, days=2.0, late_after=None)))
    assert all(e["type"] == "verdict" for e in in_order[in_order.index(_verdicts(in_order)[0]) :])


@pytest.mark.parametrize("swap_labels", [False, True])
def test_both_games_present_and_position_swapped(swap_labels: bool) -> None:
    scenario = Scenario(prompts_per_benchmark=30, swap_labels=swap_labels)
    comparisons: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for v in _verdicts(list(simulate(scenario))):
        assert v["game"] not in comparisons[_comparison_key(v)]
        comparisons[_comparison_key(v)][v["game"]] = v
    both = [c for c in comparisons.values() if len(c) == 2]
    single_share = 1 - len(both) / len(comparisons)
    assert 0.05 < single_share < 0.15
    for c in both:
        g1, g2 = c[1], c[2]
        assert g1["first"] == "a"
        assert {g1["model_a"], g1["model_b"]} == {g2["model_a"], g2["model_b"]}
        assert _shown_first(g1) == g1["model_a"]
        assert _shown_first(g2) == g1["model_b"]
        if swap_labels:
            assert (g2["model_a"], g2["model_b"], g2["first"]) == (
                g1["model_b"],
                g1["model_a"],
                "a",
            )
            assert (g2["len_a"], g2["len_b"]) == (g1["len_b"], g1["len_a"])
        else:
            assert (g2["model_a"], g2["model_b"], g2["first"]) == (
                g1["model_a"],
                g1["model_b"],
                "b",
            )
            assert (g2["len_a"], g2["len_b"]) == (g1["len_a"], g1["len_b"])
        for key in ("benchmark", "prompt_id", "judge", "category"):
            assert g1[key] == g2[key]


def test_outcome_rates_are_realistic() -> None:
    verdicts = _verdicts(list(simulate(Scenario(prompts_per_benchmark=100))))
    ties = sum(v["winner"] == "tie" for v in verdicts) / len(verdicts)
    first_wins = sum(v["winner"] == v["first"] for v in verdicts) / len(verdicts)
    assert 0.05 < ties < 0.15
    assert 0.47 < first_wins < 0.6  # position bias for the first-shown response
    prompts = {(v["benchmark"], v["prompt_id"]) for v in verdicts}
    human = {(v["benchmark"], v["prompt_id"]) for v in verdicts if v["judge"] == "human-panel"}
    assert 0.1 < len(human) / len(prompts) < 0.3


def test_clean_scenario_has_no_injected_leakage() -> None:
    assert injected_leakage(Scenario(leakage=0.0)) == {}
    truth = injected_leakage(Scenario())
    assert truth[("gpt-4o", "student-gpt4o")] > truth[("gpt-4o-mini", "student-gpt4o")] > 0
    assert truth[("gpt-4o", "student-gpt4o")] > truth[("gpt-4o", "student-mix")] > 0
    assert truth[("gemini-1.5-pro", "student-gemini")] > 0
    assert ("llama-3.3-70b", "student-llama") in truth
    assert not any(j in ("claude-3.5-sonnet", "human-panel") for j, _ in truth)
    assert ("gpt-4o", "student-gemini") not in truth
    doubled = injected_leakage(Scenario(leakage=2.0))
    assert doubled == pytest.approx({k: 2 * v for k, v in truth.items()})


def test_paper_pls_detects_injected_leakage() -> None:
    events = list(simulate(Scenario(prompts_per_benchmark=600)))
    pls = paper_pls(events, "gpt-4o", "gemini-1.5-pro", "student-gpt4o", "student-gemini")
    assert 0.1 < pls < 0.3


def test_paper_pls_is_near_zero_without_leakage() -> None:
    events = list(simulate(Scenario(prompts_per_benchmark=600, leakage=0.0)))
    pls = paper_pls(events, "gpt-4o", "gemini-1.5-pro", "student-gpt4o", "student-gemini")
    assert abs(pls) < 0.05


def test_duplicates_resend_the_same_event_and_change_nothing_else() -> None:
    plain = list(simulate(SMALL))
    noisy = list(
        simulate(Scenario(prompts_per_benchmark=12, human_fraction=0.5, duplicate_fraction=0.2))
    )
    assert len(noisy) > len(plain)
    seen: dict[str, dict[str, Any]] = {}
    deduplicated = []
    for event in noisy:
        if event["id"] in seen:
            assert event == seen[event["id"]]
            continue
        seen[event["id"]] = event
        deduplicated.append(event)
    assert deduplicated == plain
    assert len({e["id"] for e in plain}) == len(plain)


def test_rounds_rejudge_the_same_prompts_later_with_new_ids() -> None:
    one = _verdicts(list(simulate(Scenario(prompts_per_benchmark=5))))
    two = _verdicts(list(simulate(Scenario(prompts_per_benchmark=5, rounds=2))))
    first, second = two[: len(two) // 2], two[len(two) // 2 :]
    assert {v["prompt_id"] for v in first} == {v["prompt_id"] for v in second}
    assert not {v["id"] for v in first} & {v["id"] for v in second}
    assert max(v["ts"] for v in first) < min(v["ts"] for v in second)
    assert len(one) * 2 == pytest.approx(len(two), rel=0.1)


def test_stream_is_lazy() -> None:
    huge = Scenario(prompts_per_benchmark=100_000, rounds=1_000)
    assert len(list(islice(simulate(huge), 5_000))) == 5_000


@pytest.mark.parametrize(
    "knobs",
    [
        {"human_fraction": 1.5},
        {"single_game_fraction": -0.1},
        {"prompts_per_benchmark": 0},
        {"rounds": 0},
        {"leakage": -1.0},
        {"start": datetime(2026, 11, 1)},
    ],
)
def test_bad_knobs_are_rejected(knobs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Scenario(**knobs)
