"""Words and n-gram keys shared by the lexical measures, the artifact checks and the overlap test.

Words are runs between whitespace and ASCII punctuation, ASCII-lower-cased, as UTF-8 bytes
(byte-level translation is about five times faster than ``str.translate``). An n-gram is keyed by
a 64-bit polynomial hash of its words' hashes, computed for a whole corpus at once with numpy,
which is what makes the lexical measures fast; n-grams never span two texts.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

_SEPARATOR = b"\x1e"
"""Marks the end of a text in the joined corpus; removed from the texts themselves."""
_DROPPED = string.punctuation.encode() + _SEPARATOR
_TABLE = bytes.maketrans(_DROPPED, b" " * len(_DROPPED))
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: the polynomial hash is a bijection per position

Keys = NDArray[np.uint64]
Index = NDArray[np.intp]


def words(text: str) -> list[bytes]:
    """Lower-cased words; punctuation separates words and is dropped."""
    return text.encode().lower().translate(_TABLE).split()


@dataclass(frozen=True, slots=True)
class Tokens:
    """Every text's words as 64-bit hashes, concatenated, with the text each word belongs to.

    Python's string hash is salted per process, so keys differ between runs; only equality of
    keys is used, and a collision of two distinct n-grams has a chance of about 2**-64.
    """

    hashes: Keys
    doc: Index
    lengths: Index

    @classmethod
    def of(cls, texts: Sequence[str]) -> Tokens:
        cleaned = [text.encode().lower().translate(_TABLE) for text in texts]
        flat = (b" " + _SEPARATOR + b" ").join([*cleaned, b""]).split()
        hashes = np.fromiter(map(hash, flat), dtype=np.int64, count=len(flat))
        ends = hashes == hash(_SEPARATOR)
        doc = (np.cumsum(ends) - ends)[~ends].astype(np.intp)
        lengths = np.bincount(doc, minlength=len(texts)).astype(np.intp)
        return cls(hashes[~ends].view(np.uint64), doc, lengths)

    def ngrams(self, n: int) -> tuple[Keys, Index]:
        """Keys of every n-gram that lies within one text, and the text of each."""
        count = len(self.hashes) - n + 1
        if count <= 0:
            return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.intp)
        keys = self.hashes[:count].copy()
        for offset in range(1, n):
            keys *= _MIX
            keys += self.hashes[offset : offset + count]
        inside = self.doc[:count] == self.doc[n - 1 :]
        return keys[inside], self.doc[:count][inside]


def dense_ids(keys: Keys) -> tuple[Index, int]:
    """Keys renumbered 0..G-1 (G distinct), so counting needs no hashing or sorting later."""
    unique, ids = np.unique(keys, return_inverse=True)
    return ids.astype(np.intp, copy=False), len(unique)
