"""Lexical and label diversity of a sample of texts (pure; docs/diversity.md defines each one).

Everything costly (tokenising, hashing and grouping n-grams) happens once in
:class:`LexicalSample`, which keeps for each n which texts hold each distinct n-gram (a sparse 0/1
matrix; how many n-grams a text has follows from its length); a measure over any subset of the
texts is then a few sparse matrix-vector products, which is what makes half-sampling intervals
affordable.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.typing import NDArray

from prefleak.diversity.resample import Mask
from prefleak.diversity.text import Tokens, incidence

DISTINCT_N = (1, 2, 3)
REPETITION_N = 4
"""Self-repetition counts shared 4-grams, as Salkar et al. (2022) do."""
COMPRESSION_LEVEL = 1
"""DEFLATE level 1 (``gzip -1``): three times faster than the default on long texts, which the
half-sampling intervals repeat a hundred times; corpora rank the same as at level 6."""


def compression_ratio(texts: Sequence[bytes]) -> float:
    """Compressed over raw size of the newline-joined texts: lower means more repetitive."""
    raw = b"\n".join(texts)
    return len(zlib.compress(raw, COMPRESSION_LEVEL)) / len(raw) if raw else float("nan")


_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefleak-lexical")
"""zlib and numpy's sort release the GIL, so work runs here on another core while the main thread
goes on: the whole sample's compression from the start of a build (a third of the cost of building
and measuring long texts) and then the 4-gram matrix, a subset's compression while its other
measures are computed."""


class LexicalSample:
    """Texts (and their optional labels) prepared for measuring any subset of them."""

    def __init__(self, texts: Sequence[str], labels: Sequence[str | None] | None = None) -> None:
        self._size = len(texts)
        self._raw = [text.encode() for text in texts]
        self._deflated = _WORKER.submit(compression_ratio, self._raw)
        tokens = Tokens.of_utf8(self._raw)
        fours = _WORKER.submit(lambda: incidence(*tokens.ngrams(REPETITION_N), len(texts)))
        self._lengths = tokens.lengths
        self._held = [incidence(*tokens.ngrams(n), len(texts)) for n in DISTINCT_N]
        self._fours = fours.result()
        names = sorted({label for label in labels or () if label is not None})
        codes = {name: code for code, name in enumerate(names)}
        self._labels = np.array(
            [codes[label] if label is not None else -1 for label in labels or [None] * len(texts)],
            dtype=np.intp,
        )
        self._label_count = len(names)

    @property
    def size(self) -> int:
        return self._size

    def metrics(self, mask: Mask | None = None) -> dict[str, float]:
        """Every lexical measure over the texts where ``mask`` is true; undefined ones absent."""
        chosen = np.ones(self._size, dtype=bool) if mask is None else mask
        if not chosen.any():
            return {}
        deflated = (
            self._deflated
            if chosen.all()
            else _WORKER.submit(
                compression_ratio,
                [raw for raw, keep in zip(self._raw, chosen, strict=True) if keep],
            )
        )
        out: dict[str, float] = {}
        weights = chosen.astype(np.float64)
        for n, held in zip(DISTINCT_N, self._held, strict=True):
            total = int(np.maximum(self._lengths[chosen] - (n - 1), 0).sum())
            if total:  # with no mask, every row (distinct n-gram) counts
                seen = np.count_nonzero(held @ weights) if mask is not None else held.shape[0]
                out[f"distinct_{n}"] = seen / total
        repetition = self._self_repetition(chosen, weights)
        if not np.isnan(ratio := deflated.result()):
            out["compression_ratio"] = ratio
        out["self_repetition"] = repetition
        lengths = self._lengths[chosen]
        out["length_mean"] = float(lengths.mean())
        out["length_p50"], out["length_p90"] = (float(q) for q in np.quantile(lengths, [0.5, 0.9]))
        out.update(self._label_metrics(chosen))
        return out

    def _self_repetition(self, chosen: Mask, weights: NDArray[np.float64]) -> float:
        """Mean over texts of ln(1 + sum over its distinct 4-grams of the other texts with it)."""
        others = self._fours @ weights - 1  # per 4-gram: the chosen texts with it, less one
        return float(np.log1p((self._fours.T @ others)[chosen]).mean())

    def _label_metrics(self, chosen: Mask) -> dict[str, float]:
        labels = self._labels[chosen]
        labels = labels[labels >= 0]
        if not len(labels):
            return {}
        counts = np.bincount(labels, minlength=self._label_count)
        shares = counts[counts > 0] / len(labels)
        return {
            "label_entropy_bits": float(-(shares * np.log2(shares)).sum()) + 0.0,
            "majority_label_share": float(shares.max()),
        }
