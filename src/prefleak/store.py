"""The append-only event store (SQLite, WAL) and the projections kept beside it.

Every batch -- its new events, the projection deltas they cause, its rejected lines and the source
offsets it advances -- is written in one transaction, so a crash leaves either all of it or none.
Projections are derived data: :meth:`EventStore.rebuild` recomputes them from the log.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from prefleak.diversity.sample import SAMPLE_CAPACITY, Sample, priority, window_start
from prefleak.models.events import (
    PROVENANCE_TYPES,
    Event,
    SampleEvent,
    VerdictEvent,
    same_content,
    validate,
)
from prefleak.segments import ProjectionColumns

log = logging.getLogger(__name__)

RAW_KEEP_BYTES = 64 * 1024
"""How much of a rejected message is kept; the rest is cut (its full size is recorded)."""

CACHE_KIB = 16 * 1024
"""SQLite page cache per connection: keeps the id index hot during ingest, bounded memory."""

_ID_CHUNK = 900  # below SQLite's limit on bound parameters per statement

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    ts REAL NOT NULL,
    source TEXT NOT NULL,
    body BLOB NOT NULL
);
-- Partial: verdicts are nearly all of the log and never looked up by type.
CREATE INDEX IF NOT EXISTS events_provenance ON events (type) WHERE type <> 'verdict';
CREATE TABLE IF NOT EXISTS rejected (
    seq INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    source TEXT NOT NULL,
    location TEXT NOT NULL,
    error TEXT NOT NULL,
    raw BLOB NOT NULL,
    raw_size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS offsets (
    source TEXT NOT NULL,
    partition TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (source, partition)
) WITHOUT ROWID;
-- One row per leakage probe run (docs/probes.md): operational history, not an event.
CREATE TABLE IF NOT EXISTS probe_runs (
    id INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    ended REAL,
    status TEXT NOT NULL,
    sample_seq INTEGER NOT NULL,
    detail TEXT NOT NULL,
    verdicts INTEGER NOT NULL DEFAULT 0,
    unparseable INTEGER NOT NULL DEFAULT 0,
    reason TEXT
);
"""

PROJECTION_WINDOW_S = 3600
"""Event-time granularity of the verdict projection: statistics windows are multiples of it."""

_VERDICT_COUNTS = """
CREATE TABLE IF NOT EXISTS verdict_counts (
    window_start INTEGER NOT NULL,
    benchmark TEXT NOT NULL,
    judge TEXT NOT NULL,
    model_lo TEXT NOT NULL,
    model_hi TEXT NOT NULL,
    prompt_id TEXT NOT NULL,
    lo_wins INTEGER NOT NULL,
    hi_wins INTEGER NOT NULL,
    ties INTEGER NOT NULL,
    game1_lo_wins INTEGER NOT NULL,
    game1_hi_wins INTEGER NOT NULL,
    game1_ties INTEGER NOT NULL,
    game2_lo_wins INTEGER NOT NULL,
    game2_hi_wins INTEGER NOT NULL,
    game2_ties INTEGER NOT NULL,
    lo_first_lo_wins INTEGER NOT NULL,
    lo_first_hi_wins INTEGER NOT NULL,
    lo_first_ties INTEGER NOT NULL,
    hi_first_lo_wins INTEGER NOT NULL,
    hi_first_hi_wins INTEGER NOT NULL,
    hi_first_ties INTEGER NOT NULL,
    length_n INTEGER NOT NULL,
    length_log_ratio_sum REAL NOT NULL,
    category TEXT,
    track TEXT,
    PRIMARY KEY (window_start, benchmark, judge, model_lo, model_hi, prompt_id)
) WITHOUT ROWID
"""
_SAMPLES = """
CREATE TABLE IF NOT EXISTS samples (
    dataset TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    id TEXT NOT NULL,
    ts REAL NOT NULL,
    text TEXT NOT NULL,
    prompt TEXT,
    label TEXT,
    model TEXT,
    PRIMARY KEY (dataset, window_start, priority, id)
) WITHOUT ROWID
"""
_PROJECTIONS = (_VERDICT_COUNTS, _SAMPLES)
"""One statement each: ``executescript`` would commit the open transaction of a rebuild."""
PROJECTION_TABLES = ("verdict_counts", "samples")

PROJECTION_VERSION = 2
"""Bumped whenever a projection's layout changes; a store of another version rebuilds them."""

_SEGMENTS = (
    """
CREATE TABLE IF NOT EXISTS verdict_segments (
    start INTEGER PRIMARY KEY, -- a projection window (hour)
    sealed_seq INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    data BLOB NOT NULL
)""",
    # the newest log position of a verdict in each projection window: what makes a segment stale
    """
CREATE TABLE IF NOT EXISTS verdict_hour_changes (
    window_start INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL
)""",
)
SEGMENT_TABLES = ("verdict_segments", "verdict_hour_changes")
"""A cache of ``verdict_counts`` (:mod:`prefleak.segments`): not a projection of its own, so
neither compared nor compacted; a rebuild empties it."""
_RECORD_CHANGE = (
    "INSERT INTO verdict_hour_changes VALUES (?, (SELECT max(seq) FROM events))"
    " ON CONFLICT (window_start) DO UPDATE SET last_seq = excluded.last_seq"
)
_FRESH_SEGMENTS = (
    "SELECT start, data FROM verdict_segments s WHERE start >= ? AND NOT EXISTS ("
    "SELECT 1 FROM verdict_hour_changes c WHERE c.window_start = s.start"
    " AND c.last_seq > s.sealed_seq)"
)

_KEY_COLUMNS = ("window_start", "benchmark", "judge", "model_lo", "model_hi", "prompt_id")
_COUNT_COLUMNS = (
    "lo_wins", "hi_wins", "ties",
    "game1_lo_wins", "game1_hi_wins", "game1_ties",
    "game2_lo_wins", "game2_hi_wins", "game2_ties",
    "lo_first_lo_wins", "lo_first_hi_wins", "lo_first_ties",
    "hi_first_lo_wins", "hi_first_hi_wins", "hi_first_ties",
    "length_n", "length_log_ratio_sum",
)  # fmt: skip
_N_COUNTS = 15
"""Outcome counters among the count columns; the length sums follow them."""
_UPSERT_COUNTS = (
    f"INSERT INTO verdict_counts VALUES ({', '.join('?' * 25)})"
    f" ON CONFLICT ({', '.join(_KEY_COLUMNS)}) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in _COUNT_COLUMNS)
    + ", category = coalesce(excluded.category, category)"
    + ", track = coalesce(excluded.track, track)"
)


class VerdictCounts(NamedTuple):
    """One projection row: how one judge ruled on one candidate pair on one prompt in one hour.

    Candidates are in canonical order (``model_lo < model_hi``) so both orders of a comparison
    land on one row. Verdicts that name no game are counted in the first three columns; the two
    position-swapped games in their own, so the both-games rule can be applied when reading.
    Verdicts that say which response was shown ``first`` are counted once more by position, and
    those with both lengths add ``ln((len_lo + 1) / (len_hi + 1))`` to the length sum.
    ``category`` and ``track`` are the latest ones the cell's verdicts named.
    """

    window_start: int
    benchmark: str
    judge: str
    model_lo: str
    model_hi: str
    prompt_id: str
    lo_wins: int
    hi_wins: int
    ties: int
    game1_lo_wins: int
    game1_hi_wins: int
    game1_ties: int
    game2_lo_wins: int
    game2_hi_wins: int
    game2_ties: int
    lo_first_lo_wins: int = 0
    lo_first_hi_wins: int = 0
    lo_first_ties: int = 0
    hi_first_lo_wins: int = 0
    hi_first_hi_wins: int = 0
    hi_first_ties: int = 0
    length_n: int = 0
    length_log_ratio_sum: float = 0.0
    category: str | None = None
    track: str | None = None

    def games(self) -> tuple[Outcomes, Outcomes, Outcomes]:
        """(lo wins, hi wins, ties) without a game, in game 1 and in game 2."""
        return self[6:9], self[9:12], self[12:15]


Outcomes = tuple[int, int, int]
"""Lower-sorted candidate's wins, higher-sorted candidate's wins, ties."""

CountKey = tuple[int, str, str, str, str, str]
"""window_start, benchmark, judge, model_lo, model_hi, prompt_id."""


class Cell(NamedTuple):
    """What one verdict adds to the ``verdict_counts`` projection."""

    key: CountKey
    outcome: int
    """Index of the outcome counter (no game, game 1 or game 2) it adds one to."""
    position: int
    """Index of the by-position counter it adds one to; -1 when ``first`` is not given."""
    length_log_ratio: float | None
    category: str | None
    track: str | None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message that failed validation, kept so a person can see and fix it."""

    source: str
    location: str
    raw: bytes
    error: str


ProjectionRow = tuple[str | int | float | None, ...]
"""A ``verdict_counts`` row to add: the key columns, then the counts (see :func:`_project`)."""

_BatchState = tuple[
    list[tuple[Any, ...]],
    list[Rejection],
    dict[tuple[str, str], int],
    str,
    list[ProjectionRow] | None,
]


@dataclass(slots=True)
class Batch:
    """What one transaction writes: records, rejections and the source offsets they advance."""

    records: list[StoredEvent] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    offsets: dict[tuple[str, str], int] = field(default_factory=dict)
    source: str = "unknown"
    projection: list[ProjectionRow] | None = None
    """The projection rows of all its records, worked out ahead (:meth:`project`) by a process
    that validates while another writes; used when every record turns out new."""

    def __len__(self) -> int:
        return len(self.records) + len(self.rejections)

    def add(self, item: StoredEvent | Rejection) -> None:
        """File a validated event or a rejection where it belongs."""
        if isinstance(item, Rejection):
            self.rejections.append(item)
        else:
            self.records.append(item)

    def project(self) -> None:
        """Work out :attr:`projection` now, so the writer does not have to."""
        self.projection = _project(self.records)

    def __getstate__(self) -> _BatchState:
        # Plain tuples pickle in C; a NamedTuple (the record, and its Cell) costs a Python call
        # per record both ways, which was a quarter of the work when a worker validates a file.
        # The cell stays a plain tuple on the other side: the writer reads it by position.
        rows = [(*r[:5], None if r.cell is None else tuple(r.cell), r.sample) for r in self.records]
        return rows, self.rejections, self.offsets, self.source, self.projection

    def __setstate__(self, state: _BatchState) -> None:
        rows, self.rejections, self.offsets, self.source, self.projection = state
        self.records = [_new_tuple(StoredEvent, row) for row in rows]


@dataclass(slots=True)
class AppendResult:
    """Outcome counts of one or more appends."""

    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    errors: list[Rejection] = field(default_factory=list)
    """The rejections of this append (conflicting ids included), in arrival order."""

    def add(self, other: AppendResult) -> None:
        self.accepted += other.accepted
        self.duplicate += other.duplicate
        self.rejected += other.rejected
        self.errors.extend(other.errors)


@dataclass(frozen=True, slots=True)
class StoredRejection:
    """One row of the dead-letter table."""

    seq: int
    received_at: float
    source: str
    location: str
    error: str
    raw: bytes
    raw_size: int


def projection_window(ts: float) -> int:
    """Start (Unix seconds) of the projection window an event time falls in."""
    return int(ts // PROJECTION_WINDOW_S) * PROJECTION_WINDOW_S


def verdict_cell(verdict: VerdictEvent, ts: float) -> Cell:
    """The projection row of one verdict and the counters it adds to (once per verdict: kept
    to plain operations)."""
    a, b = verdict.model_a, verdict.model_b
    a_is_lo = a < b
    winner = verdict.winner
    outcome = 2 if winner == "tie" else 0 if (winner == "a") == a_is_lo else 1
    position = -1
    if verdict.first is not None:
        position = (9 if (verdict.first == "a") == a_is_lo else 12) + outcome
    length = None
    if verdict.len_a is not None and verdict.len_b is not None:
        length = math.log(verdict.len_a + 1) - math.log(verdict.len_b + 1)  # no overflow
        if not a_is_lo:
            length = -length
    window = int(ts // PROJECTION_WINDOW_S) * PROJECTION_WINDOW_S
    key = (window, verdict.benchmark, verdict.judge, a if a_is_lo else b, b if a_is_lo else a,
           verdict.prompt_id)  # fmt: skip
    game = verdict.game
    return _new_tuple(Cell, (key, 3 * game + outcome if game else outcome, position, length,
                             verdict.category, verdict.track))  # fmt: skip


SampleRow = tuple[str, int, int, str, float, str, str | None, str | None, str | None]
"""A row of the ``samples`` projection: dataset, window, priority, id, ts, text, prompt, label,
model."""


_new_tuple = tuple.__new__


class StoredEvent(NamedTuple):
    """An event in the form the store writes it, with its projection contributions worked out.

    Plain values only, so validating and preparing can run in another process and the result
    crosses over cheaply (a pydantic model costs ten times more to pickle).
    """

    id: str
    type: str
    ts: float
    body: bytes
    location: str
    cell: Cell | None = None
    """For a verdict: what it adds to ``verdict_counts``."""
    sample: SampleRow | None = None
    """For a sample: its ``samples`` row."""


def prepare(event: Event, body: bytes, location: str = "") -> StoredEvent:
    """What storing a validated, completed event (and the JSON it came as) writes."""
    if event.id is None or event.ts is None:
        raise ValueError("complete the event (id and ts) before storing it")
    ts = event.ts.timestamp()
    cell = sample = None
    if isinstance(event, VerdictEvent):
        cell = verdict_cell(event, ts)
    elif isinstance(event, SampleEvent):
        sample = (event.dataset, window_start(ts), priority(event.id), event.id, ts,
                  event.text, event.prompt, event.label, event.model)  # fmt: skip
    # tuple.__new__ skips NamedTuple's Python-level constructor: this runs once per event
    return _new_tuple(StoredEvent, (event.id, event.type, ts, body, location, cell, sample))


def _project(events: Iterable[StoredEvent]) -> list[ProjectionRow]:
    """Aggregate a batch's verdicts so each projection row is written once.

    Runs once per event in the writer: cells are unpacked by position (a cell that crossed a
    process boundary is a plain tuple of :class:`Cell`'s layout).
    """
    sums: dict[CountKey, list[Any]] = {}
    for event in events:
        cell = event[5]
        if cell is None:
            continue
        key, outcome, position, length, category, track = cell
        row = sums.get(key)
        if row is None:
            row = sums[key] = [0] * (_N_COUNTS + 1) + [0.0, None, None]
        row[outcome] += 1
        if position >= 0:
            row[position] += 1
        if length is not None:
            row[_N_COUNTS] += 1
            row[_N_COUNTS + 1] += length
        if category is not None:
            row[_N_COUNTS + 2] = category
        if track is not None:
            row[_N_COUNTS + 3] = track
    return [(*key, *row) for key, row in sums.items()]


_TRIM_SAMPLES = (
    "DELETE FROM samples WHERE dataset = ?1 AND window_start = ?2 AND (priority, id) > ("
    "SELECT priority, id FROM samples WHERE dataset = ?1 AND window_start = ?2"
    f" ORDER BY priority, id LIMIT 1 OFFSET {SAMPLE_CAPACITY - 1})"
)


def _project_samples(db: sqlite3.Connection, events: Iterable[StoredEvent]) -> None:
    """Add a batch's samples to the sketch, then keep the lowest priorities of each window."""
    rows = [event.sample for event in events if event.sample is not None]
    if not rows:
        return
    db.executemany("INSERT OR IGNORE INTO samples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.executemany(_TRIM_SAMPLES, sorted({(row[0], row[1]) for row in rows}))


def _restore(body: bytes, event_id: str, ts: float) -> Event:
    """A stored event as it was ingested: the sender's JSON plus the id and ts it was given."""
    event = validate(body)
    if event.id is None or event.ts is None:
        return event.model_copy(update={"id": event_id, "ts": datetime.fromtimestamp(ts, UTC)})
    return event


class ProbeRunRow(NamedTuple):
    """One row of ``probe_runs``; ``detail`` is JSON (generators, sizes, judges, artifacts)."""

    id: int
    started: float
    ended: float | None
    status: str
    sample_seq: int
    detail: str
    verdicts: int
    unparseable: int
    reason: str | None


@dataclass
class PromptTexts:
    """The prompt of a comparison and the candidates' responses, as verdicts carried them."""

    prompt: str | None = None
    responses: dict[str, str] = field(default_factory=dict)
    """Response per candidate."""

    def to_json(self, model_a: str, model_b: str) -> dict[str, str | None]:
        return {
            "prompt": self.prompt,
            "response_a": self.responses.get(model_a),
            "response_b": self.responses.get(model_b),
        }


def _readable(text: object) -> bool:
    """A stored text a person can read: present and not replaced by its hash."""
    return isinstance(text, str) and not text.startswith(HASHED_TEXT_PREFIX)


HASHED_TEXT_PREFIX = "sha256:"
"""How ``privacy.store_texts: hashed`` stores a text (prefleak.retention)."""


class StoreError(RuntimeError):
    """The database cannot be used (corrupt, locked, not a prefleak store)."""


SQLITE_FULL = 13
"""SQLite's result code for a full disk (or a database at its ``max_page_count``)."""


class StoreWriteError(StoreError):
    """A write failed and was rolled back: nothing of the batch is stored, so it can be re-sent.

    Raised for faults of the disk rather than of the data (a full disk, an I/O error), which a
    source should retry after a pause instead of dead-lettering: the events are fine.
    """

    def __init__(self, path: Path, cause: sqlite3.Error) -> None:
        self.disk_full = getattr(cause, "sqlite_errorcode", None) == SQLITE_FULL
        reason = "the disk holding it is full" if self.disk_full else str(cause)
        super().__init__(
            f"cannot write to event store {path}: {reason}; the batch was rolled back and nothing "
            "of it is stored (it is safe to re-send)"
        )


VerdictTotal = tuple[str, str, str, str, int, int, int]
"""(benchmark, judge, model_lo, model_hi, lo wins, hi wins, verdicts): see
:meth:`EventStore.verdict_totals`."""


@dataclass(frozen=True)
class LogTally:
    """Events of the log up to position ``seq``: how many of each type, and the newest time."""

    counts: dict[str, int] = field(default_factory=dict)
    newest_ts: float | None = None
    seq: int = 0

    def __add__(self, later: LogTally) -> LogTally:
        """This tally followed by one of the events after it."""
        counts = Counter(self.counts)
        counts.update(later.counts)
        times = [ts for ts in (self.newest_ts, later.newest_ts) if ts is not None]
        return LogTally(dict(sorted(counts.items())), max(times, default=None), later.seq)


def segment_disagreements(db: sqlite3.Connection) -> tuple[int, list[int]]:
    """The sealed segments no verdict has touched since they were sealed, each compared with
    the rows it caches (sealed again from them, it must give the same blob): how many were
    compared, and the hours whose segment differs (``prefleak check-db --deep``)."""
    compared, wrong = 0, []
    for start, blob in db.execute(_FRESH_SEGMENTS, (-(2**62),)):
        rows = db.execute("SELECT * FROM verdict_counts WHERE window_start = ?", (start,))
        compared += 1
        if ProjectionColumns.from_rows(rows).to_bytes() != blob:
            wrong.append(int(start))
    return compared, wrong


class EventStore:
    """SQLite event log with its projections; one writer, any number of readers."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout = 10000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            self._db.executescript(_SCHEMA)
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            for statement in (*_PROJECTIONS, *_SEGMENTS):
                self._db.execute(statement)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open event store {self.path}: {exc}") from None
        self._lock = threading.RLock()
        self.write_failures = 0
        """Appends that failed and were rolled back since this store was opened."""
        self.write_error: str | None = None
        """Why the last append failed, until one succeeds again (readiness shows it)."""
        if version != PROJECTION_VERSION:
            self._upgrade_projections(version)

    def _upgrade_projections(self, version: int) -> None:
        """Lay out the projections as this version expects; derived data, so replay the log."""
        (stored,) = self._db.execute("SELECT count(*) FROM events").fetchone()
        if stored:
            log.warning(
                "projections of %s are of layout %d, this prefleak uses %d: rebuilding them from "
                "%d stored events (once)", self.path, version, PROJECTION_VERSION, stored,
            )  # fmt: skip
        self.rebuild()
        self._db.execute(f"PRAGMA user_version = {PROJECTION_VERSION}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------

    def append(self, batch: Batch) -> AppendResult:
        """Store a batch atomically; events already stored (same id and content) are skipped."""
        result = AppendResult()
        now = time.time()
        try:
            fresh, rejections = self._append(batch, result, now)
        except sqlite3.OperationalError as exc:  # full disk, I/O error; data errors raise others
            error = StoreWriteError(self.path, exc)
            self.write_failures += 1
            self.write_error = str(error)
            raise error from exc
        self.write_error = None
        result.accepted = len(fresh)
        result.rejected = len(rejections)
        result.errors = rejections
        return result

    def _append(
        self, batch: Batch, result: AppendResult, now: float
    ) -> tuple[list[StoredEvent], list[Rejection]]:
        with self._transaction():
            fresh, conflicts = self._insert_new(batch, result)
            projection = batch.projection  # worked out ahead: right when every record is new
            if projection is None or len(fresh) != len(batch.records):
                projection = _project(fresh)
            self._db.executemany(_UPSERT_COUNTS, projection)
            self._db.executemany(
                _RECORD_CHANGE, [(hour,) for hour in {row[0] for row in projection}]
            )
            _project_samples(self._db, fresh)
            rejections = [*batch.rejections, *conflicts]
            self._db.executemany(
                "INSERT INTO rejected (received_at, source, location, error, raw, raw_size)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (now, r.source, r.location, r.error, r.raw[:RAW_KEEP_BYTES], len(r.raw))
                    for r in rejections
                ],
            )
            self._db.executemany(
                "INSERT INTO offsets VALUES (?, ?, ?) ON CONFLICT (source, partition)"
                " DO UPDATE SET position = excluded.position",
                [(source, part, pos) for (source, part), pos in batch.offsets.items()],
            )
        return fresh, rejections

    def _insert_new(
        self, batch: Batch, result: AppendResult
    ) -> tuple[list[StoredEvent], list[Rejection]]:
        """Insert the batch's new events; returns them and rejections for reused ids.

        Optimistic: nearly every batch holds only new ids, so all are inserted at once and only
        when SQLite ignored some (ids already stored) is the batch redone the careful way.
        """
        first: dict[str, StoredEvent] = {}
        repeats: list[StoredEvent] = []
        for event in batch.records:
            if event.id in first:
                repeats.append(event)
            else:
                first[event.id] = event
        self._db.execute("SAVEPOINT optimistic")
        if self._insert(first.values(), batch.source) == len(first):
            self._db.execute("RELEASE optimistic")
            fresh = list(first.values())
            if not repeats:
                return fresh, []
            stored = {event_id: event.body for event_id, event in first.items()}
        else:
            self._db.execute("ROLLBACK TO optimistic")
            self._db.execute("RELEASE optimistic")
            stored = self._stored_bodies(list(first))
            fresh = [event for event_id, event in first.items() if event_id not in stored]
            repeats = [event for event_id, event in first.items() if event_id in stored] + repeats
            self._insert(fresh, batch.source)
            stored.update((event.id, event.body) for event in fresh)
        conflicts: list[Rejection] = []
        for event in repeats:
            known = stored[event.id]
            # an empty body is a compacted event (prefleak compact): its id alone is kept
            if (
                not known
                or known == event.body
                or same_content(validate(known), validate(event.body))
            ):
                result.duplicate += 1
            else:
                conflicts.append(
                    Rejection(
                        source=batch.source,
                        location=event.location or f"id {event.id}",
                        raw=event.body,
                        error=f"id conflict: event {event.id!r} is already stored with "
                        "other content; give the new event its own id",
                    )
                )
        return fresh, conflicts

    def _insert(self, events: Iterable[StoredEvent], source: str) -> int:
        """INSERT OR IGNORE events; returns how many rows were really inserted."""
        before = self._db.total_changes
        self._db.executemany(
            "INSERT OR IGNORE INTO events (id, type, ts, source, body) VALUES (?, ?, ?, ?, ?)",
            [(e.id, e.type, e.ts, source, e.body) for e in events],
        )
        return self._db.total_changes - before

    def _stored_bodies(self, ids: list[str]) -> dict[str, bytes]:
        stored: dict[str, bytes] = {}
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = ids[start : start + _ID_CHUNK]
            marks = ",".join("?" * len(chunk))
            stored.update(
                self._db.execute(f"SELECT id, body FROM events WHERE id IN ({marks})", chunk)
            )
        return stored

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self._lock)

    def rebuild(self, batch_size: int = 20_000) -> int:
        """Drop and recompute every projection from the event log; returns events replayed."""
        replayed = 0
        with self._transaction():
            for table in (*PROJECTION_TABLES, *SEGMENT_TABLES):
                self._db.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in (*_PROJECTIONS, *_SEGMENTS):
                self._db.execute(statement)
            self._load_compacted()  # the baseline of compacted events, when there is one
            cursor = self._db.execute(
                "SELECT body, id, ts FROM events WHERE length(body) > 0 ORDER BY seq"
            )
            while rows := cursor.fetchmany(batch_size):
                events = [prepare(_restore(*row), row[0]) for row in rows]
                self._db.executemany(_UPSERT_COUNTS, _project(events))
                _project_samples(self._db, events)
                replayed += len(rows)
        return replayed

    # -- reading ---------------------------------------------------------------------------

    def events(self, types: Iterable[str] | None = None) -> Iterator[Event]:
        """Stored events in arrival order, optionally only some types."""
        sql = "SELECT body, id, ts FROM events"
        wanted: list[str] = []
        if types is not None:
            wanted = sorted(set(types))
            sql += f" WHERE type IN ({','.join('?' * len(wanted))})"
            if "verdict" not in wanted:
                sql += " AND type <> 'verdict'"  # lets SQLite use the partial index
        for body, event_id, ts in self._db.execute(sql + " ORDER BY seq", wanted):
            yield _restore(body, event_id, ts)

    def verdict_rows(
        self,
        benchmark: str | None = None,
        *,
        since: float | None = None,
        before: int | None = None,
        windows: Iterable[int] | None = None,
    ) -> Iterator[tuple[Any, ...]]:
        """Rows of the verdict projection as plain tuples (the columns of
        :class:`VerdictCounts`), in key order: optionally of one benchmark, of the projection
        windows that start at ``since`` or later and before ``before``, or of the given
        projection windows only."""
        sql = "SELECT * FROM verdict_counts WHERE 1"
        params: list[Any] = []
        if benchmark is not None:
            sql += " AND benchmark = ?"
            params.append(benchmark)
        if since is not None:
            sql += " AND window_start >= ?"
            params.append(projection_window(since))
        if before is not None:
            sql += " AND window_start < ?"
            params.append(before)
        if windows is not None:
            starts = sorted(set(windows))
            sql += f" AND window_start IN ({','.join('?' * len(starts))})"
            params.extend(starts)
        cursor = self._db.execute(sql, params)
        while rows := cursor.fetchmany(10_000):
            yield from rows

    def verdict_columns(
        self, since: float | None = None, *, benchmark: str | None = None, seal: bool = True
    ) -> list[ProjectionColumns]:
        """The verdict projection (from ``since``; of one ``benchmark``) as columns, a part per
        projection window (hour) in key order: :meth:`verdict_rows` without the cost of a
        Python tuple per row.

        An hour whose sealed segment no verdict has touched since comes from the segment, any
        other from the rows; with ``seal``, an hour before the newest verdict's that was read
        from the rows is sealed on the way, so the next read of it is cheap (a late verdict
        costs its hour's rows once). Sealing is a cache write: where it cannot happen (a
        read-only or full disk, a busy writer) the rows serve.
        """
        low, newest = self._db.execute(
            "SELECT min(window_start), max(window_start) FROM verdict_counts"
        ).fetchone()
        if newest is None:
            return []
        first = low if since is None else max(low, projection_window(since))
        sealed = dict(self._db.execute(_FRESH_SEGMENTS, (first,)).fetchall())
        parts = []
        for span in range(first, newest + 1, PROJECTION_WINDOW_S):
            blob = sealed.pop(span, None)  # each blob freed once decoded
            columns = None if blob is None else ProjectionColumns.from_bytes(blob)
            if columns is None:
                seq = self.last_seq()  # before the read: a verdict after it makes it stale
                columns = ProjectionColumns.from_rows(
                    self.verdict_rows(since=span, before=span + PROJECTION_WINDOW_S)
                )
                if seal and span < newest and len(columns):
                    self._seal(span, seq, columns)
            if benchmark is not None:
                columns = columns.select(columns.of_benchmark(benchmark))
            if len(columns):
                parts.append(columns)
        return parts

    def _seal(self, span: int, seq: int, columns: ProjectionColumns) -> None:
        try:
            with self._transaction():
                self._db.execute(
                    "INSERT OR REPLACE INTO verdict_segments VALUES (?, ?, ?, ?)",
                    (span, seq, len(columns), columns.to_bytes()),
                )
        except sqlite3.Error as exc:
            log.debug("segment %d of %s not sealed: %s", span, self.path, exc)

    def verdict_counts(
        self,
        benchmark: str | None = None,
        *,
        since: float | None = None,
        windows: Iterable[int] | None = None,
    ) -> list[VerdictCounts]:
        """:meth:`verdict_rows` as named rows."""
        rows = self.verdict_rows(benchmark, since=since, windows=windows)
        return [VerdictCounts._make(row) for row in rows]

    def verdict_totals(self, before: int | None = None) -> list[VerdictTotal]:
        """Every verdict ever stored, per (benchmark, judge, model_lo, model_hi): lo wins, hi
        wins and verdicts (every game counted), summed over all windows by SQLite; with
        ``before``, over the projection windows that start before it only."""
        where, params = ("WHERE window_start < ?", (before,)) if before is not None else ("", ())
        return self._db.execute(
            "SELECT benchmark, judge, model_lo, model_hi,"
            " sum(lo_wins + game1_lo_wins + game2_lo_wins),"
            " sum(hi_wins + game1_hi_wins + game2_hi_wins),"
            " sum(lo_wins + hi_wins + ties + game1_lo_wins + game1_hi_wins + game1_ties"
            f" + game2_lo_wins + game2_hi_wins + game2_ties) FROM verdict_counts {where}"
            " GROUP BY benchmark, judge, model_lo, model_hi",
            params,
        ).fetchall()

    def log_tally(self, after: int = 0) -> LogTally:
        """The events stored after log position ``after``, tallied: what a reader that tallied
        the log up to ``after`` adds to stay current without scanning the whole log again (the
        log only grows; compaction drops bodies, never rows)."""
        newest = max(after, self.last_seq())  # first: a later write is left for the next call
        rows = self._db.execute(
            "SELECT type, count(*), max(ts) FROM events WHERE seq > ? AND seq <= ? GROUP BY type",
            (after, newest),
        ).fetchall()
        newest_ts = max((float(ts) for _, _, ts in rows), default=None)
        return LogTally({kind: int(n) for kind, n, _ in rows}, newest_ts, newest)

    def last_seq(self) -> int:
        """Log position of the newest stored event (0 for an empty log)."""
        (seq,) = self._db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
        return int(seq)

    def newest_verdict_window(self) -> int | None:
        """Start of the newest projection window holding a verdict (the key's first column)."""
        (start,) = self._db.execute("SELECT max(window_start) FROM verdict_counts").fetchone()
        return None if start is None else int(start)

    def verdict_windows_since(self, seq: int) -> tuple[set[int], int]:
        """Projection windows that verdicts stored after log position ``seq`` fell in, and the
        newest log position: what an incremental recompute has to look at again."""
        newest = max(seq, self.last_seq())  # first: a later write is left for the next call
        rows = self._db.execute(
            "SELECT ts FROM events WHERE seq > ? AND seq <= ? AND type = 'verdict'", (seq, newest)
        ).fetchall()
        return {projection_window(ts) for (ts,) in rows}, newest

    def sample_datasets(self) -> dict[str, float]:
        """Datasets with stored samples, each with the event time of its newest stored sample."""
        return dict(self._db.execute("SELECT dataset, max(ts) FROM samples GROUP BY dataset"))

    def sample_windows(self, dataset: str, limit: int) -> list[int]:
        """Starts of the newest ``limit`` windows with stored samples of a dataset, oldest first."""
        rows = self._db.execute(
            "SELECT DISTINCT window_start FROM samples WHERE dataset = ?"
            " ORDER BY window_start DESC LIMIT ?",
            (dataset, limit),
        )
        return sorted(start for (start,) in rows)

    def samples(
        self,
        dataset: str,
        limit: int,
        *,
        since: float | None = None,
        until: float | None = None,
        earliest: bool = False,
    ) -> list[Sample]:
        """Up to ``limit`` stored samples of a dataset, from windows starting at ``since`` on and
        ending by ``until`` (the windows these times fall in, and the one ``until`` falls in not).

        By default the lowest priorities: the uniform bottom-k sample (exact for any ``limit`` up
        to the capacity). ``earliest`` orders by event time instead (ties by priority).
        """
        order = "ts, priority" if earliest else "priority, id"
        rows = self._db.execute(
            "SELECT id, ts, priority, text, prompt, label, model FROM samples"
            " WHERE dataset = ? AND window_start >= ? AND window_start < ?"
            f" ORDER BY {order} LIMIT ?",
            (
                dataset,
                window_start(since) if since is not None else -(2**62),
                window_start(until) if until is not None else 2**62,
                limit,
            ),
        )
        return [Sample._make(row) for row in rows]

    def projection_dump(self) -> dict[str, list[tuple[object, ...]]]:
        """Every projection table in key order, for comparing a rebuild with the live state."""
        return {
            table: self._db.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4, 5, 6").fetchall()
            for table in PROJECTION_TABLES
        }

    def event_counts(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT type, count(*) FROM events GROUP BY type ORDER BY 1"))

    def rejected_count(self) -> int:
        (count,) = self._db.execute("SELECT count(*) FROM rejected").fetchone()
        return int(count)

    def newest_event_ts(self) -> float | None:
        (ts,) = self._db.execute("SELECT max(ts) FROM events").fetchone()
        return None if ts is None else float(ts)

    def offsets(self) -> dict[tuple[str, str], int]:
        rows = self._db.execute("SELECT source, partition, position FROM offsets ORDER BY 1, 2")
        return {(source, part): pos for source, part, pos in rows}

    def prompt_texts(
        self, prompts: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], PromptTexts]:
        """Texts that verdicts of these (benchmark, prompt id) carried: the prompt and each
        candidate's response, the first stored of each (hashed texts are not texts).

        There is no text projection (texts are optional and can be large), so this scans the
        verdict log once, in C for all but the bodies that carry a text: for commands that show
        a few comparisons to a person (explain, review export), not for the statistics."""
        wanted = set(prompts)
        found: dict[tuple[str, str], PromptTexts] = {}
        if not wanted:
            return found
        cursor = self._db.execute(
            "SELECT body FROM events WHERE type = 'verdict' AND (instr(body, CAST('\"prompt\"' AS"
            " BLOB)) > 0 OR instr(body, CAST('\"response_' AS BLOB)) > 0)"
        )
        while rows := cursor.fetchmany(10_000):
            for (body,) in rows:
                event = json.loads(body)
                key = (event["benchmark"], event["prompt_id"])
                if key not in wanted:
                    continue
                texts = found.setdefault(key, PromptTexts())
                if texts.prompt is None and _readable(event.get("prompt")):
                    texts.prompt = event["prompt"]
                for side in ("a", "b"):
                    answer = event.get(f"response_{side}")
                    if _readable(answer):
                        texts.responses.setdefault(event[f"model_{side}"], answer)
        return found

    def rejections(self, limit: int | None = None) -> list[StoredRejection]:
        sql = "SELECT * FROM rejected ORDER BY seq DESC"
        rows = self._db.execute(sql + " LIMIT ?", (limit,)) if limit else self._db.execute(sql)
        return [StoredRejection(*row) for row in rows]

    def events_after(self, seq: int, types: Iterable[str]) -> Iterator[tuple[int, Event]]:
        """Events of some types stored after log position ``seq``, with their positions (a
        compacted event has no body left and is skipped)."""
        wanted = sorted(set(types))
        rows = self._db.execute(
            "SELECT seq, body, id, ts FROM events WHERE seq > ? AND length(body) > 0"
            f" AND type IN ({','.join('?' * len(wanted))}) ORDER BY seq",
            [seq, *wanted],
        )
        for position, body, event_id, ts in rows:
            yield position, _restore(body, event_id, ts)

    # -- probe runs (prefleak probe; docs/probes.md) ---------------------------------------

    def start_probe_run(self, started: float, sample_seq: int, detail: str) -> int:
        """Record a run as ``running``; returns its id. ``sample_seq`` is the log position its
        plan read up to (the "every N new samples" schedule counts from there)."""
        with self._transaction():
            cursor = self._db.execute(
                "INSERT INTO probe_runs (started, status, sample_seq, detail)"
                " VALUES (?, 'running', ?, ?)",
                (started, sample_seq, detail),
            )
        return int(cursor.lastrowid or 0)

    def finish_probe_run(
        self,
        run_id: int,
        *,
        status: str,
        ended: float,
        detail: str,
        verdicts: int = 0,
        unparseable: int = 0,
        reason: str | None = None,
    ) -> None:
        """Record how a run ended (``succeeded`` or ``failed``, with the reason)."""
        with self._transaction():
            self._db.execute(
                "UPDATE probe_runs SET status = ?, ended = ?, detail = ?, verdicts = ?,"
                " unparseable = ?, reason = ? WHERE id = ?",
                (status, ended, detail, verdicts, unparseable, reason, run_id),
            )

    def interrupt_probe_runs(self, ended: float, reason: str) -> int:
        """Mark every run still ``running`` failed: whoever ran it is gone. Returns how many."""
        with self._transaction():
            cursor = self._db.execute(
                "UPDATE probe_runs SET status = 'failed', ended = ?, reason = ?"
                " WHERE status = 'running'",
                (ended, reason),
            )
        return cursor.rowcount

    def probe_runs(self, limit: int | None = None) -> list[ProbeRunRow]:
        """Recorded probe runs, the newest first."""
        sql = "SELECT * FROM probe_runs ORDER BY id DESC"
        rows = self._db.execute(sql + " LIMIT ?", (limit,)) if limit else self._db.execute(sql)
        return [ProbeRunRow._make(row) for row in rows]

    # -- compaction (prefleak compact; docs/storage.md) ------------------------------------

    def compact(self, before: float, *, dry_run: bool = False) -> Compaction:
        """Drop the bodies of verdicts and samples whose ``ts`` is before ``before`` (rounded
        down to a projection window), keeping what they contributed to the projections in the
        ``*_compacted`` baseline tables that :meth:`rebuild` starts from. Their ids stay in the
        log, so a re-sent compacted event is still a duplicate. Provenance is never compacted.
        """
        horizon = projection_window(before)
        with self._transaction():
            (events, size) = self._db.execute(
                "SELECT count(*), coalesce(sum(length(body)), 0) FROM events"
                f" WHERE ts < ? AND type NOT IN {_PROVENANCE_SQL} AND length(body) > 0",
                (horizon,),
            ).fetchone()
            result = Compaction(horizon, int(events), int(size), dry_run)
            if dry_run or not events:
                return result
            for statement in _COMPACTED_SCHEMA:
                self._db.execute(statement)
            # A projection window before the horizon holds only events being compacted now or
            # compacted before: its live row is exactly what the baseline must hold.
            self._db.execute(
                "INSERT OR REPLACE INTO verdict_counts_compacted"
                " SELECT * FROM verdict_counts WHERE window_start < ?",
                (horizon,),
            )
            # Samples: the kept rows of compacted events; rows the sketch has since dropped
            # leave the baseline too (bottom-k of the kept rows and the live log is unchanged).
            self._db.execute(
                "INSERT OR IGNORE INTO samples_compacted SELECT * FROM samples WHERE ts < ?",
                (horizon,),
            )
            self._db.execute(
                "DELETE FROM samples_compacted WHERE NOT EXISTS (SELECT 1 FROM samples s"
                " WHERE s.dataset = samples_compacted.dataset"
                " AND s.window_start = samples_compacted.window_start"
                " AND s.priority = samples_compacted.priority AND s.id = samples_compacted.id)"
            )
            self._db.execute(
                f"UPDATE events SET body = x'' WHERE ts < ? AND type NOT IN {_PROVENANCE_SQL}"
                " AND length(body) > 0",
                (horizon,),
            )
            self._db.execute(
                "INSERT INTO compactions (compacted_at, horizon, events, body_bytes, layout)"
                " VALUES (?, ?, ?, ?, ?)",
                (time.time(), horizon, result.events, result.body_bytes, PROJECTION_VERSION),
            )
        return result

    def compacted_horizon(self) -> float | None:
        """The latest horizon compacted so far (events before it have no body), or None."""
        if not self._has_table("compactions"):
            return None
        (horizon,) = self._db.execute("SELECT max(horizon) FROM compactions").fetchone()
        return None if horizon is None else float(horizon)

    def vacuum(self) -> None:
        """Give the space of deleted data back to the file system (rewrites the whole file)."""
        with self._lock:
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _has_table(self, name: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return row is not None

    def _load_compacted(self) -> None:
        """Start the (empty) projections from the baseline of compacted events, if any."""
        for table in PROJECTION_TABLES:
            if self._has_table(f"{table}_compacted"):
                self._db.execute(f"INSERT INTO {table} SELECT * FROM {table}_compacted")


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the store's lock, rolled back on any exception.

    The lock lets several source threads share one store; SQLite's own locking keeps other
    processes out while the transaction runs.
    """

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock) -> None:
        self._db, self._lock = db, lock

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            if exc_type is None:
                self._commit()
            elif self._db.in_transaction:  # SQLite rolls back by itself after some errors
                self._db.execute("ROLLBACK")
        finally:
            self._lock.release()

    def _commit(self) -> None:
        """COMMIT, or roll back when it fails: a failed COMMIT (a full disk) can leave the
        transaction open, and every later BEGIN would then fail until a restart."""
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise


_PROVENANCE_SQL = "(" + ", ".join(f"'{kind}'" for kind in sorted(PROVENANCE_TYPES)) + ")"
"""Event types never compacted: lineage needs them, and they are few."""

_COMPACTED_SCHEMA = (
    _VERDICT_COUNTS.replace("verdict_counts", "verdict_counts_compacted"),
    _SAMPLES.replace("samples", "samples_compacted"),
    """
CREATE TABLE IF NOT EXISTS compactions (
    seq INTEGER PRIMARY KEY,
    compacted_at REAL NOT NULL,
    horizon REAL NOT NULL,
    events INTEGER NOT NULL,
    body_bytes INTEGER NOT NULL,
    layout INTEGER NOT NULL
)
""",
)
"""The baseline of compacted events (one table per projection, same layout) and a log of runs."""


@dataclass(frozen=True, slots=True)
class Compaction:
    """What one compaction did (or, dry run, would do)."""

    horizon: float
    """Events with ``ts`` before this (a projection window start) are compacted."""
    events: int
    """Verdicts and samples whose bodies were (would be) dropped."""
    body_bytes: int
    """The bytes of those bodies."""
    dry_run: bool = False
