"""A synthetic evaluation stream with known, injected preference leakage.

Detection code is only trustworthy if it finds leakage where we put it and stays quiet where we
did not. This module simulates a small but realistic world (judges that also generated training
data, students fine-tuned on that data, a human panel, three benchmarks) and emits it as JSON-ready
event dicts of schema v1 (:mod:`prefleak.models.events`). :func:`injected_leakage` returns the
ground truth, so tests can check a detector against it.

Outcome model, per game (one judge looking at one ordered pair of responses)::

    z = acuity_J * (u_F - u_G) + leak_J(F) - leak_J(G) + position_J + length_J * ln(len_F / len_G)
    P(first wins) = sigmoid(z - tau),  P(second wins) = sigmoid(-z - tau),  P(tie) = the rest

where F is the response shown first and G the one shown second, ``u`` is the quality of a response
(student quality + category skill + per-prompt noise; the same in every round, because the
responses are the same), and ``leak_J(S)`` is the injected log-odds bonus that judge J gives to
student S: ``leakage * method_factor * sum(share_d * weight[relation(J, generator_d)])``.

Stream order and time:

* Provenance (models, datasets, trainings) comes first, with ``ts`` in the first seconds of the
  span. A few provenance events (the ``late`` set: the judge ``claude-3.5-sonnet`` and the student
  ``student-mix`` with its training) are *sent* only after the first ``late_after`` verdicts, to
  mimic real streams that arrive out of order. They keep their early ``ts`` (when they happened), so
  they are the only events whose ``ts`` is lower than that of an event sent before them.
* Verdicts follow prompt by prompt, round by round, with strictly increasing ``ts`` spread over
  ``[start + 60 s, start + days]`` (the whole stream, all rounds together).
* With ``duplicate_fraction > 0`` some verdicts are re-sent right after the original: the same dict
  (same ``id`` and ``ts``), as an at-least-once producer would. The draws for duplicates and late
  provenance use their own random streams, so turning them on does not change any verdict.

Everything is a pure function of the :class:`Scenario`: the same scenario gives the same events.
Memory does not grow with the stream: verdicts are generated prompt by prompt.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import combinations
from typing import Any, Final

# --------------------------------------------------------------------------------------------
# The world
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Model:
    """A model or judge as announced by a ``model`` event."""

    model: str
    family: str | None
    series: str | None
    parent: str | None = None
    kind: str = "llm"


@dataclass(frozen=True)
class _Dataset:
    """A training dataset; ``generator`` None means human-written."""

    dataset: str
    generator: str | None
    size: int


@dataclass(frozen=True)
class _Student:
    """A student trained from ``base`` on a mixture of datasets, with its simulated ability."""

    model: str
    method: str
    mixture: tuple[tuple[str, float], ...]
    quality: float
    """Log-odds scale; what an unbiased judge would reward."""
    mean_len: int
    """Mean response length in tokens."""
    opener: str
    """Stylistic tic inherited from the dominant training data (used in response texts)."""


@dataclass(frozen=True)
class _Judge:
    """How a judge decides: sharpness, position and length bias."""

    model: str
    acuity: float
    position: float
    length: float


BASE_MODEL: Final = "mistral-7b"

MODELS: Final[tuple[_Model, ...]] = (
    _Model("gpt-4o", "openai", "gpt-4o"),
    _Model("gpt-4o-mini", "openai", "gpt-4o"),
    _Model("gemini-1.5-pro", "google", "gemini-1.5"),
    _Model("llama-3.3-70b", "meta", "llama-3"),
    _Model("claude-3.5-sonnet", "anthropic", "claude-3.5"),
    _Model("human-panel", None, None, kind="human"),
    _Model(BASE_MODEL, "mistral", "mistral-7b"),
)

DATASETS: Final[tuple[_Dataset, ...]] = (
    _Dataset("ultrachat-gpt-4o", "gpt-4o", 60_000),
    _Dataset("ultrachat-gemini-1.5-pro", "gemini-1.5-pro", 60_000),
    _Dataset("ultrachat-llama-3.3-70b", "llama-3.3-70b", 42_000),
    _Dataset("ultrafeedback-gpt-4o-mini", "gpt-4o-mini", 30_000),
    _Dataset("oasst-human", None, 18_000),
)

STUDENTS: Final[tuple[_Student, ...]] = (
    _Student("student-gpt4o", "sft", (("ultrachat-gpt-4o", 1.0),), 0.0, 420, "Certainly! "),
    _Student(
        "student-gemini", "sft", (("ultrachat-gemini-1.5-pro", 1.0),), 0.0, 390, "Here's a look: "
    ),
    _Student(
        "student-llama",
        "sft",
        (("ultrachat-llama-3.3-70b", 0.7), ("oasst-human", 0.3)),
        -0.15,
        310,
        "Sure thing. ",
    ),
    _Student(
        "student-mini-dpo",
        "dpo",
        (("ultrafeedback-gpt-4o-mini", 1.0),),
        -0.1,
        460,
        "Great question! ",
    ),
    _Student(
        "student-mix",
        "sft",
        (("ultrachat-gpt-4o", 0.5), ("ultrachat-gemini-1.5-pro", 0.5)),
        0.1,
        405,
        "Certainly, here's a look: ",
    ),
)

LLM_JUDGES: Final[tuple[_Judge, ...]] = (
    _Judge("gpt-4o", 1.0, 0.25, 0.25),
    _Judge("gpt-4o-mini", 0.8, 0.35, 0.35),
    _Judge("gemini-1.5-pro", 0.9, 0.2, 0.3),
    _Judge("llama-3.3-70b", 0.8, 0.4, 0.4),
    _Judge("claude-3.5-sonnet", 1.0, 0.15, 0.2),
)
HUMAN_JUDGE: Final = _Judge("human-panel", 1.1, 0.05, 0.1)

BENCHMARKS: Final[Mapping[str, tuple[str, ...]]] = {
    "alpacaeval": ("writing", "coding", "math", "reasoning", "roleplay"),
    "mtbench": (
        "writing",
        "roleplay",
        "reasoning",
        "math",
        "coding",
        "extraction",
        "stem",
        "humanities",
    ),
    "arena-hard": ("coding", "math", "creative", "hard-prompts"),
}
LENGTH_SCALE: Final[Mapping[str, float]] = {"alpacaeval": 1.0, "mtbench": 0.8, "arena-hard": 1.3}

CATEGORY_SKILL: Final[Mapping[tuple[str, str], float]] = {
    ("student-llama", "coding"): 0.25,
    ("student-llama", "math"): 0.15,
    ("student-gemini", "reasoning"): 0.15,
    ("student-gpt4o", "writing"): 0.15,
    ("student-mini-dpo", "roleplay"): 0.2,
    ("student-mix", "hard-prompts"): -0.2,
}

RELATION_WEIGHTS: Final[Mapping[str, float]] = {
    "same_model": 0.25,
    "inheritance": 0.2,
    "same_series": 0.1,
    "same_family": 0.04,
}
"""Log-odds bonus at ``leakage=1`` and share 1 for each relation of judge to data generator.

Tuned so the paper's PLS (both games must agree) comes out near its magnitudes: about 0.2 for
same-model judges (paper ≈ 24 %), with series and family ≈ 0.4 and 0.15 of that (paper 9 %, 3 %).
"""
METHOD_FACTORS: Final[Mapping[str, float]] = {"sft": 1.0, "dpo": 0.6}
"""SFT transfers a generator's preferences most directly; DPO on its preference data less so."""

LATE_MODELS: Final = frozenset({"claude-3.5-sonnet", "student-mix"})
"""Provenance sent after the first verdicts (see the module docstring)."""

RESPONSE_NOISE: Final = 0.7
"""Spread of a response's quality around its student's (log-odds); shared by all judges."""
TIE_MARGIN: Final = 0.25
"""Ordered-logit tie threshold; about 10 % of games end in a tie."""
LENGTH_SPREAD: Final = 0.35
PROVENANCE_LEAD_S: Final = 60.0


# --------------------------------------------------------------------------------------------
# Scenario and ground truth
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """The knobs of one simulated stream; defaults give about 89 000 verdicts per round."""

    seed: int = 0
    prompts_per_benchmark: int = 300
    leakage: float = 1.0
    """Scale of injected leakage; 0.0 gives a clean stream."""
    human_fraction: float = 0.2
    """Share of prompts also judged by the human panel."""
    single_game_fraction: float = 0.1
    """Share of comparisons where only one of the two position-swapped games is sent."""
    with_texts: bool = False
    """Include short synthetic prompt and response texts in verdicts."""
    start: datetime = datetime(2026, 11, 1, tzinfo=UTC)
    days: float = 7.0
    """Event-time span of the whole stream (all rounds)."""
    rounds: int = 1
    """How often the same prompt set is judged again (new ids, later ts): for load tests."""
    duplicate_fraction: float = 0.0
    """Share of verdicts re-sent right away with the same id, as at-least-once delivery does."""
    late_after: int | None = 200
    """Send the late provenance after this many verdicts; None sends all provenance first."""
    swap_labels: bool = False
    """Game 2 convention. False: same ``model_a``/``model_b``, ``first="b"``. True: ``model_a``
    and ``model_b`` swapped, ``first="a"`` in both games."""

    def __post_init__(self) -> None:
        """Reject knobs that would silently produce a meaningless stream."""
        for name in ("human_fraction", "single_game_fraction", "duplicate_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.prompts_per_benchmark < 1:
            raise ValueError("prompts_per_benchmark must be at least 1")
        if self.rounds < 1:
            raise ValueError("rounds must be at least 1")
        if self.leakage < 0.0:
            raise ValueError("leakage must not be negative")
        if self.days * 86_400 <= 2 * PROVENANCE_LEAD_S:
            raise ValueError("days must span more than two minutes")
        if self.start.tzinfo is None:
            raise ValueError("start must carry a UTC offset")
        if self.late_after is not None and self.late_after < 0:
            raise ValueError("late_after must not be negative")


_MODELS_BY_NAME: Final[Mapping[str, _Model]] = {m.model: m for m in MODELS}
_GENERATOR: Final[Mapping[str, str | None]] = {d.dataset: d.generator for d in DATASETS}


def _lineage(model: str) -> list[str]:
    """The model and its ancestors, nearest first."""
    chain: list[str] = []
    current: str | None = model
    while current is not None and current not in chain:
        chain.append(current)
        info = _MODELS_BY_NAME.get(current)
        current = info.parent if info else None
    return chain


def relation(judge: str, generator: str) -> str | None:
    """Closest relation of a judge to a data generator (paper §3), or None if unrelated."""
    if judge == generator:
        return "same_model"
    if judge in _lineage(generator) or generator in _lineage(judge):
        return "inheritance"
    j, g = _MODELS_BY_NAME.get(judge), _MODELS_BY_NAME.get(generator)
    if j is None or g is None:
        return None
    if j.series is not None and j.series == g.series:
        return "same_series"
    if j.family is not None and j.family == g.family:
        return "same_family"
    return None


def _bias(judge: str, student: _Student, leakage: float) -> float:
    """Injected log-odds bonus of ``judge`` for ``student``: relation × share × method × scale."""
    total = 0.0
    for dataset, share in student.mixture:
        generator = _GENERATOR[dataset]
        kind = relation(judge, generator) if generator is not None else None
        if kind is not None:
            total += share * RELATION_WEIGHTS[kind]
    return leakage * METHOD_FACTORS.get(student.method, 1.0) * total


def injected_leakage(scenario: Scenario) -> dict[tuple[str, str], float]:
    """Ground truth: the log-odds bonus each biased (judge, student) pair got; absent means 0.

    A clean scenario (``leakage=0``) returns an empty dict.
    """
    truth: dict[tuple[str, str], float] = {}
    for judge in (*LLM_JUDGES, HUMAN_JUDGE):
        for student in STUDENTS:
            bonus = _bias(judge.model, student, scenario.leakage)
            if bonus > 0.0:
                truth[(judge.model, student.model)] = bonus
    return truth


def judges() -> tuple[str, ...]:
    """All judges of the simulated world, the human panel last."""
    return (*(j.model for j in LLM_JUDGES), HUMAN_JUDGE.model)


def students() -> tuple[str, ...]:
    """All students of the simulated world."""
    return tuple(s.model for s in STUDENTS)


# --------------------------------------------------------------------------------------------
# The stream
# --------------------------------------------------------------------------------------------


def _provenance(scenario: Scenario) -> list[dict[str, Any]]:
    """Model, dataset and training events, with ts in the first seconds of the span."""
    events: list[dict[str, Any]] = []
    for m in MODELS:
        event: dict[str, Any] = {"type": "model", "model": m.model, "kind": m.kind}
        if m.family is not None:
            event["family"] = m.family
        if m.series is not None:
            event["series"] = m.series
        if m.parent is not None:
            event["parent"] = m.parent
        events.append(event)
    for d in DATASETS:
        events.append(
            {"type": "dataset", "dataset": d.dataset, "generator": d.generator, "size": d.size}
        )
    for s in STUDENTS:
        events.append(
            {
                "type": "model",
                "model": s.model,
                "family": "mistral",
                "series": "mistral-7b",
                "parent": BASE_MODEL,
                "kind": "llm",
            }
        )
        events.append(
            {
                "type": "training",
                "model": s.model,
                "base": BASE_MODEL,
                "method": s.method,
                "datasets": [{"dataset": d, "share": share} for d, share in s.mixture],
            }
        )
    for index, event in enumerate(events):
        name = event.get("model") or event.get("dataset")
        event["id"] = f"sim{scenario.seed}-{event['type']}-{name}"
        event["ts"] = (scenario.start + timedelta(seconds=index)).isoformat(timespec="microseconds")
    return events


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _texts(benchmark: str, category: str, prompt_id: str, index: int) -> tuple[str, dict[str, str]]:
    """Short placeholder texts; each student keeps the opener its training data taught it."""
    prompt = f"[{benchmark}/{category}] Task {index}: explain the idea behind item {index % 97}."
    responses = {
        s.model: f"{s.opener}For {prompt_id}, the key point is step {(index * 7) % 11 + 1}."
        for s in STUDENTS
    }
    return prompt, responses


def simulate(scenario: Scenario) -> Iterator[dict[str, Any]]:
    """Yield the event stream of ``scenario``: JSON-ready dicts, each with ``id`` and ``ts``."""
    provenance = _provenance(scenario)
    late_ids = {
        e["id"]
        for e in provenance
        if e.get("model") in LATE_MODELS and e["type"] in ("model", "training")
    }
    if not scenario.late_after:
        late_ids = set()
    early = [e for e in provenance if e["id"] not in late_ids]
    late = [e for e in provenance if e["id"] in late_ids]
    yield from early

    dup_rng = random.Random(f"{scenario.seed}/duplicates")
    bias = {
        (j.model, s.model): _bias(j.model, s, scenario.leakage)
        for j in (*LLM_JUDGES, HUMAN_JUDGE)
        for s in STUDENTS
    }
    pairs = list(combinations(range(len(STUDENTS)), 2))
    per_prompt_max = (len(LLM_JUDGES) + 1) * len(pairs) * 2
    slots = scenario.rounds * len(BENCHMARKS) * scenario.prompts_per_benchmark
    t0_us = int(PROVENANCE_LEAD_S * 1e6)
    slot_us = (scenario.days * 86_400e6 - t0_us) / slots
    step_us = slot_us / per_prompt_max
    last_us = -1
    sent = 0
    seed = scenario.seed
    single = scenario.single_game_fraction
    swap_labels = scenario.swap_labels
    start = scenario.start
    slot = 0

    for rnd in range(scenario.rounds):
        for benchmark, categories in BENCHMARKS.items():
            length_scale = LENGTH_SCALE[benchmark]
            for index in range(scenario.prompts_per_benchmark):
                # Per-prompt facts (category, responses) are the same in every round.
                prompt_rng = random.Random(f"{seed}/{benchmark}/{index}")
                category = categories[prompt_rng.randrange(len(categories))]
                quality = [
                    s.quality
                    + CATEGORY_SKILL.get((s.model, category), 0.0)
                    + prompt_rng.gauss(0.0, RESPONSE_NOISE)
                    for s in STUDENTS
                ]
                lengths = [
                    max(
                        1,
                        round(
                            s.mean_len * length_scale * prompt_rng.lognormvariate(0, LENGTH_SPREAD)
                        ),
                    )
                    for s in STUDENTS
                ]
                log_len = [math.log(n) for n in lengths]
                with_human = prompt_rng.random() < scenario.human_fraction
                prompt_id = f"{benchmark}-{index:04d}"
                text_fields: tuple[str, dict[str, str]] | None = None
                if scenario.with_texts:
                    text_fields = _texts(benchmark, category, prompt_id, index)

                rng = random.Random(f"{seed}/{rnd}/{benchmark}/{index}")
                panel = (*LLM_JUDGES, HUMAN_JUDGE) if with_human else LLM_JUDGES
                base_us = t0_us + slot * slot_us
                slot += 1
                within = 0
                for judge in panel:
                    name = judge.model
                    for i, j in pairs:
                        # Which student is "a" in game 1 is random, so labels carry no signal.
                        x, y = (i, j) if rng.random() < 0.5 else (j, i)
                        games: tuple[int, ...] = (1, 2)
                        if rng.random() < single:
                            games = (1,) if rng.random() < 0.5 else (2,)
                        sx, sy = STUDENTS[x].model, STUDENTS[y].model
                        for game in games:
                            # Game 1 shows x first, game 2 shows y first.
                            f, g = (x, y) if game == 1 else (y, x)
                            sf, sg = STUDENTS[f].model, STUDENTS[g].model
                            z = (
                                judge.acuity * (quality[f] - quality[g])
                                + bias[(name, sf)]
                                - bias[(name, sg)]
                                + judge.position
                                + judge.length * (log_len[f] - log_len[g])
                            )
                            r = rng.random()
                            p_first = _sigmoid(z - TIE_MARGIN)
                            if r < p_first:
                                shown_winner: int | None = f
                            elif r < p_first + _sigmoid(-z - TIE_MARGIN):
                                shown_winner = g
                            else:
                                shown_winner = None
                            if swap_labels and game == 2:
                                a, b, first = y, x, "a"
                            else:
                                a, b, first = x, y, "a" if game == 1 else "b"
                            winner = (
                                "tie"
                                if shown_winner is None
                                else ("a" if shown_winner == a else "b")
                            )
                            ts_us = max(int(base_us + within * step_us), last_us + 1)
                            within += 1
                            last_us = ts_us
                            sa, sb = STUDENTS[a].model, STUDENTS[b].model
                            event: dict[str, Any] = {
                                "type": "verdict",
                                "id": f"sim{seed}-r{rnd}-{prompt_id}-{name}-{sx}-{sy}-g{game}",
                                "ts": (start + timedelta(microseconds=ts_us)).isoformat(
                                    timespec="microseconds"
                                ),
                                "benchmark": benchmark,
                                "prompt_id": prompt_id,
                                "judge": name,
                                "model_a": sa,
                                "model_b": sb,
                                "winner": winner,
                                "game": game,
                                "first": first,
                                "category": category,
                                "len_a": lengths[a],
                                "len_b": lengths[b],
                            }
                            if text_fields is not None:
                                event["prompt"] = text_fields[0]
                                event["response_a"] = text_fields[1][sa]
                                event["response_b"] = text_fields[1][sb]
                            yield event
                            if scenario.duplicate_fraction and (
                                dup_rng.random() < scenario.duplicate_fraction
                            ):
                                yield dict(event)
                            sent += 1
                            if late and sent == scenario.late_after:
                                yield from late
                                late = []
    # A stream shorter than late_after still announces everything.
    yield from late
