"""A value with its interval, and the prompt bootstrap every verdict statistic shares.

Verdicts on one prompt are not independent (both games, every judge, the same two responses), so
intervals resample *prompts*. Weights are Poisson(1) per prompt and resample: the Poisson
bootstrap, which needs no gather of drawn rows, is additive across cells and matches the
multinomial one for the prompt counts prefleak sees (Hanley & MacGibbon 2006).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

_WEIGHT_CELLS = 1 << 21
"""Bootstrap weights held at once, so memory stays flat however many prompts there are."""


@dataclass(frozen=True, slots=True)
class Estimate:
    """A value with its 95 % interval (None where it cannot be had)."""

    value: float
    ci: tuple[float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "value": round_sig(self.value),
            "ci": None if self.ci is None else [round_sig(self.ci[0]), round_sig(self.ci[1])],
        }


def round_sig(value: float) -> float:
    """Six significant digits: what a JSON report needs, without float noise."""
    return float(f"{value:.6g}")


def poisson_weights(n_prompts: int, n_bootstrap: int, seed: int) -> Iterator[FloatArray]:
    """Chunks of bootstrap weights, shape (resamples in chunk, prompts), n_bootstrap rows in all."""
    rng = np.random.default_rng(seed)
    step = max(1, _WEIGHT_CELLS // max(n_prompts, 1))
    for start in range(0, n_bootstrap, step):
        rows = min(step, n_bootstrap - start)
        yield rng.poisson(1.0, size=(rows, n_prompts)).astype(np.float64)


def bootstrap_sums(by_prompt: FloatArray, n_bootstrap: int, seed: int) -> FloatArray:
    """Resampled column sums of per-prompt values (prompts, k) → (n_bootstrap, k)."""
    chunks = [w @ by_prompt for w in poisson_weights(by_prompt.shape[0], n_bootstrap, seed)]
    return np.concatenate(chunks) if chunks else np.empty((0, by_prompt.shape[1]))


def percentile_ci(draws: FloatArray, confidence: float = 0.95) -> tuple[float, float] | None:
    """Percentile interval of finite draws; None with fewer than 20 of them."""
    finite = draws[np.isfinite(draws)]
    if finite.size < 20:
        return None
    alpha = (1 - confidence) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return float(low), float(high)
