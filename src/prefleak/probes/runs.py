"""One probe cycle: plan it from the store, train, generate, judge, and emit ordinary events.

The plan (:func:`plan_cycle`) is cheap and reads only the store; :func:`execute` does the ML work
and is meant for the worker process (:mod:`prefleak.probes.worker`), which is why torch and the
other heavy modules are imported inside it. What a cycle finds enters the store as ``model``,
``dataset``, ``training`` and ``verdict`` events through the normal ingest path
(:func:`ingest_events`), so PLS, statistics, metrics and alerts treat it like any other evidence.

Event ids are deterministic: a verdict's id is built from the plan's fingerprint (which samples,
prompts, base, options and judges) and what it compares, and provenance events take the content
hash. Re-running the same plan after a crash therefore stores nothing twice.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefleak.config import LocalJudgeSettings, OpenAIJudgeSettings, ProbeSettings
from prefleak.ingest import read_message
from prefleak.models.events import DatasetEvent, SampleEvent
from prefleak.probes.base import TrainPair
from prefleak.store import AppendResult, Batch, EventStore

if TYPE_CHECKING:
    from prefleak.probes.judges import Judgement, PairwiseJudge

log = logging.getLogger(__name__)

SOURCE = "probe"
"""The ``source`` of the events a probe run stores."""
TRACK = "probe"
STUDENT_PREFIX = "probe-"

Progress = Callable[[str], None]


class PlanError(ValueError):
    """Nothing to probe (too few samples, no prompts); the message says what is missing."""


@dataclass(frozen=True)
class ProbePlan:
    """What one cycle will do: each generator's training pairs and the prompts to judge."""

    pairs: Mapping[str, tuple[TrainPair, ...]]
    """Training pairs per generator, in a deterministic order."""
    prompts: tuple[str, ...]
    prompt_set: str
    fingerprint: str
    """Hash of everything that decides the outcome; part of every verdict id."""
    sample_seq: int
    """The log position the plan read up to."""

    @property
    def students(self) -> dict[str, str]:
        """Probe student model id per generator."""
        return {generator: student_name(generator) for generator in self.pairs}

    def describe(self) -> dict[str, Any]:
        """The plan as the run record keeps it."""
        return {
            "generators": sorted(self.pairs),
            "sizes": {
                "samples": {generator: len(pairs) for generator, pairs in self.pairs.items()},
                "prompts": len(self.prompts),
            },
            "prompt_set": self.prompt_set,
            "fingerprint": self.fingerprint,
        }


def student_name(generator: str) -> str:
    return f"{STUDENT_PREFIX}{generator}"


def _rank(seed: int, key: str) -> int:
    """A seeded pseudo-random order: the same seed picks the same items from the same data."""
    return int.from_bytes(hashlib.blake2b(f"{seed}/{key}".encode(), digest_size=8).digest())


class _Lowest:
    """The ``k`` items of lowest rank seen so far (a uniform sample of a stream, seeded by the
    ranks) and how many were seen; holds only ``k`` items, however large the store."""

    def __init__(self, k: int) -> None:
        self.k, self.seen = k, 0
        self._heap: list[tuple[int, str, Any]] = []  # (-rank, key, item): the largest on top

    def add(self, rank: int, key: str, item: Any) -> None:
        self.seen += 1
        entry = (-rank, key, item)
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, entry)
        elif entry[:2] > self._heap[0][:2]:
            heapq.heapreplace(self._heap, entry)

    def items(self) -> list[Any]:
        """Lowest rank first."""
        return [item for _, _, item in sorted(self._heap, key=lambda e: (-e[0], e[1]))]


def plan_cycle(store: EventStore, settings: ProbeSettings) -> ProbePlan:
    """Choose the generators, their training pairs and the prompts from the stored events.

    A sample with a ``prompt`` and no ``model`` in a ``training`` dataset whose ``generator`` is
    known is one instruction/response pair of that generator. Generators with at least
    ``min_samples`` pairs take part, each with up to ``samples_per_generator`` of them.
    """
    datasets = {
        event.dataset: event
        for event in store.events(types=["dataset"])
        if isinstance(event, DatasetEvent)
    }
    sample_seq = store.last_seq()
    candidates: dict[str, _Lowest] = {}
    eval_prompts: dict[str, int] = {}
    for _, event in store.events_after(0, ["sample"]):
        if not isinstance(event, SampleEvent) or event.prompt is None or event.model is not None:
            continue
        dataset = datasets.get(event.dataset)
        if dataset is None:
            continue
        if dataset.role == "eval":
            eval_prompts.setdefault(event.prompt, _rank(settings.seed, event.prompt))
        elif dataset.role == "training" and dataset.generator is not None:
            chosen = candidates.setdefault(
                dataset.generator, _Lowest(settings.samples_per_generator)
            )
            key = str(event.id)
            chosen.add(_rank(settings.seed, key), key, TrainPair(event.prompt, event.text))
    eligible = {g: c for g, c in candidates.items() if c.seen >= settings.min_samples}
    if len(eligible) < 2:
        found = ", ".join(f"{g}: {c.seen}" for g, c in sorted(candidates.items())) or "none"
        raise PlanError(
            f"a probe needs two generators with at least {settings.min_samples} samples with "
            f"prompts in training datasets (probe.min_samples); found {found}"
        )
    pairs = {generator: tuple(eligible[generator].items()) for generator in sorted(eligible)}
    trained = {pair.prompt for chosen in pairs.values() for pair in chosen}
    prompts = _prompts(settings, eval_prompts, trained)
    return ProbePlan(
        pairs=pairs,
        prompts=prompts,
        prompt_set=settings.prompt_set,
        fingerprint=_fingerprint(settings, pairs, prompts),
        sample_seq=sample_seq,
    )


def _prompts(
    settings: ProbeSettings, eval_prompts: Mapping[str, int], trained: set[str]
) -> tuple[str, ...]:
    """The configured prompts, else ``prompt_count`` eval prompts the students never saw."""
    if settings.prompts_file is not None:
        try:
            lines = settings.prompts_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise PlanError(
                f"cannot read probe.prompts_file {settings.prompts_file}: {exc.strerror}"
            ) from None
        given = [line.strip() for line in lines if line.strip()]
    else:
        given = [prompt.strip() for prompt in settings.prompts if prompt.strip()]
    if given:
        return tuple(dict.fromkeys(given))
    unseen = _Lowest(settings.prompt_count)
    for prompt, rank in eval_prompts.items():
        if prompt not in trained:
            unseen.add(rank, prompt, prompt)
    if not unseen.seen:
        raise PlanError(
            "no prompts to judge: set probe.prompts or probe.prompts_file, or send sample events "
            "with prompts of a dataset declared with role eval"
        )
    return tuple(unseen.items())


def _fingerprint(
    settings: ProbeSettings, pairs: Mapping[str, Sequence[TrainPair]], prompts: Sequence[str]
) -> str:
    """A short hash of everything a cycle's outcome depends on (not the schedule or paths)."""
    decisive = settings.model_dump(
        mode="json",
        exclude={"enabled", "schedule", "cache_dir", "artifacts_dir", "max_run_s", "backend",
                 "device", "prompts", "prompts_file", "min_samples"},
    )  # fmt: skip
    content = {
        "settings": decisive,
        "pairs": {g: [[p.prompt, p.response] for p in chosen] for g, chosen in pairs.items()},
        "prompts": list(prompts),
    }
    digest = hashlib.blake2b(json.dumps(content, sort_keys=True).encode(), digest_size=6)
    return digest.hexdigest()


# -- the events a cycle emits (pure) ---------------------------------------------------------


def prompt_id(prompt: str) -> str:
    """The same prompt text has the same id in every run, so runs line up prompt by prompt."""
    return "p" + hashlib.blake2b(prompt.encode(), digest_size=6).hexdigest()


@dataclass(frozen=True)
class Comparison:
    """One game: a judge shown two students' answers to a prompt in one order."""

    prompt: str
    model_a: str
    model_b: str
    game: int
    """1: ``model_a`` shown first; 2: ``model_b`` shown first."""

    @property
    def first(self) -> str:
        return "a" if self.game == 1 else "b"


def comparisons(students: Sequence[str], prompts: Sequence[str]) -> list[Comparison]:
    """Every pair of students on every prompt, in both orders (the position-swapped games)."""
    return [
        Comparison(prompt, a, b, game)
        for prompt in prompts
        for a, b in combinations(sorted(students), 2)
        for game in (1, 2)
    ]


def shown(comparison: Comparison, answers: Mapping[str, Mapping[str, str]]) -> tuple[str, str, str]:
    """(prompt, first shown, second shown), as a judge receives it."""
    a = answers[comparison.model_a][comparison.prompt]
    b = answers[comparison.model_b][comparison.prompt]
    return (comparison.prompt, a, b) if comparison.game == 1 else (comparison.prompt, b, a)


def winner(comparison: Comparison, choice: str) -> str:
    """A judge's choice (relative to the shown order) as the verdict's ``a``/``b``/``tie``."""
    if choice == "tie" or comparison.game == 1:
        return choice
    return "b" if choice == "a" else "a"


def provenance_events(plan: ProbePlan, settings: ProbeSettings) -> list[dict[str, Any]]:
    """Who the probe students are: their base, their training set and who wrote it."""
    events: list[dict[str, Any]] = [
        {"type": "model", "model": settings.base_name, "family": settings.base_family,
         "series": settings.base_series},
    ]  # fmt: skip
    for generator, student in plan.students.items():
        events += [
            {"type": "model", "model": student, "family": settings.base_family,
             "series": settings.base_series, "parent": settings.base_name},
            {"type": "dataset", "dataset": student, "generator": generator,
             "size": len(plan.pairs[generator]), "role": "training"},
            {"type": "training", "model": student, "base": settings.base_name, "method": "sft",
             "datasets": [{"dataset": student, "share": 1.0}]},
        ]  # fmt: skip
    return events


def verdict_event(
    plan: ProbePlan,
    judge: str,
    comparison: Comparison,
    choice: str,
    answers: Mapping[str, Mapping[str, str]],
) -> dict[str, Any]:
    """One judgement as a ``verdict`` event whose id only depends on what was compared."""
    pid = prompt_id(comparison.prompt)
    a, b = comparison.model_a, comparison.model_b
    response_a, response_b = answers[a][comparison.prompt], answers[b][comparison.prompt]
    return {
        "type": "verdict",
        "id": f"probe-{plan.fingerprint}-{judge}-{pid}-{a}-{b}-g{comparison.game}",
        "benchmark": f"probe:{plan.prompt_set}",
        "prompt_id": pid,
        "judge": judge,
        "model_a": a,
        "model_b": b,
        "winner": winner(comparison, choice),
        "game": comparison.game,
        "first": comparison.first,
        "track": TRACK,
        "len_a": len(response_a),
        "len_b": len(response_b),
        "prompt": comparison.prompt,
        "response_a": response_a,
        "response_b": response_b,
    }


def ingest_events(
    store: EventStore, events: Iterable[Mapping[str, Any]], *, hash_texts: bool = False
) -> AppendResult:
    """Validate and store a cycle's events in one transaction: all of them or none."""
    batch = Batch(source=SOURCE)
    received = datetime.now(UTC)
    for number, event in enumerate(events, start=1):
        raw = json.dumps(event, separators=(",", ":")).encode()
        batch.add(read_message(raw, source=SOURCE, location=f"probe event {number}",
                               max_bytes=len(raw) + 1, received_at=received,
                               hash_texts=hash_texts))  # fmt: skip
    return store.append(batch)


# -- running a cycle (heavy; in the worker process) ------------------------------------------


@dataclass
class CycleResult:
    """What a finished cycle did, for the run record."""

    verdicts: int = 0
    unparseable: dict[str, int] = field(default_factory=dict)
    """Judgements per judge that could not be parsed (never turned into verdicts)."""
    stored: AppendResult = field(default_factory=AppendResult)
    artifacts: dict[str, str] = field(default_factory=dict)


class Stopwatch:
    """Progress lines with counts and a naive ETA, so a long run says where it is."""

    def __init__(self, progress: Progress, stages: int) -> None:
        self._progress, self._stages = progress, stages
        self._started = time.monotonic()
        self._done = 0

    def stage(self, message: str) -> None:
        elapsed = time.monotonic() - self._started
        eta = ""
        if self._done:
            eta = f", ETA {elapsed / self._done * (self._stages - self._done):.0f} s"
        self._progress(f"[{self._done + 1}/{self._stages}] {message} ({elapsed:.0f} s in{eta})")
        self._done += 1


def resolve_base(settings: ProbeSettings, model: str = "base") -> Path:
    """A judge's or the students' base model folder: ``base`` is ``probe.base_model``."""
    name = settings.base_model if model == "base" else model
    if name == "smollm2":
        from prefleak.probes.base import smollm2_base

        return smollm2_base(settings.cache_dir)
    config = Path(name) / "config.json"
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not JSON ({exc})"
        raise FileNotFoundError(
            f"base model {name} is not a Hugging Face model folder: {config}: {reason}"
        ) from None
    return Path(name)


def execute(
    plan: ProbePlan,
    settings: ProbeSettings,
    store: EventStore,
    workdir: Path,
    *,
    hash_texts: bool = False,
    progress: Progress = log.info,
) -> CycleResult:
    """Train one student per generator, answer the prompts, judge every pair, store the events."""
    from prefleak.probes.generate import make_generator
    from prefleak.probes.train import TrainOptions, train_student

    students = plan.students
    watch = Stopwatch(progress, len(students) + 3 + len(settings.judges))
    result = CycleResult(artifacts={"workdir": str(workdir)})
    watch.stage(f"preparing the base model {settings.base_model}")
    base = resolve_base(settings)
    options = TrainOptions(
        lora_rank=settings.lora_rank, lora_alpha=settings.lora_alpha, epochs=settings.epochs,
        max_steps=settings.max_steps, learning_rate=settings.learning_rate,
        batch_size=settings.batch_size, max_length=settings.max_length, seed=settings.seed,
        device=settings.device,
    )  # fmt: skip
    adapters: dict[str, Path] = {}
    for generator, student in students.items():
        watch.stage(f"training {student} on {len(plan.pairs[generator])} pairs of {generator}")
        adapters[student] = train_student(
            base, plan.pairs[generator], workdir / "students" / student, options, progress
        )
        result.artifacts[student] = str(adapters[student])
    watch.stage(f"generating answers of {len(adapters)} students to {len(plan.prompts)} prompts")
    writer = make_generator(
        base, backend=settings.backend, max_new_tokens=settings.max_new_tokens,
        seed=settings.seed, device=settings.device, progress=progress,
    )  # fmt: skip
    answers = writer.generate(adapters, plan.prompts)
    del writer  # frees its weights before the judges load theirs
    answers_file = workdir / "answers.json"
    answers_file.write_text(json.dumps(answers, indent=1), encoding="utf-8")
    result.artifacts["answers"] = str(answers_file)
    games = comparisons(list(students.values()), plan.prompts)
    by_prompt = {s: dict(zip(plan.prompts, answers[s], strict=True)) for s in students.values()}
    events = provenance_events(plan, settings)
    for judge in _judges(settings):
        watch.stage(f"judge {judge.name}: {len(games)} games")
        judgements = judge.judge_many([shown(game, by_prompt) for game in games])
        events += _verdicts(plan, judge.name, games, judgements, by_prompt, result)
        del judge
    watch.stage(f"storing {result.verdicts} verdicts")
    result.stored = ingest_events(store, events, hash_texts=hash_texts)
    return result


def _verdicts(
    plan: ProbePlan,
    judge: str,
    games: Sequence[Comparison],
    judgements: Sequence[Judgement],
    answers: Mapping[str, Mapping[str, str]],
    result: CycleResult,
) -> Iterator[dict[str, Any]]:
    """Verdict events of the parsed judgements; the unparseable ones are only counted."""
    result.unparseable[judge] = 0
    for game, judgement in zip(games, judgements, strict=True):
        if judgement.choice is None:
            result.unparseable[judge] += 1
            continue
        result.verdicts += 1
        yield verdict_event(plan, judge, game, judgement.choice, answers)


def _judges(settings: ProbeSettings) -> Iterator[PairwiseJudge]:
    """The configured judges, one loaded at a time (a large judge needs the memory alone)."""
    for judge in settings.judges:
        if isinstance(judge, LocalJudgeSettings):
            from prefleak.probes.judges import LocalJudge

            yield LocalJudge(
                judge.name, resolve_base(settings, judge.model), adapter=judge.adapter,
                mode=judge.mode, tie_margin=judge.tie_margin, device=settings.device,
            )  # fmt: skip
        else:
            yield _openai_judge(judge)


def _openai_judge(judge: OpenAIJudgeSettings) -> PairwiseJudge:
    from prefleak.probes.openai_judge import OpenAIJudge, OpenAIJudgeOptions

    return OpenAIJudge(
        OpenAIJudgeOptions(
            base_url=judge.base_url, model=judge.model, api_key_env=judge.api_key_env,
            timeout_s=judge.timeout_s, max_retries=judge.max_retries,
            concurrency=judge.concurrency, max_requests=judge.max_requests,
            name=judge.judge_name,
        )
    )  # fmt: skip
