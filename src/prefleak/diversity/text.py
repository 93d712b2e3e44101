"""Words and n-gram keys shared by the lexical measures, the artifact checks and the overlap test.

Words are runs between whitespace and ASCII punctuation, ASCII-lower-cased, as UTF-8 bytes
(byte-level translation is about five times faster than ``str.translate``). A word is keyed by a
64-bit hash of its bytes and an n-gram by a 64-bit polynomial hash of its words' keys, both
computed for a whole corpus at once with numpy, which is what makes the lexical measures fast;
n-grams never span two texts.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

_DROPPED = (string.punctuation + string.whitespace + "\x1e").encode()
"""Replaced by a space, so that words are the runs of other bytes: ``bytes.split``'s words (its
whitespace is ASCII's), split at ``\\x1e`` too, as they always were."""
_TABLE = bytes.maketrans(
    _DROPPED + string.ascii_uppercase.encode(),
    b" " * len(_DROPPED) + string.ascii_lowercase.encode(),
)
"""Lower-cases ASCII letters (what ``bytes.lower`` does) and drops, in one pass."""
_SPACE = ord(" ")
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: the polynomial hash is a bijection per position
_PACKED = 16
"""Words up to this many bytes are hashed from their bytes read as two integers, all at once;
longer ones (about 1 in 3,000 words of English prose) one by one with Python's hash."""
_LOW_BYTES = np.array([(1 << 8 * count) - 1 for count in range(9)], dtype=np.uint64)  # by count

Keys = NDArray[np.uint64]
Index = NDArray[np.intp]


def words(text: str) -> list[bytes]:
    """Lower-cased words; punctuation separates words and is dropped."""
    return text.encode().translate(_TABLE).split()


def _finalise(keys: Keys) -> Keys:
    """SplitMix64's finaliser, in place: a bijection after which every bit depends on every input
    bit, so that :func:`incidence` may keep only a key's high bits."""
    keys ^= keys >> np.uint64(30)
    keys *= np.uint64(0xBF58476D1CE4E5B9)
    keys ^= keys >> np.uint64(27)
    keys *= np.uint64(0x94D049BB133111EB)
    keys ^= keys >> np.uint64(31)
    return keys


def _word_keys(joined: bytes, starts: Index, lengths: Index) -> Keys:
    """A 64-bit key per word ``joined[start:start + length]``: its length and bytes, up to
    ``_PACKED`` of them read as little-endian integers of 8 (``joined`` ends in ``_PACKED``
    spaces, so reads stay inside), longer words by Python's hash."""
    windows = np.ndarray((len(joined) - 7,), dtype="<u8", buffer=joined, strides=(1,))
    keys = windows[starts] & _LOW_BYTES[np.minimum(lengths, 8)]
    keys *= _MIX
    keys += lengths.view(np.uint64)
    over = np.flatnonzero(lengths > 8)
    tails = windows[starts[over] + 8] & _LOW_BYTES[np.minimum(lengths[over] - 8, 8)]
    keys[over] = keys[over] * _MIX + tails
    long = over[lengths[over] > _PACKED]
    spans = zip(starts[long].tolist(), (starts[long] + lengths[long]).tolist(), strict=True)
    hashes = np.fromiter((hash(joined[start:end]) for start, end in spans), np.int64, len(long))
    keys[long] = hashes.view(np.uint64)
    return _finalise(keys)


@dataclass(frozen=True, slots=True)
class Tokens:
    """Every text's words as 64-bit keys, concatenated, with the text each word belongs to.

    Words of up to 16 bytes get the same key in every process; longer ones use Python's string
    hash, salted per process. Only equality of keys is used, and a collision of two distinct
    n-grams has a chance of about 2**-64.
    """

    hashes: Keys
    doc: Index
    lengths: Index

    @classmethod
    def of(cls, texts: Sequence[str]) -> Tokens:
        return cls.of_utf8([text.encode() for text in texts])

    @classmethod
    def of_utf8(cls, encoded: Sequence[bytes]) -> Tokens:
        """The same from texts already encoded as UTF-8."""
        joined = b" ".join([b"", *encoded, b" " * (_PACKED - 1)]).translate(_TABLE)
        spaces = np.frombuffer(joined, np.uint8) == _SPACE
        edges = np.flatnonzero(spaces[1:] != spaces[:-1]) + 1
        starts, ends = edges[0::2], edges[1::2]
        sizes = np.fromiter((len(text) + 1 for text in encoded), np.intp, len(encoded))
        firsts = np.searchsorted(starts, np.cumsum(sizes) - sizes + 1)  # each text's first word
        lengths = np.diff(firsts, append=len(starts)).astype(np.intp)
        doc = np.repeat(np.arange(len(encoded), dtype=np.intp), lengths)
        return cls(_word_keys(joined, starts, ends - starts), doc, lengths)

    def ngrams(self, n: int) -> tuple[Keys, Index]:
        """Keys of every n-gram that lies within one text, and the text of each."""
        if n == 1:
            return self.hashes, self.doc
        count = len(self.hashes) - n + 1
        if count <= 0:
            return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.intp)
        keys = self.hashes[:count].copy()
        for offset in range(1, n):
            keys *= _MIX
            keys += self.hashes[offset : offset + count]
        inside = self.doc[:count] == self.doc[n - 1 :]
        return keys[inside], self.doc[:count][inside]


def _run_starts(ordered: Keys) -> NDArray[np.bool_]:
    """True where a sorted array's value differs from the one before."""
    starts = np.ones(len(ordered), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    return starts


def incidence(keys: Keys, doc: Index, texts: int) -> sparse.csr_array:
    """Which texts hold each distinct n-gram: a 0/1 matrix, distinct n-grams by texts.

    One sort of plain integers that hold a key's high bits over the text's index: numpy sorts
    those several times faster than ``np.unique`` argsorts the keys, and their distinct values
    are the distinct (n-gram, text) pairs, already in the matrix's order. Keys keep
    ``64 - log2(texts)`` of their bits: two distinct n-grams collide with a chance of about
    2**-53 for 2,000 texts (one n-gram miscounted in some 10**5 samples of 500k n-grams).
    """
    shift = np.uint64(max(texts - 1, 1).bit_length())
    low = (np.uint64(1) << shift) - np.uint64(1)
    packed = keys & ~low
    packed |= doc.view(np.uint64)
    packed.sort()
    packed = packed[_run_starts(packed)]
    rows = np.append(np.flatnonzero(_run_starts(packed >> shift)), len(packed))
    columns = (packed & low).view(np.intp)
    ones = np.ones(len(packed))
    return sparse.csr_array((ones, columns, rows), shape=(len(rows) - 1, texts))
