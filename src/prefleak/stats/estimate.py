"""A value with its interval, and the prompt bootstrap every verdict statistic shares.

Verdicts on one prompt are not independent (both games, every judge, the same two responses), so
intervals resample *prompts*. Weights are Poisson(1) per prompt and resample: the Poisson
bootstrap, which needs no gather of drawn rows, is additive across cells and matches the
multinomial one for the prompt counts prefleak sees (Hanley & MacGibbon 2006).

A weight is a hash of (prompt, resample, seed), not a draw from a stream, so a prompt gets the
same weights in every table, slice and replica that holds it: statistics computed apart (per
window, per replica) resample consistently, and the same data always gives the same interval.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator
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


KeyArray = npt.NDArray[np.uint64]

_POISSON_CDF = np.cumsum([math.exp(-1) / math.factorial(k) for k in range(18)])
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def prompt_keys(names: Iterable[str]) -> KeyArray:
    """A 64-bit key per prompt name: what its bootstrap weights are a function of."""
    digests = b"".join(hashlib.blake2b(n.encode(), digest_size=8).digest() for n in names)
    return np.frombuffer(digests, dtype=np.uint64).copy()


def _mix(x: KeyArray) -> KeyArray:
    """splitmix64's finaliser: turns structured integers into independent-looking bits."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def poisson_weights(keys: KeyArray, n_bootstrap: int, seed: int = 0) -> Iterator[FloatArray]:
    """Chunks of bootstrap weights, shape (resamples in chunk, prompts), n_bootstrap rows in all.

    Weight (b, p) is Poisson(1) by inverse CDF of a hash of (keys[p], b, seed).
    """
    step = max(1, _WEIGHT_CELLS // max(keys.size, 1))
    salt = _mix(np.array([seed], dtype=np.uint64) + _GOLDEN)
    for start in range(0, n_bootstrap, step):
        replicates = np.arange(start, min(start + step, n_bootstrap), dtype=np.uint64)
        bits = _mix(keys[None, :] ^ _mix((replicates[:, None] + np.uint64(1)) * _GOLDEN ^ salt))
        uniform = (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53
        yield _poisson_quantile(uniform)


def _poisson_quantile(uniform: FloatArray) -> FloatArray:
    """Poisson(1) by inverse CDF: how many CDF values are <= each uniform (``searchsorted``'s
    ``side="right"``), counted with one vectorised comparison per value until none is reached;
    2.4x faster than ``searchsorted``'s branchy binary search over 18 values."""
    weights: FloatArray = (uniform >= _POISSON_CDF[0]).astype(np.float64)
    for threshold in _POISSON_CDF[1:]:
        reached = uniform >= threshold
        if not reached.any():
            break
        weights += reached
    return weights


def bootstrap_sums(
    by_prompt: FloatArray, n_bootstrap: int, seed: int = 0, keys: KeyArray | None = None
) -> FloatArray:
    """Resampled column sums of per-prompt values (prompts, k) → (n_bootstrap, k); ``keys``
    name the prompts (default: their row numbers)."""
    if keys is None:
        keys = np.arange(by_prompt.shape[0], dtype=np.uint64)
    chunks = [w @ by_prompt for w in poisson_weights(keys, n_bootstrap, seed)]
    return np.concatenate(chunks) if chunks else np.empty((0, by_prompt.shape[1]))


def percentile_ci(draws: FloatArray, confidence: float = 0.95) -> tuple[float, float] | None:
    """Percentile interval of finite draws; None with fewer than 20 of them."""
    finite = draws[np.isfinite(draws)]
    if finite.size < 20:
        return None
    alpha = (1 - confidence) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return float(low), float(high)
