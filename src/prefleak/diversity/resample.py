"""Intervals for corpus-level measures by half-sampling (the delete-d jackknife with d = n/2).

Resampling texts *with* replacement, as the ordinary bootstrap does, puts exact copies into the
resample, and corpus-level measures (distinct-n, compression, duplicates) read copies as
repetition: the intervals would be biased towards "less diverse". Drawing half of the texts
without replacement has no copies, and the spread of the half-sample values equals the sampling
spread of the full-sample value to first order (Shao & Tu 1995, delete-d jackknife with d = n/2).
Measures also depend on sample size (distinct-n falls as n grows), so only the spread is used:
the interval is the full-sample value plus the 2.5 % and 97.5 % quantiles of the centred draws.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from prefleak.stats.estimate import Estimate

Mask = NDArray[np.bool_]
MIN_DRAWS = 20
"""Fewer usable half-samples than this leave the interval undefined."""
MIN_SIZE = 4
"""Samples smaller than this get no interval: halves of one or two texts say nothing."""


class Measurable(Protocol):
    """A sample whose measures can be computed on any subset of its items."""

    @property
    def size(self) -> int: ...

    def metrics(self, mask: Mask | None = None) -> dict[str, float]:
        """Measure name to value, over the items where ``mask`` is true (all when None)."""
        ...


def half_masks(size: int, count: int, rng: np.random.Generator) -> Iterator[Mask]:
    """``count`` random halves of ``size`` items, without replacement."""
    for _ in range(count):
        mask = np.zeros(size, dtype=bool)
        mask[rng.choice(size, size // 2, replace=False)] = True
        yield mask


def _interval(value: float, draws: list[float]) -> tuple[float, float] | None:
    if len(draws) < MIN_DRAWS:
        return None
    centred = np.asarray(draws) - np.mean(draws)
    low, high = np.quantile(centred, [0.025, 0.975])
    return value + float(low), value + float(high)


def _draws(sample: Measurable, count: int, rng: np.random.Generator) -> list[dict[str, float]]:
    if sample.size < MIN_SIZE:
        return []
    return [sample.metrics(mask) for mask in half_masks(sample.size, count, rng)]


def estimate(sample: Measurable, resamples: int, rng: np.random.Generator) -> dict[str, Estimate]:
    """Every measure of the sample with its half-sampling interval."""
    full = sample.metrics()
    draws = _draws(sample, resamples, rng)
    return {
        name: Estimate(value, _interval(value, [d[name] for d in draws if name in d]))
        for name, value in full.items()
    }


def compare(
    reference: Measurable, current: Measurable, resamples: int, rng: np.random.Generator
) -> dict[str, Estimate]:
    """Change of every measure from ``reference`` to ``current``, with its interval.

    The two samples are independent, so half-samples of each are drawn independently and the
    spread of their difference carries both sampling errors.
    """
    before, after = reference.metrics(), current.metrics()
    ref_draws = _draws(reference, resamples, rng)
    cur_draws = _draws(current, resamples, rng)
    changes = {}
    for name in before.keys() & after.keys():
        deltas = [
            c[name] - r[name]
            for r, c in zip(ref_draws, cur_draws, strict=False)
            if name in r and name in c
        ]
        delta = after[name] - before[name]
        changes[name] = Estimate(delta, _interval(delta, deltas))
    return dict(sorted(changes.items()))


def estimates_json(estimates: Mapping[str, Estimate]) -> dict[str, dict[str, Any]]:
    return {name: e.to_json() for name, e in estimates.items()}


def proportion_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (sound also at 0 % and 100 %)."""
    if n == 0:
        return None
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
