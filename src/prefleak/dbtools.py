"""``prefleak backup`` and ``prefleak check-db``, added to the CLI by :func:`register`.

``backup`` copies the store with SQLite's online backup API while ``prefleak serve`` keeps
writing: the copy holds one read snapshot for its whole run, so it is a consistent prefix of the
log (whole batches only) and cannot be restarted forever by a busy writer. ``check-db`` says
whether a store is sound: SQLite's own checks, prefleak's tables, and projections that agree with
the log (``--deep``: replayed into a temporary copy and compared row by row).

Neither command writes to the store, and neither creates one where there is none. Exit codes as
in the rest of the CLI: 0 done (``check-db``: the store is sound), 1 could not do the work or the
store is not sound (missing, not SQLite, corrupt, locked, not a prefleak store, projections that
disagree with the log), 2 wrong usage. A failure is one readable line, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import stat
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from prefleak.config import add_db_option, default_db
from prefleak.store import PROJECTION_TABLES, EventStore, StoreError, segment_disagreements

EXIT_OK, EXIT_FAILED = 0, 1

LOG_TABLES = ("events", "rejected", "offsets")
"""The tables that hold the truth; the projections (``PROJECTION_TABLES``) are derived."""

DEFAULT_TIMEOUT_S = 5.0
"""How long to wait for a lock another process holds before saying the store is locked."""

STEP_PAGES = 1024
"""Pages copied per backup step (4 MiB with SQLite's default page size), for the progress line."""

SIDECARS = ("-wal", "-shm", "-journal")
"""Files SQLite keeps beside a database; a stale one beside a new file would corrupt it."""

_NINE_COUNTERS = " + ".join(
    f"{prefix}{outcome}"
    for prefix in ("", "game1_", "game2_")
    for outcome in ("lo_wins", "hi_wins", "ties")
)
"""Every verdict adds one to exactly one of these ``verdict_counts`` columns."""

Progress = Callable[[int, int], None]
"""Called after each backup step with (pages copied, pages in all)."""


class DbToolError(Exception):
    """Why a command cannot go on, in words for the person who ran it."""


# -- opening without creating or writing ----------------------------------------------------------


def _describe(exc: sqlite3.Error, path: Path, timeout: float) -> str:
    """A sentence for an SQLite error met while reading ``path``."""
    name = getattr(exc, "sqlite_errorname", "")
    text = str(exc)
    if name in ("SQLITE_BUSY", "SQLITE_LOCKED") or "locked" in text:
        return (
            f"{path} is locked by another process (still locked after {timeout:g} s); "
            f"try again later, or find the holder with `fuser {path}`"
        )
    if name == "SQLITE_NOTADB" or "not a database" in text:
        return f"{path} is not an SQLite database ({text})"
    if name == "SQLITE_CORRUPT" or "malformed" in text:
        return f"{path} is corrupt ({text}); restore the latest backup (docs/reliability.md)"
    return f"{path}: {text}"


def _one_line(problems: list[str]) -> str:
    """What quick_check or integrity_check found, on one line."""
    text = "; ".join(problems).replace("*** in database main ***", "")
    return "; ".join(part.strip() for part in text.splitlines() if part.strip(" ;"))


def _require_file(path: Path) -> None:
    if not path.exists():
        raise DbToolError(f"no database at {path}")
    if not path.is_file():
        raise DbToolError(f"{path} is not a file")


def _open_snapshot(path: Path, timeout: float) -> sqlite3.Connection:
    """A read-only connection to an existing file, inside a read transaction (one snapshot).

    Read-only and ``mode=ro``: never creates a database or changes one. In WAL mode the snapshot
    does not block the writer; it only keeps the checkpoint from passing it until it ends.
    """
    _require_file(path)
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
    except sqlite3.Error as exc:
        raise DbToolError(_describe(exc, path, timeout)) from None
    try:
        db.execute("BEGIN")
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # takes the snapshot
    except sqlite3.Error as exc:
        db.close()
        raise DbToolError(_describe(exc, path, timeout)) from None
    return db


def _tables(db: sqlite3.Connection) -> set[str]:
    return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


# -- backup ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupResult:
    """What one backup wrote."""

    dest: Path
    events: int
    pages: int
    bytes: int
    seconds: float


def backup(
    source: Path,
    dest: Path,
    *,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
    step_pages: int = STEP_PAGES,
    progress: Progress | None = None,
) -> BackupResult:
    """Copy the store at ``source`` to ``dest``, safely while another process writes to it.

    The copy is written beside ``dest`` under a temporary name, checked (``quick_check``),
    switched to a self-contained rollback-journal file and only then moved into place, so
    ``dest`` is never a half-written file. An existing ``dest`` is replaced only with ``force``.
    """

    def step(_status: int, remaining: int, total: int) -> None:
        if progress is not None:
            progress(total - remaining, total)

    started = time.monotonic()
    _check_dest(source, dest, force)
    src = _open_snapshot(source, timeout)
    tmp = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    try:
        if "events" not in _tables(src):
            raise DbToolError(f"{source} is an SQLite database but not a prefleak store")
        tmp.unlink(missing_ok=True)
        copy = sqlite3.connect(tmp, isolation_level=None)
        try:
            src.backup(copy, pages=step_pages, progress=step)  # all in the snapshot: no restarts
            # The header says WAL, as the source's does; one file is what a backup should be.
            copy.execute("PRAGMA journal_mode = DELETE")
            problems = [str(row) for (row,) in copy.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                raise DbToolError(
                    f"{source} is corrupt, its copy fails quick_check: {_one_line(problems)}"
                )
            (events,) = copy.execute("SELECT count(*) FROM events").fetchone()
            (pages,) = copy.execute("PRAGMA page_count").fetchone()
        finally:
            copy.close()
        os.chmod(tmp, stat.S_IMODE(source.stat().st_mode))  # the copy is as private as the store
        _fsync(tmp)
        _publish(tmp, dest, force)
    except sqlite3.Error as exc:
        raise DbToolError(_describe(exc, source, timeout)) from None
    finally:
        src.close()
        tmp.unlink(missing_ok=True)
    return BackupResult(dest, events, pages, dest.stat().st_size, time.monotonic() - started)


def _check_dest(source: Path, dest: Path, force: bool) -> None:
    _require_file(source)
    if dest.is_dir():
        raise DbToolError(f"{dest} is a directory; name the backup file, e.g. {dest / source.name}")
    if not dest.parent.is_dir():
        raise DbToolError(f"directory {dest.parent} does not exist")
    if dest.exists() and os.path.samefile(source, dest):
        raise DbToolError(f"{dest} is the store itself; back it up to another file")
    present = [p for p in (dest, *(Path(f"{dest}{s}") for s in SIDECARS)) if p.exists()]
    if present and not force:
        raise DbToolError(f"{present[0]} exists; pass --force to replace it")


def _publish(tmp: Path, dest: Path, force: bool) -> None:
    """Move the finished copy to ``dest`` in one step, then make the rename durable."""
    if force:
        for suffix in SIDECARS:  # a stale -wal beside the new file would be replayed into it
            Path(f"{dest}{suffix}").unlink(missing_ok=True)
        os.replace(tmp, dest)
    else:
        try:
            os.link(tmp, dest)  # fails if dest appeared meanwhile: never overwrites
        except FileExistsError:
            raise DbToolError(f"{dest} exists; pass --force to replace it") from None
        except OSError:  # a file system without hard links
            if dest.exists():
                raise DbToolError(f"{dest} exists; pass --force to replace it") from None
            os.replace(tmp, dest)
    _fsync(dest.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- check-db -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    """One check's outcome, with what was found in a sentence."""

    name: str
    ok: bool
    detail: str


@dataclass(slots=True)
class CheckReport:
    """Every check run on one store, in order; the first failure stops the ones that need it."""

    db: Path
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": "prefleak.check-db/1",
            "db": str(self.db),
            "ok": self.ok,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }


def check_database(
    path: Path, *, deep: bool = False, timeout: float = DEFAULT_TIMEOUT_S
) -> CheckReport:
    """Run every check on the store at ``path``; never raises for a bad store, only reports."""
    report = CheckReport(path)
    try:
        db = _open_snapshot(path, timeout)
    except DbToolError as exc:
        report.add("open", False, str(exc))
        return report
    try:
        if _sqlite_checks(db, path, report, timeout) and _table_check(db, report):
            _projection_check(db, report)
    except sqlite3.Error as exc:
        report.add("read", False, _describe(exc, path, timeout))
    finally:
        db.close()
    if deep and report.ok:
        _deep_check(path, report, timeout)
        _segment_check(path, report, timeout)
    return report


def _sqlite_checks(db: sqlite3.Connection, path: Path, report: CheckReport, timeout: float) -> bool:
    (mode,) = db.execute("PRAGMA journal_mode").fetchone()
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    (size,) = db.execute("PRAGMA page_size").fetchone()
    report.add("open", True, f"SQLite, journal mode {mode}, {pages:,} pages of {size} bytes")
    for pragma in ("quick_check", "integrity_check"):
        try:
            rows = [str(row) for (row,) in db.execute(f"PRAGMA {pragma}(10)")]
        except sqlite3.DatabaseError as exc:  # too broken to even list what is wrong
            return report.add(pragma, False, _describe(exc, path, timeout))
        if rows != ["ok"]:
            return report.add(pragma, False, f"{path} is corrupt: {_one_line(rows)}")
        report.add(pragma, True, "ok")
    return True


def _table_check(db: sqlite3.Connection, report: CheckReport) -> bool:
    present = _tables(db)
    wanted = (*LOG_TABLES, *PROJECTION_TABLES)
    missing = [table for table in wanted if table not in present]
    if len(missing) == len(wanted):
        return report.add("tables", False, "an SQLite database, but not a prefleak store")
    if missing:
        return report.add(
            "tables", False, f"not a complete prefleak store: no {', '.join(missing)}"
        )
    return report.add("tables", True, ", ".join(wanted))


def _projection_check(db: sqlite3.Connection, report: CheckReport) -> None:
    """Cheap agreement of projections and log, read in the one snapshot: every verdict counted
    once, and every sampled row still an event. ``--deep`` compares everything."""
    # count(*) over the id index minus the partial index: no scan of the event bodies
    (verdicts,) = db.execute(
        "SELECT (SELECT count(*) FROM events) - (SELECT count(*) FROM events"
        " WHERE type <> 'verdict')"
    ).fetchone()
    try:
        (counted,) = db.execute(f"SELECT total({_NINE_COUNTERS}) FROM verdict_counts").fetchone()
    except sqlite3.OperationalError as exc:  # a projection layout this check does not know
        report.add("projections", True, f"not compared ({exc}); --deep compares any layout")
        return
    (orphans,) = db.execute(
        "SELECT count(*) FROM samples WHERE NOT EXISTS"
        " (SELECT 1 FROM events WHERE events.id = samples.id)"
    ).fetchone()
    problems = []
    if int(counted) != verdicts:
        problems.append(
            f"verdict_counts counts {int(counted):,} verdicts, the log has {verdicts:,}"
        )
    if orphans:
        problems.append(f"{orphans:,} sampled rows are not in the log")
    if problems:
        report.add("projections", False, "; ".join(problems) + "; run `prefleak rebuild`")
    else:
        report.add("projections", True, f"{verdicts:,} verdicts counted once each")


def _deep_check(path: Path, report: CheckReport, timeout: float) -> None:
    """Replay the log into a copy and compare its projections with the stored ones."""
    try:
        with tempfile.TemporaryDirectory(prefix="prefleak-check-") as tmp:
            copy = Path(tmp) / "copy.db"
            backup(path, copy, timeout=timeout)
            stored = _dump(copy)  # read before EventStore opens it: opening may upgrade layouts
            with EventStore(copy) as store:
                replayed = store.rebuild()
            rebuilt = _dump(copy)
    except (DbToolError, StoreError, OSError) as exc:
        report.add("deep", False, f"cannot replay the log: {exc}")
        return
    except Exception as exc:  # an event the log holds but this prefleak cannot replay
        report.add("deep", False, f"replaying the log fails: {type(exc).__name__}: {exc}")
        return
    problems, sizes = [], []
    for table in PROJECTION_TABLES:
        (columns, rows), (new_columns, new_rows) = stored[table], rebuilt[table]
        if columns != new_columns:
            report.add(
                "deep", True, f"{table} has an older layout, rebuilt when prefleak next opens it"
            )
            return
        differ = _differences(rows, new_rows)
        sizes.append(f"{table} {len(rows):,} rows")
        if differ:
            problems.append(f"{table}: {differ} rows differ from a replay of the log")
    if problems:
        report.add("deep", False, "; ".join(problems) + "; run `prefleak rebuild`")
    else:
        report.add("deep", True, f"replayed {replayed:,} events: {', '.join(sizes)}, all equal")


def _segment_check(path: Path, report: CheckReport, timeout: float) -> None:
    """Every sealed segment in use against the rows it caches (docs/storage.md)."""
    try:
        db = _open_snapshot(path, timeout)
        try:
            compared, wrong = segment_disagreements(db)
        finally:
            db.close()
    except (DbToolError, sqlite3.Error) as exc:
        report.add("segments", False, f"cannot compare the sealed segments: {exc}")
        return
    if wrong:
        hours = ", ".join(
            datetime.fromtimestamp(h, UTC).strftime("%Y-%m-%d %H:00") for h in wrong[:5]
        )
        report.add(
            "segments", False,
            f"{len(wrong):,} of {compared:,} sealed hours differ from their rows ({hours}"
            f"{', ...' if len(wrong) > 5 else ''}); run `prefleak rebuild`",
        )  # fmt: skip
    else:
        report.add("segments", True, f"{compared:,} sealed hours equal their rows")


Rows = list[tuple[Any, ...]]


def _dump(path: Path) -> dict[str, tuple[list[str], Rows]]:
    db = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
    try:
        return {
            table: (
                [row[1] for row in db.execute(f"PRAGMA table_info({table})")],
                db.execute(f"SELECT * FROM {table}").fetchall(),
            )
            for table in PROJECTION_TABLES
        }
    finally:
        db.close()


def _differences(stored: Rows, rebuilt: Rows) -> int:
    """Rows of one table that are not in the other. Sums of floats may differ in their last bits
    (a replay adds them up in other batches), so floats compare as close, all else as equal."""
    old, new = _by_exact(stored), _by_exact(rebuilt)
    differ = 0
    for key in old.keys() | new.keys():
        mine, theirs = sorted(old.get(key, [])), sorted(new.get(key, []))
        differ += abs(len(mine) - len(theirs))
        differ += sum(not _close(a, b) for a, b in zip(mine, theirs, strict=False))
    return differ


def _close(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9) for x, y in zip(a, b, strict=True))


def _by_exact(rows: Rows) -> dict[tuple[Any, ...], list[tuple[float, ...]]]:
    """Rows grouped by their values other than floats, with their floats."""
    grouped: dict[tuple[Any, ...], list[tuple[float, ...]]] = defaultdict(list)
    for row in rows:
        exact = tuple(v for v in row if not isinstance(v, float))
        grouped[exact].append(tuple(v for v in row if isinstance(v, float)))
    return grouped


# -- the commands ---------------------------------------------------------------------------------


class _PageProgress:
    """``backup: 42.0% of 4,700 pages`` on a terminal; nothing when stderr is not one."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if self.enabled:
            share = 100 * done / total if total else 100.0
            self.stream.write(f"\rbackup: {share:5.1f}% of {total:,} pages   ")
            self.stream.flush()
            self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")


def _cmd_backup(args: argparse.Namespace) -> int:
    source = args.db or default_db()
    progress = _PageProgress(sys.stderr)
    try:
        result = backup(source, args.dest, force=args.force, timeout=args.timeout,
                        progress=progress)  # fmt: skip
    except (DbToolError, OSError) as exc:
        progress.close()
        print(f"prefleak: backup: {_oserror(exc)}", file=sys.stderr)
        return EXIT_FAILED
    progress.close()
    print(
        f"backed up {source} to {result.dest}: {result.events:,} events, "
        f"{result.bytes / 1e6:,.1f} MB in {result.seconds:.1f} s (quick_check ok)"
    )
    return EXIT_OK


def _oserror(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


def _cmd_check_db(args: argparse.Namespace) -> int:
    path = args.db or default_db()
    report = check_database(path, deep=args.deep, timeout=args.timeout)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(f"check-db {path}")
        for check in report.checks:
            print(f"  {'ok  ' if check.ok else 'FAIL'}  {check.name:<16} {check.detail}")
    if report.ok:
        if not args.json:
            print(f"{path} is sound")
        return EXIT_OK
    failure = next(check for check in report.checks if not check.ok)
    print(f"prefleak: check-db: {failure.detail}", file=sys.stderr)
    return EXIT_FAILED


_BACKUP_DETAILS = """\
Uses SQLite's online backup API on one read snapshot, so it is safe while `prefleak serve`
writes: the copy holds every batch committed before it started and nothing after. The copy is
written under a temporary name beside DEST, checked, and then renamed to DEST (a single file,
no -wal). It keeps the store's file permissions. Progress is shown on a terminal.

example:
  prefleak backup --db /var/lib/prefleak/events.db /backups/events-$(date +%F).db"""

_CHECK_DETAILS = """\
Checks, in order: the file opens as SQLite (not locked by another process), PRAGMA
quick_check and integrity_check, prefleak's tables exist, and the projections agree with the
event log (every verdict counted once, every sampled row an event). --deep also replays the log
into a temporary copy (needs free space the size of the store in $TMPDIR) and compares every
projection row. Read-only: safe while `prefleak serve` runs. Exit 0 sound, 1 not (the reason on
stderr).

example:
  prefleak check-db --deep --json | jq '.checks[] | select(.ok | not)'"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``backup`` and ``check-db`` to the CLI's subcommands."""
    formatter = argparse.RawDescriptionHelpFormatter
    summary = "Copy the event store to DEST, safely while `prefleak serve` writes to it."
    parser = commands.add_parser(
        "backup",
        help=summary,
        description=f"{summary}\n\n{_BACKUP_DETAILS}",
        formatter_class=formatter,
    )
    add_db_option(parser)
    parser.add_argument("dest", type=Path, metavar="DEST", help="the backup file to write")
    parser.add_argument("--force", action="store_true", help="replace DEST if it exists")
    _timeout_option(parser)
    parser.set_defaults(handler=_cmd_backup)

    summary = "Check that the event store is sound: SQLite integrity, tables, projections."
    parser = commands.add_parser(
        "check-db",
        help=summary,
        description=f"{summary}\n\n{_CHECK_DETAILS}",
        formatter_class=formatter,
    )
    add_db_option(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--deep", action="store_true", help="also replay the log into a copy and compare"
    )
    _timeout_option(parser)
    parser.set_defaults(handler=_cmd_check_db)


def _timeout_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help="seconds to wait for another process's lock before giving up "
        f"(default: {DEFAULT_TIMEOUT_S:g})",
    )
