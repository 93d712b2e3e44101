"""Lexical and label diversity of a sample of texts (pure; docs/diversity.md defines each one).

Everything costly (tokenising, hashing and renumbering n-grams) happens once in
:class:`LexicalSample`; a measure over any subset of the texts is then a few ``bincount`` calls,
which is what makes half-sampling intervals affordable.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from prefleak.diversity.resample import Mask
from prefleak.diversity.text import Index, Tokens, dense_ids

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


class LexicalSample:
    """Texts (and their optional labels) prepared for measuring any subset of them."""

    def __init__(self, texts: Sequence[str], labels: Sequence[str | None] | None = None) -> None:
        tokens = Tokens.of(texts)
        self._size = len(texts)
        self._raw = [text.encode() for text in texts]
        self._lengths = tokens.lengths
        self._ngrams: list[tuple[Index, Index, int]] = []
        for n in DISTINCT_N:
            keys, doc = tokens.ngrams(n)
            ids, distinct = dense_ids(keys)
            self._ngrams.append((ids, doc, distinct))
        keys, doc = tokens.ngrams(REPETITION_N)
        ids, distinct = dense_ids(keys)
        pairs = np.sort(doc.astype(np.int64) * max(distinct, 1) + ids)
        pairs = pairs[np.r_[True, pairs[1:] != pairs[:-1]]] if len(pairs) else pairs  # once each
        self._pair_doc = (pairs // max(distinct, 1)).astype(np.intp)
        self._pair_gram = (pairs % max(distinct, 1)).astype(np.intp)
        self._grams = distinct
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
        out: dict[str, float] = {}
        for n, (ids, doc, distinct) in zip(DISTINCT_N, self._ngrams, strict=True):
            grams = ids[chosen[doc]]
            if len(grams):
                present = np.count_nonzero(np.bincount(grams, minlength=distinct))
                out[f"distinct_{n}"] = present / len(grams)
        ratio = compression_ratio(
            [raw for raw, keep in zip(self._raw, chosen, strict=True) if keep]
        )
        if not np.isnan(ratio):
            out["compression_ratio"] = ratio
        out["self_repetition"] = self._self_repetition(chosen)
        lengths = self._lengths[chosen]
        out["length_mean"] = float(lengths.mean())
        out["length_p50"], out["length_p90"] = (float(q) for q in np.quantile(lengths, [0.5, 0.9]))
        out.update(self._label_metrics(chosen))
        return out

    def _self_repetition(self, chosen: Mask) -> float:
        """Mean over texts of ln(1 + sum over its distinct 4-grams of the other texts with it)."""
        keep = chosen[self._pair_doc]
        grams, docs = self._pair_gram[keep], self._pair_doc[keep]
        texts_with = np.bincount(grams, minlength=self._grams)
        shared = np.bincount(docs, weights=texts_with[grams] - 1, minlength=self._size)
        return float(np.log1p(shared[chosen]).mean())

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
