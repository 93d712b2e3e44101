"""Generations of synthetic data: which dataset was written by a model trained on which.

A human-written dataset (no generator, or a person as generator) is generation 0. A dataset
written by model M is one generation past the newest synthetic data in M's training (through its
base weights and parents too), or generation 1 when M saw none. Following each dataset back to
that source gives chains, oldest first, so collapse across generations shows as a trend along a
chain.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefleak.lineage import Lineage


@dataclass(frozen=True, slots=True)
class Generation:
    """A dataset's generation and the dataset one generation back (None for the first)."""

    generation: int
    previous: str | None


def generations(lineage: Lineage) -> dict[str, Generation]:
    """Generation of every registered dataset, read from the lineage's provenance graph (the one
    place datasets, generators, training mixtures and base weights are folded); cycles are cut,
    never looped."""

    def model_source(model: str, seen: frozenset[str]) -> tuple[int, float, str | None]:
        """Newest synthetic data behind a model: (its generation, share, dataset)."""
        best: tuple[int, float, str | None] = (0, 0.0, None)
        for dataset, share in lineage.training_data(model).items():
            if dataset not in seen:
                best = max(best, (dataset_generation(dataset, seen), share, dataset), key=_rank)
        for parent in lineage.bases(model):
            if parent not in seen:
                best = max(best, model_source(parent, seen | {parent}), key=_rank)
        return best

    def dataset_generation(dataset: str, seen: frozenset[str]) -> int:
        model = lineage.generator(dataset)
        if model is None or model in seen:
            return 0
        return model_source(model, seen | {dataset, model})[0] + 1

    result = {}
    for dataset in lineage.datasets():
        model = lineage.generator(dataset)
        if model is None:
            result[dataset] = Generation(0, None)
            continue
        generation, _, previous = model_source(model, frozenset({dataset, model}))
        result[dataset] = Generation(generation + 1, previous if generation > 0 else None)
    return result


def _rank(source: tuple[int, float, str | None]) -> tuple[int, float, str]:
    """Newest generation first, then the largest share, then the name (for determinism)."""
    return source[0], source[1], source[2] or ""


def chains(found: dict[str, Generation]) -> list[list[str]]:
    """Every maximal run of datasets linked by ``previous``, oldest first (two or more long)."""
    earlier = {g.previous for g in found.values() if g.previous is not None}
    runs = []
    for dataset in sorted(found):
        if dataset in earlier:
            continue
        run = [dataset]
        while (previous := found[run[-1]].previous) is not None and previous not in run:
            run.append(previous)
        if len(run) > 1:
            runs.append(run[::-1])
    return runs
