"""The bounded, replayable sample of each dataset: a bottom-k sketch over event ids.

Per (dataset, window) the store keeps the :data:`SAMPLE_CAPACITY` samples whose event id hashes
lowest. That is a uniform sample without replacement, and a function of the *set* of events only:
replay in any order, duplicates or a rebuild give exactly the same rows. Bottom-k sketches merge:
the k lowest of a union of windows are among the k lowest of each window, so any k up to the
capacity, over any run of windows, is read exactly from the stored rows.
"""

from __future__ import annotations

import hashlib
from typing import Final, NamedTuple

SAMPLE_CAPACITY: Final = 1000
"""Samples kept per dataset and window; memory and disk never grow with the events of a window."""

WINDOW_S: Final = 86_400
"""Tumbling windows of event time (UTC days); coarser windows are unions of these."""


def priority(event_id: str) -> int:
    """Rank of an event in the sketch: 63 bits of BLAKE2b of its id (fits SQLite's INTEGER)."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def window_start(ts: float) -> int:
    """Start (Unix seconds) of the window an event time falls in."""
    return int(ts // WINDOW_S) * WINDOW_S


class Sample(NamedTuple):
    """One stored sample: the event's id, time and sketch priority, and what it says."""

    id: str
    ts: float
    priority: int
    text: str
    prompt: str | None
    label: str | None
    model: str | None
