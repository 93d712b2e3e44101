"""The verdict projection as columns, the one input every statistic reads.

Rows of ``verdict_counts`` become numpy arrays with names replaced by integer codes, so the
statistics are vectorised over a million cells instead of looping over them. Judges and candidates
share one vocabulary (``models``), so "the judge is itself a candidate" is an integer comparison.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from prefleak.pls import both_games
from prefleak.segments import (
    VOCABULARY_OF,
    ProjectionColumns,
    merged_codes,
)
from prefleak.stats.estimate import KeyArray, prompt_keys

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


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
        return cls.from_columns([ProjectionColumns.from_rows(rows)])

    @classmethod
    def from_columns(cls, parts: Sequence[ProjectionColumns]) -> Cells:
        """The cells of projection rows read as columns (sealed segments and rows alike), as
        :meth:`from_rows` of all their rows in part order gives them."""
        parts = parts or [ProjectionColumns.from_rows(())]
        codes = merged_codes(parts)
        window = np.concatenate([p.window for p in parts])
        counts = np.concatenate([p.counts for p in parts]).astype(np.float64)
        length_sum = np.concatenate([p.length_sum for p in parts])
        loose, game1, game2 = counts[:, 0:3], counts[:, 3:6], counts[:, 6:9]
        length_n = counts[:, 15]
        # codes follow the name order of the models, so lo < hi holds for codes as for names
        return cls(
            window=window,
            benchmark=codes["benchmark"],
            judge=codes["judge"],
            lo=codes["lo"],
            hi=codes["hi"],
            prompt=codes["prompt"],
            category=codes["category"],
            track=codes["track"],
            outcomes=both_games(loose, game1, game2),
            verdicts=loose + game1 + game2,
            lo_first=counts[:, 9:12],
            hi_first=counts[:, 12:15],
            length=np.where(length_n > 0, length_sum / np.maximum(length_n, 1), 0.0),
            has_length=length_n > 0,
            models=codes["models"],
            benchmarks=codes["benchmarks"],
            categories=codes["categories"],
            tracks=codes["tracks"],
            prompts=codes["prompts"],
            prompt_keys=prompt_keys(codes["prompts"]),
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


_ROW_FIELDS = (
    "window", "outcomes", "verdicts", "lo_first", "hi_first", "length", "has_length",
    *VOCABULARY_OF,
)  # fmt: skip
"""Every column of :class:`Cells` with one entry per cell: the counts and the code columns."""


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
