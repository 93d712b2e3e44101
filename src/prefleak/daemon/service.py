"""``prefleak serve``: one process that ingests, recomputes and answers until SIGTERM.

Threads: the HTTP server, the file watcher and the Kafka source (each only if configured), and
the recompute. Writers share one :class:`EventStore` (its lock serialises their transactions);
the recompute reads through a second connection. On SIGTERM or SIGINT the sources finish and
commit their current batch, the HTTP server answers its requests in flight, and the process
exits 0 well within 10 s.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from prefleak import __version__
from prefleak.check import check, parse_check_request
from prefleak.config import Settings
from prefleak.consumers.files import FileWatcher
from prefleak.consumers.http import BodyResult, ingest_body
from prefleak.daemon.http import BearerAuth, Server
from prefleak.daemon.metrics import Metrics, Snapshot
from prefleak.daemon.recompute import Recomputer, statistics_options
from prefleak.explain import SCHEMA as EXPLAIN_SCHEMA
from prefleak.explain import explain, parse_subject
from prefleak.lineage import Lineage
from prefleak.models.events import PROVENANCE_TYPES
from prefleak.stats.analysis import Analysis, horizon_cells
from prefleak.stats.commands import biases_document, leaderboard_document, report_document
from prefleak.store import AppendResult, EventStore

if TYPE_CHECKING:
    from prefleak.probes.worker import ProbeScheduler, RunOutcome

log = logging.getLogger(__name__)

SHUTDOWN_BUDGET_S = 8.0
"""Time the threads get to finish after a stop signal (the contract is exit within 10 s)."""


class Source(Protocol):
    """A long-running event source (the file watcher, the Kafka consumer)."""

    @property
    def up(self) -> bool: ...

    def run(self, stop: threading.Event) -> None: ...


class LaggingSource(Source, Protocol):
    """A source that can say how far behind it is (the Kafka consumer)."""

    def lag(self) -> dict[tuple[str, int], int]: ...


class Service:
    """The wired service; construct it (opens the store and binds the port), then :meth:`run`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.max_body_bytes = settings.http.max_body_bytes
        self.stop = threading.Event()
        self.started_at = time.time()
        self.store = EventStore(settings.db)
        self._reader = EventStore(settings.db)
        self._sources: dict[str, Source] = {}
        self._kafka: LaggingSource | None = None
        names = ["http"]
        if settings.watch.directory is not None:
            names.append("file")
        if settings.kafka.enabled:
            names.append("kafka")
        self.metrics = Metrics(
            self,
            settings.metrics,
            names,
            max_diversity_datasets=settings.diversity.max_series_datasets,
        )
        self.registry = self.metrics.registry
        self.recomputer = Recomputer(self._reader, settings, self.metrics)
        if settings.watch.directory is not None:
            self._sources["file"] = FileWatcher(
                self.store,
                settings.watch.directory,
                poll_interval_s=settings.watch.poll_interval_s,
                settle_s=settings.watch.settle_s,
                max_message_bytes=settings.max_message_bytes,
                hash_texts=settings.privacy.hashed,
                on_result=self._counter("file"),
            )
        if settings.kafka.enabled:
            self._kafka = self._sources["kafka"] = self._kafka_source()
        self.server = Server((settings.http.host, settings.http.port), self, _http_auth(settings))
        self._threads: list[threading.Thread] = []
        self._probes = self._probe_scheduler() if settings.probe.enabled else None

    def _probe_scheduler(self) -> ProbeScheduler:
        """Probe runs on ``probe.schedule``, each in a worker process (docs/probes.md); the
        probe modules are imported only here, and torch only inside the worker."""
        from prefleak.daemon.metrics import ProbeMetrics
        from prefleak.probes.worker import ProbeRunner, ProbeScheduler, last_success

        metrics = ProbeMetrics(self.registry, last_success(self.settings.db))

        def record(outcome: RunOutcome) -> None:
            metrics.record(outcome.outcome, outcome.duration_s, outcome.unparseable, time.time())

        runner = ProbeRunner(
            self.settings.probe, self.settings.db, hash_texts=self.settings.privacy.hashed
        )
        return ProbeScheduler(runner, on_outcome=record)

    def _counter(self, source: str) -> Callable[[AppendResult], None]:
        return lambda result: self.metrics.record(source, result)

    def _kafka_source(self) -> LaggingSource:
        """Imported here so that a service without Kafka never loads the client."""
        from prefleak.consumers.kafka import KafkaSource

        kafka = self.settings.kafka
        source: LaggingSource = KafkaSource(
            self.store,
            bootstrap_servers=kafka.bootstrap_servers,
            verdict_topics=kafka.verdict_topics,
            provenance_topics=kafka.provenance_topics,
            group_id=kafka.group_id,
            dead_letter_topic=kafka.dead_letter_topic,
            max_poll_records=kafka.max_poll_records,
            max_message_bytes=self.settings.max_message_bytes,
            hash_texts=self.settings.privacy.hashed,
            client_options=kafka.client_options or None,
            on_result=self._counter("kafka"),
            workers=kafka.workers,
        )
        return source

    # -- what the HTTP handler and the metrics collector read ------------------------------------

    def snapshot(self) -> Snapshot | None:
        return self.recomputer.latest

    def store_write_failures(self) -> int:
        return self.store.write_failures

    def sources_up(self) -> dict[str, bool]:
        up = {"http": not self.stop.is_set()}
        up.update({name: source.up for name, source in self._sources.items()})
        return up

    def consumer_lag(self) -> dict[tuple[str, int], int]:
        if self._kafka is None:
            return {}
        try:
            return self._kafka.lag()
        except Exception:
            log.warning("cannot read the Kafka consumer lag", exc_info=True)
            return {}

    def ingest(self, body: bytes, content_type: str) -> BodyResult:
        outcome = ingest_body(
            self.store,
            body,
            content_type,
            max_message_bytes=self.settings.max_message_bytes,
            hash_texts=self.settings.privacy.hashed,
        )
        self.metrics.record("http", outcome.result)
        return outcome

    def readiness(self) -> list[str]:
        """Why the service is not ready; empty when it is."""
        reasons = ["shutting down"] if self.stop.is_set() else []
        reasons += [f"source {name} is down" for name, up in self.sources_up().items() if not up]
        if self.store.write_error is not None:
            reasons.append(self.store.write_error)
        if self.snapshot() is None:
            reasons.append("the first recompute is not done yet")
        return reasons

    def pls(self) -> dict[str, Any] | None:
        """``GET /v1/pls``: the whole last analysis, the report with the judges' biases and the
        leaderboard."""
        found = self._analysis()
        if found is None:
            return None
        analysis, finished_at = found
        payload = report_document(analysis, finished_at)
        payload["biases"] = biases_document(analysis)["judges"]
        board = analysis.leaderboard
        payload["leaderboard"] = None if board is None else board.to_json()
        return payload

    def report(self) -> dict[str, Any] | None:
        """``GET /v1/report``: as ``prefleak report --json``, on the last recompute."""
        found = self._analysis()
        return None if found is None else report_document(*found)

    def leaderboard(self) -> dict[str, Any] | None:
        """``GET /v1/leaderboard``: as ``prefleak leaderboard --json``, on the last recompute."""
        found = self._analysis()
        return None if found is None else leaderboard_document(*found)

    def biases(self) -> dict[str, Any] | None:
        """``GET /v1/biases``: as ``prefleak biases --json``, on the last recompute."""
        found = self._analysis()
        return None if found is None else biases_document(*found)

    def _analysis(self) -> tuple[Analysis, float] | None:
        """The last recompute's analysis (an empty one before any verdict) and when it ended."""
        snapshot = self.snapshot()
        if snapshot is None:
            return None
        analysis = snapshot.analysis or Analysis(None, statistics_options(self.settings))
        return analysis, snapshot.finished_at

    def diversity(self) -> dict[str, Any] | None:
        """``GET /v1/diversity``: as ``prefleak diversity --json``; None until the first
        diversity recompute (never, with ``diversity.enabled`` off)."""
        snapshot = self.snapshot()
        if snapshot is None or snapshot.diversity is None:
            return None
        return snapshot.diversity.to_json()

    def check(self, body: bytes) -> dict[str, Any]:
        """``POST /v1/check``: as ``prefleak check --json``, on the provenance stored right now.

        The lineage is built per request on a connection of its own (provenance events are few,
        and a gate must see the events posted just before it, not the last recompute's).
        """
        request = parse_check_request(body, self.settings.check.min_severity)
        with EventStore(self.settings.db) as store:  # as the recompute builds its lineage
            lineage = Lineage.from_events(store.events(PROVENANCE_TYPES))
        result = check(lineage, request.judges, request.candidates)
        return result.to_json(request.min_severity)

    def explain(self, query: Mapping[str, Sequence[str]]) -> dict[str, Any] | None:
        """``GET /v1/explain``: as ``prefleak explain --json``, on the last recompute's analysis
        and cells; the lineage is read as :meth:`check` reads it. Of a parameter given more than
        once the last value counts, but ``judges``, which may name the pair in two values."""

        def last(name: str) -> str | None:
            values = query.get(name)
            return values[-1] if values else None

        subject = parse_subject(
            query.get("judges"), last("judge"), last("candidate"), last("benchmark")
        )
        snapshot = self.snapshot()
        if snapshot is None:
            return None
        analysis = snapshot.analysis or Analysis(None, statistics_options(self.settings))
        with EventStore(self.settings.db) as store:
            lineage = Lineage.from_events(store.events(PROVENANCE_TYPES))
            return {
                "schema": EXPLAIN_SCHEMA,
                "generated_at": _iso(snapshot.finished_at),
                "horizon": analysis.horizon_json(),
                "window_s": analysis.window_s,
                **explain(
                    analysis,
                    horizon_cells(snapshot.cells, analysis, subject.benchmark),
                    lineage,
                    subject,
                    ties=self.settings.pls.ties,
                    texts=store.prompt_texts,
                ),
            }

    def status(self) -> dict[str, Any]:
        snapshot = self.snapshot()
        last_ingest = self.metrics.last_ingest()
        not_ready = self.readiness()
        return {
            "schema": "prefleak.status/1",
            "version": __version__,
            "db": str(self.settings.db),
            "started_at": _iso(self.started_at),
            "uptime_s": round(time.time() - self.started_at, 3),
            "ready": not not_ready,
            "not_ready": not_ready,
            "sources": self.sources_up(),
            "ingested": self.metrics.totals(),
            "last_ingest": None if last_ingest is None else _iso(last_ingest),
            "consumer_lag": [
                {"topic": topic, "partition": part, "lag": lag}
                for (topic, part), lag in sorted(self.consumer_lag().items())
            ],
            "store": None
            if snapshot is None
            else {
                "events": snapshot.events,
                "dead_letters": snapshot.dead_letters,
                "newest_event": None
                if snapshot.newest_event_ts is None
                else _iso(snapshot.newest_event_ts),
            },
            "recompute": None
            if snapshot is None
            else {
                "finished_at": _iso(snapshot.finished_at),
                "duration_s": round(snapshot.duration_s, 6),
                "pls_rows": len(snapshot.pls),
                "verdict_series": len(snapshot.verdicts),
            },
        }

    # -- running -----------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; returns the exit code (0 after a clean stop)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        # What start-up built (modules, schemas, settings) lives as long as the process: keep it
        # out of the collector's full passes, which ingest triggers often
        gc.freeze()
        self._start("http", lambda _stop: self.server.serve_forever(poll_interval=0.2))
        self._start("recompute", self.recomputer.run)
        if self.recomputer.has_slow_steps:
            self._start("slow-recompute", self.recomputer.run_slow)
        for name, source in self._sources.items():
            self._start(name, source.run)
        if self._probes is not None:
            self._start("probe", self._probes.run)
        log.info(
            "prefleak %s listening on %s: metrics at %s/metrics, events at POST %s/v1/events "
            "(db %s; sources: %s)",
            __version__,
            self.server.url,
            self.server.url,
            self.server.url,
            self.settings.db,
            ", ".join(["http", *self._describe_sources()]),
        )
        while not self.stop.wait(0.5):
            pass
        return self._shutdown()

    def _describe_sources(self) -> list[str]:
        described = []
        if self.settings.watch.directory is not None:
            described.append(f"files in {self.settings.watch.directory}")
        if self.settings.kafka.enabled:
            described.append(f"kafka at {','.join(self.settings.kafka.bootstrap_servers)}")
        if self.settings.probe.enabled:
            described.append("leakage probes")
        return described

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        self.stop.set()

    def _start(self, name: str, target: Callable[[threading.Event], None]) -> None:
        thread = threading.Thread(target=target, args=(self.stop,), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _shutdown(self) -> int:
        deadline = time.monotonic() + SHUTDOWN_BUDGET_S
        self.server.shutdown()
        self.server.server_close()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [thread.name for thread in self._threads if thread.is_alive()]
        if stuck:
            log.warning("stopped without waiting for: %s", ", ".join(stuck))
        else:
            self.store.close()
            self._reader.close()
        log.info("stopped")
        return 0


def _http_auth(settings: Settings) -> BearerAuth | None:
    """The bearer token check of the HTTP port, when a token is configured (never logged)."""
    http = settings.http
    token = http.bearer_token()
    if token is None:
        if http.host not in ("127.0.0.1", "::1", "localhost"):
            log.warning(
                "http.host is %s and no token is set: anyone who reaches the port can post events "
                "(http.auth_token_file, docs/reliability.md)",
                http.host,
            )
        return None
    log.info("HTTP: bearer token required for POST%s", " and GET /v1/*" * http.protect_reads)
    return BearerAuth(token, protect_reads=http.protect_reads)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()
