"""The event store: idempotent appends, atomic batches, dead letters, offsets and rebuild."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest

from prefleak.ingest import Ingestor, read_message
from prefleak.simulate import Scenario, simulate
from prefleak.store import Batch, EventStore, Rejection, StoredEvent, StoreError, StoreWriteError


def _lines(events: list[dict[str, object]]) -> list[bytes]:
    return [json.dumps(e).encode() for e in events]


def _verdict(prompt: str, winner: str = "a", **extra: object) -> dict[str, object]:
    return {"type": "verdict", "benchmark": "b", "prompt_id": prompt, "judge": "j",
            "model_a": "m2", "model_b": "m1", "winner": winner, **extra}  # fmt: skip


def _record(raw: bytes, location: str = "line 1") -> StoredEvent:
    item = read_message(raw, source="test", location=location)
    assert isinstance(item, StoredEvent), item
    return item


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    return EventStore(tmp_path / "events.db")


def test_reingest_is_a_no_op(store: EventStore) -> None:
    lines = _lines([_verdict("p1"), _verdict("p2", "tie"), {"type": "model", "model": "j"}])
    first = Ingestor(store).ingest_lines(lines, source="f")
    second = Ingestor(store).ingest_lines(lines, source="f")
    assert (first.accepted, first.duplicate) == (3, 0)
    assert (second.accepted, second.duplicate, second.rejected) == (0, 3, 0)
    assert store.event_counts() == {"model": 1, "verdict": 2}
    assert sorted((row[1:15]) for row in store.verdict_counts()) == [
        ("b", "j", "m1", "m2", "p1", 0, 1, 0, 0, 0, 0, 0, 0, 0),
        ("b", "j", "m1", "m2", "p2", 0, 0, 1, 0, 0, 0, 0, 0, 0),
    ]


def test_duplicates_within_one_batch_count_once(store: EventStore) -> None:
    line = json.dumps(_verdict("p1", id="same")).encode()
    result = Ingestor(store).ingest_lines([line, line, line], source="f")
    assert (result.accepted, result.duplicate) == (1, 2)
    assert store.verdict_counts()[0].games() == ((0, 1, 0), (0, 0, 0), (0, 0, 0))


def test_games_are_counted_apart(store: EventStore) -> None:
    lines = _lines([_verdict("p", "a", game=1), _verdict("p", "tie", game=2), _verdict("p", "b")])
    Ingestor(store).ingest_lines(lines, source="f")
    [row] = store.verdict_counts()
    # model_a is m2, the higher-sorted candidate: "a" is a hi win, "b" a lo win
    assert row.games() == ((1, 0, 0), (0, 1, 0), (0, 0, 1))


def test_an_id_reused_for_other_content_is_rejected(store: EventStore) -> None:
    Ingestor(store).ingest_lines(_lines([_verdict("p1", id="x")]), source="f")
    result = Ingestor(store).ingest_lines(_lines([_verdict("p1", "b", id="x")]), source="g")
    assert (result.accepted, result.rejected) == (0, 1)
    [dead] = store.rejections()
    assert (dead.source, dead.location) == ("g", "line 1")
    assert "id conflict: event 'x' is already stored with other content" in dead.error


def test_resent_event_without_ts_is_a_duplicate_not_a_conflict(store: EventStore) -> None:
    line = json.dumps(_verdict("p1", id="x")).encode()
    Ingestor(store).ingest_lines([line], source="f")
    again = Ingestor(store).ingest_lines([line], source="f")
    assert again.duplicate == 1 and again.rejected == 0


def test_batch_is_atomic_with_offsets(store: EventStore) -> None:
    batch = Batch(source="kafka:t", offsets={("kafka:t", "0"): 42})
    batch.records.append(_record(json.dumps(_verdict("p1")).encode()))
    batch.rejections.append(Rejection("kafka:t", "partition 0 offset 41", b"{", "Invalid JSON"))
    store.append(batch)
    assert store.offsets() == {("kafka:t", "0"): 42}
    assert store.event_counts() == {"verdict": 1} and store.rejected_count() == 1

    failing = Batch(source="kafka:t", offsets={("kafka:t", "0"): 99})
    failing.records.append(_record(json.dumps(_verdict("p9")).encode()))
    failing.rejections.append(Rejection("kafka:t", "x", b"x", None))  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):
        store.append(failing)
    assert store.offsets() == {("kafka:t", "0"): 42}, "offsets moved without their events"
    assert store.event_counts() == {"verdict": 1}


def test_rebuild_gives_identical_projections(store: EventStore) -> None:
    events = list(simulate(Scenario(seed=3, prompts_per_benchmark=20, duplicate_fraction=0.05)))
    Ingestor(store, batch_size=333).ingest_lines(_lines(events), source="sim")
    live = store.projection_dump()
    assert live["verdict_counts"]
    assert store.rebuild(batch_size=1000) == sum(store.event_counts().values())
    assert store.projection_dump() == live


def test_stored_events_replay_with_their_ids_and_times(store: EventStore) -> None:
    Ingestor(store).ingest_lines(_lines([{"type": "model", "model": "m"}]), source="f")
    [event] = store.events(["model"])
    assert event.id is not None and event.ts is not None
    assert list(store.events(["dataset"])) == []


def test_large_rejected_message_is_cut_but_its_size_kept(store: EventStore) -> None:
    huge = b'{"type": "verdict", "x": "' + b"y" * (10 * 1024 * 1024) + b'"}'
    result = Ingestor(store).ingest_lines([huge, json.dumps(_verdict("p")).encode()], source="f")
    assert (result.accepted, result.rejected) == (1, 1)
    [dead] = store.rejections()
    assert dead.error == f"message of {len(huge)} bytes exceeds the limit of 1048576"
    assert dead.raw_size == len(huge) and len(dead.raw) == 64 * 1024
    assert dead.location == "line 1"


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open event store"):
        EventStore(bogus)


@pytest.mark.parametrize("workers", [1, 2])
def test_worker_processes_give_the_same_store(tmp_path: Path, workers: int) -> None:
    events = list(simulate(Scenario(seed=4, prompts_per_benchmark=10, duplicate_fraction=0.05)))
    lines = [*_lines(events), b"{broken", b"", b'{"type": "vote"}']
    serial, parallel = EventStore(tmp_path / "serial.db"), EventStore(tmp_path / "parallel.db")
    one = Ingestor(serial, batch_size=700).ingest_lines(lines, source="f")
    two = Ingestor(parallel, batch_size=700, workers=workers).ingest_lines(lines, source="f")
    assert (one.accepted, one.duplicate, one.rejected) == (
        two.accepted,
        two.duplicate,
        two.rejected,
    )
    assert one.rejected == 2 and one.duplicate > 0
    assert serial.projection_dump() == parallel.projection_dump()
    assert [(r.location, r.error) for r in serial.rejections()] == [
        (r.location, r.error) for r in parallel.rejections()
    ]


def test_position_length_category_and_window_are_projected(store: EventStore) -> None:
    lines = _lines(
        [
            # model_a is m2 (hi): first="a" shows hi first; a win for "a" is a hi win
            _verdict("p", "a", first="a", len_a=99, len_b=49, category="c1",
                     ts="2026-11-20T08:15:00Z"),
            _verdict("p", "b", first="b", len_a=99, len_b=49, track="t",
                     ts="2026-11-20T08:45:00Z"),
            _verdict("p", "tie", ts="2026-11-20T09:01:00Z"),
        ]
    )  # fmt: skip
    Ingestor(store).ingest_lines(lines, source="f")
    early, late = sorted(store.verdict_counts())
    assert early.window_start == 1795161600 and late.window_start == early.window_start + 3600
    assert (early.hi_first_hi_wins, early.lo_first_lo_wins) == (1, 1)
    assert early.hi_first_lo_wins == early.lo_first_hi_wins == 0
    assert early.length_n == 2
    assert early.length_log_ratio_sum == pytest.approx(2 * math.log(50 / 100))
    assert (early.category, early.track) == ("c1", "t")
    assert (late.ties, late.length_n, late.category) == (1, 0, None)
    assert [r.prompt_id for r in store.verdict_counts(windows=[late.window_start])] == ["p"]
    assert store.verdict_counts(since=late.window_start + 10) == [late]
    windows, newest = store.verdict_windows_since(0)
    assert windows == {early.window_start, late.window_start} and newest == 3
    assert store.verdict_windows_since(newest) == (set(), newest)


def test_a_store_of_an_older_projection_layout_is_rebuilt_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with EventStore(path) as store:
        Ingestor(store).ingest_lines(_lines([_verdict("p1"), _verdict("p2")]), source="f")
        expected = store.projection_dump()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE verdict_counts")
    db.execute("CREATE TABLE verdict_counts (benchmark TEXT, judge TEXT)")  # an old layout
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with EventStore(path) as store:
        assert store.projection_dump() == expected


def test_a_full_database_refuses_the_batch_whole_and_recovers(store: EventStore) -> None:
    """SQLITE_FULL (here from max_page_count, as a full disk gives it) rolls the batch back with
    its offsets, says so in one sentence, and the next write after space is freed succeeds."""
    events = list(simulate(Scenario(seed=2, prompts_per_benchmark=20)))
    batch = Batch(source="t", records=[_record(line) for line in _lines(events)])
    batch.offsets[("t", "0")] = len(events)
    (pages,) = store._db.execute("PRAGMA page_count").fetchone()
    store._db.execute(f"PRAGMA max_page_count = {pages + 2}")
    with pytest.raises(StoreWriteError, match="the disk holding it is full") as refused:
        store.append(batch)
    assert refused.value.disk_full
    assert store.event_counts() == {}
    assert store.offsets() == {}
    assert store.write_failures == 1
    assert store.write_error == str(refused.value)
    store._db.execute("PRAGMA max_page_count = 1073741823")
    result = store.append(batch)
    assert result.accepted == len(events)
    assert store.offsets() == {("t", "0"): len(events)}
    assert store.write_error is None
