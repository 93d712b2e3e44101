"""Threads for the independent slices of one recompute (windows, breakdowns, biases).

The slices' numpy and scipy work releases the GIL in its large operations, so a few threads
overlap them on a multi-core machine. Each recompute makes its own pool and shuts it down before
returning: no thread outlives the call, and the statistics stay pure. Callers collect futures in
submission order, so the results are those of the serial loop whatever the number of threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

MAX_DEFAULT_THREADS = 4
"""More threads than this gain nothing measurable: the GIL-bound Python glue of the slices
serialises them (docs/configuration.md, ``statistics.threads``)."""


def default_threads(spare: int = 0) -> int:
    """Threads a recompute uses unless configured: one per core but ``spare``, at most a few,
    at least one."""
    return max(1, min(MAX_DEFAULT_THREADS, (os.cpu_count() or 1) - spare))


class Serial(Executor):
    """An executor that runs each call at once in the caller's thread: ``threads: 1`` starts no
    thread at all, and an exception is raised where the result is asked for, as with a pool."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller by future.result(), as a pool does
            future.set_exception(exc)
        return future


def executor(threads: int) -> Executor:
    """A pool of ``threads`` threads, or :class:`Serial` for one; the caller shuts it down."""
    if threads <= 1:
        return Serial()
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="prefleak-stats")
