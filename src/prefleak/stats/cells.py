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

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

NO_LABEL = -1
"""Code of a missing category or track."""


class _Vocabulary:
    """Names to dense integer codes, in order of first appearance."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}

    def code(self, name: str | None) -> int:
        if name is None:
            return NO_LABEL
        code = self.codes.get(name)
        if code is None:
            code = self.codes[name] = len(self.codes)
        return code

    def names(self) -> tuple[str, ...]:
        return tuple(self.codes)


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
    n_prompts: int

    def __len__(self) -> int:
        return int(self.window.size)

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]]) -> Cells:
        """Columns of projection rows (``verdict_counts`` tuples, any order; a prompt may span
        several windows)."""
        models, benchmarks, prompts = _Vocabulary(), _Vocabulary(), _Vocabulary()
        categories, tracks = _Vocabulary(), _Vocabulary()
        codes: list[tuple[int, ...]] = []
        numbers: list[Sequence[float]] = []
        for row in rows:
            window, benchmark, judge, lo, hi, prompt_id = row[:6]
            codes.append(
                (
                    window,
                    benchmarks.code(benchmark),
                    models.code(judge),
                    models.code(lo),
                    models.code(hi),
                    prompts.code(f"{benchmark}\x1f{prompt_id}"),
                    categories.code(row[23]),
                    tracks.code(row[24]),
                )
            )
            numbers.append(row[6:23])
        ints = np.array(codes, dtype=np.int64).reshape(-1, 8)
        counts = np.array(numbers, dtype=np.float64).reshape(-1, 17)
        loose, game1, game2 = counts[:, 0:3], counts[:, 3:6], counts[:, 6:9]
        length_n = counts[:, 15]
        with np.errstate(invalid="ignore", divide="ignore"):
            length = np.where(length_n > 0, counts[:, 16] / np.maximum(length_n, 1), 0.0)
        return cls(
            window=ints[:, 0],
            benchmark=ints[:, 1],
            judge=ints[:, 2],
            lo=ints[:, 3],
            hi=ints[:, 4],
            prompt=ints[:, 5],
            category=ints[:, 6],
            track=ints[:, 7],
            outcomes=both_games(loose, game1, game2),
            verdicts=loose + game1 + game2,
            lo_first=counts[:, 9:12],
            hi_first=counts[:, 12:15],
            length=length,
            has_length=length_n > 0,
            models=models.names(),
            benchmarks=benchmarks.names(),
            categories=categories.names(),
            tracks=tracks.names(),
            n_prompts=len(prompts.codes),
        )

    def select(self, mask: npt.NDArray[np.bool_]) -> Cells:
        """The cells where ``mask`` holds, with the same vocabularies."""
        return Cells(
            window=self.window[mask],
            benchmark=self.benchmark[mask],
            judge=self.judge[mask],
            lo=self.lo[mask],
            hi=self.hi[mask],
            prompt=self.prompt[mask],
            category=self.category[mask],
            track=self.track[mask],
            outcomes=self.outcomes[mask],
            verdicts=self.verdicts[mask],
            lo_first=self.lo_first[mask],
            hi_first=self.hi_first[mask],
            length=self.length[mask],
            has_length=self.has_length[mask],
            models=self.models,
            benchmarks=self.benchmarks,
            categories=self.categories,
            tracks=self.tracks,
            n_prompts=self.n_prompts,
        )

    def model_code(self, name: str) -> int | None:
        """Code of a judge or candidate, None when no cell names it."""
        try:
            return self.models.index(name)
        except ValueError:
            return None
