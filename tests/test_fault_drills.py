"""Fault drills: ``prefleak serve`` SIGKILLed at random moments while events arrive, then restarted.

1. A watched directory fills up with a simulated stream split into 10 files (some gzipped), each
   written in chunks (plain chunks end mid-line; gzip chunks end at a sync flush, so the reader
   sees a stream cut short) while the daemon is killed at least 20 times at seeded random moments
   (during startup, ingest or recompute). A last clean run consumes the rest.
2. An at-least-once HTTP client posts NDJSON batches with event ids while the daemon is killed
   mid-stream several times; unacknowledged batches are re-sent after each restart (and a few
   acknowledged ones too, as a client that lost the answer would).

Either way the store must end with every event exactly once: ``event_counts()`` equals the
distinct ids sent, every malformed line is one dead letter, the live projections equal a rebuild
of a copy, and ``prefleak check-db --deep`` passes.
"""

from __future__ import annotations

import gzip
import http.client
import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker import FAST_GROUP, TansuBroker
from prefleak.consumers.kafka import produce_events
from prefleak.simulate import Scenario, simulate
from prefleak.store import EventStore
from services import require_binary, wait_for
from test_daemon import RUNNER, Daemon, _env
from test_kafka_source import expected_counts, produce, provenance_events, verdict_events

pytestmark = pytest.mark.slow

Event = dict[str, Any]
MIN_FILE_KILLS = 20
FILES = 10
HTTP_KILLS = 6
BATCH = 20


def _line(event: Event) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


def _distinct_counts(events: list[Event]) -> dict[str, int]:
    unique = {e["id"]: e["type"] for e in events}
    return dict(sorted(Counter(unique.values()).items()))


def _stored(db: Path) -> int:
    """Events plus dead letters committed so far (0 before the store exists)."""
    if not db.exists():
        return 0
    with sqlite3.connect(db, timeout=30) as reader:
        try:
            (events,) = reader.execute("SELECT count(*) FROM events").fetchone()
            (rejected,) = reader.execute("SELECT count(*) FROM rejected").fetchone()
        except sqlite3.OperationalError:  # killed before the schema was committed
            return 0
    reader.close()
    return int(events) + int(rejected)


def _assert_exactly_once(db: Path, tmp_path: Path, expected: dict[str, int]) -> int:
    """The end state of a drill; returns the number of dead letters."""
    with EventStore(db) as store:
        assert {str(k): int(v) for k, v in store.event_counts().items()} == expected
        rejected = store.rejections()
        assert len({(r.source, r.location) for r in rejected}) == len(rejected)
        live = store.projection_dump()
    copy = tmp_path / f"{db.stem}-copy.db"
    with sqlite3.connect(db) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    source.close()
    target.close()
    with EventStore(copy) as rebuilt:
        assert rebuilt.rebuild() == sum(expected.values())
        assert rebuilt.projection_dump() == live
    checked = subprocess.run(
        [sys.executable, "-m", "prefleak", "check-db", "--db", str(db), "--deep"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return len(rejected)


# -- 1. a watched directory -----------------------------------------------------------------------


def _file_contents(rng: random.Random) -> tuple[dict[str, bytes], list[Event]]:
    """10 files' final bytes (uncompressed) and every event written, duplicates included."""
    events = list(simulate(Scenario(seed=11, prompts_per_benchmark=40)))
    per_file = -(-len(events) // FILES)
    contents: dict[str, bytes] = {}
    written: list[Event] = []
    for i in range(FILES):
        part = events[i * per_file : (i + 1) * per_file]
        if i:  # an at-least-once writer repeats a few events of earlier files
            part = part + rng.sample(events[: i * per_file], 25)
        lines = [_line(e) for e in part]
        lines.insert(rng.randrange(1, len(lines)), b'{"type": "verdict", "broken\n')
        name = f"part-{i:02d}.jsonl" + (".gz" if i % 3 == 2 else "")
        contents[name] = b"".join(lines)
        written.extend(part)
    return contents, written


def _write_files(directory: Path, contents: dict[str, bytes], rng: random.Random) -> None:
    """Write each file in 4 chunks with pauses, cutting plain files mid-line."""
    for name, data in contents.items():
        cuts = sorted(rng.sample(range(1, len(data)), 3))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        path = directory / name
        if name.endswith(".gz"):
            with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as compressed:
                for chunk in chunks:
                    compressed.write(chunk)
                    compressed.flush()  # a sync flush: a valid prefix of a stream cut short
                    raw.flush()
                    time.sleep(rng.uniform(0.2, 0.7))
        else:
            with path.open("ab") as plain:
                for chunk in chunks:
                    plain.write(chunk)
                    plain.flush()
                    time.sleep(rng.uniform(0.2, 0.7))


def _consumed(db: Path, directory: Path) -> bool:
    """Every file's committed byte offset is its size (the compressed size for gzip)."""
    with sqlite3.connect(db, timeout=30) as reader:
        offsets = dict(
            reader.execute(
                "SELECT source, position FROM offsets WHERE partition = 'bytes'"
            ).fetchall()
        )
    reader.close()
    return all(
        offsets.get(f"file:{path.resolve()}") == path.stat().st_size for path in directory.iterdir()
    )


def test_watched_directory_survives_repeated_kill_9(tmp_path: Path) -> None:
    started = time.monotonic()
    rng = random.Random(20261126)
    contents, written = _file_contents(rng)
    expected = _distinct_counts(written)
    incoming, db = tmp_path / "incoming", tmp_path / "files.db"
    incoming.mkdir()
    args = ("--db", str(db), "--watch", str(incoming))
    env = {
        "PREFLEAK_WATCH__POLL_INTERVAL_S": "0.05",
        "PREFLEAK_WATCH__SETTLE_S": "600",  # a half-written line is never taken as a whole one
        "PREFLEAK_RECOMPUTE__INTERVAL_S": "1",
    }
    writer = threading.Thread(
        target=_write_files, args=(incoming, contents, random.Random(rng.random())), daemon=True
    )
    log = (tmp_path / "killed.log").open("ab")
    kills = lives_with_progress = killed_before_listening = 0
    process: subprocess.Popen[bytes] | None = None
    writer.start()
    try:
        # on a loaded machine start-up is slow and many lives die before storing anything: go
        # on until five did, unless every file is already consumed
        while (
            writer.is_alive()
            or kills < MIN_FILE_KILLS
            or (lives_with_progress < 5 and not _consumed(db, incoming))
        ):
            assert time.monotonic() - started < 90, f"only {kills} kills in 90 s"
            before = _stored(db)
            log_start = log.tell()
            process = subprocess.Popen(
                [sys.executable, "-c", RUNNER, "serve", "--port", "0", *args],
                env=_env(**env),
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            time.sleep(rng.uniform(0.1, 1.6))  # startup takes ~0.5-1 s: some die before it ends
            assert process.poll() is None, (tmp_path / "killed.log").read_text()[log_start:]
            process.send_signal(signal.SIGKILL)
            process.wait()
            process = None
            kills += 1
            log.flush()
            tail = (tmp_path / "killed.log").read_bytes()[log_start:]
            killed_before_listening += b"listening on" not in tail
            lives_with_progress += _stored(db) > before
        writer.join()
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    stored_before_final = _stored(db)

    final = Daemon(tmp_path, *args, **env)
    try:
        wait_for(lambda: _consumed(db, incoming), 60, "every file consumed")
        time.sleep(0.3)  # a few more polls: anything more would be a double count
        final.stop()
    finally:
        final.kill()
    dead_letters = _assert_exactly_once(db, tmp_path, expected)
    assert dead_letters == FILES
    with sqlite3.connect(db) as reader:
        files = reader.execute("SELECT count(DISTINCT source) FROM offsets").fetchone()
    reader.close()
    assert files == (FILES,)
    elapsed = time.monotonic() - started
    print(
        f"\nfile drill: {kills} SIGKILLs ({killed_before_listening} before the startup line, "
        f"{lives_with_progress} after committing something); {stored_before_final} of "
        f"{sum(expected.values()) + FILES} rows stored before the clean run; "
        f"{len(written)} lines sent, {sum(expected.values())} distinct; {elapsed:.1f} s"
    )
    assert kills >= MIN_FILE_KILLS
    assert lives_with_progress >= 5
    assert stored_before_final > 0


# -- 2. HTTP, at-least-once -----------------------------------------------------------------------


class _Client:
    """Posts every batch until one answer acknowledges it; re-sends some acknowledged ones."""

    def __init__(self, batches: list[bytes], sizes: list[int], daemons: list[Daemon]) -> None:
        self.batches, self.sizes, self.daemons = batches, sizes, daemons
        self.acked = 0
        self.failed_attempts = 0
        self.accepted = 0
        self.resent_duplicates = 0
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.pause_at: int | None = None
        """The client stops before posting once this many batches are acknowledged..."""
        self.paused = threading.Event()
        self.resume = threading.Event()
        """...until this is set: the drill kills the daemon just after, while the client posts."""
        self.resume.set()

    def _wait_if_paused(self) -> None:
        if self.pause_at is not None and self.acked >= self.pause_at:
            self.paused.set()
            self.resume.wait(60)

    def _post(self, body: bytes) -> dict[str, Any] | None:
        daemon = self.daemons[-1]
        connection = http.client.HTTPConnection(daemon.host, daemon.port, timeout=10)
        try:
            connection.request(
                "POST", "/v1/events", body=body, headers={"Content-Type": "application/x-ndjson"}
            )
            response = connection.getresponse()
            status, answer = response.status, response.read()
        except (OSError, http.client.HTTPException):
            return None
        finally:
            connection.close()
        assert status == 200, answer
        return dict(json.loads(answer))

    def _until_acked(self, body: bytes) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while (answer := self._post(body)) is None:
            self.failed_attempts += 1
            assert time.monotonic() < deadline, "no answer for 30 s"
            time.sleep(0.05)
        return answer

    def run(self) -> None:
        try:
            for k, (body, size) in enumerate(zip(self.batches, self.sizes, strict=True)):
                self._wait_if_paused()
                answer = self._until_acked(body)
                assert answer["rejected"] == 0, answer
                assert answer["accepted"] + answer["duplicate"] == size, answer
                self.accepted += answer["accepted"]
                self.acked += 1
                if k % 10 == 9:  # the answer "got lost": send it again
                    again = self._until_acked(body)
                    assert (again["accepted"], again["duplicate"]) == (0, size), again
                    self.resent_duplicates += size
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()


def test_http_at_least_once_client_survives_kill_9(tmp_path: Path) -> None:
    started = time.monotonic()
    rng = random.Random(9)
    events = list(simulate(Scenario(seed=4, prompts_per_benchmark=12)))
    expected = _distinct_counts(events)
    batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
    db = tmp_path / "http.db"
    args = ("--db", str(db))
    env = {"PREFLEAK_RECOMPUTE__INTERVAL_S": "1"}
    daemons = [Daemon(tmp_path, *args, **env)]
    client = _Client(
        [b"".join(_line(e) for e in batch) for batch in batches],
        [len(batch) for batch in batches],
        daemons,
    )
    poster = threading.Thread(target=client.run, daemon=True)
    poster.start()
    kills = 0
    try:
        for _ in range(HTTP_KILLS):
            # Pause the client a few batches on, then let it go and kill mid-request: every
            # round uses a bounded number of batches, so all the kills happen however fast the
            # machine posts.
            client.resume.clear()
            client.pause_at = client.acked + rng.randint(3, len(batches) // (2 * HTTP_KILLS))
            wait_for(lambda: client.paused.is_set() or client.done.is_set(), 30, "the pause")
            assert not client.done.is_set(), "the client finished before every kill"
            client.paused.clear()
            client.pause_at = None
            client.resume.set()
            time.sleep(rng.uniform(0.0, 0.03))  # mid-request, most likely
            daemons[-1].kill()
            kills += 1
            daemons.append(Daemon(tmp_path, *args, **env))
        assert client.done.wait(60), "the client did not finish"
        assert client.error is None, repr(client.error)
        daemons[-1].stop()
    finally:
        for daemon in daemons:
            daemon.kill()
    assert client.acked == len(batches)
    assert kills == HTTP_KILLS
    assert _assert_exactly_once(db, tmp_path, expected) == 0
    # Batches whose answer a kill swallowed were stored once, then counted as duplicates.
    assert client.accepted <= len(events)
    elapsed = time.monotonic() - started
    print(
        f"\nhttp drill: {kills} SIGKILLs, {client.failed_attempts} posts without an answer "
        f"(re-sent), {len(events) - client.accepted} events stored by a post whose answer was "
        f"lost, {client.resent_duplicates} deliberate duplicates; {len(batches)} batches of "
        f"{BATCH}; {elapsed:.1f} s"
    )


# -- 3. a full disk -------------------------------------------------------------------------------

SMALL_FS_BYTES = 2 * 1024 * 1024
"""Room for a few thousand events: the store fills up part way through the stream."""


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs the test fills; remounted larger to play "the operator freed space"."""
    mount = require_binary("mount", "util-linux")
    where = tmp_path / "small"
    where.mkdir()
    made = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={SMALL_FS_BYTES}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        message = f"cannot mount a small tmpfs (needs root): {made.stderr.strip()}"
        if os.environ.get("PREFLEAK_REQUIRE_SERVICES") == "1" and os.geteuid() == 0:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _grow(where: Path) -> None:
    subprocess.run([*("mount", "-o", "remount,size=64m"), str(where)], check=True)


def test_cli_ingest_to_a_full_disk_fails_cleanly_and_resumes(
    small_fs: Path, tmp_path: Path
) -> None:
    events = list(simulate(Scenario(seed=5, prompts_per_benchmark=40)))
    source = tmp_path / "stream.jsonl"
    source.write_bytes(b"".join(_line(e) for e in events))
    db = small_fs / "ingest.db"
    full = subprocess.run(
        [sys.executable, "-m", "prefleak", "ingest", "--db", str(db), str(source)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert full.returncode == 1, full.stdout + full.stderr
    assert "the disk holding it is full" in full.stderr
    assert "Traceback" not in full.stderr
    _grow(small_fs)
    again = subprocess.run(
        [sys.executable, "-m", "prefleak", "ingest", "--db", str(db), str(source)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    _assert_exactly_once(db, tmp_path, _distinct_counts(events))


def test_serve_refuses_writes_on_a_full_disk_and_recovers(small_fs: Path, tmp_path: Path) -> None:
    """HTTP posts get 507 with the reason, the watched directory waits, readiness says why, the
    process stays up; once space is freed everything re-sent or waiting is stored exactly once,
    without a restart or a repair."""
    events = list(simulate(Scenario(seed=6, prompts_per_benchmark=40)))
    expected = _distinct_counts(events)
    half = len(events) // 2
    batches = [events[i : i + 500] for i in range(0, half, 500)]
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    db = small_fs / "serve.db"
    daemon = Daemon(
        tmp_path,
        *("--db", str(db), "--watch", str(incoming)),
        PREFLEAK_WATCH__POLL_INTERVAL_S="0.1",
        PREFLEAK_WATCH__SETTLE_S="0",
    )
    try:
        refused: list[bytes] = []
        for batch in batches:
            body = b"".join(_line(e) for e in batch)
            if refused:  # once full, every later post is refused too
                refused.append(body)
                continue
            status, answer = daemon.post(body, "application/x-ndjson")
            if status != 200:
                assert status == 507, answer
                assert "the disk holding it is full" in answer["error"]
                assert answer["stored"] == 0
                refused.append(body)
        assert refused, "the small disk never filled"
        (incoming / "rest.jsonl").write_bytes(b"".join(_line(e) for e in events[half:]))
        wait_for(lambda: daemon.value("prefleak_source_up", source="file") == 0.0, 20, "down")
        status, ready = daemon.get_json("/readyz")
        assert status == 503
        assert any("the disk holding it is full" in reason for reason in ready["reasons"])
        failures = daemon.value("prefleak_store_write_failures_total")
        assert failures is not None and failures >= 2  # the refused post and the watcher
        assert daemon.proc.poll() is None

        _grow(small_fs)
        for body in refused:
            status, answer = daemon.post(body, "application/x-ndjson")
            assert status == 200, answer
        wait_for(lambda: daemon.value("prefleak_source_up", source="file") == 1.0, 20, "up")
        wait_for(lambda: daemon.get_json("/readyz")[0] == 200, 20, "ready again")
        wait_for(lambda: _stored(db) == sum(expected.values()), 30, "every event stored")
        daemon.stop()
    finally:
        daemon.kill()
    assert "Traceback" not in daemon.log()
    assert daemon.log().count("the disk holding it is full") >= 1
    assert _assert_exactly_once(db, tmp_path, expected) == 0


# -- 4. broker restarts ---------------------------------------------------------------------------

BROKER_RESTARTS = 5
QUICK_TO_GIVE_UP = {
    "max_block_ms": 3000,
    "request_timeout_ms": 2000,
    "delivery_timeout_ms": 4000,
    "retries": 0,
}
"""A producer whose broker died gives up within seconds (kafka-python waits minutes)."""


def _produce_until(
    broker: TansuBroker, events: list[Event], stop: threading.Event, failures: list[str]
) -> None:
    """Send the stream until ``stop`` (the broker died; after the restart all is re-sent)."""
    try:
        produce_events(
            broker.bootstrap_servers,
            itertools.takewhile(lambda _: not stop.is_set(), events),
            verdict_topic="verdicts",
            provenance_topic="provenance",
            client_options=QUICK_TO_GIVE_UP,
        )
    except Exception as exc:  # what was in flight when the broker went away
        failures.append(type(exc).__name__)


def test_serve_rides_out_repeated_broker_restarts(tmp_path: Path) -> None:
    """The broker is SIGKILLed and restarted 5 times at random moments while ``serve`` consumes;
    Tansu keeps topics in memory, so each restart starts an empty log and the producer re-sends
    the whole stream. The daemon never exits, reports Kafka down during each outage and ends
    with every event exactly once."""
    started = time.monotonic()
    rng = random.Random(5)
    stream = provenance_events() + verdict_events(30_000, prefix="restart")
    expected = expected_counts(stream)
    topics = {"verdicts": 4, "provenance": 1}
    db = tmp_path / "kafka.db"
    with TansuBroker(log_path=tmp_path / "tansu.log") as broker:
        broker.create_topics(topics)
        daemon = Daemon(
            tmp_path,
            *("--db", str(db), "--kafka", broker.bootstrap_servers[0]),
            PREFLEAK_KAFKA__VERDICT_TOPICS='["verdicts"]',
            PREFLEAK_KAFKA__PROVENANCE_TOPICS='["provenance"]',
            PREFLEAK_KAFKA__GROUP_ID="restarts",
            PREFLEAK_KAFKA__MAX_POLL_RECORDS="500",
            PREFLEAK_KAFKA__CLIENT_OPTIONS=json.dumps(FAST_GROUP),
            PREFLEAK_RECOMPUTE__INTERVAL_S="1",
        )
        producer_failures: list[str] = []
        stored_at_restart: list[int] = []
        try:
            for _ in range(BROKER_RESTARTS):
                wait_for(
                    lambda: daemon.value("prefleak_source_up", source="kafka") == 1.0, 60, "up"
                )
                broker_down = threading.Event()
                producer = threading.Thread(
                    target=_produce_until,
                    args=(broker, stream, broker_down, producer_failures),
                    daemon=True,
                )
                producer.start()
                time.sleep(rng.uniform(0.3, 2.0))  # mid-stream, most likely
                broker_down.set()
                broker.stop()
                stored_at_restart.append(_stored(db))
                wait_for(
                    lambda: daemon.value("prefleak_source_up", source="kafka") == 0.0, 30, "down"
                )
                producer.join(timeout=30)
                assert not producer.is_alive()
                time.sleep(rng.uniform(0.2, 1.5))
                broker.start()
                broker.create_topics(topics)
                assert daemon.proc.poll() is None, daemon.log()
            produce(broker, stream)  # the last full delivery
            wait_for(lambda: _stored(db) == sum(expected.values()), 90, "every event stored")
            time.sleep(1.0)  # anything more would be a double count
            daemon.stop()
        finally:
            daemon.kill()
    assert "Traceback" not in daemon.log()
    assert _assert_exactly_once(db, tmp_path, expected) == 0
    assert any(0 < stored < sum(expected.values()) for stored in stored_at_restart)
    print(
        f"\nbroker drill: {BROKER_RESTARTS} restarts; stored before each: {stored_at_restart} "
        f"of {sum(expected.values())}; {len(producer_failures)} producer runs cut short; "
        f"{time.monotonic() - started:.1f} s"
    )
