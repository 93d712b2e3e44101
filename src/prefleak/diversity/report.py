"""The diversity report: every dataset's measures, drift and generation, coverage and overlap.

:func:`load_inputs` reads the bounded samples and provenance from the store;
:class:`DiversityAnalyzer` turns them into a :class:`DiversityReport`. The analyzer keeps what it
computed for samples that have not changed (and the embeddings of their texts), so a recompute
only pays for what is new. Random draws are seeded by what they measure: same samples, same
report.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import numpy as np

from prefleak.config import DiversitySettings
from prefleak.diversity.artifacts import Overlap, artifact_shares, overlap
from prefleak.diversity.cache import RoundCache
from prefleak.diversity.coverage import Coverage, coverage
from prefleak.diversity.generations import Generation, chains, generations
from prefleak.diversity.lexical import LexicalSample
from prefleak.diversity.resample import compare, estimate, estimates_json
from prefleak.diversity.sample import WINDOW_S, Sample
from prefleak.diversity.semantic import EmbeddedSample, ShiftTest, mmd_test
from prefleak.diversity.vectors import TfIdf, Vectors
from prefleak.embeddings import Embedder
from prefleak.lineage import Lineage
from prefleak.models.events import PROVENANCE_TYPES, DatasetEvent
from prefleak.stats.estimate import Estimate
from prefleak.store import EventStore

SCHEMA = "prefleak.diversity/1"
Role = Literal["training", "eval", "production"]
SYNTAX_NOTE = (
    "syntactic diversity is not measured: no part-of-speech tagger that ships its model is "
    "installed (see docs/diversity.md)"
)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Window:
    """One stored window (UTC day) of a dataset: its start and its bottom-k sample."""

    start: float
    samples: tuple[Sample, ...]


@dataclass(frozen=True, slots=True)
class DatasetSamples:
    """What the store holds of one dataset: its sample, drift reference and latest window, and
    its newest windows one by one (oldest first)."""

    dataset: str
    role: Role
    generator: str | None
    sample: tuple[Sample, ...]
    reference: tuple[Sample, ...]
    current: tuple[Sample, ...]
    window_start: float
    windows: tuple[Window, ...] = ()


@dataclass(frozen=True, slots=True)
class Drift:
    """The latest window against the reference: change of every measure and a shift test."""

    window_start: float
    reference_samples: int
    current_samples: int
    changes: dict[str, Estimate]
    test: ShiftTest | None
    vectors: str

    def to_json(self) -> dict[str, Any]:
        return {
            "window_start": _iso(self.window_start),
            "reference_samples": self.reference_samples,
            "current_samples": self.current_samples,
            "changes": estimates_json(self.changes),
            "test": None
            if self.test is None
            else {
                "method": f"mmd-rbf-{self.vectors}",
                "mmd2": round(self.test.mmd2, 8),
                "p_value": round(self.test.p_value, 6),
                "permutations": self.test.permutations,
            },
        }


@dataclass(frozen=True, slots=True)
class WindowRow:
    """The measures of one window's sample."""

    start: float
    n_samples: int
    metrics: dict[str, Estimate]

    def to_json(self) -> dict[str, Any]:
        return {
            "start": _iso(self.start),
            "n_samples": self.n_samples,
            "metrics": estimates_json(self.metrics),
        }


@dataclass(frozen=True, slots=True)
class DatasetRow:
    dataset: str
    role: Role
    generator: str | None
    generation: Generation | None
    n_samples: int
    metrics: dict[str, Estimate]
    artifacts: dict[str, float]
    drift: Drift | None
    notes: tuple[str, ...] = ()
    windows: tuple[WindowRow, ...] = ()
    """The newest ``max_windows`` windows, oldest first."""

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "role": self.role,
            "generator": self.generator,
            "generation": None if self.generation is None else self.generation.generation,
            "previous_generation": None if self.generation is None else self.generation.previous,
            "n_samples": self.n_samples,
            "metrics": estimates_json(self.metrics),
            "artifacts": {kind: round(share, 6) for kind, share in self.artifacts.items()},
            "drift": None if self.drift is None else self.drift.to_json(),
            "windows": [window.to_json() for window in self.windows],
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class CoverageRow:
    eval: str
    production: str
    vectors: str
    threshold: float
    n_eval: int
    n_production: int
    result: Coverage

    def to_json(self) -> dict[str, Any]:
        return {
            "eval": self.eval,
            "production": self.production,
            "vectors": self.vectors,
            "threshold": self.threshold,
            "n_eval": self.n_eval,
            "n_production": self.n_production,
            "uncovered": self.result.uncovered.to_json(),
            "clusters": [cluster.to_json() for cluster in self.result.clusters],
        }


@dataclass(frozen=True, slots=True)
class OverlapRow:
    eval: str
    training: str
    n_training: int
    result: Overlap

    def to_json(self) -> dict[str, Any]:
        return {
            "eval": self.eval,
            "training": self.training,
            "n_eval": self.result.items,
            "n_training": self.n_training,
            "ngram": 13,
            "overlapping": self.result.overlapping.to_json(),
            "examples": list(self.result.examples),
        }


@dataclass(frozen=True, slots=True)
class DiversityReport:
    generated_at: float
    embeddings: str | None
    """The embedding model used, or None when embeddings are off."""
    notes: tuple[str, ...]
    datasets: tuple[DatasetRow, ...]
    generations: tuple[tuple[str, ...], ...]
    coverage: tuple[CoverageRow, ...]
    overlap: tuple[OverlapRow, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "generated_at": _iso(self.generated_at),
            "embeddings": self.embeddings,
            "notes": list(self.notes),
            "datasets": [row.to_json() for row in self.datasets],
            "generations": [list(chain) for chain in self.generations],
            "coverage": [row.to_json() for row in self.coverage],
            "overlap": [row.to_json() for row in self.overlap],
        }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def load_inputs(
    store: EventStore, settings: DiversitySettings
) -> tuple[list[DatasetSamples], Lineage]:
    """Every sampled dataset's stored samples, and the lineage, from the store."""
    provenance = list(store.events(PROVENANCE_TYPES))
    declared = {e.dataset: e for e in provenance if isinstance(e, DatasetEvent)}
    inputs = []
    for dataset, newest in sorted(store.sample_datasets().items()):
        reference = store.samples(dataset, settings.reference_size, earliest=True)
        known = {s.id for s in reference}
        since = newest - (settings.window_days - 1) * WINDOW_S
        latest = store.samples(dataset, settings.sample_size + len(known), since=since)
        event = declared.get(dataset)
        windows = []
        for start in store.sample_windows(dataset, settings.max_windows):
            found = store.samples(
                dataset, settings.sample_size, since=start, until=start + WINDOW_S
            )
            windows.append(Window(float(start), tuple(found)))
        inputs.append(
            DatasetSamples(
                dataset=dataset,
                role=event.role if event else "training",
                generator=event.generator if event else None,
                sample=tuple(store.samples(dataset, settings.sample_size)),
                reference=tuple(reference),
                current=tuple(s for s in latest if s.id not in known)[: settings.sample_size],
                window_start=float(since // WINDOW_S * WINDOW_S),
                windows=tuple(windows),
            )
        )
    return inputs, Lineage.from_events(provenance)


def _key(*parts: object) -> bytes:
    return hashlib.blake2b(repr(parts).encode(), digest_size=16).digest()


def _texts(samples: Sequence[Sample]) -> list[str]:
    return [s.text for s in samples]


@dataclass
class DiversityAnalyzer:
    """Builds reports; keeps the last round's results and embeddings for unchanged samples."""

    settings: DiversitySettings
    embedder: Embedder | None = None
    embeddings_note: str | None = None
    _cache: RoundCache[bytes, Any] = field(default_factory=RoundCache)

    def analyze(self, inputs: Sequence[DatasetSamples], lineage: Lineage) -> DiversityReport:
        found = generations(lineage)
        by_role: dict[str, list[DatasetSamples]] = {"training": [], "eval": [], "production": []}
        for item in inputs:
            by_role[item.role].append(item)
        rows = []
        for item in inputs:
            generation = found.get(item.dataset)
            whole = replace(item, windows=())  # windows are measured and cached one by one
            row = self._cached(("row", whole, generation), self._row, whole, generation)
            windows = tuple(
                self._cached(("window", item.dataset, window), self._window, item.dataset, window)
                for window in item.windows
            )
            rows.append(replace(row, windows=windows))
        coverage_rows = [
            self._cached(("coverage", e, p), self._coverage, e, p)
            for e in by_role["eval"]
            for p in by_role["production"]
        ]
        overlap_rows = [
            self._cached(("overlap", e, t), self._overlap, e, t)
            for e in by_role["eval"]
            for t in by_role["training"]
        ]
        self._cache.next_round()
        if self.embedder is not None:
            self.embedder.next_round()
        notes = [SYNTAX_NOTE]
        if self.embeddings_note:
            notes.insert(0, self.embeddings_note)
        return DiversityReport(
            generated_at=datetime.now(UTC).timestamp(),
            embeddings=None if self.embedder is None else self.embedder.name,
            notes=tuple(notes),
            datasets=tuple(rows),
            generations=tuple(tuple(chain) for chain in chains(found)),
            coverage=tuple(coverage_rows),
            overlap=tuple(overlap_rows),
        )

    def _cached(self, what: tuple[Any, ...], compute: Callable[..., T], *args: Any) -> T:
        """``compute(*args)``, or its result from the last round if ``what`` is unchanged."""
        key = _key(what, self.settings, self.embedder is None)
        result: T = self._cache.get(key, lambda: compute(*args))
        return result

    def _rng(self, *what: object) -> np.random.Generator:
        return np.random.default_rng(int.from_bytes(_key(*what)[:8], "big"))

    def _measure(self, samples: Sequence[Sample], texts_only: bool = False) -> list[Any]:
        """The measurable views of a sample: lexical, plus embeddings when available."""
        labels = None if texts_only else [s.label for s in samples]
        views: list[Any] = [LexicalSample(_texts(samples), labels)]
        if self.embedder is not None and len(samples) >= 2:
            views.append(EmbeddedSample(self.embedder.encode(_texts(samples))))
        return views

    def _row(self, item: DatasetSamples, generation: Generation | None) -> DatasetRow:
        resamples = self.settings.resamples
        metrics: dict[str, Estimate] = {}
        for view in self._measure(item.sample):
            metrics.update(estimate(view, resamples, self._rng("metrics", item.dataset)))
        notes = []
        drift = None
        if len(item.current) >= 2 and len(item.reference) >= 2:
            drift = self._drift(item)
        else:
            notes.append("no drift yet: no samples beyond the reference in the latest window")
        return DatasetRow(
            dataset=item.dataset,
            role=item.role,
            generator=item.generator,
            generation=generation,
            n_samples=len(item.sample),
            metrics=dict(sorted(metrics.items())),
            artifacts=artifact_shares(_texts(item.sample), [s.prompt for s in item.sample]),
            drift=drift,
            notes=tuple(notes),
        )

    def _window(self, dataset: str, window: Window) -> WindowRow:
        """One window's measures: only windows whose samples changed are measured again."""
        metrics: dict[str, Estimate] = {}
        for view in self._measure(window.samples):
            rng = self._rng("window", dataset, window.start)
            metrics.update(estimate(view, self.settings.resamples, rng))
        return WindowRow(window.start, len(window.samples), dict(sorted(metrics.items())))

    def _drift(self, item: DatasetSamples) -> Drift:
        """Compared at equal size: distinct-n and the Vendi score depend on the sample size."""
        size = min(len(item.reference), len(item.current))
        before = sorted(item.reference, key=lambda s: s.priority)[:size]
        after = item.current[:size]
        changes: dict[str, Estimate] = {}
        rng = self._rng("drift", item.dataset)
        for old, new in zip(self._measure(before, True), self._measure(after, True), strict=True):
            changes.update(compare(old, new, self.settings.resamples, rng))
        reference, current, kind = self._vectors(before, after)
        test = (
            mmd_test(reference, current, self.settings.permutations, rng)
            if self.settings.permutations
            else None
        )
        return Drift(
            window_start=item.window_start,
            reference_samples=size,
            current_samples=size,
            changes=dict(sorted(changes.items())),
            test=test,
            vectors=kind,
        )

    def _vectors(
        self, first: Sequence[Sample], second: Sequence[Sample]
    ) -> tuple[Vectors, Vectors, str]:
        """Both samples as unit vectors: embeddings, or TF-IDF fitted on the two together."""
        if self.embedder is not None:
            return (
                self.embedder.encode(_texts(first)),
                self.embedder.encode(_texts(second)),
                "embeddings",
            )
        vectors = TfIdf(_texts(first) + _texts(second)).vectors
        return vectors[: len(first)], vectors[len(first) :], "tfidf"

    def _coverage(self, eval_set: DatasetSamples, production: DatasetSamples) -> CoverageRow:
        eval_vectors, production_vectors, kind = self._vectors(eval_set.sample, production.sample)
        threshold = (
            self.settings.coverage_threshold
            if kind == "embeddings"
            else self.settings.coverage_threshold_lexical
        )
        result = coverage(
            eval_vectors,
            production_vectors,
            _texts(production.sample),
            threshold,
            self.settings.clusters,
            self.settings.examples,
            self._rng("coverage", eval_set.dataset, production.dataset),
        )
        return CoverageRow(
            eval=eval_set.dataset,
            production=production.dataset,
            vectors=kind,
            threshold=threshold,
            n_eval=len(eval_set.sample),
            n_production=len(production.sample),
            result=result,
        )

    def _overlap(self, eval_set: DatasetSamples, training: DatasetSamples) -> OverlapRow:
        result = overlap(
            [(s.prompt, s.text) for s in eval_set.sample],
            [(s.prompt, s.text) for s in training.sample],
            examples=self.settings.examples,
        )
        return OverlapRow(eval_set.dataset, training.dataset, len(training.sample), result)


def build_analyzer(settings: DiversitySettings) -> DiversityAnalyzer:
    """An analyzer with embeddings as ``settings.embeddings`` asks; raises if ``on`` fails."""
    if settings.embeddings == "off":
        return DiversityAnalyzer(settings, embeddings_note="embeddings off (by configuration)")
    from prefleak.embeddings import load_embedder

    loaded = load_embedder()
    if isinstance(loaded, str):
        if settings.embeddings == "on":
            raise RuntimeError(loaded)
        return DiversityAnalyzer(settings, embeddings_note=loaded)
    return DiversityAnalyzer(settings, embedder=loaded)
