"""The simulator is the yardstick for detection, so its stream must be valid, reproducible and
carry exactly the leakage its ground truth claims."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable
from dataclasses import replace
from datetime import datetime, timedelta
from itertools import islice, pairwise
from pathlib import Path
from statistics import NormalDist
from typing import Any

import pytest

from prefleak.cli import main
from prefleak.models.events import PROVENANCE_TYPES, parse_object
from prefleak.simulate import (
    BASELINE,
    BENCHMARKS,
    LLM_JUDGES,
    METHOD_FACTORS,
    RELATION_WEIGHTS,
    TIE_MARGIN,
    Scenario,
    Truth,
    candidates,
    injected_effects,
    injected_leakage,
    judges,
    relation,
    relation_shares,
    simulate,
    students,
)

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
        {"relation_weights": {"same_modle": 0.3}},
        {"relation_weights": {"same_model": math.nan}},
        {"method_factors": {"rlhf": 1.0}},
        {"method_factors": {"dpo": -0.5}},
        {"response_noise": -0.1},
        {"position_scale": math.inf},
        {"self_preference": 0.5},
        {"topology": "star"},
        {"change_at": 0.5},
        {"leakage_after": 0.0},
        {"change_at": 1.5, "leakage_after": 0.0},
        {"change_at": 0.5, "leakage_after": -1.0},
        {"benchmarks": ()},
        {"benchmarks": ("alpacaeval", "alpacaeval")},
        {"benchmarks": ("mmlu",)},
        {"track": " "},
    ],
)
def test_bad_knobs_are_rejected(knobs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Scenario(**knobs)


# -- the knobs for the statistics work ---------------------------------------------------------

ONE = ("alpacaeval",)
"""One benchmark: small, fast worlds without benchmark-by-time confounding."""


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _model_probabilities(
    events: list[dict[str, Any]], truth: Truth
) -> list[tuple[dict[str, Any], float, float]]:
    """Each verdict with P(a wins), P(b wins) under the paired-comparison model and ``truth``:

    eta = s_a - s_b + sum_k m * beta_k * (r_k(J, a) - r_k(J, b)) + gamma_J * ([a = J] - [b = J])
          + pi_J * pos + lambda_J * (ln len_a - ln len_b),  pos = +1 if a was shown first.

    Only what a verdict, the training events and the truth say is used."""
    methods = {e["model"]: e["method"] for e in events if e["type"] == "training"}
    shares: dict[tuple[str, str], dict[str, float]] = {}

    def leak(judge: str, candidate: str, beta: dict[str, float]) -> float:
        if (judge, candidate) not in shares:
            shares[(judge, candidate)] = relation_shares(judge, candidate)
        r = shares[(judge, candidate)]
        factor = truth.method_factors.get(methods.get(candidate, ""), 1.0)
        return factor * sum(beta[k] * share for k, share in r.items())

    out = []
    for v in _verdicts(events):
        judge, a, b = v["judge"], v["model_a"], v["model_b"]
        beta = truth.relation_log_odds_at(datetime.fromisoformat(v["ts"]))
        gamma = truth.self_preference[judge]
        eta = (
            truth.strength[a] - truth.strength[b]
            + leak(judge, a, beta) - leak(judge, b, beta)
            + gamma * ((a == judge) - (b == judge))
            + truth.position[judge] * (1 if v["first"] == "a" else -1)
            + truth.length[judge] * (math.log(v["len_a"]) - math.log(v["len_b"]))
        )  # fmt: skip
        tau = truth.tie_threshold
        out.append((v, _sigmoid(eta - tau), _sigmoid(-eta - tau)))
    return out


def _misfits(
    rows: list[tuple[dict[str, Any], float, float]],
    groups: dict[str, Callable[[dict[str, Any]], Hashable]],
) -> list[str]:
    """The groupings in which some group's a-wins or b-wins count is off its expectation under
    the model by more than a 0.001 family-wise level allows (Bonferroni over the groups)."""
    failed = []
    for name, group in groups.items():
        sums: dict[tuple[Hashable, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        for v, p_a, p_b in rows:
            for outcome, p in (("a", p_a), ("b", p_b)):
                acc = sums[(group(v), outcome)]
                acc[0] += v["winner"] == outcome
                acc[1] += p
                acc[2] += p * (1 - p)
        z = [abs(obs - exp) / math.sqrt(var) for obs, exp, var in sums.values() if var > 0]
        if max(z) > NormalDist().inv_cdf(1 - 0.0005 / len(z)):
            failed.append(name)
    return failed


def _calibration_groups(truth: Truth) -> dict[str, Callable[[dict[str, Any]], Hashable]]:
    """Ways to split verdicts so that each injected effect shows in some group."""
    related = {(j, c) for j in judges() for c in students() if any(relation_shares(j, c).values())}

    def after(v: dict[str, Any]) -> bool:
        return truth.change_ts is not None and datetime.fromisoformat(v["ts"]) > truth.change_ts

    return {
        "judge": lambda v: (v["judge"], v["first"]),
        "own answer": lambda v: (v["judge"] == v["model_a"], v["judge"] == v["model_b"]),
        "related": lambda v: (
            (v["judge"], v["model_a"]) in related,
            (v["judge"], v["model_b"]) in related,
            after(v),
        ),
        "pair": lambda v: (v["judge"], v["model_a"], v["model_b"]),
        "longer": lambda v: (v["judge"], v["len_a"] > v["len_b"]),
    }


@pytest.mark.parametrize("topology", ["round_robin", "baseline"])
def test_a_well_specified_world_is_exactly_the_paired_comparison_model(topology: str) -> None:
    """Truth must describe the stream: every group's win counts match the model's expectation,
    and a truth that leaves out any injected effect is caught."""
    scenario = Scenario.well_specified(
        seed=3,
        prompts_per_benchmark=100,
        benchmarks=ONE,
        topology=topology,
        judges_as_candidates=True,
        self_preference=0.6,
        leakage=3.0,
        change_at=0.5,
        leakage_after=0.0,
        relation_weights={"same_family": 0.3},
        length_scale=3.0,
    )
    events = list(simulate(scenario))
    truth = injected_effects(scenario)
    assert set(truth.acuity.values()) == {1.0}
    assert truth.method_factors == dict.fromkeys(METHOD_FACTORS, 1.0)
    groups = _calibration_groups(truth)
    assert _misfits(_model_probabilities(events, truth), groups) == []

    # A truth that leaves out any one effect misfits in the grouping that shows that effect.
    wrong: dict[str, Truth] = {
        "own answer": replace(truth, self_preference=dict.fromkeys(judges(), 0.0)),
        "related": replace(truth, relation_log_odds_after=None, change_ts=None),
        "judge": replace(truth, position=dict.fromkeys(judges(), 0.0)),
        "longer": replace(truth, length=dict.fromkeys(judges(), 0.0)),
    }
    for grouping, bad in wrong.items():
        assert grouping in _misfits(_model_probabilities(events, bad), groups), grouping
    no_leakage = replace(truth, relation_log_odds=dict.fromkeys(RELATION_WEIGHTS, 0.0))
    assert "related" in _misfits(_model_probabilities(events, no_leakage), groups)
    no_strengths = replace(truth, strength=dict.fromkeys(truth.strength, 0.0))
    assert _misfits(_model_probabilities(events, no_strengths), groups)


def test_defaults_are_the_documented_world() -> None:
    truth = injected_effects(Scenario())
    assert truth.relation_log_odds == RELATION_WEIGHTS
    assert truth.relation_log_odds_after is None and truth.change_ts is None
    assert truth.method_factors == METHOD_FACTORS
    assert set(truth.position) == set(truth.length) == set(truth.acuity) == set(judges())
    assert {j.model: (j.position, j.length) for j in LLM_JUDGES}.items() <= {
        j: (truth.position[j], truth.length[j]) for j in judges()
    }.items()
    assert truth.position["human-panel"] > 0 and len(set(truth.acuity.values())) > 1
    assert set(truth.self_preference.values()) == {0.0}
    assert truth.tie_threshold == TIE_MARGIN
    assert set(truth.strength) == set(students()) == set(candidates(Scenario()))
    # Overrides equal to the defaults, given explicitly, change nothing.
    explicit = Scenario(
        prompts_per_benchmark=12,
        human_fraction=0.5,
        relation_weights=dict(RELATION_WEIGHTS),
        method_factors=dict(METHOD_FACTORS),
        benchmarks=tuple(BENCHMARKS),
    )
    assert list(simulate(explicit)) == list(simulate(SMALL))


def test_every_verdict_carries_the_covariates_and_a_track() -> None:
    verdicts = _verdicts(list(simulate(SMALL)))
    keys = ("game", "first", "category", "len_a", "len_b", "track")
    assert all(all(v.get(k) is not None for k in keys) for v in verdicts)
    assert {v["track"] for v in verdicts} == {"main"}
    bare = _verdicts(list(simulate(replace(SMALL, track=None))))
    assert not any("track" in v for v in bare)
    assert [{k: x for k, x in v.items() if k != "track"} for v in verdicts] == bare


def test_relation_weights_set_the_leakage_per_kind() -> None:
    only_same_model = {"inheritance": 0.0, "same_series": 0.0, "same_family": 0.0}
    truth = injected_leakage(Scenario(relation_weights=only_same_model | {"same_model": 0.5}))
    assert truth[("gpt-4o", "student-gpt4o")] == pytest.approx(0.5)
    assert truth[("gpt-4o", "student-mix")] == pytest.approx(0.25)
    assert truth[("gpt-4o-mini", "student-mini-dpo")] == pytest.approx(0.5 * METHOD_FACTORS["dpo"])
    assert ("gpt-4o-mini", "student-gpt4o") not in truth  # same series: turned off
    assert all(relation_shares(j, student)["same_model"] > 0 for j, student in truth)
    effects = injected_effects(Scenario(leakage=2.0, relation_weights={"same_series": 0.3}))
    assert effects.relation_log_odds == {
        "same_model": 2 * RELATION_WEIGHTS["same_model"],
        "inheritance": 2 * RELATION_WEIGHTS["inheritance"],
        "same_series": pytest.approx(0.6),
        "same_family": 2 * RELATION_WEIGHTS["same_family"],
    }
    # All kinds off is the clean stream, event for event.
    off = Scenario(prompts_per_benchmark=8, relation_weights=dict.fromkeys(RELATION_WEIGHTS, 0.0))
    assert injected_leakage(off) == {}
    assert list(simulate(off)) == list(simulate(replace(off, relation_weights=None, leakage=0.0)))


def test_method_factors_scale_a_students_leakage() -> None:
    default = injected_leakage(Scenario())
    full = injected_leakage(Scenario(method_factors={"dpo": 1.0}))
    pair = ("gpt-4o-mini", "student-mini-dpo")
    assert default[pair] == pytest.approx(METHOD_FACTORS["dpo"] * full[pair])
    assert full[pair] == pytest.approx(RELATION_WEIGHTS["same_model"])
    assert {k: v for k, v in full.items() if k[1] != "student-mini-dpo"} == {
        k: v for k, v in default.items() if k[1] != "student-mini-dpo"
    }
    assert ("gpt-4o-mini", "student-mini-dpo") not in injected_leakage(
        Scenario(method_factors={"dpo": 0.0})
    )


def _first_wins(events: list[dict[str, Any]]) -> dict[str, float]:
    wins: dict[str, list[bool]] = defaultdict(list)
    for v in _verdicts(events):
        if v["winner"] != "tie":
            wins[v["judge"]].append(v["winner"] == v["first"])
    return {judge: sum(w) / len(w) for judge, w in wins.items()}


def _longer_wins(events: list[dict[str, Any]]) -> float:
    wins: list[bool] = [
        v["winner"] == ("a" if v["len_a"] > v["len_b"] else "b")
        for v in _verdicts(events)
        if v["winner"] != "tie" and v["len_a"] != v["len_b"]
    ]
    return sum(wins) / len(wins)


def test_position_scale_turns_position_bias_off_and_up() -> None:
    base = Scenario(prompts_per_benchmark=40, human_fraction=0.5)
    off = _first_wins(list(simulate(replace(base, position_scale=0.0))))
    assert set(off) == set(judges())
    assert all(0.44 < share < 0.56 for share in off.values()), off
    default = _first_wins(list(simulate(base)))
    double = _first_wins(list(simulate(replace(base, position_scale=2.0))))
    llm = [j.model for j in LLM_JUDGES]
    assert sum(default[j] for j in llm) / len(llm) > 0.54
    assert all(double[j] > default[j] + 0.02 for j in llm)
    truth = injected_effects(replace(base, position_scale=0.0))
    assert set(truth.position.values()) == {0.0}


def test_length_scale_turns_length_bias_off_and_up() -> None:
    base = Scenario(prompts_per_benchmark=40, benchmarks=ONE, leakage=0.0)
    off = _longer_wins(list(simulate(replace(base, length_scale=0.0))))
    strong = _longer_wins(list(simulate(replace(base, length_scale=3.0))))
    assert 0.45 < off < 0.55
    assert strong > 0.6
    assert set(injected_effects(replace(base, length_scale=0.0)).length.values()) == {0.0}


def test_noise_free_equal_acuity_world_repeats_its_verdicts() -> None:
    """Without response noise a candidate's strength is the same on every prompt and for
    every judge with equal acuity: the truth's strengths, exactly."""
    scenario = Scenario.well_specified(prompts_per_benchmark=5, benchmarks=ONE)
    truth = injected_effects(scenario)
    assert scenario.response_noise == 0.0 and scenario.equal_acuity
    assert not scenario.category_skill
    assert set(truth.acuity.values()) == {1.0}
    noisy = injected_effects(replace(scenario, response_noise=0.7, equal_acuity=False))
    assert noisy.strength == truth.strength and len(set(noisy.acuity.values())) > 1


def test_judges_as_candidates_meet_students_and_prefer_themselves() -> None:
    base = Scenario(prompts_per_benchmark=60, benchmarks=ONE, human_fraction=0.5)
    plain = _verdicts(list(simulate(base)))
    scenario = replace(base, judges_as_candidates=True, self_preference=1.5)
    verdicts = _verdicts(list(simulate(scenario)))
    llm = {j.model for j in LLM_JUDGES}
    own = [v for v in verdicts if llm & {v["model_a"], v["model_b"]}]
    assert own and set(candidates(scenario)) == set(students()) | llm
    assert all(bool(llm & {v["model_a"], v["model_b"]}) != bool(
        set(students()) >= {v["model_a"], v["model_b"]}) for v in verdicts)  # fmt: skip
    assert all(len(llm & {v["model_a"], v["model_b"]}) == 1 for v in own)  # vs a student
    # Every judge, the human panel included, rates every judge model's answers.
    assert {(v["judge"], c) for v in own for c in llm & {v["model_a"], v["model_b"]}} == {
        (j, c) for j in judges() for c in llm
    }
    # Each judge model's answer meets one or two students per prompt, the same for every judge.
    opponents: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for v in own:
        [c] = llm & {v["model_a"], v["model_b"]}
        [s] = {v["model_a"], v["model_b"]} - {c}
        opponents[(v["prompt_id"], c)][v["judge"]].add(s)
    for by_judge in opponents.values():
        meets = [frozenset(found) for found in by_judge.values()]
        assert len(set(meets)) == 1 and 1 <= len(meets[0]) <= 2
    # The student-only verdicts are the same as without the judges' answers (only ts moved).
    unchanged = {v["id"]: v for v in verdicts if not llm & {v["model_a"], v["model_b"]}}
    assert len(unchanged) == len(plain)
    for v in plain:
        assert {**unchanged[v["id"]], "ts": v["ts"]} == v
    # Self-preference: a judge's own answer wins more often when that judge rates it.
    rate: dict[bool, list[bool]] = defaultdict(list)
    for v in own:
        [c] = llm & {v["model_a"], v["model_b"]}
        if v["winner"] != "tie":
            rate[v["judge"] == c].append(v["model_" + v["winner"]] == c)
    assert sum(rate[True]) / len(rate[True]) > sum(rate[False]) / len(rate[False]) + 0.15
    truth = injected_effects(scenario)
    assert truth.self_preference == {j: (1.5 if j in llm else 0.0) for j in judges()}


def test_baseline_topology_never_pairs_two_students_and_still_carries_leakage() -> None:
    scenario = Scenario(prompts_per_benchmark=150, benchmarks=ONE, topology="baseline", leakage=3.0)
    events = list(simulate(scenario))
    verdicts = _verdicts(events)
    assert all(BASELINE.model in (v["model_a"], v["model_b"]) for v in verdicts)
    assert {v["model_a"] for v in verdicts} | {v["model_b"] for v in verdicts} == {
        BASELINE.model,
        *students(),
    }
    [announced] = [e for e in events if e.get("model") == BASELINE.model]
    assert announced["type"] == "model" and announced["family"] not in {
        e.get("family") for e in events if e.get("model") in judges()
    }
    assert not any(e["type"] == "training" and e["model"] == BASELINE.model for e in events)
    assert all(relation(j, BASELINE.model) is None for j in judges())
    assert relation_shares("gpt-4o", BASELINE.model) == dict.fromkeys(RELATION_WEIGHTS, 0.0)
    # gpt-4o rates its student above the baseline more often than the unrelated claude does.
    wins: dict[str, list[bool]] = defaultdict(list)
    for v in verdicts:
        if "student-gpt4o" in (v["model_a"], v["model_b"]) and v["winner"] != "tie":
            wins[v["judge"]].append(v["model_" + v["winner"]] == "student-gpt4o")
    share = {judge: sum(w) / len(w) for judge, w in wins.items()}
    assert share["gpt-4o"] > share["claude-3.5-sonnet"] + 0.08


def test_change_at_switches_the_leakage_at_a_known_time() -> None:
    scenario = Scenario(
        prompts_per_benchmark=200, benchmarks=ONE, leakage=3.0, change_at=0.5, leakage_after=0.0
    )
    truth = injected_effects(scenario)
    assert truth.change_ts == scenario.start + timedelta(days=3.5)
    assert truth.relation_log_odds == {k: 3 * w for k, w in RELATION_WEIGHTS.items()}
    assert truth.relation_log_odds_after == dict.fromkeys(RELATION_WEIGHTS, 0.0)
    before_ts, after_ts = truth.change_ts - timedelta(seconds=1), truth.change_ts
    assert truth.relation_log_odds_at(before_ts) == truth.relation_log_odds
    assert truth.relation_log_odds_at(after_ts) == truth.relation_log_odds  # "after" is strict
    assert truth.relation_log_odds_at(after_ts + timedelta(microseconds=1)) == {
        k: 0.0 for k in RELATION_WEIGHTS
    }
    assert injected_leakage(scenario) == injected_leakage(replace(scenario, change_at=None,
                                                                  leakage_after=None))  # fmt: skip

    # gpt-4o's edge for its student over gemini's, before and after the change.
    def edge(verdicts: list[dict[str, Any]]) -> float:
        won: Counter[str] = Counter()
        for v in verdicts:
            if v["judge"] == "gpt-4o" and {v["model_a"], v["model_b"]} == {
                "student-gpt4o",
                "student-gemini",
            }:
                won[v["winner"] if v["winner"] == "tie" else v["model_" + v["winner"]]] += 1
        return (won["student-gpt4o"] - won["student-gemini"]) / sum(won.values())

    verdicts = _verdicts(list(simulate(scenario)))
    change = truth.change_ts
    early = [v for v in verdicts if datetime.fromisoformat(v["ts"]) <= change]
    late = [v for v in verdicts if datetime.fromisoformat(v["ts"]) > change]
    assert 0.4 < len(early) / len(verdicts) < 0.6
    assert edge(early) > 0.25 and abs(edge(late)) < 0.15
    # Before the change the stream is the unchanged one, verdict for verdict.
    steady = _verdicts(list(simulate(replace(scenario, change_at=None, leakage_after=None))))
    assert early == steady[: len(early)]


def test_benchmarks_restrict_the_world_and_days_all_get_verdicts() -> None:
    scenario = Scenario(prompts_per_benchmark=20, benchmarks=("mtbench",), days=7.0)
    verdicts = _verdicts(list(simulate(scenario)))
    assert {v["benchmark"] for v in verdicts} == {"mtbench"}
    assert {v["category"] for v in verdicts} <= set(BENCHMARKS["mtbench"])
    days = Counter(
        int((datetime.fromisoformat(v["ts"]) - scenario.start) / timedelta(days=1))
        for v in verdicts
    )
    assert set(days) == set(range(7)) and min(days.values()) > len(verdicts) / 7 / 2
    full = _verdicts(list(simulate(replace(scenario, benchmarks=None))))
    mtbench = [v for v in full if v["benchmark"] == "mtbench"]
    assert [(v["id"], v["winner"]) for v in mtbench] == [(v["id"], v["winner"]) for v in verdicts]


def test_scenarios_with_mappings_are_values() -> None:
    weights = {"same_model": 0.4}
    scenario = Scenario(relation_weights=weights)
    weights["same_model"] = 9.0
    assert scenario.relation_weights == {"same_model": 0.4}
    assert scenario == Scenario(relation_weights={"same_model": 0.4})
    assert hash(scenario) == hash(Scenario(relation_weights={"same_model": 0.4}))
    assert scenario != Scenario()
    with pytest.raises(TypeError):
        scenario.relation_weights["same_model"] = 1.0  # type: ignore[index]


def test_cli_flags_reach_the_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.jsonl"
    argv = [
        "simulate", "--prompts", "4", "--seed", "2", "--days", "2", "--benchmarks", "alpacaeval",
        "--topology", "baseline", "--judges-as-candidates", "--self-preference", "0.3",
        "--relation-weight", "same_model=0.5", "--relation-weight", "same_family=0",
        "--method-factor", "dpo=1", "--position-scale", "0.5", "--length-scale", "2",
        "--response-noise", "0", "--equal-acuity", "--no-category-skill",
        "--change-at", "0.5", "--leakage-after", "0.2", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    expected = Scenario(
        seed=2, prompts_per_benchmark=4, days=2.0, benchmarks=ONE, topology="baseline",
        judges_as_candidates=True, self_preference=0.3,
        relation_weights={"same_model": 0.5, "same_family": 0.0}, method_factors={"dpo": 1.0},
        position_scale=0.5, length_scale=2.0, response_noise=0.0, equal_acuity=True,
        category_skill=False, change_at=0.5, leakage_after=0.2,
    )  # fmt: skip
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == list(simulate(expected))
    for bad, message in [
        (["--relation-weight", "same_modle=1"], "unknown key 'same_modle'"),
        (["--method-factor", "dpo"], "expected KEY=NUMBER"),
        (["--change-at", "0.5"], "give both or neither"),
        (["--benchmarks", "alpacaeval,mmlu"], "unknown benchmark 'mmlu'"),
        (["--self-preference", "0.5"], "needs judges_as_candidates"),
    ]:
        capsys.readouterr()
        assert main(["simulate", "--prompts", "1", *bad]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("topology", ["round_robin", "baseline"])
def test_new_worlds_validate_with_unique_ids(topology: str) -> None:
    scenario = Scenario(
        prompts_per_benchmark=4, rounds=2, with_texts=True, topology=topology,
        judges_as_candidates=True, self_preference=0.3, change_at=0.3, leakage_after=2.0,
    )  # fmt: skip
    events = list(simulate(scenario))
    assert len({e["id"] for e in events}) == len(events)
    assert all(parse_object(e).id == e["id"] for e in events)
    assert {e["model"] for e in events if e["type"] == "model"} >= set(candidates(scenario))
