"""``prefleak backup`` and ``prefleak check-db``, and every store command on a store it cannot use.

Real SQLite files throughout: a writer thread appending through :class:`EventStore` while the
backup runs, locks held by a second process, files cut short, pages overwritten, garbage.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from prefleak.cli import main
from prefleak.dbtools import _PageProgress, backup, check_database
from prefleak.ingest import read_message
from prefleak.store import Batch, EventStore

BATCH = 25
"""Events per append: a consistent copy holds whole batches only."""


def _batch(k: int) -> Batch:
    """Batch ``k``: verdicts with ids of their own, spread over judges, prompts and outcomes."""
    batch = Batch(source="test")
    for i in range(BATCH):
        event = {
            "type": "verdict", "id": f"b{k:06d}-{i:02d}", "benchmark": "bench",
            "prompt_id": f"p{(k * BATCH + i) % 97}", "judge": f"j{i % 3}",
            "model_a": "m1", "model_b": "m2", "winner": "abt"[(k + i) % 3].replace("t", "tie"),
            "game": [None, 1, 2][i % 3], "ts": "2025-03-01T12:00:00Z",
        }  # fmt: skip
        batch.add(read_message(json.dumps(event).encode(), source="test", location=f"{k}:{i}"))
    return batch


def _fill(path: Path, batches: int, first: int = 0) -> None:
    with EventStore(path) as store:
        for k in range(first, first + batches):
            store.append(_batch(k))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A store of 40 batches (1000 verdicts), closed (its WAL checkpointed into the file)."""
    path = tmp_path / "events.db"
    _fill(path, 40)
    return path


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str) -> str:
    """The command failed with one line on stderr, no traceback."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prefleak: "), err
    return lines[0]


def _ids(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [row[0] for row in db.execute("SELECT id FROM events ORDER BY seq")]
    finally:
        db.close()


def _pragma(path: Path, pragma: str) -> str:
    db = sqlite3.connect(path)
    try:
        return str(db.execute(f"PRAGMA {pragma}").fetchone()[0])
    finally:
        db.close()


def _sql(path: Path, *statements: str) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            db.execute(statement)
    finally:
        db.close()


# -- broken files ---------------------------------------------------------------------------------


def _garbage(path: Path) -> Path:
    path.write_bytes(bytes(range(256)) * 64)
    return path


def _text(path: Path) -> Path:
    path.write_text("this is not a database\n" * 200)
    return path


def _truncated(path: Path) -> Path:
    with path.open("r+b") as file:
        file.truncate(path.stat().st_size // 2 // 4096 * 4096)
    return path


def _overwritten(path: Path) -> Path:
    """Eight pages in the middle of the file overwritten: the header and schema still read."""
    with path.open("r+b") as file:
        file.seek(path.stat().st_size // 2 // 4096 * 4096)
        file.write(b"\xa5" * 4096 * 8)
    return path


def _foreign(path: Path) -> Path:
    path.unlink()
    _sql(path, "CREATE TABLE notes (body TEXT)")
    return path


def _incomplete(path: Path) -> Path:
    _sql(path, "DROP TABLE offsets")
    return path


# -- locks held by another process ----------------------------------------------------------------

_HOLDER = """\
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
for statement in sys.argv[2:]:
    db.execute(statement)
print("holding", flush=True)
sys.stdin.read()
"""


@contextmanager
def _held(path: Path, *statements: str) -> Iterator[None]:
    """A second process runs ``statements`` on the store and keeps its lock until the end."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), *statements],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)


ROLLBACK_EXCLUSIVE = ("PRAGMA journal_mode = DELETE", "BEGIN EXCLUSIVE")
"""A rollback-journal store under an exclusive lock: nobody else may even read."""
WAL_EXCLUSIVE = ("PRAGMA locking_mode = EXCLUSIVE", "BEGIN EXCLUSIVE")
"""A WAL store opened in exclusive locking mode: it keeps the file to itself."""
WAL_WRITER = ("BEGIN EXCLUSIVE", "DELETE FROM offsets")
"""A writer in the middle of a transaction, as `prefleak serve` is: WAL readers go on."""


# -- backup ---------------------------------------------------------------------------------------


def test_backup_writes_one_sound_file_and_replaces_only_with_force(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "copy.db"
    code, out, _ = _cli(capsys, "backup", "--db", str(db), str(dest))
    assert code == 0 and "1,000 events" in out and "quick_check ok" in out
    assert _ids(dest) == _ids(db)
    assert _pragma(dest, "integrity_check") == "ok"
    assert _pragma(dest, "journal_mode") == "delete", "a backup is one self-contained file"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("copy", ".copy"))) == [
        "copy.db"
    ]

    _fill(db, 1, first=40)
    code, _, err = _cli(capsys, "backup", "--db", str(db), str(dest))
    assert code == 1 and "exists; pass --force" in _one_line_error(err)
    assert len(_ids(dest)) == 1000, "the refused backup left the old one alone"

    stale = Path(f"{dest}-wal")
    stale.write_bytes(b"a -wal file of some other database")
    code, _, _ = _cli(capsys, "backup", "--db", str(db), str(dest), "--force")
    assert code == 0 and not stale.exists(), "a stale -wal would be replayed into the new copy"
    assert len(_ids(dest)) == 1025
    with EventStore(dest) as store:
        assert store.event_counts() == {"verdict": 1025}


def test_backup_is_a_consistent_prefix_while_a_writer_appends(db: Path, tmp_path: Path) -> None:
    """One page per step and a pause after each, so hundreds of commits land during the copy.

    Without the snapshot the copy holds, SQLite restarts a backup whenever another connection
    writes, and with a writer this busy it would never finish.
    """
    stop, appended = threading.Event(), [0]

    def writer() -> None:
        with EventStore(db) as store:
            k = 1000
            while not stop.is_set():
                store.append(_batch(k))
                k += 1
                appended[0] += 1

    steps: list[int] = []

    def slow_progress(done: int, total: int) -> None:
        steps.append(appended[0])
        time.sleep(0.002)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while appended[0] < 5:
            time.sleep(0.01)
        dest = tmp_path / "copy.db"
        started = time.monotonic()
        result = backup(db, dest, step_pages=1, progress=slow_progress)
        assert time.monotonic() - started < 60
    finally:
        stop.set()
        thread.join()
    assert len(steps) > 50 and steps[-1] - steps[0] >= 5, "the writer committed during the copy"

    assert _pragma(dest, "integrity_check") == "ok"
    copied, live = _ids(dest), _ids(db)
    assert result.events == len(copied) and len(copied) % BATCH == 0, "whole batches only"
    assert 1000 < len(copied) < len(live)
    assert copied == live[: len(copied)], "a prefix of the log, in order"
    with EventStore(dest) as store:
        assert len(list(store.events())) == len(copied), "every event complete and readable"
        stored = sorted(store.verdict_counts())
        assert sum(sum(sum(games, ())) for games in (row.games() for row in stored)) == len(copied)
        assert store.rebuild() == len(copied)
        assert sorted(store.verdict_counts()) == stored, "projections match a replay of the copy"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (None, "no database at"),
        (_garbage, "is not an SQLite database"),
        (_foreign, "not a prefleak store"),
        (_overwritten, "is corrupt"),
    ],
)
def test_backup_refuses_what_it_cannot_copy(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], source: object, expected: str
) -> None:
    if source is None:
        db.unlink()
    else:
        assert callable(source)
        source(db)
    code, _, err = _cli(capsys, "backup", "--db", str(db), str(tmp_path / "copy.db"))
    assert code == 1 and expected in _one_line_error(err)
    assert not [p for p in tmp_path.iterdir() if "copy" in p.name], "nothing half-written left"
    if source is None:
        assert not db.exists(), "backup never creates the store it was asked to copy"


def test_backup_refuses_bad_destinations(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for dest, expected in [
        (db, "is the store itself"),
        (tmp_path, "is a directory"),
        (tmp_path / "missing" / "copy.db", "does not exist"),
    ]:
        code, _, err = _cli(capsys, "backup", "--db", str(db), str(dest), "--force")
        assert code == 1 and expected in _one_line_error(err)
    assert len(_ids(db)) == 1000


def test_backup_reads_past_a_writer_but_not_an_exclusive_lock(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with _held(db, *WAL_WRITER):
        code, _, _ = _cli(capsys, "backup", "--db", str(db), str(tmp_path / "a.db"))
        assert code == 0
    with _held(db, *WAL_EXCLUSIVE):
        code, _, err = _cli(
            capsys, "backup", "--db", str(db), str(tmp_path / "b.db"), "--timeout", "0.2"
        )
        assert code == 1 and "locked by another process" in _one_line_error(err)


def test_backup_progress_is_shown_on_a_terminal_only() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    shown, hidden = Terminal(), io.StringIO()
    for stream in (shown, hidden):
        progress = _PageProgress(stream)
        progress(512, 2048)
        progress(2048, 2048)
        progress.close()
    assert shown.getvalue() == (
        "\rbackup:  25.0% of 2,048 pages   \rbackup: 100.0% of 2,048 pages   \n"
    )
    assert hidden.getvalue() == ""


# -- check-db -------------------------------------------------------------------------------------


def test_check_db_passes_a_sound_store(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "check-db", "--db", str(db), "--deep")
    assert code == 0 and err == ""
    assert out.splitlines()[-1] == f"{db} is sound"
    assert "1,000 verdicts counted once each" in out
    code, out, _ = _cli(capsys, "check-db", "--db", str(db), "--json", "--deep")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True
    assert [c["name"] for c in report["checks"]] == [
        "open", "quick_check", "integrity_check", "tables", "projections", "deep", "segments",
    ]  # fmt: skip
    assert "replayed 1,000 events" in report["checks"][-2]["detail"]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (None, "no database at"),
        (_garbage, "is not an SQLite database"),
        (_text, "is not an SQLite database"),
        (_truncated, "is corrupt"),
        (_overwritten, "is corrupt"),
        (_foreign, "not a prefleak store"),
        (_incomplete, "no offsets"),
    ],
)
def test_check_db_names_what_is_wrong(
    db: Path, capsys: pytest.CaptureFixture[str], damage: object, expected: str
) -> None:
    if damage is None:
        db.unlink()
    else:
        assert callable(damage)
        damage(db)
    code, out, err = _cli(capsys, "check-db", "--db", str(db))
    assert code == 1 and expected in _one_line_error(err)
    assert "FAIL" in out
    code, out, _ = _cli(capsys, "check-db", "--db", str(db), "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert any(expected in c["detail"] for c in report["checks"] if not c["ok"])
    if damage is None:
        assert not db.exists(), "check-db never creates a store"


def test_check_db_finds_projections_that_disagree_with_the_log(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Swapped wins keep the total: only a replay sees it.
    _sql(db, "UPDATE verdict_counts SET lo_wins = hi_wins, hi_wins = lo_wins WHERE lo_wins > 0")
    assert _cli(capsys, "check-db", "--db", str(db))[0] == 0
    code, _, err = _cli(capsys, "check-db", "--db", str(db), "--deep")
    assert code == 1 and "rows differ from a replay of the log" in _one_line_error(err)

    _sql(db, "DELETE FROM verdict_counts WHERE judge = 'j0'")
    code, _, err = _cli(capsys, "check-db", "--db", str(db))
    assert code == 1 and "the log has 1,000" in _one_line_error(err)

    assert _cli(capsys, "rebuild", "--db", str(db))[0] == 0
    assert _cli(capsys, "check-db", "--db", str(db), "--deep")[0] == 0


@pytest.mark.parametrize("lock", [ROLLBACK_EXCLUSIVE, WAL_EXCLUSIVE], ids=["rollback", "wal"])
def test_check_db_reports_a_store_locked_by_another_process(
    db: Path, capsys: pytest.CaptureFixture[str], lock: tuple[str, ...]
) -> None:
    with _held(db, *lock):
        started = time.monotonic()
        code, _, err = _cli(capsys, "check-db", "--db", str(db), "--timeout", "0.3")
        assert time.monotonic() - started < 5
    line = _one_line_error(err)
    assert code == 1 and "locked by another process" in line and "0.3 s" in line


def test_check_db_runs_beside_a_writer(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What `prefleak serve` does to the file does not stop a check (WAL readers go on)."""
    with _held(db, *WAL_WRITER):
        code, out, _ = _cli(capsys, "check-db", "--db", str(db), "--deep", "--timeout", "0.3")
    assert code == 0, out


def test_check_report_api_does_not_raise_for_a_bad_store(tmp_path: Path) -> None:
    report = check_database(_garbage(tmp_path / "x.db"))
    assert not report.ok and report.to_json()["checks"][0]["name"] == "open"


# -- every store command on a store it cannot use -------------------------------------------------


@pytest.mark.parametrize("damage", [_garbage, _text, _truncated], ids=["garbage", "text", "cut"])
@pytest.mark.parametrize("command", ["report", "status", "rejected", "rebuild"])
def test_store_commands_fail_in_one_line_on_a_broken_file(
    db: Path, capsys: pytest.CaptureFixture[str], command: str, damage: object
) -> None:
    assert callable(damage)
    damage(db)
    code, _, err = _cli(capsys, command, "--db", str(db))
    line = _one_line_error(err)
    assert code == 1 and "cannot open event store" in line
    assert "not a database" in line or "malformed" in line


@pytest.mark.slow
def test_status_fails_in_one_line_on_a_locked_store(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The store waits out its own busy timeout (10 s) first: a lock may be brief."""
    with _held(db, *ROLLBACK_EXCLUSIVE):
        code, _, err = _cli(capsys, "status", "--db", str(db))
    assert code == 1 and "database is locked" in _one_line_error(err)


@pytest.mark.parametrize("command", ["status", "rebuild"])
def test_store_commands_fail_in_one_line_on_a_page_broken_after_open(
    db: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    _overwritten(db)
    code, _, err = _cli(capsys, command, "--db", str(db))
    assert code == 1 and "malformed" in _one_line_error(err)


def test_partial_files_are_not_left_behind_when_a_backup_fails(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        backup(db, tmp_path / "copy.db")
    assert not [p for p in tmp_path.iterdir() if "copy" in p.name]
