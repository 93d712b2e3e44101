"""Turning raw messages into store batches: the one path every source (file, HTTP, Kafka) takes."""

from __future__ import annotations

import gzip
import multiprocessing
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import BinaryIO

from prefleak import retention
from prefleak.models.events import EventError, complete, validate
from prefleak.store import AppendResult, Batch, EventStore, Rejection, StoredEvent, prepare

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
    hash_texts: bool = False,
) -> StoredEvent | Rejection:
    """Validate one message; anything invalid becomes a :class:`Rejection` with the reason.

    ``hash_texts`` stores verdicts' texts as hashes (:func:`prefleak.retention.redact`): the
    ``privacy.store_texts: hashed`` setting, which every source passes down.
    """
    if len(raw) > max_bytes:
        return Rejection(
            source, location, raw, f"message of {len(raw)} bytes exceeds the limit of {max_bytes}"
        )
    try:
        event = complete(validate(raw), received_at=received_at)
        if hash_texts:
            body = retention.redact(raw.strip())
            hashed = validate(body).model_copy(update={"id": event.id, "ts": event.ts})
            return prepare(hashed, body, location)  # the id is still the full content's
        return prepare(event, raw.strip(), location)
    except EventError as exc:
        return Rejection(source, location, raw, str(exc))


def read_lines(
    lines: list[bytes],
    first_number: int,
    source: str,
    max_bytes: int,
    received_at: datetime,
    hash_texts: bool = False,
) -> Batch:
    """Validate a chunk of JSONL lines (numbered from ``first_number``) into one batch.

    Blank lines carry nothing and are skipped; every other line ends stored, duplicate or
    rejected with its reason. Module-level so a worker process can run it.
    """
    batch = Batch(source=source)
    for number, line in enumerate(lines, start=first_number):
        raw = line.rstrip(b"\r\n")
        if raw and not raw.isspace():
            batch.add(
                read_message(
                    raw,
                    source=source,
                    location=f"line {number}",
                    max_bytes=max_bytes,
                    received_at=received_at,
                    hash_texts=hash_texts,
                )
            )
    return batch


def kafka_location(partition: int, offset: int) -> str:
    """Where a Kafka message came from, as rejections name it (and dead letters look it up)."""
    return f"partition {partition} offset {offset}"


def read_messages(
    source: str,
    partitions: list[tuple[int, list[int], list[bytes]]],
    max_bytes: int,
    received_at: datetime,
    hash_texts: bool = False,
) -> list[Batch]:
    """Validate one poll's messages of a Kafka topic: one batch per ``(partition, offsets,
    values)``, in that order, without offsets (the caller adds those it still owns).

    Module-level so a worker process can run it; locations name partition and offset.
    """
    batches = []
    for partition, offsets, values in partitions:
        batch = Batch(source=source)
        for offset, value in zip(offsets, values, strict=True):
            batch.add(
                read_message(
                    value,
                    source=source,
                    location=kafka_location(partition, offset),
                    max_bytes=max_bytes,
                    received_at=received_at,
                    hash_texts=hash_texts,
                )
            )
        batch.project()
        batches.append(batch)
    return batches


class Ingestor:
    """Validates messages and appends them to the store in batches.

    With ``workers`` > 0, validation runs in that many other processes while this one writes,
    which nearly doubles the rate of a large file on two cores; results and their order are the
    same either way.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        workers: int = 0,
        hash_texts: bool = False,
    ) -> None:
        self.store = store
        self.batch_size = batch_size
        self.max_message_bytes = max_message_bytes
        self.workers = workers
        self.hash_texts = hash_texts

    def ingest_lines(
        self,
        lines: Iterable[bytes],
        *,
        source: str,
        on_batch: Callable[[AppendResult], None] | None = None,
    ) -> AppendResult:
        """Ingest newline-delimited JSON; locations are 1-based line numbers."""
        total = AppendResult()

        def store(batch: Batch) -> None:
            result = self.store.append(batch)
            total.add(result)
            if on_batch is not None:
                on_batch(result)

        chunks = self._chunks(lines, source)
        if self.workers <= 0:
            for chunk in chunks:
                store(read_lines(*chunk))
            return total
        # fork: the CLI is single-threaded here, and a fork starts in milliseconds
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(self.workers, mp_context=context) as pool:
            pending: deque[Future[Batch]] = deque()
            for chunk in chunks:
                pending.append(pool.submit(read_lines, *chunk))
                if len(pending) > self.workers:  # bounded read-ahead keeps memory flat
                    store(pending.popleft().result())
            while pending:
                store(pending.popleft().result())
        return total

    def _chunks(
        self, lines: Iterable[bytes], source: str
    ) -> Iterator[tuple[list[bytes], int, str, int, datetime, bool]]:
        iterator = iter(lines)
        number = 1
        while chunk := list(islice(iterator, self.batch_size)):
            yield (chunk, number, source, self.max_message_bytes, datetime.now(UTC),
                   self.hash_texts)  # fmt: skip
            number += len(chunk)


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
