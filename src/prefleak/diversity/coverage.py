"""Coverage gap: which production requests no eval item is close to, grouped so a person can read.

A production sample is *uncovered* when its nearest eval sample is farther than a cosine-distance
threshold. Uncovered samples are clustered (spherical k-means) and each cluster is summarised by
its size, its most typical examples and its top TF-IDF terms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from prefleak.diversity.resample import proportion_interval
from prefleak.diversity.vectors import TfIdf, Vectors, similarity, spherical_kmeans
from prefleak.stats.estimate import Estimate

EXAMPLE_CHARS = 200
TERMS = 6


@dataclass(frozen=True, slots=True)
class Cluster:
    """A group of uncovered production samples."""

    size: int
    share: float
    """Of all production samples."""
    mean_distance: float
    terms: tuple[str, ...]
    examples: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "share": round(self.share, 6),
            "mean_distance": round(self.mean_distance, 6),
            "terms": list(self.terms),
            "examples": list(self.examples),
        }


@dataclass(frozen=True, slots=True)
class Coverage:
    """Coverage of one production dataset by one eval dataset."""

    uncovered: Estimate
    clusters: tuple[Cluster, ...]


def coverage(
    eval_vectors: Vectors,
    production_vectors: Vectors,
    production_texts: Sequence[str],
    threshold: float,
    max_clusters: int,
    examples: int,
    rng: np.random.Generator,
) -> Coverage:
    """Share of production samples farther than ``threshold`` from every eval sample, grouped.

    The number of clusters grows with the square root of the uncovered count (half of it, at
    most ``max_clusters``), so a few stray items do not make a cluster each.
    """
    nearest = 1 - similarity(production_vectors, eval_vectors).max(axis=1)
    uncovered = np.flatnonzero(nearest > threshold)
    share = Estimate(
        len(uncovered) / len(nearest), proportion_interval(len(uncovered), len(nearest))
    )
    if not len(uncovered):
        return Coverage(share, ())
    k = min(max_clusters, max(1, math.ceil(math.sqrt(len(uncovered) / 2))))
    labels, centroids = spherical_kmeans(production_vectors[uncovered], k, rng)
    tfidf = TfIdf(production_texts)  # word frequencies of all production, to find the rare
    clusters = []
    for label in range(len(centroids)):
        members = np.flatnonzero(labels == label)
        if not len(members):
            continue
        typical = similarity(production_vectors[uncovered[members]], centroids[label : label + 1])
        order = members[np.argsort(-typical.ravel(), kind="stable")]
        clusters.append(
            Cluster(
                size=len(members),
                share=len(members) / len(nearest),
                mean_distance=float(nearest[uncovered[members]].mean()),
                terms=tuple(tfidf.top_terms(uncovered[members], TERMS)),
                examples=tuple(
                    production_texts[int(uncovered[i])][:EXAMPLE_CHARS] for i in order[:examples]
                ),
            )
        )
    clusters.sort(key=lambda c: (-c.size, -c.mean_distance))
    return Coverage(share, tuple(clusters))
