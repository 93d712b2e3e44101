"""The periodic recompute: PLS table and store aggregates, off the ingest hot path.

It reads through its own connection, so the bootstrap never holds the writers' lock, and it
publishes one immutable :class:`~prefleak.daemon.metrics.Snapshot` that scrapes and the JSON API
read without touching the database.
"""

from __future__ import annotations

import logging
import threading
import time

from prefleak.config import Settings
from prefleak.daemon.metrics import Metrics, Snapshot, Triple, verdict_series
from prefleak.lineage import Lineage
from prefleak.models.events import PROVENANCE_TYPES
from prefleak.report import pls_table
from prefleak.store import EventStore

log = logging.getLogger(__name__)


class Recomputer:
    """Recomputes every ``recompute.interval_s`` and keeps the last good result."""

    def __init__(self, store: EventStore, settings: Settings, metrics: Metrics) -> None:
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self._named: frozenset[Triple] = frozenset()
        self._latest: Snapshot | None = None
        self._lock = threading.Lock()

    @property
    def latest(self) -> Snapshot | None:
        """The last successful recompute, or None before the first one."""
        with self._lock:
            return self._latest

    def run(self, stop: threading.Event) -> None:
        """Recompute now, then every interval until ``stop``; failures are counted, not raised."""
        while not stop.is_set():
            self.once()
            stop.wait(self._settings.recompute.interval_s)

    def once(self) -> None:
        started = time.monotonic()
        try:
            snapshot = self._compute(started)
        except Exception:
            self._metrics.recompute_errors.inc()
            log.exception("recompute failed; the previous results stay exported")
            return
        self._metrics.recompute_duration.observe(snapshot.duration_s)
        with self._lock:
            self._latest = snapshot
        log.debug("recompute took %.3f s: %d PLS rows", snapshot.duration_s, len(snapshot.pls))

    def _compute(self, started: float) -> Snapshot:
        store, pls = self._store, self._settings.pls
        rows = store.verdict_counts()
        lineage = Lineage.from_events(store.events(PROVENANCE_TYPES))
        table = pls_table(
            rows, lineage, ties=pls.ties, n_bootstrap=pls.bootstrap, min_prompts=pls.min_prompts
        )
        verdicts, self._named = verdict_series(rows, lineage, self._settings.metrics, self._named)
        events = store.event_counts()
        dead_letters = store.rejected_count()
        newest = store.newest_event_ts()
        return Snapshot(
            finished_at=time.time(),
            duration_s=time.monotonic() - started,
            pls=tuple(table),
            verdicts=tuple(verdicts),
            events=events,
            dead_letters=dead_letters,
            newest_event_ts=newest,
        )
