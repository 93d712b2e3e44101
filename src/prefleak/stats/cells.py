"""The verdict projection as columns, the one input every statistic reads.

Rows of ``verdict_counts`` become numpy arrays with names replaced by integer codes, so the
statistics are vectorised over a million cells instead of looping over them. Judges and candidates
share one vocabulary (``models``), so "the judge is itself a candidate" is an integer comparison.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import numpy.typing as npt

from prefleak.pls import both_games
from prefleak.stats.estimate import KeyArray, prompt_keys

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

_CHUNK_ROWS = 100_000
"""Projection rows turned into columns at a time: bounds the Python tuples alive at once."""

NO_LABEL = -1
"""Code of a missing category or track."""


class _Vocabulary:
    """Names to dense integer codes; :meth:`sorted_codes` renumbers them in name order, so the
    same data gives the same codes (and the same bootstrap draws) whatever order rows came in."""

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

    def sorted_codes(self, codes: IntArray) -> tuple[IntArray, tuple[str, ...]]:
        """``codes`` renumbered by name order, and the names in that order."""
        names = sorted(self.codes)
        rank = np.empty(len(names) + 1, dtype=np.int64)
        rank[[self.codes[name] for name in names]] = np.arange(len(names))
        rank[-1] = NO_LABEL  # code -1 indexes the last slot
        return rank[codes], tuple(names)


@dataclass(frozen=True, eq=False)
class Cells:
    """One entry per projection row: (window, benchmark, judge, candidate pair, prompt).

    ``outcomes`` are (lo wins, hi wins, ties) with the both-games rule applied (what PLS counts);
    ``verdicts`` are the same per verdict, every game counted (what the paired-comparison model
    fits), and ``lo_first``/``hi_first`` the part of ``verdicts`` whose order of presentation is
    known. ``length`` is the mean ``ln((len_lo + 1) / (len_hi + 1))`` of the cell (0 when unknown,
    see ``has_length``).
    """

    window: IntArray
    benchmark: IntArray
    judge: IntArray
    lo: IntArray
    hi: IntArray
    prompt: IntArray
    """Code of (benchmark, prompt id): the unit the bootstraps resample."""
    category: IntArray
    track: IntArray
    outcomes: FloatArray
    verdicts: FloatArray
    lo_first: FloatArray
    hi_first: FloatArray
    length: FloatArray
    has_length: npt.NDArray[np.bool_]
    models: tuple[str, ...]
    benchmarks: tuple[str, ...]
    categories: tuple[str, ...]
    tracks: tuple[str, ...]
    prompts: tuple[str, ...]
    """Per prompt code: its name, ``benchmark<US>prompt_id`` (US = the unit separator, 0x1f)."""
    prompt_keys: KeyArray
    """Per prompt code: the key its bootstrap weights are drawn from (a hash of its name)."""

    @property
    def n_prompts(self) -> int:
        return int(self.prompt_keys.size)

    def __len__(self) -> int:
        return int(self.window.size)

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]]) -> Cells:
        """Columns of projection rows (``verdict_counts`` tuples, any order; a prompt may span
        several windows)."""
        models, benchmarks, prompts = _Vocabulary(), _Vocabulary(), _Vocabulary()
        categories, tracks = _Vocabulary(), _Vocabulary()
        int_parts: list[IntArray] = []
        count_parts: list[FloatArray] = []
        iterator = iter(rows)
        while chunk := list(islice(iterator, _CHUNK_ROWS)):
            columns = list(zip(*chunk, strict=True))  # column-wise: C loops, not Python ones
            int_parts.append(
                np.stack(
                    [
                        np.array(columns[0], dtype=np.int64),
                        benchmarks.encode(columns[1]),
                        models.encode(columns[2]),
                        models.encode(columns[3]),
                        models.encode(columns[4]),
                        prompts.encode(map("{}\x1f{}".format, columns[1], columns[5])),
                        categories.encode(columns[23]),
                        tracks.encode(columns[24]),
                    ],
                    axis=1,
                )
            )
            count_parts.append(np.array(columns[6:23], dtype=np.float64).T)
        ints = np.concatenate(int_parts) if int_parts else np.zeros((0, 8), dtype=np.int64)
        counts = np.concatenate(count_parts) if count_parts else np.zeros((0, 17))
        loose, game1, game2 = counts[:, 0:3], counts[:, 3:6], counts[:, 6:9]
        length_n = counts[:, 15]
        length = np.where(length_n > 0, counts[:, 16] / np.maximum(length_n, 1), 0.0)
        prompt, prompt_names = prompts.sorted_codes(ints[:, 5])
        benchmark, benchmark_names = benchmarks.sorted_codes(ints[:, 1])
        judge, model_names = models.sorted_codes(ints[:, 2])
        lo, _ = models.sorted_codes(ints[:, 3])
        hi, _ = models.sorted_codes(ints[:, 4])
        category, category_names = categories.sorted_codes(ints[:, 6])
        track, track_names = tracks.sorted_codes(ints[:, 7])
        # codes follow the name order of the models, so lo < hi holds for codes as for names
        return cls(
            window=ints[:, 0],
            benchmark=benchmark,
            judge=judge,
            lo=lo,
            hi=hi,
            prompt=prompt,
            category=category,
            track=track,
            outcomes=both_games(loose, game1, game2),
            verdicts=loose + game1 + game2,
            lo_first=counts[:, 9:12],
            hi_first=counts[:, 12:15],
            length=length,
            has_length=length_n > 0,
            models=model_names,
            benchmarks=benchmark_names,
            categories=category_names,
            tracks=track_names,
            prompts=prompt_names,
            prompt_keys=prompt_keys(prompt_names),
        )

    def select(self, mask: npt.NDArray[np.bool_]) -> Cells:
        """The cells where ``mask`` holds, with the same vocabularies.

        A recompute selects a dozen slices of a million cells: the positions are found once and
        gathered with ``take`` (boolean indexing of the (n, 3) columns is several times slower),
        and a contiguous run (a time range of time-ordered cells) is a view, not a copy. Cells
        are never written to, so sharing memory with the parent is safe."""
        index = np.flatnonzero(mask)
        if index.size and int(index[-1]) - int(index[0]) + 1 == index.size:
            run = slice(int(index[0]), int(index[-1]) + 1)
            columns = {name: getattr(self, name)[run] for name in _ROW_FIELDS}
        else:
            columns = {name: getattr(self, name).take(index, axis=0) for name in _ROW_FIELDS}
        return Cells(
            **columns,
            models=self.models,
            benchmarks=self.benchmarks,
            categories=self.categories,
            tracks=self.tracks,
            prompts=self.prompts,
            prompt_keys=self.prompt_keys,
        )

    @classmethod
    def concat(cls, parts: Sequence[Cells]) -> Cells:
        """The cells of several parts as one, as :meth:`from_rows` of all their rows gives them
        (vocabularies of the names in use, codes in name order; rows in part order).

        The service keeps its cells between recomputes and replaces only the hours that new
        verdicts touched: reading every kept cell again is half of a full recompute."""
        columns: dict[str, Any] = {
            field: np.concatenate([getattr(part, field) for part in parts])
            for field in _DATA_FIELDS
        }
        for vocabulary, fields in _VOCABULARY_FIELDS.items():
            names_of = [getattr(part, vocabulary) for part in parts]
            union = sorted({
                names[code]
                for names, part in zip(names_of, parts, strict=True)
                for code in np.unique([getattr(part, f) for f in fields]).tolist()
                if code != NO_LABEL
            })  # fmt: skip
            index = {name: code for code, name in enumerate(union)}
            columns[vocabulary] = tuple(union)
            for field in fields:
                columns[field] = np.concatenate([
                    _recode(names, index)[getattr(part, field)]
                    for names, part in zip(names_of, parts, strict=True)
                ])  # fmt: skip
        keys = {
            name: key
            for part in parts
            for name, key in zip(part.prompts, part.prompt_keys.tolist(), strict=True)
        }
        columns["prompt_keys"] = np.array([keys[n] for n in columns["prompts"]], dtype=np.uint64)
        return cls(**columns)

    def totals(self) -> list[tuple[str, str, str, str, int, int, int]]:
        """Per (benchmark, judge, lo, hi): lo wins, hi wins and verdicts, every game counted, as
        :meth:`~prefleak.store.EventStore.verdict_totals` sums them over the same rows."""
        key = composite_key([self.benchmark, self.judge, self.lo, self.hi])
        _, first, group = np.unique(key, return_index=True, return_inverse=True)
        sums = np.stack(
            [np.bincount(group, weights=self.verdicts[:, k], minlength=first.size) for k in (0, 1)]
            + [np.bincount(group, weights=self.verdicts.sum(axis=1), minlength=first.size)],
            axis=1,
        ).astype(np.int64)
        models, benchmarks = self.models, self.benchmarks
        return [
            (benchmarks[b], models[j], models[lo], models[hi], int(w_lo), int(w_hi), int(n))
            for b, j, lo, hi, (w_lo, w_hi, n) in zip(
                self.benchmark[first].tolist(), self.judge[first].tolist(),
                self.lo[first].tolist(), self.hi[first].tolist(), sums.tolist(), strict=True,
            )
        ]  # fmt: skip

    def model_code(self, name: str) -> int | None:
        """Code of a judge or candidate, None when no cell names it."""
        try:
            return self.models.index(name)
        except ValueError:
            return None


_VOCABULARY_FIELDS = {
    "models": ("judge", "lo", "hi"),
    "benchmarks": ("benchmark",),
    "prompts": ("prompt",),
    "categories": ("category",),
    "tracks": ("track",),
}
"""Each vocabulary of :class:`Cells` and the columns holding its codes."""
_DATA_FIELDS = ("window", "outcomes", "verdicts", "lo_first", "hi_first", "length", "has_length")
"""The columns of :class:`Cells` that hold no codes."""
_ROW_FIELDS = (*_DATA_FIELDS, *(f for fields in _VOCABULARY_FIELDS.values() for f in fields))
"""Every column of :class:`Cells` with one entry per cell."""


def _recode(names: Sequence[str], index: dict[str, int]) -> IntArray:
    """Old code -> new code, as an array to index with old codes (-1, no label, hits the last
    slot and stays -1)."""
    return np.array([*(index.get(name, NO_LABEL) for name in names), NO_LABEL], dtype=np.int64)


def composite_key(columns: Sequence[IntArray]) -> IntArray:
    """One int64 per row from non-negative integer columns (mixed radix, order-preserving):
    sorting or ``np.unique`` on it is many times faster than on the stacked columns."""
    key = np.zeros(columns[0].size, dtype=np.int64)
    for column in columns:
        key = key * (int(column.max(initial=0)) + 1) + column
    return key


def key_groups(key: IntArray) -> tuple[IntArray, IntArray, IntArray]:
    """``np.unique(key, return_index=True, return_inverse=True)`` for keys that determine every
    column a caller reads at the index: the index is *some* row of each group, not the first.

    Asking for the first occurrence makes numpy sort stably (timsort); without it, it sorts with
    its faster quicksort: 18 -> 10 ms for the 250k cells of a 7-day horizon."""
    unique, inverse = np.unique(key, return_inverse=True)
    inverse = inverse.reshape(-1)
    member = np.empty(unique.size, dtype=np.int64)
    member[inverse] = np.arange(key.size)
    return unique, member, inverse
