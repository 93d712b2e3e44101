"""Every judge's relation to every candidate of a :class:`Cells`, as arrays (pure).

Statistics look relations up millions of times (every cell, every candidate pair of every judge
pair); asking :class:`~prefleak.lineage.Lineage` once per (judge, model) and indexing arrays
afterwards keeps the rules in ``lineage.py`` and the loops in numpy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from prefleak.lineage import Lineage, RelationKind
from prefleak.stats.cells import FloatArray, IntArray

KINDS: tuple[RelationKind, ...] = (
    RelationKind.SAME_MODEL,
    RelationKind.INHERITANCE,
    RelationKind.SAME_SERIES,
    RelationKind.SAME_FAMILY,
)
"""The relation kinds that can leak, strongest first; ``kind`` arrays index into it."""

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, eq=False)
class RelationTable:
    """``[judge, candidate]`` arrays over one model vocabulary (codes as in the cells)."""

    kind: IntArray
    """Index into :data:`KINDS`, -1 when unrelated."""
    share: FloatArray
    related: BoolArray
    human: BoolArray
    """Per model: a person, not a model (excluded from the PLS judge pairs)."""


def relation_table(lineage: Lineage, models: Sequence[str], judges: Iterable[int]) -> RelationTable:
    """Relations of the given judge codes to every model; rows of other codes are unrelated."""
    n = len(models)
    kind = np.full((n, n), -1, dtype=np.int64)
    share = np.zeros((n, n))
    for judge in sorted(set(judges)):
        for candidate, name in enumerate(models):
            relation = lineage.relation(models[judge], name)
            if relation.related:
                kind[judge, candidate] = KINDS.index(relation.kind)
                share[judge, candidate] = relation.share
    human = np.array([lineage.is_human(name) for name in models], dtype=bool)
    return RelationTable(kind, share, kind >= 0, human)
