"""The periodic recompute: PLS table and store aggregates, off the ingest hot path.

It reads through its own connection, so the bootstrap never holds the writers' lock, and it
publishes one immutable :class:`~prefleak.daemon.metrics.Snapshot` that scrapes and the JSON API
read without touching the database. The slow steps (the diversity report, which embeds texts, and
the style fingerprint, which trains a classifier) run in a thread of their own with a connection
of their own, so they never delay the next PLS snapshot.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from prefleak.config import Settings
from prefleak.daemon.metrics import Metrics, Snapshot, Triple, verdict_series
from prefleak.lineage import Lineage
from prefleak.models.events import PROVENANCE_TYPES
from prefleak.stats.analysis import StatisticsOptions, WindowResult, analyse, horizon_cells
from prefleak.stats.cells import Cells
from prefleak.stats.parallel import default_threads
from prefleak.store import EventStore, LogTally, VerdictTotal, projection_window

if TYPE_CHECKING:
    from prefleak.diversity.report import DiversityAnalyzer, DiversityReport
    from prefleak.fingerprint import FingerprintReport

log = logging.getLogger(__name__)


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_MALLOC_TRIM = _find_malloc_trim()


def release_freed_memory() -> None:
    """Give the memory a recompute freed back to the system. glibc keeps freed heap memory for
    reuse, so without this every recompute's peak (hundreds of MB at a million verdicts) would
    stay resident until the next one, and the process would look that big all the time."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


SLOW_TICK_S = 1.0
"""How often the slow thread looks whether the diversity report or the fingerprint is due."""


class Recomputer:
    """Recomputes every ``recompute.interval_s`` and keeps the last good result."""

    def __init__(self, store: EventStore, settings: Settings, metrics: Metrics) -> None:
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self._named: frozenset[Triple] = frozenset()
        self._latest: Snapshot | None = None
        self._lock = threading.Lock()
        self._analyzer: DiversityAnalyzer | None = None
        self._diversity: DiversityReport | None = None
        self._diversity_due = 0.0
        self._fingerprint: FingerprintReport | None = None
        self._fingerprint_due = 0.0
        self._seen_seq: int | None = None
        """Log position the last analysis had seen; None before the first."""
        self._tally = LogTally()
        """Events by type and the newest event time, read up to ``_tally.seq``."""
        self._older_totals: tuple[int, list[VerdictTotal]] | None = None
        """Verdict totals of the projection windows before the kept ones, and where they end."""
        self._provenance_seen = -1

    @property
    def latest(self) -> Snapshot | None:
        """The last successful recompute, or None before the first one."""
        with self._lock:
            return self._latest

    @property
    def has_slow_steps(self) -> bool:
        """Whether diversity or the fingerprint is enabled (:meth:`run_slow` has work)."""
        return self._settings.diversity.enabled or self._settings.fingerprint.enabled

    def run(self, stop: threading.Event) -> None:
        """Recompute now, then every interval until ``stop``; failures are counted, not raised."""
        while not stop.is_set():
            self.once()
            stop.wait(self._settings.recompute.interval_s)

    def run_slow(self, stop: threading.Event) -> None:
        """The diversity report and the fingerprint, each when due, until ``stop``: beside
        :meth:`run`, through a connection of this thread's own (the fingerprint writes through
        it)."""
        with EventStore(self._settings.db) as store:
            while not stop.is_set():
                self.slow_once(store)
                stop.wait(SLOW_TICK_S)

    def once(self) -> None:
        """One PLS recompute, published as the latest snapshot (with the latest slow results)."""
        started = time.monotonic()
        try:
            snapshot = self._compute(started)
        except Exception:
            self._metrics.recompute_errors.inc()
            log.exception("recompute failed; the previous results stay exported")
            return
        self._metrics.recompute_duration.observe(snapshot.duration_s)
        with self._lock:  # under the lock the slow steps publish with: neither result is lost
            self._latest = replace(
                snapshot, diversity=self._diversity, fingerprint=self._fingerprint
            )
        log.debug("recompute took %.3f s: %d PLS rows", snapshot.duration_s, len(snapshot.pls))
        release_freed_memory()  # the slow thread's garbage too: it never trims by itself

    def slow_once(self, store: EventStore | None = None) -> None:
        """The diversity report and the fingerprint, those that are due, read from ``store``
        (default: the recompute's own connection)."""
        store = self._store if store is None else store
        self._refresh_diversity(store)
        self._refresh_fingerprint(store)

    def _refresh_diversity(self, store: EventStore) -> None:
        """Every ``diversity.interval_s``. The first call loads the embedding model, which takes
        seconds; later calls only measure samples that changed.
        """
        settings = self._settings.diversity
        if not settings.enabled or time.monotonic() < self._diversity_due:
            return
        self._diversity_due = time.monotonic() + settings.interval_s
        from prefleak.diversity.report import build_analyzer, load_inputs

        try:
            inputs, lineage = load_inputs(store, settings)
            if not inputs:
                return  # no model to load and nothing to export before the first sample
            if self._analyzer is None:
                self._analyzer = build_analyzer(settings)
            report = self._analyzer.analyze(inputs, lineage)
        except Exception:
            self._metrics.recompute_errors.inc()
            log.exception("diversity recompute failed; the previous results stay exported")
            return
        with self._lock:
            self._diversity = report
            if self._latest is not None:
                self._latest = replace(self._latest, diversity=report)
        log.debug("diversity report: %d datasets", len(report.datasets))

    def _refresh_fingerprint(self, store: EventStore) -> None:
        """Every ``fingerprint.interval_s``: learn the generators' styles, profile the candidates
        and, with ``fingerprint.record``, append the inferred relations as events (through
        ``store``; SQLite serialises it with the writer), so the next recompute's lineage has them
        and a replay rebuilds them.

        Without the probe extra the report carries that note and the service runs on.
        """
        settings = self._settings.fingerprint
        if not settings.enabled or time.monotonic() < self._fingerprint_due:
            return
        self._fingerprint_due = time.monotonic() + settings.interval_s
        from prefleak.fingerprint import (
            SOURCE,
            FingerprintReport,
            FingerprintUnavailable,
            fingerprint,
            load_inputs,
            record,
        )

        try:
            inputs, lineage = load_inputs(store, settings)
            report = fingerprint(inputs, lineage, settings)
            if settings.record and report.events():
                self._metrics.record(SOURCE, record(store, report))
        except FingerprintUnavailable as exc:
            if self._fingerprint is None:
                log.warning("fingerprint step skipped: %s", exc)
            report = FingerprintReport(None, notes=(str(exc),))
        except Exception:
            self._metrics.recompute_errors.inc()
            log.exception("fingerprint recompute failed; the previous results stay exported")
            return
        report = replace(report, computed_at=time.time())
        with self._lock:
            self._fingerprint = report
            if self._latest is not None:
                self._latest = replace(self._latest, fingerprint=report)
        log.debug("fingerprint: %d candidates, %d inferences", len(report.profiles),
                  len(report.inferences))  # fmt: skip

    def _changes(self) -> set[int] | None:
        """Projection hours that verdicts stored since the last recompute fell in (their windows
        cannot be reused); None on the first one."""
        store = self._store
        if self._seen_seq is None:
            self._seen_seq = store.last_seq()
            return None
        hours, self._seen_seq = store.verdict_windows_since(self._seen_seq)
        return hours

    def _reusable(
        self, options: StatisticsOptions, events: dict[str, int], changed: set[int] | None
    ) -> dict[int, WindowResult] | None:
        """Window results of the last analysis that no verdict since has touched; None when
        provenance changed (relations, so every window, may have) or there is none yet."""
        previous = self._latest
        provenance = sum(events.get(kind, 0) for kind in PROVENANCE_TYPES)
        if changed is None or previous is None or previous.analysis is None:
            self._provenance_seen = provenance
            return None
        if provenance != self._provenance_seen:
            self._provenance_seen = provenance
            return None
        touched = {hour // options.window_s * options.window_s for hour in changed}
        windows = previous.analysis.windows
        return {start: result for start, result in windows.items() if start not in touched}

    @staticmethod
    def _read_from(
        options: StatisticsOptions,
        newest: int,
        reuse: dict[int, WindowResult] | None,
        changed: set[int] | None,
    ) -> int:
        """Where this recompute starts reading: at the first kept window, or, when the windows
        before the horizon can be reused, at the horizon or the first window a verdict touched
        since, whichever comes first (what the analysis cannot take from the last one)."""
        kept = options.kept_since(newest)
        if reuse is None or changed is None:
            return kept
        first = min([options.horizon_since(newest), *changed])
        return max(kept, first // options.window_s * options.window_s)

    def _verdict_totals(
        self, cells: Cells, since: float | None, changed: set[int] | None, horizon: int | None
    ) -> list[VerdictTotal]:
        """Every verdict ever stored, per pair: the sums of the cells read, plus those of the
        projection windows before them. Summing every window in SQLite on every recompute cost
        more than the statistics at a million verdicts, so those sums are kept: up to where the
        next recompute will likely start reading (the ``horizon``), from the cells read now.
        SQLite sums again only when a recompute starts reading elsewhere (a late verdict, the
        first recompute) or a late verdict lands before the kept sums."""
        if since is None or horizon is None:
            return cells.totals()
        first = projection_window(since)
        older = self._older_totals
        if older is None or older[0] != first or changed is None or any(h < first for h in changed):
            older = (first, self._store.verdict_totals(before=first))
        if horizon > first:  # a read from before the horizon: keep the sums up to it
            earlier = cells.select(cells.window < horizon).totals()
            self._older_totals = (horizon, _summed(older[1] + earlier))
        else:
            self._older_totals = older
        return older[1] + cells.totals()

    def _compute(self, started: float) -> Snapshot:
        store = self._store
        options = statistics_options(self._settings, service=True)
        self._tally = tally = self._tally + store.log_tally(self._tally.seq)
        changed = self._changes()
        reuse = self._reusable(options, tally.counts, changed)
        previous = self._latest
        if reuse is not None and not changed and previous is not None:
            # no verdict and no provenance since the last one: its statistics stand as they are
            return replace(
                previous,
                finished_at=time.time(),
                duration_s=time.monotonic() - started,
                events=tally.counts,
                dead_letters=store.rejected_count(),
                newest_event_ts=tally.newest_ts,
            )
        newest = store.newest_verdict_window()
        since = None if newest is None else self._read_from(options, newest, reuse, changed)
        # the windows read again (sealed hours are cheap): nothing but the snapshot's horizon
        # stays in memory between recomputes
        cells = Cells.from_columns(store.verdict_columns(since))
        lineage = Lineage.from_events(store.events(PROVENANCE_TYPES))
        analysis = analyse(cells, lineage, options, reuse=reuse)
        table = [scored.row for scored in analysis.pls if scored.slice == "horizon"]
        verdicts, self._named = verdict_series(
            self._verdict_totals(
                cells, since, changed, None if newest is None else options.horizon_since(newest)
            ),
            lineage,
            self._settings.metrics,
            self._named,
        )
        inferred = Counter(r.kind.value for r in lineage.inferred_pairs().values())
        dead_letters = store.rejected_count()
        return Snapshot(
            finished_at=time.time(),
            duration_s=time.monotonic() - started,
            pls=tuple(table),
            verdicts=tuple(verdicts),
            events=tally.counts,
            dead_letters=dead_letters,
            newest_event_ts=tally.newest_ts,
            inferred_relations=dict(inferred),
            analysis=analysis,
            cells=horizon_cells(cells, analysis),
        )


def _summed(totals: list[VerdictTotal]) -> list[VerdictTotal]:
    """One total per (benchmark, judge, model_lo, model_hi): sums kept for good must not grow
    by a copy of every pair each time the horizon moves on."""
    sums: dict[tuple[str, str, str, str], list[int]] = {}
    for benchmark, judge, lo, hi, lo_wins, hi_wins, verdicts in totals:
        total = sums.setdefault((benchmark, judge, lo, hi), [0, 0, 0])
        total[0] += lo_wins
        total[1] += hi_wins
        total[2] += verdicts
    return [(*key, *total) for key, total in sums.items()]  # type: ignore[misc]


def statistics_options(settings: Settings, *, service: bool = False) -> StatisticsOptions:
    """The recompute's statistics as configured (``pls`` and ``statistics``); ``service``: for
    ``serve``'s recompute, which leaves a core to ingest unless ``statistics.threads`` is set."""
    stats, pls = settings.statistics, settings.pls
    threads = stats.threads or default_threads(spare=1 if service else 0)
    return StatisticsOptions(
        window_s=stats.window,
        horizon_s=stats.horizon,
        max_windows=stats.max_windows,
        fdr=stats.fdr,
        model_bootstrap=stats.model_bootstrap,
        pls_bootstrap=pls.bootstrap,
        ties=pls.ties,
        min_prompts=pls.min_prompts,
        scale_by_share=stats.scale_by_share,
        change_threshold=stats.change_threshold,
        change_slack=stats.change_slack,
        baseline_windows=stats.baseline_windows,
        reference=stats.reference,
        threads=threads,
    )
