"""Vectors of texts for semantic measures: sentence embeddings, or TF-IDF when those are off.

Both kinds are L2-normalised rows (dense ``ndarray`` or sparse CSR), so cosine similarity is a
matrix product either way and every function below takes either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from prefleak.diversity.text import words

Vectors = Any
"""An (n, d) array of unit rows: ``numpy.ndarray`` or a ``scipy.sparse`` CSR matrix."""
Floats = NDArray[np.float64]
COMMON_SHARE = 0.2
"""Terms in more than this share of the texts say nothing about a cluster ("the", "what")."""


class TfIdf:
    """TF-IDF over the words of a corpus (smoothed idf, unit rows), with its vocabulary."""

    def __init__(self, texts: Sequence[str]) -> None:
        vocabulary: dict[bytes, int] = {}
        columns: list[int] = []
        pointers = [0]
        for text in texts:
            columns.extend(vocabulary.setdefault(word, len(vocabulary)) for word in words(text))
            pointers.append(len(columns))
        counts = sparse.csr_matrix(
            (np.ones(len(columns)), np.asarray(columns, dtype=np.intp), np.asarray(pointers)),
            shape=(len(texts), len(vocabulary)),
        )
        counts.sum_duplicates()
        texts_with = np.bincount(counts.indices, minlength=len(vocabulary))
        idf = np.log((1 + len(texts)) / (1 + texts_with)) + 1.0
        self.vectors = normalise(counts @ sparse.diags(idf))
        self.terms = [word.decode(errors="replace") for word in vocabulary]
        self._common = texts_with > COMMON_SHARE * len(texts)
        self._mean = self.vectors.mean(axis=0)

    def top_terms(self, rows: NDArray[np.intp], count: int) -> list[str]:
        """The terms weighing most more in the given rows than in all, common words left out."""
        weights = np.asarray(self.vectors[rows].mean(axis=0) - self._mean).ravel()
        weights[self._common] = 0
        best = np.argsort(-weights, kind="stable")[:count]
        return [self.terms[i] for i in best if weights[i] > 0]


def normalise(vectors: Vectors) -> Vectors:
    """Rows scaled to unit length (all-zero rows stay zero)."""
    if sparse.issparse(vectors):
        norms = np.sqrt(np.asarray(vectors.multiply(vectors).sum(axis=1)).ravel())
        return sparse.csr_matrix(sparse.diags(1 / np.where(norms > 0, norms, 1)) @ vectors)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


def dense(matrix: Any) -> Floats:
    return np.asarray(matrix.toarray() if sparse.issparse(matrix) else matrix, dtype=np.float64)


def similarity(a: Vectors, b: Vectors) -> Floats:
    """Cosine similarities of every row of ``a`` with every row of ``b``."""
    return dense(a @ b.T)


def stack(a: Vectors, b: Vectors) -> Vectors:
    return sparse.vstack([a, b], format="csr") if sparse.issparse(a) else np.vstack([a, b])


def spherical_kmeans(
    vectors: Vectors, k: int, rng: np.random.Generator, iterations: int = 50
) -> tuple[NDArray[np.intp], Floats]:
    """Cluster unit rows by cosine (k-means++ seeding); returns labels and unit centroids."""
    n = vectors.shape[0]
    k = max(1, min(k, n))
    chosen = [int(rng.integers(n))]
    distance = np.clip(1 - similarity(vectors, vectors[chosen[-1]]).ravel(), 0, None)
    while len(chosen) < k and distance.sum() > 0:
        chosen.append(int(rng.choice(n, p=distance**2 / (distance**2).sum())))
        distance = np.minimum(distance, 1 - similarity(vectors, vectors[chosen[-1]]).ravel())
    centroids = dense(vectors[chosen])
    labels = np.full(n, -1, dtype=np.intp)
    for _ in range(iterations):
        new = np.argmax(dense(vectors @ centroids.T), axis=1).astype(np.intp)
        if np.array_equal(new, labels):
            break
        labels = new
        members = sparse.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(len(centroids), n))
        centroids = normalise(dense(members @ vectors))
    return labels, centroids
