"""A cache that keeps only what the last round used, so memory follows the current samples."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class RoundCache(Generic[K, V]):
    """Values computed in this round or the previous one; :meth:`next_round` drops the rest.

    Samples change slowly, so most of a recompute's work (embeddings, per-dataset measures) is
    what the previous recompute did; entries not used for a whole round are forgotten.
    """

    def __init__(self) -> None:
        self._current: dict[K, V] = {}
        self._previous: dict[K, V] = {}

    def get(self, key: K, compute: Callable[[], V]) -> V:
        if key in self._current:
            return self._current[key]
        value = self._previous.pop(key) if key in self._previous else compute()
        self._current[key] = value
        return value

    def lookup(self, key: K) -> V | None:
        """The cached value (moved into this round), or None."""
        if key in self._previous:
            self._current[key] = self._previous.pop(key)
        return self._current.get(key)

    def put(self, key: K, value: V) -> None:
        self._current[key] = value

    def next_round(self) -> None:
        self._previous, self._current = self._current, {}

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)
