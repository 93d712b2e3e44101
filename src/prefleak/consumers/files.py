"""A directory watcher: each ``.jsonl``/``.jsonl.gz`` file dropped there is ingested once.

Progress lives in the store's ``offsets`` table, written in the same transaction as the events it
covers, so a restart resumes exactly where the last committed batch stopped:

* ``(file:<path>, lines)``: lines consumed (blank and rejected lines included);
* ``(file:<path>, bytes)``: for a plain file the byte position after those lines; for a gzip
  file the compressed size, written once the whole stream has been read. A file whose size equals
  this position is finished and is not opened again.

Only complete lines are taken from a file that is still being written. A last line without a
newline is taken once the file has not changed for ``settle_s`` (a gzip stream ends explicitly,
so its last line is taken as soon as the stream is complete).
"""

from __future__ import annotations

import gzip
import logging
import os
import stat as stat_mode
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import BinaryIO, cast

from prefleak.ingest import DEFAULT_BATCH_SIZE, MAX_MESSAGE_BYTES, read_message
from prefleak.store import AppendResult, Batch, EventStore, StoreWriteError

log = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".jsonl.gz")
PREFIX = "file:"


@dataclass(slots=True)
class _Progress:
    """How far one file is consumed; ``position`` is None when only the line count is known."""

    lines: int = 0
    position: int | None = 0


@dataclass(frozen=True, slots=True)
class _Seen:
    """A file's size and mtime when last read, so an unchanged file is not reopened."""

    size: int
    mtime_ns: int
    pending: bool
    """A last line without newline was left for later (it may be taken once settled)."""


class _Truncated(Exception):
    """A gzip stream that ends early: the file is still being written (or is broken)."""


_GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


class FileWatcher:
    """Polls one directory and appends its files' lines to the store in batches."""

    def __init__(
        self,
        store: EventStore,
        directory: Path,
        *,
        poll_interval_s: float = 2.0,
        settle_s: float = 10.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        hash_texts: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        on_result: Callable[[AppendResult], None] | None = None,
    ) -> None:
        self.store = store
        self.directory = directory
        self.poll_interval_s = poll_interval_s
        self.settle_s = settle_s
        self.max_message_bytes = max_message_bytes
        self.hash_texts = hash_texts
        self.batch_size = batch_size
        self.on_result = on_result
        self._progress = self._load_progress()
        self._seen: dict[Path, _Seen] = {}
        self._up = False
        self._store_failing = False

    @property
    def up(self) -> bool:
        """The last scan could list the directory and store what it read."""
        return self._up

    def _load_progress(self) -> dict[Path, _Progress]:
        progress: dict[Path, _Progress] = {}
        for (source, part), position in self.store.offsets().items():
            if not source.startswith(PREFIX) or part not in ("lines", "bytes"):
                continue
            entry = progress.setdefault(Path(source[len(PREFIX) :]), _Progress(0, None))
            if part == "lines":
                entry.lines = position
            else:
                entry.position = position
        return progress

    def run(self, stop: threading.Event) -> None:
        """Scan until ``stop`` is set; never raises (a failing scan is logged and retried)."""
        while not stop.is_set():
            self.scan(stop)
            stop.wait(self.poll_interval_s)

    def scan(self, stop: threading.Event | None = None) -> None:
        """Ingest whatever is new in the directory, file by file in name order."""
        try:
            names = sorted(os.listdir(self.directory))
        except OSError as exc:
            if self._up:
                log.warning("cannot list watch directory %s: %s", self.directory, exc)
            self._up = False
            return
        self._up = not self._store_failing
        for name in names:
            if stop is not None and stop.is_set():
                return
            if not name.endswith(SUFFIXES):
                continue
            path = (self.directory / name).resolve()
            try:
                self._visit(path, stop)
            except StoreWriteError as exc:  # the file is fine: it keeps its offset, retry later
                if not self._store_failing:
                    log.error("watch: %s; retrying every %g s", exc, self.poll_interval_s)
                self._store_failing, self._up = True, False
                return
            except OSError as exc:
                log.warning("cannot read %s: %s (will retry)", path, exc)
            except Exception:
                log.exception("failed to ingest %s (will retry)", path)
        if self._store_failing:
            log.info("watch: the event store takes writes again")
        self._store_failing, self._up = False, True

    def _visit(self, path: Path, stop: threading.Event | None) -> None:
        stat = path.stat()
        if not stat_mode.S_ISREG(stat.st_mode):
            return
        seen = self._seen.get(path)
        settled = time.time() - stat.st_mtime >= self.settle_s
        if (
            seen is not None
            and (seen.size, seen.mtime_ns) == (stat.st_size, stat.st_mtime_ns)
            and not (seen.pending and settled)
        ):
            return
        progress = self._progress.setdefault(path, _Progress())
        if progress.position == stat.st_size:
            self._seen[path] = _Seen(stat.st_size, stat.st_mtime_ns, pending=False)
            return
        if progress.position is not None and progress.position > stat.st_size:
            log.warning("%s shrank below what was read; reading it again from the start", path)
            progress.lines, progress.position = 0, 0
        gzipped = path.name.endswith(".gz")
        pending = self._ingest(path, progress, gzipped, settled, stat.st_size, stop)
        self._seen[path] = _Seen(stat.st_size, stat.st_mtime_ns, pending)

    def _ingest(
        self,
        path: Path,
        progress: _Progress,
        gzipped: bool,
        settled: bool,
        size: int,
        stop: threading.Event | None,
    ) -> bool:
        """Append the file's new complete lines.

        Returns whether to look again before the file changes: a plain file's last line waits to
        settle, or ``stop`` cut the work short. A gzip stream cut short waits for a change.
        """
        source = f"{PREFIX}{path}"
        lines_key, bytes_key = (source, "lines"), (source, "bytes")
        batch = Batch(source=source)
        number, position = progress.lines, progress.position
        with _open(path, gzipped) as handle:
            pending = truncated = False
            try:
                if gzipped or position is None:
                    _skip_lines(handle, number)
                    position = None if gzipped else handle.tell()
                else:
                    handle.seek(position)
                for raw in _lines(handle):
                    if not raw.endswith(b"\n") and not gzipped and not settled:
                        pending = True
                        break
                    number += 1
                    if position is not None:
                        position += len(raw)
                    message = raw.rstrip(b"\r\n")
                    if message.strip():
                        self._read_into(batch, message, source, number)
                    if len(batch) >= self.batch_size:
                        self._commit(batch, progress, number, position, lines_key, bytes_key)
                        batch = Batch(source=source)
                        if stop is not None and stop.is_set():
                            return True
            except _Truncated:
                truncated = True
            if gzipped and not truncated:
                position = size
            self._commit(batch, progress, number, position, lines_key, bytes_key)
        return pending

    def _read_into(self, batch: Batch, raw: bytes, source: str, number: int) -> None:
        item = read_message(
            raw,
            source=source,
            location=f"line {number}",
            max_bytes=self.max_message_bytes,
            hash_texts=self.hash_texts,
        )
        batch.add(item)

    def _commit(
        self,
        batch: Batch,
        progress: _Progress,
        lines: int,
        position: int | None,
        lines_key: tuple[str, str],
        bytes_key: tuple[str, str],
    ) -> None:
        """Store a batch with the offsets it reaches; nothing is written when nothing moved."""
        if lines == progress.lines and position in (None, progress.position):
            return
        batch.offsets[lines_key] = lines
        if position is not None:
            batch.offsets[bytes_key] = position
        result = self.store.append(batch)
        progress.lines = lines
        if position is not None:
            progress.position = position
        if self.on_result is not None:
            self.on_result(result)


def _open(path: Path, gzipped: bool) -> BinaryIO:
    """Open a plain or gzip file for reading bytes."""
    return cast(BinaryIO, gzip.open(path, "rb")) if gzipped else path.open("rb")


def _lines(handle: BinaryIO) -> Iterator[bytes]:
    """The handle's lines; a gzip stream cut short ends them with :class:`_Truncated`."""
    while True:
        try:
            raw = handle.readline()
        except _GZIP_ERRORS as exc:
            raise _Truncated(str(exc)) from None
        if not raw:
            return
        yield raw


def _skip_lines(handle: BinaryIO, count: int) -> None:
    """Read past the lines an earlier run consumed (a truncated gzip raises :class:`_Truncated`)."""
    deque(islice(_lines(handle), count), maxlen=0)
