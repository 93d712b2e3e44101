"""Events posted over HTTP: one JSON object, a JSON array of objects, or NDJSON.

Every message still goes through :func:`prefleak.ingest.read_message` and one
:meth:`EventStore.append`, so an HTTP event is validated, deduplicated and dead-lettered exactly
like one from a file or Kafka.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from prefleak.ingest import Ingestor, read_message
from prefleak.store import AppendResult, Batch, EventStore, Rejection, StoredEvent

SOURCE = "http"
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/x-jsonlines"})
MAX_ERRORS_SHOWN = 100
"""Rejections listed in one answer; the rest are counted and kept in the dead-letter table."""


@dataclass(slots=True)
class BodyResult:
    """What one POST did: ``not_json`` when nothing in the body was JSON (answered with 400)."""

    result: AppendResult
    not_json: bool = False

    def to_json(self) -> dict[str, object]:
        errors = self.result.errors
        answer: dict[str, object] = {
            "accepted": self.result.accepted,
            "duplicate": self.result.duplicate,
            "rejected": self.result.rejected,
            "errors": [{"location": e.location, "error": e.error} for e in errors][
                :MAX_ERRORS_SHOWN
            ],
        }
        if len(errors) > MAX_ERRORS_SHOWN:
            answer["errors_omitted"] = len(errors) - MAX_ERRORS_SHOWN
        return answer


def _json_error(raw: bytes) -> str | None:
    """Why ``raw`` is not one JSON value, or None when it is."""
    try:
        json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting
        return str(exc)
    return None


def ingest_body(
    store: EventStore,
    body: bytes,
    content_type: str,
    *,
    max_message_bytes: int,
    hash_texts: bool = False,
) -> BodyResult:
    """Validate and store a request body; the format comes from Content-Type or the body itself."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    ingestor = Ingestor(store, max_message_bytes=max_message_bytes, hash_texts=hash_texts)
    if media_type in NDJSON_TYPES:
        return BodyResult(ingestor.ingest_lines(body.splitlines(), source=SOURCE))
    stripped = body.lstrip()
    whole_error = _json_error(body)
    if whole_error is None and stripped.startswith(b"["):
        return BodyResult(_ingest_array(ingestor, body))
    if whole_error is None:
        return BodyResult(_append(store, [_read(body, "item 1", ingestor)]))
    lines = body.splitlines()
    filled = [line for line in lines if line.strip()]
    if len(filled) > 1 and any(_json_error(line) is None for line in filled):
        return BodyResult(ingestor.ingest_lines(lines, source=SOURCE))
    rejection = Rejection(SOURCE, "body", body, f"body is not JSON: {whole_error}")
    return BodyResult(_append(store, [rejection]), not_json=True)


def _read(raw: bytes, location: str, ingestor: Ingestor) -> StoredEvent | Rejection:
    return read_message(
        raw,
        source=SOURCE,
        location=location,
        max_bytes=ingestor.max_message_bytes,
        hash_texts=ingestor.hash_texts,
    )


def _ingest_array(ingestor: Ingestor, body: bytes) -> AppendResult:
    """Each element is re-encoded and read as one message, located as ``item N`` (1-based)."""
    items = json.loads(body)
    messages = [_item(item, f"item {n}", ingestor) for n, item in enumerate(items, start=1)]
    return _append(ingestor.store, messages)


def _item(item: object, location: str, ingestor: Ingestor) -> StoredEvent | Rejection:
    try:
        raw = json.dumps(item, ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate, escaped in the body: keep it escaped
        raw = json.dumps(item).encode()
    except RecursionError:  # decoded a few frames higher up the stack than this
        return Rejection(SOURCE, location, b"", "nested too deeply")
    return _read(raw, location, ingestor)


def _append(store: EventStore, messages: list[StoredEvent | Rejection]) -> AppendResult:
    batch = Batch(source=SOURCE)
    for message in messages:
        batch.add(message)
    return store.append(batch)
