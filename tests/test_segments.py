"""Sealed segments: a cache of the verdict projection that never answers other than the rows."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from prefleak.dbtools import check_database
from prefleak.ingest import Ingestor
from prefleak.segments import ProjectionColumns
from prefleak.simulate import Scenario, simulate
from prefleak.stats.cells import Cells
from prefleak.store import PROJECTION_WINDOW_S, EventStore

SCENARIO = Scenario(seed=8, prompts_per_benchmark=40, days=4, late_after=None)


def _assert_same(left: Cells, right: Cells) -> None:
    for field in left.__dataclass_fields__:
        a, b = getattr(left, field), getattr(right, field)
        if isinstance(a, tuple):
            assert a == b, field
        else:
            assert a.dtype == b.dtype and np.array_equal(a, b), field


def _segments(store_path: Path) -> dict[int, int]:
    """Sealed days and the log position each was sealed at."""
    with sqlite3.connect(store_path) as db:
        return dict(db.execute("SELECT start, sealed_seq FROM verdict_segments").fetchall())


def _lines(scenario: Scenario = SCENARIO) -> list[bytes]:
    return [json.dumps(event).encode() for event in simulate(scenario)]


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "s.db"
    with EventStore(path) as store:
        Ingestor(store).ingest_lines(_lines(), source="sim")
    return path


def test_columns_equal_the_rows_before_and_after_sealing(store_path: Path) -> None:
    with EventStore(store_path) as store:
        rows = Cells.from_rows(store.verdict_rows())
        cold = Cells.from_columns(store.verdict_columns())
        spans = {int(w) // PROJECTION_WINDOW_S * PROJECTION_WINDOW_S for w in rows.window.tolist()}
        sealed = _segments(store_path)
        # every span but the newest is sealed by the first read; the newest still grows
        assert set(sealed) == spans - {max(spans)}
        warm = Cells.from_columns(store.verdict_columns())
        since = min(spans) + 5 * PROJECTION_WINDOW_S + 1800  # inside a sealed segment
        part = Cells.from_columns(store.verdict_columns(since))
        bench = rows.benchmarks[-1]
        one = Cells.from_columns(store.verdict_columns(since, benchmark=bench))
        none = store.verdict_columns(benchmark="no-such-benchmark")
        _assert_same(Cells.from_rows(store.verdict_rows(since=since)), part)
        _assert_same(Cells.from_rows(store.verdict_rows(bench, since=since)), one)
    _assert_same(rows, cold)
    _assert_same(rows, warm)
    assert one.benchmarks == (bench,) and none == []


def test_a_late_verdict_makes_its_segment_stale(store_path: Path) -> None:
    with EventStore(store_path) as store:
        store.verdict_columns()
        sealed = _segments(store_path)
        oldest = min(sealed)
        late = {
            "type": "verdict", "id": "late-1", "ts": oldest + 0.5, "benchmark": "late-bench",
            "prompt_id": "p1", "judge": "late-judge", "model_a": "x", "model_b": "y",
            "winner": "a",
        }  # fmt: skip
        assert Ingestor(store).ingest_lines([json.dumps(late).encode()], source="t").accepted
        read = Cells.from_columns(store.verdict_columns())
        _assert_same(Cells.from_rows(store.verdict_rows()), read)
        assert "late-bench" in read.benchmarks
        resealed = _segments(store_path)
    assert resealed[oldest] > sealed[oldest]  # read from the rows again and sealed anew
    assert {d: s for d, s in resealed.items() if d != oldest} == {
        d: s for d, s in sealed.items() if d != oldest
    }


def test_rebuild_and_unsealed_reads(store_path: Path) -> None:
    with EventStore(store_path) as store:
        store.verdict_columns(seal=False)
        assert _segments(store_path) == {}
        store.verdict_columns()
        assert _segments(store_path)
        store.rebuild()
        assert _segments(store_path) == {}
        _assert_same(
            Cells.from_rows(store.verdict_rows()), Cells.from_columns(store.verdict_columns())
        )


def test_a_store_that_cannot_seal_reads_its_rows(store_path: Path) -> None:
    """A busy writer (or a full disk) only costs the cache: the rows answer."""
    with EventStore(store_path) as store:
        store._db.execute("PRAGMA busy_timeout = 50")
        blocker = sqlite3.connect(store_path)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            read = Cells.from_columns(store.verdict_columns())
        finally:
            blocker.rollback()
            blocker.close()
        _assert_same(Cells.from_rows(store.verdict_rows()), read)
    assert _segments(store_path) == {}


def test_blob_round_trip_and_unknown_layouts(store_path: Path) -> None:
    with EventStore(store_path) as store:
        columns = ProjectionColumns.from_rows(store.verdict_rows())
    back = ProjectionColumns.from_bytes(columns.to_bytes())
    assert back is not None
    for field in ("window", "benchmark", "judge", "lo", "hi", "prompt", "category", "track"):
        assert np.array_equal(getattr(columns, field), getattr(back, field)), field
    assert np.array_equal(columns.counts, back.counts)
    assert np.array_equal(columns.length_sum, back.length_sum)
    assert back.models == columns.models and back.prompts == columns.prompts
    header = json.dumps({"format": 999}).encode()
    assert ProjectionColumns.from_bytes(len(header).to_bytes(4, "little") + header) is None
    blob = columns.to_bytes()
    for damaged in (blob[:-8], blob + b"\0", b"\xff\xff\xff\x7f{", b"", b"\x05\0\0\0[1,2]"):
        assert ProjectionColumns.from_bytes(damaged) is None


def test_a_damaged_segment_is_read_from_its_rows_and_sealed_again(store_path: Path) -> None:
    with EventStore(store_path) as store:
        rows = Cells.from_rows(store.verdict_rows())
        store.verdict_columns()
        damaged = min(_segments(store_path))
        with sqlite3.connect(store_path) as db:
            db.execute(
                "UPDATE verdict_segments SET data = substr(data, 1, 100) WHERE start = ?",
                (damaged,),
            )
        db.close()
        _assert_same(rows, Cells.from_columns(store.verdict_columns()))
    assert check_database(store_path, deep=True).ok  # sealed again from its rows


def test_check_db_deep_compares_the_segments_with_their_rows(store_path: Path) -> None:
    with EventStore(store_path) as store:
        store.verdict_columns()
    sealed = sorted(_segments(store_path))
    report = check_database(store_path, deep=True)
    segments = {c.name: c for c in report.checks}["segments"]
    assert report.ok and segments.ok
    assert segments.detail == f"{len(sealed):,} sealed hours equal their rows"
    with sqlite3.connect(store_path) as db:  # one hour's blob where another's belongs
        db.execute(
            "UPDATE verdict_segments SET data = (SELECT data FROM verdict_segments WHERE start = ?)"
            " WHERE start = ?",
            (sealed[0], sealed[1]),
        )
    db.close()
    report = check_database(store_path, deep=True)
    segments = {c.name: c for c in report.checks}["segments"]
    assert not report.ok and not segments.ok
    assert segments.detail.startswith(f"1 of {len(sealed):,} sealed hours differ from their rows")
    assert segments.detail.endswith("run `prefleak rebuild`")
