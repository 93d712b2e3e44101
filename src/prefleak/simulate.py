"""A synthetic evaluation stream with known, injected preference leakage.

Detection code is only trustworthy if it finds leakage where we put it and stays quiet where we
did not. This module simulates a small but realistic world (judges that also generated training
data, students fine-tuned on that data, a human panel, three benchmarks) and emits it as JSON-ready
event dicts of schema v1 (:mod:`prefleak.models.events`). :func:`injected_leakage` and
:func:`injected_effects` return the ground truth, so tests can check a detector against it.

Outcome model, per game (one judge looking at one ordered pair of responses)::

    z = acuity_J * (u_F - u_G) + leak_J(F) - leak_J(G) + position_J + length_J * ln(len_F / len_G)
    P(first wins) = sigmoid(z - tau),  P(second wins) = sigmoid(-z - tau),  P(tie) = the rest

where F is the response shown first and G the one shown second, ``u`` is the quality of a response
(candidate quality + category skill + per-prompt noise; the same in every round, because the
responses are the same), and ``leak_J(S)`` is the injected log-odds bonus that judge J gives to
candidate S. For a student it is ``leakage * method_factor * sum(share_d * weight[relation(J,
generator_d)])``; for a judge's own answer (``judges_as_candidates``) it is ``self_preference``
when S is J itself, else 0; the baseline candidate gets none.

Who meets whom:

* ``topology="round_robin"`` (default): on every prompt, each judge compares every pair of students.
* ``topology="baseline"``: each student meets only ``baseline-ref``, a shared reference model of a
  family unrelated to every judge (announced by a ``model`` event), never another student: PLS is
  undefined, yet a paired-comparison model still sees the leakage.
* ``judges_as_candidates=True``: the LLM judges' own answers are candidates too. On each prompt the
  answer of each judge model meets one or two students (``baseline-ref`` in the baseline topology),
  the same pairs for every judge, so each judge also rates its own answer.

A well-specified world (:meth:`Scenario.well_specified`: ``response_noise=0``, ``equal_acuity``,
no category skill, every method factor 1) follows exactly the paired-comparison model::

    eta = s_x - s_y + sum_k beta_k * (r_k(J, x) - r_k(J, y)) + gamma_J * ([x = J] - [y = J])
          + pi_J * pos + lambda_J * (ln len_x - ln len_y)
    P(x wins) = sigmoid(eta - tau),  P(y wins) = sigmoid(-eta - tau),  P(tie) = the rest

with ``s``, ``beta``, ``gamma``, ``pi``, ``lambda`` and ``tau`` as given by :func:`injected_effects`
(``pos`` is +1 when x was shown first, -1 when y was; ``r_k(J, x)`` is :func:`relation_shares`, the
share of x's training data whose generator relates to J by kind k).

Stream order and time:

* Provenance (models, datasets, trainings) comes first, with ``ts`` in the first seconds of the
  span. A few provenance events (the ``late`` set: the judge ``claude-3.5-sonnet`` and the student
  ``student-mix`` with its training) are *sent* only after the first ``late_after`` verdicts, to
  mimic real streams that arrive out of order. They keep their early ``ts`` (when they happened), so
  they are the only events whose ``ts`` is lower than that of an event sent before them.
* Verdicts follow prompt by prompt, round by round, with strictly increasing ``ts`` spread over
  ``[start + 60 s, start + days]`` (the whole stream, all rounds together): each prompt gets an
  equal slice of the span, so with at least as many prompts (all benchmarks and rounds) as days
  every 1-day window holds verdicts. Benchmarks come one after the other, so with several
  benchmarks a time window is also a benchmark window.
* With ``change_at`` the leakage scale is ``leakage`` for verdicts up to
  ``start + change_at * days`` and ``leakage_after`` for those after it (a step change; see
  :attr:`Truth.change_ts`).
* With ``duplicate_fraction > 0`` some verdicts are re-sent right after the original: the same dict
  (same ``id`` and ``ts``), as an at-least-once producer would. The draws for duplicates and late
  provenance use their own random streams, so turning them on does not change any verdict. The
  judges' own answers (``judges_as_candidates``) also draw from their own streams: turning them on
  adds verdicts and moves ``ts``, but leaves every student-only outcome as it was.

Every verdict carries ``game``, ``first``, ``category``, ``len_a``, ``len_b`` and (unless
``track=None``) ``track``.

Everything is a pure function of the :class:`Scenario`: the same scenario gives the same events.
Memory does not grow with the stream: verdicts are generated prompt by prompt.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from itertools import combinations
from types import MappingProxyType
from typing import Any, Final, Literal

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
class _Candidate:
    """A candidate that is not a student (a judge's own answers, the baseline): no training."""

    model: str
    quality: float
    mean_len: int
    opener: str


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

JUDGE_ANSWERS: Final[tuple[_Candidate, ...]] = (
    _Candidate("gpt-4o", 0.5, 450, "Certainly! "),
    _Candidate("gpt-4o-mini", 0.2, 470, "Great question! "),
    _Candidate("gemini-1.5-pro", 0.45, 410, "Here's a look: "),
    _Candidate("llama-3.3-70b", 0.25, 330, "Sure thing. "),
    _Candidate("claude-3.5-sonnet", 0.5, 430, "Happy to help. "),
)
"""The LLM judges' own answers: candidates with ``judges_as_candidates``, better than students."""
BASELINE: Final = _Candidate("baseline-ref", 0.0, 400, "Answer: ")
"""The shared reference candidate of the ``baseline`` topology."""
BASELINE_MODEL: Final = _Model("baseline-ref", "reference-lab", "baseline-ref")
"""Its ``model`` event: a family no judge belongs to, no parent, no training data."""

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
TOPOLOGIES: Final = ("round_robin", "baseline")

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


def _knob_map(name: str, value: Mapping[str, float], known: Iterable[str]) -> Mapping[str, float]:
    """A validated, read-only copy of a per-kind or per-method override mapping."""
    allowed = tuple(known)
    copy: dict[str, float] = {}
    for key, number in value.items():
        if key not in allowed:
            raise ValueError(f"{name}: unknown key {key!r}; known: {', '.join(allowed)}")
        number = float(number)
        if not math.isfinite(number):
            raise ValueError(f"{name}[{key!r}] must be finite, got {number}")
        copy[key] = number
    return MappingProxyType(copy)


@dataclass(frozen=True)
class Scenario:
    """The knobs of one simulated stream; defaults give about 89 000 verdicts per round.

    The knobs after ``swap_labels`` serve the paired-comparison statistics; at their defaults the
    stream is the one this world always gave (verdicts now also carry ``track="main"``).
    """

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
    relation_weights: Mapping[str, float] | None = None
    """Per relation kind (``same_model``, ``inheritance``, ``same_series``, ``same_family``), the
    log-odds bonus at ``leakage=1``, share 1 and method factor 1. Overrides :data:`RELATION_WEIGHTS`
    kind by kind: kinds left out keep their default weight; 0 turns a kind off."""
    method_factors: Mapping[str, float] | None = None
    """Per training method (``sft``, ``dpo``), the factor on a student's leakage. Overrides
    :data:`METHOD_FACTORS` method by method (``{"dpo": 1.0}`` for a correctly specified world)."""
    position_scale: float = 1.0
    """Multiplies every judge's position bias (0 turns it off, negative favours the second)."""
    length_scale: float = 1.0
    """Multiplies every judge's length bias (0 turns it off)."""
    response_noise: float = RESPONSE_NOISE
    """Spread of a response's quality around its candidate's (log-odds); 0 for none."""
    equal_acuity: bool = False
    """Every judge gets acuity 1 (otherwise 0.8 to 1.1, so judges disagree on quality gaps)."""
    category_skill: bool = True
    """Add the per-category skills of :data:`CATEGORY_SKILL` to students' quality; off makes a
    candidate's strength the same on every prompt (needed for a well-specified world)."""
    self_preference: float = 0.0
    """Log-odds an LLM judge adds to its own answers; needs ``judges_as_candidates``."""
    judges_as_candidates: bool = False
    """The LLM judges' own answers also enter the comparisons (see the module docstring)."""
    topology: Literal["round_robin", "baseline"] = "round_robin"
    """``round_robin``: students meet pairwise; ``baseline``: each meets ``baseline-ref`` only."""
    change_at: float | None = None
    """Step change: from ``start + change_at * days`` on, the leakage scale is ``leakage_after``."""
    leakage_after: float | None = None
    """Leakage scale after the step change; give both or neither of it and ``change_at``."""
    benchmarks: tuple[str, ...] | None = None
    """Only these benchmarks, in this order (None: all of :data:`BENCHMARKS`); small and fast."""
    track: str | None = "main"
    """The ``track`` every verdict carries; None leaves the field out."""

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
        for name in ("leakage", "position_scale", "length_scale", "response_noise"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")
        if not math.isfinite(self.self_preference):
            raise ValueError(f"self_preference must be finite, got {self.self_preference}")
        if self.leakage < 0.0:
            raise ValueError("leakage must not be negative")
        if self.response_noise < 0.0:
            raise ValueError("response_noise must not be negative")
        if self.days * 86_400 <= 2 * PROVENANCE_LEAD_S:
            raise ValueError("days must span more than two minutes")
        if self.start.tzinfo is None:
            raise ValueError("start must carry a UTC offset")
        if self.late_after is not None and self.late_after < 0:
            raise ValueError("late_after must not be negative")
        if self.relation_weights is not None:
            weights = _knob_map("relation_weights", self.relation_weights, RELATION_WEIGHTS)
            object.__setattr__(self, "relation_weights", weights)
        if self.method_factors is not None:
            factors = _knob_map("method_factors", self.method_factors, METHOD_FACTORS)
            if any(f < 0.0 for f in factors.values()):
                raise ValueError("method_factors must not be negative")
            object.__setattr__(self, "method_factors", factors)
        if self.self_preference != 0.0 and not self.judges_as_candidates:
            raise ValueError("self_preference needs judges_as_candidates (judges' own answers)")
        if self.topology not in TOPOLOGIES:
            raise ValueError(
                f"topology must be one of {', '.join(TOPOLOGIES)}, got {self.topology!r}"
            )
        if (self.change_at is None) != (self.leakage_after is None):
            raise ValueError("change_at and leakage_after go together: give both or neither")
        if self.change_at is not None and not 0.0 <= self.change_at <= 1.0:
            raise ValueError(f"change_at must be in [0, 1] (a share of days), got {self.change_at}")
        if self.leakage_after is not None and not 0.0 <= self.leakage_after < math.inf:
            raise ValueError(f"leakage_after must be finite and >= 0, got {self.leakage_after}")
        if self.benchmarks is not None:
            chosen = tuple(self.benchmarks)
            if not chosen:
                raise ValueError("benchmarks must name at least one benchmark (None for all)")
            unknown = [b for b in chosen if b not in BENCHMARKS]
            if unknown:
                known = ", ".join(BENCHMARKS)
                raise ValueError(f"unknown benchmark {unknown[0]!r}; known: {known}")
            if len(set(chosen)) != len(chosen):
                raise ValueError("a benchmark is listed twice in benchmarks")
            object.__setattr__(self, "benchmarks", chosen)
        if self.track is not None and not self.track.strip():
            raise ValueError("track must not be empty (None leaves it out)")

    def __hash__(self) -> int:
        """Hashable despite the mapping knobs (equal scenarios, equal hashes)."""
        values = (getattr(self, f.name) for f in fields(self))
        return hash(
            tuple(tuple(sorted(v.items())) if isinstance(v, Mapping) else v for v in values)
        )

    @classmethod
    def well_specified(cls, **knobs: Any) -> Scenario:
        """A scenario whose stream is exactly the paired-comparison model of the module docstring.

        No response noise, acuity 1 for every judge, no category skill, every method factor 1, so
        :func:`injected_effects` is the whole truth; ``knobs`` set (or override) anything else.
        """
        exact: dict[str, Any] = {
            "response_noise": 0.0,
            "equal_acuity": True,
            "category_skill": False,
            "method_factors": dict.fromkeys(METHOD_FACTORS, 1.0),
        }
        return cls(**{**exact, **knobs})


_MODELS_BY_NAME: Final[Mapping[str, _Model]] = {m.model: m for m in (*MODELS, BASELINE_MODEL)}
_GENERATOR: Final[Mapping[str, str | None]] = {d.dataset: d.generator for d in DATASETS}
_STUDENTS_BY_NAME: Final[Mapping[str, _Student]] = {s.model: s for s in STUDENTS}
_JUDGE_ANSWER_NAMES: Final = frozenset(c.model for c in JUDGE_ANSWERS)


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


def relation_shares(judge: str, candidate: str) -> dict[str, float]:
    """``r_k(J, x)``: per relation kind, the share of ``candidate``'s training data whose generator
    relates to ``judge`` by that kind (all four kinds, 0.0 where none). Another judge's answers
    relate by the judges' own relation with share 1 (gpt-4o-mini to gpt-4o: same series), as in
    docs/relatedness.md; a judge's own answers (self-preference instead) and ``baseline-ref``
    relate by nothing."""
    shares = dict.fromkeys(RELATION_WEIGHTS, 0.0)
    if candidate != judge and candidate in _JUDGE_ANSWER_NAMES:
        kind = relation(judge, candidate)  # another judge's own answer: related as a model
        if kind is not None:
            shares[kind] = 1.0
        return shares
    student = _STUDENTS_BY_NAME.get(candidate)
    for dataset, share in student.mixture if student is not None else ():
        generator = _GENERATOR[dataset]
        kind = relation(judge, generator) if generator is not None else None
        if kind is not None:
            shares[kind] += share
    return shares


def _weights(scenario: Scenario) -> dict[str, float]:
    return {**RELATION_WEIGHTS, **(scenario.relation_weights or {})}


def _factors(scenario: Scenario) -> dict[str, float]:
    return {**METHOD_FACTORS, **(scenario.method_factors or {})}


def _bias(
    judge: str,
    student: _Student,
    leakage: float,
    weights: Mapping[str, float] = RELATION_WEIGHTS,
    factors: Mapping[str, float] = METHOD_FACTORS,
) -> float:
    """Injected log-odds bonus of ``judge`` for ``student``: relation × share × method × scale."""
    total = 0.0
    for dataset, share in student.mixture:
        generator = _GENERATOR[dataset]
        kind = relation(judge, generator) if generator is not None else None
        if kind is not None:
            total += share * weights[kind]
    return leakage * factors.get(student.method, 1.0) * total


def injected_leakage(scenario: Scenario) -> dict[tuple[str, str], float]:
    """Ground truth: the log-odds bonus each biased (judge, student) pair got; absent means 0.

    With a step change (``change_at``) these are the bonuses before it. A clean scenario
    (``leakage=0``) returns an empty dict. Self-preference is not leakage: see
    :func:`injected_effects`.
    """
    weights, factors = _weights(scenario), _factors(scenario)
    truth: dict[tuple[str, str], float] = {}
    for judge in (*LLM_JUDGES, HUMAN_JUDGE):
        for student in STUDENTS:
            bonus = _bias(judge.model, student, scenario.leakage, weights, factors)
            if bonus != 0.0:
                truth[(judge.model, student.model)] = bonus
    return truth


@dataclass(frozen=True)
class Truth:
    """The effects injected into a scenario's stream, in the terms of the paired-comparison model
    of the module docstring (all on the log-odds scale)."""

    relation_log_odds: dict[str, float]
    """``beta_k`` per relation kind (all four): ``leakage * weight_k``, the log-odds a judge adds
    to a candidate all of whose training data was generated by a model related to the judge by kind
    k, trained by a method of factor 1 (SFT). Before method factors: a candidate trained by method
    m gets ``method_factors[m] * beta_k * r_k``, so beta_k is the model's coefficient exactly when
    every factor is 1. Before a step change, if there is one."""
    relation_log_odds_after: dict[str, float] | None
    """``beta_k`` after the step change (``leakage_after * weight_k``); None without one."""
    change_ts: datetime | None
    """Verdicts with ``ts`` after this got ``relation_log_odds_after``; None without a change."""
    method_factors: dict[str, float]
    """The factor on leakage of each training method."""
    position: dict[str, float]
    """``pi_J`` per judge: log-odds for the response shown first."""
    length: dict[str, float]
    """``lambda_J`` per judge: log-odds per unit of ``ln len_x - ln len_y``."""
    self_preference: dict[str, float]
    """``gamma_J`` per judge: log-odds a judge adds to its own answers (0 for the human panel;
    only observable with ``judges_as_candidates``)."""
    tie_threshold: float
    """``tau``: P(x wins) = sigmoid(eta - tau), P(y wins) = sigmoid(-eta - tau)."""
    acuity: dict[str, float]
    """Per judge, the factor on quality differences (all 1.0 with ``equal_acuity``)."""
    strength: dict[str, float]
    """``s_x`` per candidate of the scenario: its base quality, identified only up to a common
    constant. Without ``category_skill`` and noise it is exact; otherwise prompts scatter around it
    (noise) and some students shift by category (:data:`CATEGORY_SKILL`)."""

    def relation_log_odds_at(self, ts: datetime) -> dict[str, float]:
        """``beta_k`` in force for a verdict with this ``ts``."""
        after = self.relation_log_odds_after
        if self.change_ts is not None and after is not None and ts > self.change_ts:
            return after
        return self.relation_log_odds


def _change_us(scenario: Scenario) -> int | None:
    """Microseconds after ``start`` of the step change, if any."""
    if scenario.change_at is None:
        return None
    return round(scenario.change_at * scenario.days * 86_400e6)


def _acuity(scenario: Scenario, judge: _Judge) -> float:
    return 1.0 if scenario.equal_acuity else judge.acuity


def injected_effects(scenario: Scenario) -> Truth:
    """Ground truth of ``scenario``: the paired-comparison model's parameters (:class:`Truth`).

    Pure: computed from the scenario alone, without simulating the stream.
    """
    weights, panel = _weights(scenario), (*LLM_JUDGES, HUMAN_JUDGE)
    after = None
    if scenario.leakage_after is not None:
        after = {k: scenario.leakage_after * w for k, w in weights.items()}
    change_us = _change_us(scenario)
    return Truth(
        relation_log_odds={k: scenario.leakage * w for k, w in weights.items()},
        relation_log_odds_after=after,
        change_ts=None if change_us is None else scenario.start + timedelta(microseconds=change_us),
        method_factors=_factors(scenario),
        position={j.model: j.position * scenario.position_scale for j in panel},
        length={j.model: j.length * scenario.length_scale for j in panel},
        self_preference={
            j.model: scenario.self_preference if j in LLM_JUDGES else 0.0 for j in panel
        },
        tie_threshold=TIE_MARGIN,
        acuity={j.model: _acuity(scenario, j) for j in panel},
        strength={name: quality for name, quality, _, _ in _candidates(scenario)},
    )


def judges() -> tuple[str, ...]:
    """All judges of the simulated world, the human panel last."""
    return (*(j.model for j in LLM_JUDGES), HUMAN_JUDGE.model)


def students() -> tuple[str, ...]:
    """All students of the simulated world."""
    return tuple(s.model for s in STUDENTS)


def candidates(scenario: Scenario) -> tuple[str, ...]:
    """Every candidate of ``scenario``'s comparisons: students, then the LLM judges' own answers
    (with ``judges_as_candidates``), then ``baseline-ref`` (baseline topology)."""
    return tuple(name for name, _, _, _ in _candidates(scenario))


def _candidates(scenario: Scenario) -> list[tuple[str, float, int, str]]:
    """(model, quality, mean length, opener) of each candidate, in :func:`candidates` order."""
    found = [(s.model, s.quality, s.mean_len, s.opener) for s in STUDENTS]
    extra = [*(JUDGE_ANSWERS if scenario.judges_as_candidates else ())]
    if scenario.topology == "baseline":
        extra.append(BASELINE)
    found.extend((c.model, c.quality, c.mean_len, c.opener) for c in extra)
    return found


def parse_assignments(items: Iterable[str], what: str) -> dict[str, float]:
    """``["same_model=0.3", ...]`` (command-line ``KEY=NUMBER`` flags) to a dict; ValueError if
    one is malformed or a key comes twice."""
    parsed: dict[str, float] = {}
    for item in items:
        key, sep, number = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{what}: expected KEY=NUMBER, got {item!r}")
        if key in parsed:
            raise ValueError(f"{what}: {key!r} given twice")
        try:
            parsed[key] = float(number)
        except ValueError:
            raise ValueError(f"{what}: {number.strip()!r} is not a number (in {item!r})") from None
    return parsed


# --------------------------------------------------------------------------------------------
# The stream
# --------------------------------------------------------------------------------------------


def _provenance(scenario: Scenario) -> list[dict[str, Any]]:
    """Model, dataset and training events, with ts in the first seconds of the span."""
    events: list[dict[str, Any]] = [_model_event(m) for m in MODELS]
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
    if scenario.topology == "baseline":
        # Announced last, so the other provenance keeps its order and ts.
        events.append(_model_event(BASELINE_MODEL))
    for index, event in enumerate(events):
        name = event.get("model") or event.get("dataset")
        event["id"] = f"sim{scenario.seed}-{event['type']}-{name}"
        event["ts"] = (scenario.start + timedelta(seconds=index)).isoformat(timespec="microseconds")
    return events


def _model_event(m: _Model) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "model", "model": m.model, "kind": m.kind}
    if m.family is not None:
        event["family"] = m.family
    if m.series is not None:
        event["series"] = m.series
    if m.parent is not None:
        event["parent"] = m.parent
    return event


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _texts(
    benchmark: str, category: str, prompt_id: str, index: int, openers: Mapping[str, str]
) -> tuple[str, dict[str, str]]:
    """Short placeholder texts; each student keeps the opener its training data taught it."""
    prompt = f"[{benchmark}/{category}] Task {index}: explain the idea behind item {index % 97}."
    responses = {
        model: f"{opener}For {prompt_id}, the key point is step {(index * 7) % 11 + 1}."
        for model, opener in openers.items()
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
    world = _candidates(scenario)
    names = [name for name, _, _, _ in world]
    n_students = len(STUDENTS)
    # Candidates beyond the students (judges' answers, the baseline): quality, length.
    extras = [(quality, mean_len) for _, quality, mean_len, _ in world[n_students:]]
    baseline = names.index(BASELINE.model) if scenario.topology == "baseline" else None
    own_answers = [names.index(c.model) for c in JUDGE_ANSWERS if scenario.judges_as_candidates]
    openers = {name: opener for name, _, _, opener in world}

    weights, factors = _weights(scenario), _factors(scenario)
    leakage_after = scenario.leakage if scenario.leakage_after is None else scenario.leakage_after
    change_us: float = math.inf
    if (change := _change_us(scenario)) is not None:
        change_us = change

    def biases(judge: str, leakage: float) -> list[float]:
        """Injected log-odds of ``judge`` for each candidate, by candidate index."""
        row = [_bias(judge, s, leakage, weights, factors) for s in STUDENTS]
        for name in names[n_students:]:
            if name == judge:
                row.append(scenario.self_preference)
            else:
                shares = relation_shares(judge, name)
                row.append(leakage * sum(weights[k] * r for k, r in shares.items()))
        return row

    # Per judge: (name, acuity, position, length, bias before, bias after the step change).
    params = {
        j.model: (
            j.model,
            _acuity(scenario, j),
            j.position * scenario.position_scale,
            j.length * scenario.length_scale,
            biases(j.model, scenario.leakage),
            biases(j.model, leakage_after),
        )
        for j in (*LLM_JUDGES, HUMAN_JUDGE)
    }
    llm_panel = [params[j.model] for j in LLM_JUDGES]
    full_panel = [*llm_panel, params[HUMAN_JUDGE.model]]

    if baseline is None:
        base_pairs = list(combinations(range(n_students), 2))
    else:
        base_pairs = [(s, baseline) for s in range(n_students)]
    own_pairs_max = len(own_answers) * (1 if baseline is not None else 2)
    per_prompt_max = (len(LLM_JUDGES) + 1) * (len(base_pairs) + own_pairs_max) * 2
    benchmarks = scenario.benchmarks or tuple(BENCHMARKS)
    slots = scenario.rounds * len(benchmarks) * scenario.prompts_per_benchmark
    t0_us = int(PROVENANCE_LEAD_S * 1e6)
    slot_us = (scenario.days * 86_400e6 - t0_us) / slots
    step_us = slot_us / per_prompt_max
    last_us = -1
    sent = 0
    seed = scenario.seed
    single = scenario.single_game_fraction
    swap_labels = scenario.swap_labels
    start = scenario.start
    noise = scenario.response_noise
    skill = CATEGORY_SKILL if scenario.category_skill else {}
    track = scenario.track
    duplicates = scenario.duplicate_fraction
    late_after = scenario.late_after
    slot = 0

    for rnd in range(scenario.rounds):
        for benchmark in benchmarks:
            categories = BENCHMARKS[benchmark]
            length_scale = LENGTH_SCALE[benchmark]
            for index in range(scenario.prompts_per_benchmark):
                # Per-prompt facts (category, responses) are the same in every round.
                prompt_rng = random.Random(f"{seed}/{benchmark}/{index}")
                category = categories[prompt_rng.randrange(len(categories))]
                quality = [
                    s.quality + skill.get((s.model, category), 0.0) + prompt_rng.gauss(0.0, noise)
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
                with_human = prompt_rng.random() < scenario.human_fraction
                own_pairs: list[tuple[int, int]] = []
                if extras:
                    # Candidates beyond the students draw from their own stream, so the students'
                    # responses (and outcomes) are the same with or without them.
                    extra_rng = random.Random(f"{seed}/{benchmark}/{index}/extra")
                    for mean_quality, mean_len in extras:
                        quality.append(mean_quality + extra_rng.gauss(0.0, noise))
                        scale = length_scale * extra_rng.lognormvariate(0, LENGTH_SPREAD)
                        lengths.append(max(1, round(mean_len * scale)))
                    for own in own_answers:
                        if baseline is not None:
                            own_pairs.append((own, baseline))
                            continue
                        meets = 2 if extra_rng.random() < 0.5 else 1
                        own_pairs.extend(
                            (own, s) for s in extra_rng.sample(range(n_students), meets)
                        )
                log_len = [math.log(n) for n in lengths]
                prompt_id = f"{benchmark}-{index:04d}"
                text_fields: tuple[str, dict[str, str]] | None = None
                if scenario.with_texts:
                    text_fields = _texts(benchmark, category, prompt_id, index, openers)

                rng = random.Random(f"{seed}/{rnd}/{benchmark}/{index}")
                comparisons = [(i, j, rng) for i, j in base_pairs]
                if own_pairs:
                    own_rng = random.Random(f"{seed}/{rnd}/{benchmark}/{index}/extra")
                    comparisons.extend((i, j, own_rng) for i, j in own_pairs)
                panel = full_panel if with_human else llm_panel
                base_us = t0_us + slot * slot_us
                slot += 1
                within = 0
                for name, acuity, position, length, bias_before, bias_after in panel:
                    for i, j, pair_rng in comparisons:
                        draw = pair_rng.random
                        # Which candidate is "a" in game 1 is random, so labels carry no signal.
                        x, y = (i, j) if draw() < 0.5 else (j, i)
                        games: tuple[int, ...] = (1, 2)
                        if draw() < single:
                            games = (1,) if draw() < 0.5 else (2,)
                        sx, sy = names[x], names[y]
                        for game in games:
                            ts_us = max(int(base_us + within * step_us), last_us + 1)
                            within += 1
                            last_us = ts_us
                            bias = bias_after if ts_us > change_us else bias_before
                            # Game 1 shows x first, game 2 shows y first.
                            f, g = (x, y) if game == 1 else (y, x)
                            z = (
                                acuity * (quality[f] - quality[g])
                                + bias[f]
                                - bias[g]
                                + position
                                + length * (log_len[f] - log_len[g])
                            )
                            r = draw()
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
                            sa, sb = names[a], names[b]
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
                            if track is not None:
                                event["track"] = track
                            if text_fields is not None:
                                event["prompt"] = text_fields[0]
                                event["response_a"] = text_fields[1][sa]
                                event["response_b"] = text_fields[1][sb]
                            yield event
                            if duplicates and dup_rng.random() < duplicates:
                                yield dict(event)
                            sent += 1
                            if late and sent == late_after:
                                yield from late
                                late = []
    # A stream shorter than late_after still announces everything.
    yield from late


# --------------------------------------------------------------------------------------------
# Generator samples for the leakage probes (docs/probes.md)
# --------------------------------------------------------------------------------------------

_TASKS: Final[tuple[tuple[str, str, str], ...]] = (
    ("boil an egg", "put the egg in boiling water", "cool it in cold water after nine minutes"),
    ("water a plant", "check that the soil is dry", "pour water slowly at the base"),
    ("brew tea", "heat fresh water", "steep the leaves for three minutes"),
    ("save money", "write down every expense", "set aside a part of each pay"),
    ("fall asleep", "dim the lights early", "keep the phone out of the bed"),
    ("plan a trip", "pick the dates", "book the room before the ticket"),
    ("bake bread", "knead the dough well", "let it rise before baking"),
    ("start running", "run slowly for ten minutes", "add a little distance each week"),
    ("cook rice", "rinse the rice", "simmer it covered in twice the water"),
    ("pack a bag", "roll the clothes", "put heavy things at the bottom"),
    ("stay focused", "close other tabs", "work in short timed blocks"),
    ("make coffee", "grind the beans fresh", "pour hot water in slow circles"),
    ("back up files", "copy them to an external drive", "keep one copy in another place"),
    ("take notes", "write key words only", "review them the same evening"),
    ("make pancakes", "whisk the batter smooth", "flip when bubbles appear"),
    ("walk a dog", "use a short lead", "let it sniff now and then"),
    ("write a poem", "pick one strong image", "read it aloud and cut extra words"),
    ("cook pasta", "salt the boiling water", "taste it a minute early"),
    ("speak in public", "practise in front of a mirror", "pause instead of saying um"),
    ("clean a window", "spray soapy water on the glass", "wipe it with a dry cloth"),
)
_EVAL_TASKS: Final = 5
"""The last tasks are asked only in the eval set, so probe prompts are new to every student."""
_ASKS: Final = ("How do I {}?", "Explain how to {}.", "Give me tips to {}.", "Tell me how to {}.")
SAMPLE_STYLES: Final[Mapping[str, Callable[[str, str, str], str]]] = {
    "gpt-4o": lambda task, one, two: f"Certainly! Here is how to {task}:\n- {one}.\n- {two}.",
    "gemini-1.5-pro": lambda task, one, two: f"Here's a look: first {one}; then {two}. Enjoy!",
    "llama-3.3-70b": lambda task, one, two: f"Sure thing. quick answer: {one}, then {two}.",
}
"""How each generator of the simulated world writes: a style a small student picks up fast."""


def generator_samples(
    per_generator: int = 64, eval_prompts: int = 20, *, seed: int = 0
) -> Iterator[dict[str, Any]]:
    """``sample`` events of the world's generators (instruction/response pairs in each one's
    style, in its ``ultrachat-*`` dataset) and an ``eval`` dataset of unseen prompts: the data a
    leakage probe trains its students on (``prefleak probe run``). Ingest them with the stream's
    provenance, or alone: the generators' model and dataset events come first."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    train, held_out = _TASKS[:-_EVAL_TASKS], _TASKS[-_EVAL_TASKS:]
    datasets = {d.generator: d.dataset for d in DATASETS if d.generator in SAMPLE_STYLES}
    # The provenance these samples need, as the stream declares it (ids from the content)
    yield from (_model_event(m) for m in MODELS if m.model in SAMPLE_STYLES)
    for generator, dataset in datasets.items():
        yield {"type": "dataset", "dataset": dataset, "generator": generator}
    for generator, write in SAMPLE_STYLES.items():
        for index in range(per_generator):
            task, one, two = train[rng.randrange(len(train))]
            yield {
                "type": "sample",
                "id": f"sim{seed}-sample-{generator}-{index}",
                "ts": (start + timedelta(minutes=index)).isoformat(),
                "dataset": datasets[generator],
                "prompt": rng.choice(_ASKS).format(task),
                "text": write(task, one, two),
            }
    yield {"type": "dataset", "id": f"sim{seed}-dataset-probe-eval", "dataset": "probe-eval",
           "generator": None, "role": "eval"}  # fmt: skip
    asks = [ask.format(task) for task, _, _ in held_out for ask in _ASKS]
    for index, prompt in enumerate(rng.sample(asks, min(eval_prompts, len(asks)))):
        yield {"type": "sample", "id": f"sim{seed}-sample-probe-eval-{index}",
               "ts": start.isoformat(), "dataset": "probe-eval", "prompt": prompt,
               "text": "(reference answer)"}  # fmt: skip
