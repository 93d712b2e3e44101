"""Data retention and privacy: ``prefleak compact`` and hashed texts (docs/storage.md).

Compaction drops the bodies of old verdicts and samples from the event log while every number
prefleak reports stays the same: what they contributed to the projections is kept as a baseline
that :meth:`prefleak.store.EventStore.rebuild` starts from, and their ids stay so a re-sent old
event is still a duplicate. Hashed texts keep the prompts and responses of verdicts out of the
store altogether: :func:`redact` replaces them by ``sha256:<hex>`` where every message passes
(:func:`prefleak.ingest.read_message`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any, Literal

from prefleak.store import HASHED_TEXT_PREFIX, EventStore, StoreError

TextPolicy = Literal["full", "hashed"]

REDACTED_FIELDS: dict[str, tuple[str, ...]] = {"verdict": ("prompt", "response_a", "response_b")}
"""Text fields stored as hashes in hashed mode, by event type. Samples keep their ``text`` and
``prompt``: diversity measures (n-grams, embeddings, coverage) need the words themselves."""


def hash_text(text: str) -> str:
    return HASHED_TEXT_PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest()


def redact(body: bytes) -> bytes:
    """The event JSON with its text fields replaced by ``sha256:<hex>`` of their UTF-8 bytes.

    Idempotent (a hash is not hashed again). Anything that is not a JSON object of a type with
    texts comes back unchanged, for validation to accept or reject as usual.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body
    if not isinstance(data, dict):
        return body
    fields = REDACTED_FIELDS.get(str(data.get("type")), ())
    changed = False
    for name in fields:
        value = data.get(name)
        if isinstance(value, str) and not value.startswith(HASHED_TEXT_PREFIX):
            data[name] = hash_text(value)
            changed = True
    if not changed:
        return body
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# -- compaction -----------------------------------------------------------------------------------


def parse_before(value: str) -> float:
    """``2026-08-01`` or an ISO date-time (UTC when it names no offset) → Unix seconds."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date: {value!r} (use e.g. 2026-08-01 or 2026-08-01T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_age(value: str) -> float:
    """``90d``, ``12w``, ``36h`` or seconds → seconds (positive)."""
    from prefleak.config import parse_duration

    try:
        seconds = float(parse_duration(value))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"not a positive age: {value!r}")
    return seconds


def _cmd_compact(args: argparse.Namespace) -> int:
    from prefleak.config import default_db

    before = args.before if args.before is not None else time.time() - args.older_than
    path = args.db or default_db()
    if not path.exists():
        print(f"prefleak: compact: no event store at {path}", file=sys.stderr)
        return 1
    try:
        with EventStore(path) as store:
            size = path.stat().st_size
            result = store.compact(before, dry_run=args.dry_run)
            if args.vacuum and not args.dry_run:
                store.vacuum()
    except StoreError as exc:
        print(f"prefleak: compact: {exc}", file=sys.stderr)
        return 1
    horizon = datetime.fromtimestamp(result.horizon, UTC).isoformat()
    summary: dict[str, Any] = {
        "schema": "prefleak.compact/1",
        "db": str(path),
        "horizon": horizon,
        "events": result.events,
        "body_bytes": result.body_bytes,
        "dry_run": result.dry_run,
        "file_bytes_before": size,
        "file_bytes_after": path.stat().st_size,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        verb = "would compact" if result.dry_run else "compacted"
        print(
            f"{verb} {result.events:,} events before {horizon} "
            f"({result.body_bytes:,} bytes of bodies); file {size:,} -> "
            f"{summary['file_bytes_after']:,} bytes"
        )
        if not args.vacuum and not args.dry_run and result.events:
            print("  the file shrinks after: prefleak compact --vacuum (or VACUUM)")
    return 0


_COMPACT_DETAILS = """\
Drops the bodies of verdicts and samples whose event time is before the horizon (rounded down
to the hour). Every number prefleak reports stays the same: their projection rows are kept as
the baseline `prefleak rebuild` starts from, and their ids stay, so re-sending them is a
duplicate. Provenance (model, dataset, training) is never compacted. Not reversible: back up
first (`prefleak backup`). --older-than counts back from now (wall clock).

example:
  prefleak compact --older-than 90d --dry-run
  prefleak compact --before 2026-08-01 --vacuum"""


def hash_texts_from_settings() -> bool:
    """``privacy.store_texts`` as ``PREFLEAK_*`` sets it, for ``prefleak ingest`` (which reads no
    config file); settings that do not load mean the default, full texts (``serve`` reports them).
    """
    from prefleak.config import ConfigError, load_settings

    try:
        return load_settings().privacy.hashed
    except ConfigError:
        return False


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``compact``."""
    from prefleak.config import add_db_option

    summary = "Drop old events' bodies from the log; every reported number stays the same."
    compact = commands.add_parser(
        "compact",
        help=summary,
        description=f"{summary}\n\n{_COMPACT_DETAILS}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compact.set_defaults(handler=_cmd_compact)
    add_db_option(compact)
    when = compact.add_mutually_exclusive_group(required=True)
    when.add_argument(
        "--before", type=parse_before, metavar="DATE", help="compact events before this time"
    )
    when.add_argument(
        "--older-than", type=parse_age, metavar="AGE", help="compact events older than 90d, ..."
    )
    compact.add_argument("--dry-run", action="store_true", help="count only, change nothing")
    compact.add_argument(
        "--vacuum", action="store_true", help="then VACUUM, so the file itself shrinks"
    )
    compact.add_argument("--json", action="store_true", help="machine-readable output")
