"""Turning raw messages into store batches: the one path every source (file, HTTP, Kafka) takes."""

from __future__ import annotations

import gzip
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from prefleak.models.events import EventError, Record, to_record
from prefleak.store import AppendResult, Batch, EventStore, Rejection

MAX_MESSAGE_BYTES = 1024 * 1024
"""Default size limit of one message; larger ones are rejected without being parsed."""

DEFAULT_BATCH_SIZE = 5_000


def read_message(
    raw: bytes,
    *,
    source: str,
    location: str,
    max_bytes: int = MAX_MESSAGE_BYTES,
    received_at: datetime | None = None,
) -> Record | Rejection:
    """Validate one message; anything invalid becomes a :class:`Rejection` with the reason."""
    if len(raw) > max_bytes:
        return Rejection(
            source, location, raw, f"message of {len(raw)} bytes exceeds the limit of {max_bytes}"
        )
    try:
        return to_record(raw, location=location, received_at=received_at)
    except EventError as exc:
        return Rejection(source, location, raw, str(exc))


class Ingestor:
    """Validates messages and appends them to the store in batches."""

    def __init__(
        self,
        store: EventStore,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.store = store
        self.batch_size = batch_size
        self.max_message_bytes = max_message_bytes

    def ingest_lines(
        self,
        lines: Iterable[bytes],
        *,
        source: str,
        on_batch: Callable[[AppendResult], None] | None = None,
    ) -> AppendResult:
        """Ingest newline-delimited JSON; locations are 1-based line numbers.

        Blank lines are skipped (they carry nothing); every other line ends stored, duplicate or
        rejected with its reason.
        """
        total = AppendResult()
        batch = Batch(source=source)
        received_at = datetime.now(UTC)
        for number, line in enumerate(lines, start=1):
            raw = line.rstrip(b"\r\n")
            if not raw or raw.isspace():
                continue
            item = read_message(
                raw,
                source=source,
                location=f"line {number}",
                max_bytes=self.max_message_bytes,
                received_at=received_at,
            )
            if isinstance(item, Record):
                batch.records.append(item)
            else:
                batch.rejections.append(item)
            if len(batch.records) + len(batch.rejections) >= self.batch_size:
                self._flush(batch, total, on_batch)
                batch = Batch(source=source)
                received_at = datetime.now(UTC)
        if len(batch):
            self._flush(batch, total, on_batch)
        return total

    def _flush(
        self,
        batch: Batch,
        total: AppendResult,
        on_batch: Callable[[AppendResult], None] | None,
    ) -> None:
        result = self.store.append(batch)
        total.add(result)
        if on_batch is not None:
            on_batch(result)


@contextmanager
def open_lines(path: str) -> Iterator[BinaryIO]:
    """Open a ``.jsonl`` or ``.jsonl.gz`` file (``-`` for stdin) for reading lines as bytes."""
    if path == "-":
        yield sys.stdin.buffer
        return
    if path.endswith(".gz"):
        with gzip.open(path, "rb") as compressed:
            yield compressed  # type: ignore[misc]
    else:
        with Path(path).open("rb") as plain:
            yield plain
