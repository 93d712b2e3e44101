"""Semantic diversity and distribution shift of embedded samples (pure numpy).

Mean pairwise cosine distance says how far apart two random items are; the Vendi score
(Friedman & Dieng 2023) is the effective number of distinct items: the exponential of the
Shannon entropy of the eigenvalues of the similarity matrix divided by n. n identical items
score 1, n orthogonal ones score n. The shift test is a kernel two-sample test (MMD, Gretton et
al. 2012) with a Gaussian kernel on cosine distance and a permutation p-value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from prefleak.diversity.resample import Mask
from prefleak.diversity.vectors import Floats, Vectors, dense, similarity, stack

PERMUTATION_BATCH = 100


class EmbeddedSample:
    """Unit-length embeddings of a sample, measurable on any subset."""

    def __init__(self, vectors: NDArray[np.floating[Any]]) -> None:
        self._vectors = np.asarray(vectors, dtype=np.float64)

    @property
    def size(self) -> int:
        return len(self._vectors)

    def metrics(self, mask: Mask | None = None) -> dict[str, float]:
        vectors = self._vectors if mask is None else self._vectors[mask]
        n = len(vectors)
        if n < 2:
            return {}
        total = vectors.sum(axis=0)
        mean_similarity = (float(total @ total) - n) / (n * (n - 1))
        gram = vectors @ vectors.T if n <= vectors.shape[1] else vectors.T @ vectors
        eigenvalues = np.clip(np.linalg.eigvalsh(gram / n), 0, None)
        eigenvalues = eigenvalues[eigenvalues > 1e-12]
        return {
            "embedding_cosine_distance": 1.0 - mean_similarity,
            "vendi_score": float(np.exp(-(eigenvalues * np.log(eigenvalues)).sum())),
        }


@dataclass(frozen=True, slots=True)
class ShiftTest:
    """Outcome of the MMD permutation test of reference against current."""

    mmd2: float
    p_value: float
    permutations: int


def mmd_test(
    reference: Vectors, current: Vectors, permutations: int, rng: np.random.Generator
) -> ShiftTest:
    """Biased MMD² with a Gaussian kernel on cosine distance (median bandwidth), permuted.

    The kernel matrix is computed once; each permutation is then two matrix products, done in
    batches, so 500 permutations of 1,000 items take well under a second.
    """
    n = reference.shape[0]
    pooled = stack(reference, current)
    squared = np.clip(2 - 2 * similarity(pooled, pooled), 0, None)  # ‖x − y‖² of unit vectors
    upper = squared[np.triu_indices(len(squared), 1)]
    bandwidth = float(np.median(upper[upper > 0])) if np.any(upper > 0) else 1.0
    kernel = np.exp(-squared / bandwidth)
    observed = _mmd2(kernel, np.arange(len(kernel)) < n)[0]
    exceed, done = 0, 0
    while done < permutations:
        count = min(PERMUTATION_BATCH, permutations - done)
        masks = np.array([rng.permutation(len(kernel)) < n for _ in range(count)])
        exceed += int(np.count_nonzero(_mmd2(kernel, masks) >= observed - 1e-12))
        done += count
    return ShiftTest(float(observed), (1 + exceed) / (1 + permutations), permutations)


def _mmd2(kernel: Floats, masks: Mask) -> Floats:
    """MMD² of each row of ``masks`` (True: first sample) against the rest."""
    first = np.atleast_2d(masks).astype(np.float64)
    second = 1 - first
    n, m = first.sum(axis=1), second.sum(axis=1)
    k_first = first @ kernel
    xx = (k_first * first).sum(axis=1) / n**2
    xy = (k_first * second).sum(axis=1) / (n * m)
    yy = ((second @ kernel) * second).sum(axis=1) / m**2
    return dense(xx + yy - 2 * xy)
