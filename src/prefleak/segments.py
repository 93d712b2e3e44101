"""The verdict projection as columns: what statistics read, and what a sealed segment stores.

SQLite hands rows back as Python tuples, about 10 µs a row of the projection's 25 columns: half a
full recompute at a million verdicts. An hour of the projection that lies before the newest
verdict's is therefore also kept as one *segment*, its rows as arrays in one blob
(docs/storage.md), which decodes in well under a millisecond. Segments are a cache of the
projection rows, never a second truth: a verdict that lands in a sealed hour makes its segment
stale, and the hour is read from the rows again.

Pure: rows in, arrays out, bytes in and out.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
SmallIntArray = npt.NDArray[np.int32]
FloatArray = npt.NDArray[np.float64]

NO_LABEL = -1
"""Code of a missing category or track."""
PROMPT_SEPARATOR = "\x1f"
"""Between benchmark and prompt id in a prompt's name (the unit separator: in neither)."""
N_COUNTS = 16
"""The 15 outcome counters of a projection row, then ``length_n``."""

_CHUNK_ROWS = 100_000
"""Projection rows turned into columns at a time: bounds the Python tuples alive at once."""
VOCABULARY_OF = {
    "benchmark": "benchmarks",
    "judge": "models",
    "lo": "models",
    "hi": "models",
    "prompt": "prompts",
    "category": "categories",
    "track": "tracks",
}
"""Each code column and the vocabulary its codes index."""
_CODE_FIELDS = tuple(VOCABULARY_OF)
VOCABULARIES = tuple(dict.fromkeys(VOCABULARY_OF.values()))
_FORMAT = 2
"""Layout of :meth:`ProjectionColumns.to_bytes`; a segment of another layout is read again."""


class _Vocabulary:
    """Names to dense integer codes in order of first appearance."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}

    def encode(self, names: Iterable[str | None]) -> IntArray:
        """Codes of many names; None (a missing label) is :data:`NO_LABEL`."""
        names = list(names)
        for name in dict.fromkeys(names):  # the distinct names, in C
            if name is not None and name not in self.codes:
                self.codes[name] = len(self.codes)
        lookup: dict[str | None, int] = {None: NO_LABEL}
        lookup.update(self.codes)
        return np.fromiter(map(lookup.__getitem__, names), dtype=np.int64, count=len(names))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.codes)


@dataclass(frozen=True, eq=False)
class ProjectionColumns:
    """Rows of ``verdict_counts`` as arrays, names as codes into the part's own vocabularies.

    ``counts`` holds the 15 outcome counters and ``length_n`` of each row, in the table's column
    order; ``length_sum`` its ``length_log_ratio_sum``. Codes and counts are int32, as stored:
    a read holds hundreds of parts at once, and this halves them.
    """

    window: IntArray
    benchmark: SmallIntArray
    judge: SmallIntArray
    lo: SmallIntArray
    hi: SmallIntArray
    prompt: SmallIntArray
    category: SmallIntArray
    track: SmallIntArray
    counts: SmallIntArray
    length_sum: FloatArray
    benchmarks: tuple[str, ...]
    models: tuple[str, ...]
    prompts: tuple[str, ...]
    """``benchmark<US>prompt_id`` (see :data:`PROMPT_SEPARATOR`)."""
    categories: tuple[str, ...]
    tracks: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.window.size)

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]]) -> ProjectionColumns:
        """Columns of projection rows (``verdict_counts`` tuples, in any order)."""
        vocabularies = {name: _Vocabulary() for name in VOCABULARIES}
        ints: list[IntArray] = []
        sums: list[FloatArray] = []
        iterator = iter(rows)
        while chunk := list(islice(iterator, _CHUNK_ROWS)):
            columns = list(zip(*chunk, strict=True))  # column-wise: C loops, not Python ones
            benchmark, judge, lo, hi, prompt_id = columns[1:6]
            prompt = map(f"{{}}{PROMPT_SEPARATOR}{{}}".format, benchmark, prompt_id)
            named = (benchmark, judge, lo, hi, prompt, columns[23], columns[24])
            codes = [
                vocabularies[VOCABULARY_OF[field]].encode(names)
                for field, names in zip(_CODE_FIELDS, named, strict=True)
            ]
            counts = np.array(columns[6 : 6 + N_COUNTS], dtype=np.int64)
            ints.append(np.vstack([np.array(columns[0], dtype=np.int64), *codes, counts]).T)
            sums.append(np.array(columns[6 + N_COUNTS], dtype=np.float64))
        table = np.concatenate(ints) if ints else np.zeros((0, 8 + N_COUNTS), dtype=np.int64)
        fields: dict[str, Any] = {
            "window": table[:, 0].copy(),
            **{field: table[:, 1 + k].astype(np.int32) for k, field in enumerate(_CODE_FIELDS)},
            "counts": table[:, 8:].astype(np.int32),
            "length_sum": np.concatenate(sums) if sums else np.zeros(0),
            **{name: vocabularies[name].names for name in VOCABULARIES},
        }
        return cls(**fields)

    def select(self, mask: npt.NDArray[np.bool_]) -> ProjectionColumns:
        """The rows where ``mask`` holds, with the same vocabularies."""
        index = np.flatnonzero(mask)
        fields: dict[str, Any] = {name: getattr(self, name) for name in VOCABULARIES}
        fields.update((field, getattr(self, field)[index]) for field in _ARRAY_FIELDS)
        return ProjectionColumns(**fields)

    def of_benchmark(self, benchmark: str) -> npt.NDArray[np.bool_]:
        """Which rows are of ``benchmark``."""
        if benchmark not in self.benchmarks:
            return np.zeros(len(self), dtype=np.bool_)
        return np.asarray(self.benchmark == self.benchmarks.index(benchmark))

    def to_bytes(self) -> bytes:
        """A compact blob: a JSON header (format, rows, vocabularies), then the arrays (codes
        as int32, counts as int32, window and length sums at full width), little-endian."""
        header = json.dumps({
            "format": _FORMAT,
            "rows": len(self),
            **{name: getattr(self, name) for name in VOCABULARIES},
        }).encode()  # fmt: skip
        parts = [struct.pack("<I", len(header)), header]
        for field, dtype in _LAYOUT:
            parts.append(np.ascontiguousarray(getattr(self, field), dtype=dtype).tobytes())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> ProjectionColumns | None:
        """The columns of :meth:`to_bytes`; None for a blob of another format or a damaged one
        (the caller reads the rows instead: a segment is only a cache)."""
        try:
            return cls._decode(data)
        except (struct.error, ValueError, KeyError, TypeError, AttributeError):
            return None

    @classmethod
    def _decode(cls, data: bytes) -> ProjectionColumns | None:
        (size,) = struct.unpack_from("<I", data)
        header = json.loads(data[4 : 4 + size])
        if header.get("format") != _FORMAT:
            return None
        n, offset = int(header["rows"]), 4 + size
        arrays: dict[str, Any] = {}
        for field, dtype in _LAYOUT:
            width = N_COUNTS if field == "counts" else 1
            stored = np.frombuffer(data, dtype=dtype, count=n * width, offset=offset)
            offset += stored.nbytes
            array = stored.astype(stored.dtype.newbyteorder("="))  # a copy: the blob can go
            arrays[field] = array.reshape(n, N_COUNTS) if width > 1 else array
        if offset != len(data):
            raise ValueError("a blob longer than its arrays")
        arrays.update((name, tuple(header[name])) for name in VOCABULARIES)
        return cls(**arrays)


_ARRAY_FIELDS = ("window", *_CODE_FIELDS, "counts", "length_sum")
_LAYOUT: tuple[tuple[str, str], ...] = (
    ("window", "<i8"),
    *((field, "<i4") for field in _CODE_FIELDS),
    ("counts", "<i4"),
    ("length_sum", "<f8"),
)
"""Field and stored dtype of each array in a blob, in order."""


def merged_codes(parts: Sequence[ProjectionColumns]) -> dict[str, Any]:
    """Every vocabulary of ``parts`` (at least one) merged, and their code columns concatenated
    and recoded to it: per vocabulary the sorted names that rows use, per code column the codes.
    Name order makes the codes, and so every result built on them, independent of the order
    rows came in.
    """
    merged: dict[str, Any] = {}
    for vocabulary in VOCABULARIES:
        fields = [field for field, name in VOCABULARY_OF.items() if name == vocabulary]
        names_of: list[tuple[str, ...]] = [getattr(part, vocabulary) for part in parts]
        every = sorted(set().union(*names_of))
        index = {name: code for code, name in enumerate(every)}
        # each part's codes as codes of every name; -1 (no label) hits the last slot, stays -1
        maps = [np.array([*map(index.__getitem__, names), NO_LABEL]) for names in names_of]
        columns = {
            field: np.concatenate(
                [m[getattr(part, field)] for m, part in zip(maps, parts, strict=True)]
            )
            for field in fields
        }
        # then only the names some row uses, keeping their order: one pass over all rows
        used = np.zeros(len(every) + 1, dtype=np.bool_)
        for column in columns.values():
            used[column] = True
        used[-1] = False  # the no-label slot
        rank = np.cumsum(used) - 1
        rank[-1] = NO_LABEL
        merged[vocabulary] = tuple(
            name for name, hit in zip(every, used[:-1].tolist(), strict=True) if hit
        )
        merged.update((field, rank[column]) for field, column in columns.items())
    return merged
