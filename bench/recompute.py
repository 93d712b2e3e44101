"""Benchmark: the full statistics recompute over a large store, and what an incremental one costs.

Target (issue "Statistics"): a full recompute (all windows, model fit, bootstraps, q-values) over
1,000,000 verdicts with 50 candidates and 6 judges in under 5 s on the project's machine; an
incremental recompute after 10,000 new verdicts in under 10 % of the full one, measured in the
same run.

    PYTHONPATH=src python bench/recompute.py [--verdicts 1000000] [--candidates 50] [--judges 6]
        [--days 14] [--db PATH] [--repeat 3] [--seed 7] [--rivals 3]

The world (a pure function of the flags and ``--seed``): ``--judges`` judges, all LLMs but the
last, ``human-panel``; the first LLM judges (all but one) wrote synthetic training sets, as did a
non-judge model. The ``--candidates`` candidates are a few unrelated baselines, the LLM judges' own
answers (about one candidate in ten) and students fine-tuned from three base models on mixtures
of one to three datasets with shares (so every relation kind occurs, scaled by share). Verdicts
come from comparisons on the prompts of three benchmarks (805 + 500 + 80, eight categories):
half student against a baseline, 35 % student against student (each student against its
``--rivals`` fixed rivals, as in the paper's head-to-head setting, so PLS rows have prompts
enough; ``--rivals 0``: any two students, so most PLS rows stay undefined), the rest a judge's
answer against either. Every LLM judge rules on each comparison in two position-swapped games,
the human panel on one in ten. Outcomes follow the paired-comparison model with per-prompt
quality noise, position and length habits, self-preference, and leakage that grows with the
relation's share. ``ts`` is spread evenly over ``--days`` days. All events are ingested as JSON
lines through :class:`~prefleak.ingest.Ingestor` (validation in a worker process), so the store
is what ``prefleak ingest`` would have written. With ``--db`` the store is kept at that path
(built there when missing; a store built with other flags is refused) and the run works on a
copy, so the 10,000 extra verdicts never land in it.

What is measured, each ``--repeat`` times (the best is the figure; min / median / max show the
noise of the shared machine):

* full recompute = *read* (``Cells.from_columns(store.verdict_columns())``, the closed days from
  their sealed segments, as ``prefleak report`` and serve's first recompute read them, plus the
  lineage from the provenance events; printed before it, once: reading every row as tuples, as
  a store that no reader has sealed yet is read, and the first read that seals)
  + *analyse* (``analyse(cells, lineage, StatisticsOptions())``, the defaults:
  1-day windows, a 7-day horizon, 200 model and 1,000 PLS resamples);
* after 10,000 more verdicts in the newest day (new ones in every round), in rounds so that all
  see the same load: (iii) what ``prefleak serve`` does, its :class:`Recomputer` (started fresh
  each round, so its first recompute reads everything; the next reads from the horizon on and
  reuses the older windows) recomputing after the new verdicts; (i) the full path again, the
  figure every ratio is of; (iv) serve's recompute right after a provenance event (relations may
  have changed, so every kept window is read and refitted): a full recompute by the service;
  (ii) the parts an incremental path would need
  with today's API: ``verdict_windows_since(seq)``, reading only the changed projection windows
  into Cells, ``analyse`` of those cells alone, and the newest window's part of (i)'s window
  series (its ``_pls`` and ``_fit`` calls). Two sums bound an incremental recompute built from
  today's functions: with ``analyse`` of the changed windows (everything recomputed for them,
  horizon-level statistics included), and with only the newest window's series (as if the 7-day
  horizon statistics could be updated for free).

Analyses run with the default ``statistics.threads`` (one per core, at most four). Where
analyse's time goes: the seconds of its coarse steps (``_fit``, ``_raw_fit``, ``_pls``,
``judge_biases``, ``_leaderboard``, ``_adjust``, ``_changes`` of :mod:`prefleak.stats.analysis`,
wrapped in place) in one more analyse per round with ``threads: 1`` (so that they do not
overlap), the fastest of them, calls over the horizon (pooled, per benchmark, per category:
redone on every new verdict) apart from calls per window (can be kept for windows that did not
change); the rest is the glue. A cProfile of one full analyse (top 15 by cumulative and top 10 by
own time) shows where the time goes inside; profiling slows code that makes many small Python
calls far more than numpy, so it overstates those (a sampling profiler, ``py-spy record``, gives
truer shares). The ingest rate is printed for information only.

Reading it: "full recompute" against 5 s, and the "(ii)" sums against 0.10 of (i). The machine is
shared: figures from one run are comparable with each other; compare runs only by their ratios,
and when the spread of a figure is large, run again.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import pstats
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import orjson

import prefleak.stats.analysis as analysis_module
from prefleak.config import load_settings
from prefleak.daemon.metrics import Detached, Metrics
from prefleak.daemon.recompute import Recomputer, statistics_options
from prefleak.ingest import Ingestor
from prefleak.lineage import Lineage, RelationKind
from prefleak.models.events import PROVENANCE_TYPES, parse_object
from prefleak.stats.analysis import Analysis, StatisticsOptions, analyse
from prefleak.stats.cells import Cells
from prefleak.store import AppendResult, EventStore

T = TypeVar("T")
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

START = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
"""Event time of the first verdict; midnight, so the 1-day windows are the days of the span."""
INCREMENT = 10_000
"""Verdicts added in the newest day for the incremental measurement."""
FULL_TARGET_S = 5.0
INCREMENTAL_TARGET = 0.10

# -- the world --------------------------------------------------------------------------------

LLM_JUDGES: tuple[tuple[str, str, str, float, float, float], ...] = (
    # model, family, series, acuity, position habit, length habit
    ("gpt-4o", "openai", "gpt-4o", 1.0, 0.25, 0.25),
    ("gpt-4o-mini", "openai", "gpt-4o", 0.8, 0.35, 0.35),
    ("gemini-1.5-pro", "google", "gemini-1.5", 0.9, 0.2, 0.3),
    ("llama-3.3-70b", "meta", "llama-3", 0.8, 0.4, 0.4),
    ("claude-3.5-sonnet", "anthropic", "claude-3.5", 1.0, 0.15, 0.2),
    ("qwen2.5-72b", "alibaba", "qwen2.5", 0.9, 0.3, 0.3),
    ("mistral-large", "mistral", "mistral-large", 0.85, 0.3, 0.25),
    ("deepseek-v3", "deepseek", "deepseek-v3", 0.95, 0.2, 0.2),
)
HUMAN = ("human-panel", 1.1, 0.05, 0.1)
BASES = (
    ("mistral-7b", "mistral", "mistral-7b"),
    ("llama-3.1-8b", "meta", "llama-3"),
    ("qwen2-7b", "alibaba", "qwen2"),
)
OTHER_GENERATOR = ("gpt-3.5-turbo", "openai", "gpt-3.5")
BENCHMARKS = (("alpaca-eval", 805, 1.0), ("arena-hard", 500, 1.4), ("mt-bench", 80, 0.8))
"""Name, prompts, length scale."""
CATEGORIES = (
    "coding",
    "math",
    "writing",
    "reasoning",
    "roleplay",
    "extraction",
    "stem",
    "humanities",
)
LEAK = {
    RelationKind.SAME_MODEL: 0.6,
    RelationKind.INHERITANCE: 0.4,
    RelationKind.SAME_SERIES: 0.25,
    RelationKind.SAME_FAMILY: 0.1,
}
"""Injected log-odds bonus of a fully related candidate, by relation kind (times the share)."""
SELF_PREFERENCE = 0.3
TIE_MARGIN = 0.4
HUMAN_SHARE = 0.1
"""Comparisons the human panel also rules on."""
QUALITY_NOISE = 0.3
LENGTH_SPREAD = 0.35


@dataclass(frozen=True)
class World:
    """Judges, candidates, prompts and the injected effects; verdicts are drawn from it."""

    judges: list[str]
    """LLM judges first, ``human-panel`` last."""
    acuity: FloatArray
    position: FloatArray
    length: FloatArray
    candidates: list[str]
    students: IntArray
    answers: IntArray
    baselines: IntArray
    bias: FloatArray
    """(judges, candidates): injected log-odds bonus."""
    quality: FloatArray
    """(prompts, candidates): quality of each candidate's response to each prompt."""
    log_length: FloatArray
    lengths: IntArray
    """(prompts, candidates): response lengths in tokens."""
    prompt_benchmark: list[str]
    prompt_id: list[str]
    prompt_category: list[str]
    rival_pairs: IntArray
    """(pairs, 2): the student pairs compared head to head; empty: any two students."""
    provenance: list[dict[str, Any]]
    signature: str
    """Name of a dataset event that says which flags built a store."""

    @property
    def n_prompts(self) -> int:
        return len(self.prompt_id)


def build_world(n_candidates: int, n_judges: int, rivals: int, seed: int, signature: str) -> World:
    """The world of the flags; ``signature`` names a dataset event that marks a built store."""
    rng = np.random.default_rng(seed)
    llm = LLM_JUDGES[: n_judges - 1]
    events: list[dict[str, Any]] = []

    def model(name: str, family: str | None, series: str | None, **extra: str) -> None:
        event = {"type": "model", "model": name, "kind": "llm", **extra}
        if family is not None:
            event |= {"family": family, "series": series}
        events.append(event)

    for name, family, series, *_ in llm:
        model(name, family, series)
    model(HUMAN[0], None, None, kind="human")
    for name, family, series in (*BASES, OTHER_GENERATOR):
        model(name, family, series)
    datasets: list[str] = []
    generators = [name for name, *_ in llm[: max(1, len(llm) - 1)]] + [OTHER_GENERATOR[0]]
    for index, generator in enumerate(generators):
        for part in range(2 if index % 2 == 0 else 1):
            datasets.append(f"synth-{generator}-{part}")
            events.append(
                {
                    "type": "dataset",
                    "dataset": datasets[-1],
                    "generator": generator,
                    "size": int(rng.integers(10_000, 80_000)),
                }
            )
    for part in range(2):
        datasets.append(f"human-written-{part}")
        events.append({"type": "dataset", "dataset": datasets[-1], "generator": None})
    events.append({"type": "dataset", "dataset": signature, "generator": None, "role": "eval"})

    n_baselines = max(1, min(3, n_candidates // 15))
    n_answers = min(len(llm), max(0, (n_candidates - n_baselines) // 10))
    n_students = n_candidates - n_baselines - n_answers
    if n_students < 2:
        raise SystemExit("--candidates is too small for two students")
    students = [f"student-{k:02d}" for k in range(n_students)]
    for name in students:
        base, family, series = BASES[int(rng.integers(len(BASES)))]
        model(name, family, series, parent=base)
        picked = rng.choice(len(datasets), size=int(rng.integers(1, 4)), replace=False)
        raw = rng.dirichlet(np.ones(picked.size)) * rng.uniform(0.5, 1.0)
        shares = np.maximum(np.floor(raw * 100) / 100, 0.01)
        events.append(
            {
                "type": "training",
                "model": name,
                "base": base,
                "method": ("sft", "dpo", "distill")[int(rng.integers(3))],
                "datasets": [
                    {"dataset": datasets[d], "share": float(s)}
                    for d, s in zip(picked.tolist(), shares.tolist(), strict=True)
                ],
            }
        )
    baselines = [f"baseline-{k}" for k in range(n_baselines)]
    for k, name in enumerate(baselines):
        model(name, f"refco-{k}", f"refco-{k}")
    answers = [name for name, *_ in llm[:n_answers]]
    for index, event in enumerate(events):
        event["id"] = f"bench-{event['type']}-{event.get('model') or event.get('dataset')}"
        event["ts"] = _iso(START - 3600 + index)

    candidates = [*students, *answers, *baselines]
    judges = [*(name for name, *_ in llm), HUMAN[0]]
    lineage = Lineage.from_events(parse_object(event) for event in events)
    bias = np.zeros((len(judges), len(candidates)))
    for j, judge in enumerate(judges[:-1]):
        for c, candidate in enumerate(candidates):
            relation = lineage.relation(judge, candidate)
            if candidate == judge:
                bias[j, c] = SELF_PREFERENCE
            elif relation.related:
                bias[j, c] = LEAK[relation.kind] * relation.share
    mean_quality = np.concatenate(
        [
            rng.normal(0.0, 0.4, n_students),
            rng.normal(0.5, 0.2, n_answers),
            np.full(n_baselines, 0.3),
        ]
    )
    mean_length = rng.uniform(250, 600, len(candidates))
    prompt_benchmark: list[str] = []
    prompt_id: list[str] = []
    scale: list[float] = []
    for benchmark, count, length_scale in BENCHMARKS:
        prompt_benchmark += [benchmark] * count
        prompt_id += [f"{benchmark}-{k:04d}" for k in range(count)]
        scale += [length_scale] * count
    n_prompts = len(prompt_id)
    lengths = np.maximum(
        1,
        np.round(
            mean_length[None, :]
            * np.asarray(scale)[:, None]
            * rng.lognormal(0.0, LENGTH_SPREAD, (n_prompts, len(candidates)))
        ),
    ).astype(np.int64)
    codes = np.arange(len(candidates))
    order = rng.permutation(n_students)
    rival_pairs = np.array(
        [
            (order[k], order[(k + step) % n_students])
            for k in range(n_students)
            for step in range(1, min(rivals, n_students - 1) + 1)
        ],
        dtype=np.int64,
    ).reshape(-1, 2)
    return World(
        judges=judges,
        acuity=np.array([*(j[3] for j in llm), HUMAN[1]]),
        position=np.array([*(j[4] for j in llm), HUMAN[2]]),
        length=np.array([*(j[5] for j in llm), HUMAN[3]]),
        candidates=candidates,
        students=codes[:n_students],
        answers=codes[n_students : n_students + n_answers],
        baselines=codes[n_students + n_answers :],
        bias=bias,
        quality=mean_quality[None, :] + rng.normal(0.0, QUALITY_NOISE, (n_prompts, codes.size)),
        log_length=np.log(lengths),
        lengths=lengths,
        prompt_benchmark=prompt_benchmark,
        prompt_id=prompt_id,
        prompt_category=[CATEGORIES[int(k)] for k in rng.integers(len(CATEGORIES), size=n_prompts)],
        rival_pairs=rival_pairs,
        provenance=events,
        signature=signature,
    )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


def _pairs(world: World, rng: np.random.Generator, n: int) -> tuple[IntArray, IntArray]:
    """Candidates of ``n`` comparisons: student-baseline, student-student, answer-either."""
    students, answers, baselines = world.students, world.answers, world.baselines
    first = rng.integers(students.size, size=n)
    student = students[first]
    other = students[(first + rng.integers(1, students.size, size=n)) % students.size]
    weights = 0.6 ** np.arange(baselines.size)
    baseline = baselines[rng.choice(baselines.size, size=n, p=weights / weights.sum())]
    kind = rng.random(n)  # [0, 0.5): a baseline, [0.5, 0.85): another student, else an answer
    versus = (kind >= 0.5) & (kind < 0.85)
    if world.rival_pairs.size and versus.any():
        pair = world.rival_pairs[rng.integers(len(world.rival_pairs), size=int(versus.sum()))]
        student[versus], other[versus] = students[pair[:, 0]], students[pair[:, 1]]
    x = student.copy()
    y = np.where(kind < 0.5, baseline, other)
    if answers.size:
        answer = kind >= 0.85
        x[answer] = answers[rng.integers(answers.size, size=int(answer.sum()))]
        y[answer] = np.where(rng.random(n) < 0.5, student, baseline)[answer]
    swap = rng.random(n) < 0.5  # which candidate is "a" (shown first in game 1) is random
    return np.where(swap, y, x), np.where(swap, x, y)


def verdict_lines(
    world: World, n: int, t0: float, t1: float, seed: int, prefix: str, chunk: int = 50_000
) -> Iterator[bytes]:
    """``n`` verdict events as JSON lines, in time order, with ``ts`` spread over [t0, t1)."""
    rng = np.random.default_rng(seed)
    n_llm = len(world.judges) - 1
    n_jobs = int(n / (2 * n_llm + 2 * HUMAN_SHARE) * 1.1) + 16
    prompt = rng.integers(world.n_prompts, size=n_jobs)
    a, b = _pairs(world, rng, n_jobs)
    per_job = 2 * n_llm + 2 * (rng.random(n_jobs) < HUMAN_SHARE)
    job = np.repeat(np.arange(n_jobs), per_job)[:n]
    offset = np.arange(job.size) - np.repeat(np.cumsum(per_job) - per_job, per_job)[:n]
    judge, game = offset // 2, offset % 2 + 1  # judge n_llm is the human panel
    jobs_used = int(job[-1]) + 1
    job_ts = t0 + (np.arange(jobs_used) + rng.random(jobs_used)) * (t1 - t0) / jobs_used
    ts = np.minimum(job_ts[job] + 4.0 * judge + 2.0 * game, t1 - 1e-3)
    p, xa, xb = prompt[job], a[job], b[job]
    shown_first = np.where(game == 1, xa, xb)
    shown_second = np.where(game == 1, xb, xa)
    z = (
        world.acuity[judge] * (world.quality[p, shown_first] - world.quality[p, shown_second])
        + world.bias[judge, shown_first]
        - world.bias[judge, shown_second]
        + world.position[judge]
        + world.length[judge]
        * (world.log_length[p, shown_first] - world.log_length[p, shown_second])
    )
    p_first = 1 / (1 + np.exp(-(z - TIE_MARGIN)))
    p_second = 1 / (1 + np.exp(z + TIE_MARGIN))
    draw = rng.random(job.size)
    winner_shown = np.where(draw < p_first, 0, np.where(draw < p_first + p_second, 1, 2))
    # game 1 shows a first, game 2 shows b first
    winner = np.where(winner_shown == 2, 2, np.where((winner_shown == 0) == (game == 1), 0, 1))
    stamps = np.datetime_as_string((ts * 1e6).astype("datetime64[us]"), unit="us")
    names, judges = world.candidates, world.judges
    outcome, first = ("a", "b", "tie"), ("", "a", "b")
    for start in range(0, job.size, chunk):
        part = slice(start, start + chunk)
        columns = zip(
            range(start, start + chunk),
            stamps[part].tolist(),
            p[part].tolist(),
            judge[part].tolist(),
            xa[part].tolist(),
            xb[part].tolist(),
            winner[part].tolist(),
            game[part].tolist(),
            world.lengths[p[part], xa[part]].tolist(),
            world.lengths[p[part], xb[part]].tolist(),
            strict=False,
        )
        for k, stamp, q, j, ca, cb, w, g, len_a, len_b in columns:
            yield (
                f'{{"type":"verdict","id":"{prefix}{k}","ts":"{stamp}Z",'
                f'"benchmark":"{world.prompt_benchmark[q]}","prompt_id":"{world.prompt_id[q]}",'
                f'"judge":"{judges[j]}","model_a":"{names[ca]}","model_b":"{names[cb]}",'
                f'"winner":"{outcome[w]}","game":{g},"first":"{first[g]}",'
                f'"category":"{world.prompt_category[q]}","len_a":{len_a},"len_b":{len_b}}}'
            ).encode()


def ingest(store: EventStore, lines: Iterator[bytes], total: int, what: str) -> float:
    """Ingest lines as ``prefleak ingest`` would (one validating worker); returns seconds."""
    done = AppendResult()
    started = time.perf_counter()

    def progress(result: AppendResult) -> None:
        done.add(result)
        if done.accepted % 100_000 < result.accepted or done.accepted >= total:
            rate = done.accepted / max(time.perf_counter() - started, 1e-9)
            print(
                f"\r  {what}: {done.accepted:,} / {total:,} ({rate:,.0f}/s)",
                end="",
                file=sys.stderr,
                flush=True,
            )

    Ingestor(store, workers=1).ingest_lines(lines, source="bench", on_batch=progress)
    print(file=sys.stderr)
    if done.rejected:
        raise SystemExit(f"{done.rejected} events rejected: {done.errors[0].error}")
    return time.perf_counter() - started


# -- measuring --------------------------------------------------------------------------------


@dataclass
class Timing:
    """Seconds of every repetition; the best is the figure, the rest is the noise."""

    runs: list[float]

    @property
    def best(self) -> float:
        return min(self.runs)

    def noise(self) -> str:
        if len(self.runs) == 1:
            return "one value"
        ordered = sorted(self.runs)
        spread = (ordered[-1] - ordered[0]) / ordered[0] * 100 if ordered[0] > 0 else 0.0
        return (
            f"min {ordered[0]:.3f} / median {ordered[len(ordered) // 2]:.3f} / "
            f"max {ordered[-1]:.3f} s, spread {spread:.0f} %"
        )


def clock(timing: Timing, work: Callable[..., T], *args: Any) -> T:
    """Run ``work(*args)`` once, adding its seconds to ``timing``."""
    started = time.perf_counter()
    result = work(*args)
    timing.runs.append(time.perf_counter() - started)
    return result


def read_windows(store: EventStore, windows: set[int]) -> Cells:
    """The cells of the given projection windows only."""
    return Cells.from_rows(store.verdict_rows(windows=windows))


def read_all(store: EventStore) -> tuple[Cells, Lineage]:
    """What ``prefleak report`` and serve's first recompute read: sealed days from their
    segments, the rest from the rows."""
    cells = Cells.from_columns(store.verdict_columns())
    return cells, Lineage.from_events(store.events(PROVENANCE_TYPES))


@dataclass
class Full:
    """Timings of the full path (read, analyse, both) and what its last run read and found."""

    read: Timing
    analyse: Timing
    total: Timing
    cells: Cells
    lineage: Lineage
    analysis: Analysis


def full_recompute(store: EventStore, options: StatisticsOptions, repeat: int) -> Full:
    """Read and analyse ``repeat`` times."""
    read, analysis, total = Timing([]), Timing([]), Timing([])
    for _ in range(repeat):
        started = time.perf_counter()
        cells, lineage = read_all(store)
        middle = time.perf_counter()
        found = analyse(cells, lineage, options)
        finished = time.perf_counter()
        read.runs.append(middle - started)
        analysis.runs.append(finished - middle)
        total.runs.append(finished - started)
    return Full(read, analysis, total, cells, lineage, found)


def summary(analysis: Analysis) -> str:
    """How many rows of each kind one recompute produced (what its time is spent on)."""
    pooled = [s for s in analysis.pls if s.window is None]
    windowed = [s for s in analysis.pls if s.window is not None]
    fits = sum(r.window is not None for r in analysis.leakage)
    return (
        f"analysis: {len(pooled):,} PLS rows over the horizon and its breakdowns "
        f"({sum(s.row.pls is not None for s in pooled):,} defined), {len(windowed):,} in the "
        f"window series ({sum(s.row.pls is not None for s in windowed):,} defined); "
        f"{len(analysis.leakage):,} leakage rows ({fits} windowed), {len(analysis.changes):,} "
        f"change series, {len(analysis.biases)} judges' biases"
    )


def line(label: str, timing: Timing, full: float | None = None, target: str = "") -> str:
    """One figure: best seconds, its ratio to ``full`` if given, the noise and the target."""
    ratio = "" if full is None else f"{timing.best / full:7.3f} of full"
    text = f"  {label:<66} {timing.best:8.3f} s {ratio}   ({timing.noise()})"
    return text + (f"  {target}" if target else "")


COARSE_STEPS = (
    "_fit", "_raw_fit", "_pls", "judge_biases", "_leaderboard", "_adjust", "_changes",
)  # fmt: skip
"""The steps of :func:`analyse` that :class:`Spans` times (names in its module)."""


class Spans:
    """Seconds :func:`analyse` spends in its coarse steps, per call, by wrapping them in place.

    A call whose cells lie in one statistics window belongs to the window series; any other to
    the horizon (pooled, per benchmark, per category). A few microseconds per call, about sixty
    calls per analyse: the timings of the rounds that use it stay comparable.
    """

    def __init__(self, window_s: int) -> None:
        self.window_s = window_s
        self.calls: list[tuple[str, int | None, float]] = []
        """(step, statistics window or None, seconds) of every call since the last reset."""
        self.missing = [name for name in COARSE_STEPS if not hasattr(analysis_module, name)]

    @contextmanager
    def installed(self) -> Iterator[None]:
        originals = {n: getattr(analysis_module, n) for n in COARSE_STEPS if n not in self.missing}
        for name, original in originals.items():
            setattr(analysis_module, name, self._wrap(name, original))
        try:
            yield
        finally:
            for name, original in originals.items():
                setattr(analysis_module, name, original)

    def _wrap(self, name: str, original: Callable[..., T]) -> Callable[..., T]:
        def timed_step(*args: Any, **kwargs: Any) -> T:
            window = None
            if args and isinstance(args[0], Cells) and len(args[0]):
                first, last = args[0].window.min(), args[0].window.max()
                if first // self.window_s == last // self.window_s:
                    window = int(first // self.window_s * self.window_s)
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.calls.append((name, window, time.perf_counter() - started))

        return timed_step

    def newest_series(self) -> float:
        """Seconds of the newest window's PLS table and fit: its part of the window series."""
        windows = [window for _, window, _ in self.calls if window is not None]
        if not windows:
            return math.nan
        newest = max(windows)
        return sum(
            s for name, window, s in self.calls if window == newest and name in ("_fit", "_pls")
        )

    def table(self, total: float) -> list[str]:
        """Lines of seconds and shares of ``total`` per step, horizon and window calls apart."""
        grouped: dict[str, list[float]] = {}
        for name, window, seconds in self.calls:
            where = (
                ""
                if name not in ("_fit", "_pls")
                else (": per window" if window is not None else ": horizon and its slices")
            )
            grouped.setdefault(f"{name}{where}", []).append(seconds)
        found = []
        for label, runs in sorted(grouped.items(), key=lambda item: -sum(item[1])):
            counted = f"{label} ({len(runs)} call{'s' if len(runs) > 1 else ''})"
            found.append(f"  {counted:<66} {sum(runs):8.3f} s {sum(runs) / total:7.1%}")
        rest = total - sum(seconds for _, _, seconds in self.calls)
        label = "the rest: selects, rows, p-values (by difference)"
        found.append(f"  {label:<66} {rest:8.3f} s {rest / total:7.1%}")
        if self.missing:
            found.append(f"  (not found in prefleak.stats.analysis, so not timed: {self.missing})")
        return found


def profile(cells: Cells, lineage: Lineage, options: StatisticsOptions) -> str:
    profiler = cProfile.Profile()
    profiler.runcall(analyse, cells, lineage, options)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(15)
    stats.sort_stats("tottime").print_stats(10)
    kept = [
        row
        for row in out.getvalue().splitlines()
        if row.strip()
        and "function calls" not in row
        and not row.lstrip().startswith(("Ordered by", "List reduced"))
    ]
    return "\n".join(f"  {row}" for row in kept)


# -- the run ----------------------------------------------------------------------------------


def build_store(path: Path, world: World, args: argparse.Namespace) -> None:
    print(f"building {path}: {args.verdicts:,} verdicts over {args.days} days", file=sys.stderr)
    with EventStore(path) as store:
        provenance = [orjson.dumps(event) for event in world.provenance]
        ingest(store, iter(provenance), len(provenance), "provenance")
        lines = verdict_lines(
            world, args.verdicts, START, START + args.days * 86_400, args.seed, f"bench{args.seed}-"
        )
        seconds = ingest(store, lines, args.verdicts, "verdicts")
    print(
        f"ingest: {args.verdicts:,} verdicts in {seconds:.1f} s "
        f"({args.verdicts / seconds:,.0f} verdicts/s; not a measured figure)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--verdicts", type=int, default=1_000_000)
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--judges", type=int, default=6, help="LLM judges plus the human panel")
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument(
        "--db", type=Path, default=None, help="keep the built store here and reuse it on later runs"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--rivals",
        type=int,
        default=3,
        help="rivals each student meets head to head (0: any other student, so few PLS rows "
        "have enough prompts)",
    )
    args = parser.parse_args()
    if not 3 <= args.judges <= len(LLM_JUDGES) + 1:
        parser.error(f"--judges must be 3..{len(LLM_JUDGES) + 1}")
    if args.days < 1 or args.verdicts < 1 or args.repeat < 1 or args.rivals < 0:
        parser.error("--days, --verdicts and --repeat must be positive, --rivals at least 0")
    signature = (
        f"bench-world-{args.verdicts}v-{args.candidates}c-{args.judges}j-{args.days}d-"
        f"{args.rivals}r-seed{args.seed}"
    )
    world = build_world(args.candidates, args.judges, args.rivals, args.seed, signature)
    with tempfile.TemporaryDirectory(prefix="prefleak-bench-") as tmp:
        work = Path(tmp) / "store.db"
        if args.db is None:
            build_store(work, world, args)
        else:
            if not args.db.exists():
                build_store(args.db, world, args)
            else:
                print(f"reusing {args.db}")
            shutil.copyfile(args.db, work)
            if Path(f"{args.db}-wal").exists():
                shutil.copyfile(f"{args.db}-wal", f"{work}-wal")
        with EventStore(work) as store:
            measure(store, world, args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:,.0f} MiB")
    return 0


def measure(store: EventStore, world: World, args: argparse.Namespace) -> None:
    options = StatisticsOptions()
    datasets = {getattr(event, "dataset", None) for event in store.events(["dataset"])}
    if world.signature not in datasets:
        raise SystemExit(f"{args.db} was built with other flags: remove it or name another --db")
    stored = store.event_counts().get("verdict", 0)
    started = time.perf_counter()
    _, seq = store.verdict_windows_since(0)  # what the daemon's first call would remember
    first_scan = time.perf_counter() - started

    started = time.perf_counter()
    Cells.from_rows(store.verdict_rows())
    from_rows = time.perf_counter() - started
    started = time.perf_counter()
    store.verdict_columns()
    sealing = time.perf_counter() - started
    full = full_recompute(store, options, args.repeat)
    cells, lineage = full.cells, full.lineage
    humans = sum(lineage.is_human(j) for j in world.judges)
    print(
        f"world: {len(world.judges)} judges ({len(world.judges) - humans} LLM + {humans} human),"
        f" {len(world.candidates)} candidates ({world.students.size} students, "
        f"{world.answers.size} judges' own answers, {world.baselines.size} baselines), "
        f"{len(world.rival_pairs) or 'any'} student pairs head to head, "
        f"{world.n_prompts:,} prompts in {len(BENCHMARKS)} benchmarks, {args.days} days"
    )
    print(
        f"store: {stored:,} verdicts in {len(cells):,} projection rows (cells), "
        f"{cells.n_prompts:,} prompts; options: {options.window_s // 3600} h windows, "
        f"{options.horizon_s // 86_400} d horizon, {options.model_bootstrap} model and "
        f"{options.pls_bootstrap} PLS resamples"
    )
    print(summary(full.analysis))
    print(f"\nfull recompute, best of {args.repeat}:")
    print(f"  (no hour sealed yet: Cells.from_rows(verdict_rows()) {from_rows:.3f} s; the first "
          f"verdict_columns(), which seals the closed hours, {sealing:.3f} s)")  # fmt: skip
    print(line("read: Cells.from_columns(verdict_columns()) + lineage", full.read))
    print(line("analyse(cells, lineage, StatisticsOptions())", full.analyse))
    best = full.total.best
    verdict = "met" if best < FULL_TARGET_S else f"NOT MET ({best / FULL_TARGET_S:.1f}x)"
    print(line("full recompute = read + analyse", full.total, target=f"target < 5 s: {verdict}"))
    print(f"  (verdict_windows_since(0), the daemon's first scan of the log: {first_scan:.3f} s)")

    day = START + (args.days - 1) * 86_400
    prefix = f"inc{args.seed}-{time.time_ns()}-"  # new ids even on a reused store
    settings = load_settings(
        overrides={"db": str(store.path), "diversity": {"enabled": False},
                   "fingerprint": {"enabled": False}}
    )  # fmt: skip
    assert statistics_options(settings) == options, "serve's defaults are the bench's options"
    # Interleaved, so that the full path and the parts see the same load of the shared machine.
    rerun, again, first_service, service = Timing([]), Timing([]), Timing([]), Timing([])
    relineage = Timing([])
    since, reading, part_analysis, series = Timing([]), Timing([]), Timing([]), Timing([])
    spans, serial = Spans(options.window_s), Timing([])
    steps: list[tuple[str, int | None, float]] = []
    print(
        f"\nincremental: +{INCREMENT:,} verdicts in the newest day, again in every round "
        f"(new ids), best of {args.repeat}:"
    )
    for round_ in range(args.repeat):
        recomputer = Recomputer(store, settings, Metrics(Detached(), settings.metrics, []))
        clock(first_service, recomputer.once)  # serve's first recompute reads every kept cell
        seq = store.last_seq()
        lines = verdict_lines(
            world, INCREMENT, day, day + 86_400, args.seed + 1 + round_, f"{prefix}{round_}-"
        )
        ingest(store, lines, INCREMENT, "increment")
        clock(service, recomputer.once)
        latest = recomputer.latest
        if latest is None or latest.events.get("verdict", 0) != store.event_counts()["verdict"]:
            raise SystemExit("the service's recompute failed or missed the new verdicts")
        # a lineage change: every kept window is read and refitted
        model = {"type": "model", "model": f"bench-registered-{prefix}{round_}", "family": "x"}
        ingest(store, iter([orjson.dumps(model)]), 1, "provenance")
        clock(relineage, recomputer.once)
        once = full_recompute(store, options, 1)
        rerun.runs += once.total.runs
        again.runs += once.analyse.runs
        # the steps apart: one analyse in a single thread, so that their times do not overlap
        spans.calls = []
        with spans.installed():
            serial.runs += full_recompute(store, replace(options, threads=1), 1).analyse.runs
        series.runs.append(spans.newest_series())
        if serial.runs[-1] <= serial.best:
            steps = spans.calls
        changed, _ = clock(since, store.verdict_windows_since, seq)
        part = clock(reading, read_windows, store, changed)
        clock(part_analysis, analyse, part, lineage, options)
    best = rerun.best
    print(
        f"  (i) full path again: the full recompute of the ratios (before: {full.total.best:.3f} s)"
    )
    print(line("      read + analyse", rerun))
    print(line("      of which analyse", again, best))
    print(line("  serve's first recompute (Recomputer.once: reads every kept cell)", first_service))
    label = "  (iii) serve's next recompute (Recomputer.once after the new verdicts)"
    print(line(label, service, best, _target(service, best)))
    label = "  (iv) serve's recompute after a provenance event (every kept window read, refit)"
    print(line(label, relineage, best))
    print(
        f"  (ii) parts of an incremental path ({len(changed)} changed hour windows, "
        f"{len(part):,} rows, {int(part.verdicts.sum()):,} verdicts):"
    )
    print(line("    verdict_windows_since(seq)", since, best))
    print(line("    read changed windows: Cells.from_rows(verdict_rows(windows=))", reading, best))
    print(line("    analyse(changed windows' cells only)", part_analysis, best))
    print(line("    newest window's series (one thread): its _pls + _fit", series, best))
    upper = Timing([since.best + reading.best + part_analysis.best])
    label = "    since + read + analyse of changed windows (sum of bests)"
    print(line(label, upper, best, _target(upper, best)))
    lower = Timing([since.best + reading.best + series.best])
    label = "    since + read + newest window's series (horizon for free; sum)"
    print(line(label, lower, best, _target(lower, best)))

    spans.calls = steps
    print(
        f"\nwhere analyse's time goes: its steps in the fastest of the analyses with "
        f"threads: 1 (one per round after (i)), {serial.best:.3f} s:"
    )
    print("\n".join(spans.table(serial.best)))

    print("\ncProfile of one full analyse, threads: 1 (profiling overhead included; read shares):")
    print(profile(cells, lineage, replace(options, threads=1)))  # cProfile sees one thread


def _target(timing: Timing, full: float) -> str:
    met = "met" if timing.best / full < INCREMENTAL_TARGET else "NOT MET"
    return f"target < {INCREMENTAL_TARGET:.2f}: {met}"


if __name__ == "__main__":
    raise SystemExit(main())
