"""Kafka source: verdicts through a consumer group, provenance to every replica, offsets in SQLite.

Why it is built this way (docs/scaling.md has the long version):

* Exactly-once effect without Kafka transactions: every poll becomes one :class:`Batch` per topic
  (records, rejections and the next offset of each partition) appended in ONE SQLite
  transaction. A crash leaves the events and the offsets that cover them together or not at all,
  and on every start or (re)assignment each partition is sought to the offset stored beside the
  events. Kafka's committed offsets are written too, after SQLite, only for external lag tools;
  they are never read back.
* Scale-out: verdict topics are consumed through the consumer group, keyed by the unordered
  candidate pair (:func:`verdict_key`), so every judge's verdicts on one pair land on one replica.
  Provenance (models, datasets, trainings) is small and every replica needs all of it, so each
  replica assigns itself every provenance partition, outside any group.
* Pipelined: the group consumer's polls are validated in a worker process (``workers``) while
  this process fetches the next poll and writes the last one, in poll order; the offsets still go
  into the transaction of the events they cover. A rebalance first writes every validated poll,
  and a poll's partitions that were revoked meanwhile are dropped, never written.
* Lag comes from the fetch high-water mark: some brokers (Tansu 0.6) answer ListOffsets "latest"
  wrongly, so ``end_offsets()`` and ``seek_to_end()`` are never used.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.net.compat import KafkaNetClient
from kafka.structs import OffsetAndMetadata

from prefleak.ingest import MAX_MESSAGE_BYTES, kafka_location, read_messages
from prefleak.models.events import PROVENANCE_TYPES
from prefleak.store import AppendResult, Batch, EventStore, Rejection, StoreWriteError

log = logging.getLogger("prefleak.kafka")

DEFAULT_VERDICT_TOPIC = "prefleak.verdicts"
DEFAULT_PROVENANCE_TOPIC = "prefleak.provenance"
PAIR_SEPARATOR = "\x1f"
"""Joins the two candidates of a verdict key; a control character no model id contains."""

_BACKOFF_START_S = 0.5
_BACKOFF_CAP_S = 10.0
_POLL_MS = 300
"""Longest a poll blocks when there is nothing to read; bounds how fast ``stop`` is noticed."""
_DOWN_GRACE_S = 3.0
"""How long no broker connection is tolerated before the session is torn down and rebuilt."""
_LIVENESS_EVERY_S = 0.5
_PROVENANCE_REFRESH_S = 5.0
"""How often provenance partitions are re-listed, to pick up new topics and partitions."""
_KAFKA_COMMIT_EVERY_S = 5.0
_CLOSE_TIMEOUT_MS = 1500
_DEAD_LETTER_FLUSH_S = 10.0
_PIPELINE_DEPTH = 3
"""Polls on their way through the worker while the oldest is written: the worker validates
while this process fetches and writes, and memory stays bounded (a few MB a poll). Three
ride out the scheduling stalls of a busy machine better than one (docs/benchmarks.md)."""
_PARENT_CHECK_S = 1.0

Partition = tuple[str, int]


def verdict_key(event: Mapping[str, Any]) -> bytes:
    """Message key of a verdict: the unordered candidate pair.

    Both position orders and every judge of one pair then share a partition, hence a replica,
    which is what per-pair statistics (PLS needs both judges of a pair) rely on.
    """
    pair = sorted((str(event["model_a"]), str(event["model_b"])))
    return PAIR_SEPARATOR.join(pair).encode()


def _provenance_key(event: Mapping[str, Any]) -> bytes | None:
    """Key provenance by its subject so the events of one model or dataset stay in order."""
    subject = event.get("model") or event.get("dataset")
    return None if subject is None else str(subject).encode()


def produce_events(
    bootstrap_servers: Sequence[str],
    events: Iterable[Mapping[str, Any] | bytes],
    *,
    verdict_topic: str = DEFAULT_VERDICT_TOPIC,
    provenance_topic: str = DEFAULT_PROVENANCE_TOPIC,
    client_options: Mapping[str, Any] | None = None,
) -> int:
    """Send events the way prefleak expects them; returns how many were sent.

    Verdicts go to ``verdict_topic`` keyed by :func:`verdict_key` (samples too, keyed by their
    dataset, so one dataset's diversity is computed on one replica); provenance events go to
    ``provenance_topic``. Raw ``bytes`` are sent unkeyed to the verdict topic as they are, so tests
    and demos can exercise the dead-letter path. Raises ``RuntimeError`` if any send failed.
    """
    producer = KafkaProducer(
        bootstrap_servers=list(bootstrap_servers),
        linger_ms=20,
        batch_size=256 * 1024,
        acks="all",
        **dict(client_options or {}),
    )
    failures: list[BaseException] = []
    sent = 0
    try:
        for event in events:
            if isinstance(event, bytes):
                future = producer.send(verdict_topic, value=event)
            elif event.get("type") in PROVENANCE_TYPES:
                future = producer.send(
                    provenance_topic, key=_provenance_key(event), value=orjson.dumps(event)
                )
            else:
                key = (
                    str(event["dataset"]).encode()  # one dataset's samples on one replica
                    if event.get("type") == "sample"
                    else verdict_key(event)
                )
                future = producer.send(verdict_topic, key=key, value=orjson.dumps(event))
            future.add_errback(failures.append)
            sent += 1
        producer.flush()
    finally:
        producer.close(timeout=5)
    if failures:
        raise RuntimeError(f"{len(failures)} of {sent} messages were not sent: {failures[0]!r}")
    return sent


class _BrokerLost(Exception):
    """No connection to any broker for longer than the grace period."""


def _source(topic: str) -> str:
    return f"kafka:{topic}"


def _connection_count(consumer: KafkaConsumer) -> float:
    """Open broker connections of a consumer, from its public metrics."""
    metrics: dict[str, dict[str, Any]] = consumer.metrics()
    for group, values in metrics.items():
        if group.endswith("consumer-metrics") and "connection-count" in values:
            return float(values["connection-count"])
    return 1.0  # metrics unavailable: trust kafka-python's own reconnects


class KafkaSource:
    """Consumes prefleak topics into an :class:`EventStore` until told to stop; never raises."""

    def __init__(
        self,
        store: EventStore,
        *,
        bootstrap_servers: list[str],
        verdict_topics: list[str] | None = None,
        provenance_topics: list[str] | None = None,
        group_id: str = "prefleak",
        dead_letter_topic: str | None = None,
        max_poll_records: int = 5000,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        hash_texts: bool = False,
        client_options: dict[str, Any] | None = None,
        on_result: Callable[[AppendResult], None] | None = None,
        workers: int = 1,
    ) -> None:
        self.store = store
        self.bootstrap_servers = list(bootstrap_servers)
        self.verdict_topics = (
            [DEFAULT_VERDICT_TOPIC] if verdict_topics is None else list(verdict_topics)
        )
        self.provenance_topics = (
            [DEFAULT_PROVENANCE_TOPIC] if provenance_topics is None else list(provenance_topics)
        )
        self.group_id = group_id
        self.dead_letter_topic = dead_letter_topic
        self.max_poll_records = max_poll_records
        self.max_message_bytes = max_message_bytes
        self.hash_texts = hash_texts
        self.client_options = dict(client_options or {})
        self.on_result = on_result
        self.workers = workers
        """Processes that validate verdict polls; 0 validates them in the consuming thread."""
        self._pool: ProcessPoolExecutor | None = None
        self._up = False
        self._lag: dict[Partition, int] = {}
        self._state_lock = threading.Lock()

    # -- what the daemon reads --------------------------------------------------------------

    @property
    def up(self) -> bool:
        """Connected to the broker with consumers running."""
        return self._up

    def lag(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> high-water mark minus next offset to read, from the last fetch."""
        with self._state_lock:
            return dict(self._lag)

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; any failure is logged and retried with backoff."""
        delay = _BACKOFF_START_S
        try:
            self._run(stop, delay)
        finally:
            self._close_pool()
        log.info("kafka: stopped")

    def _run(self, stop: threading.Event, delay: float) -> None:
        while not stop.is_set():
            session: _Session | None = None
            try:
                session = _Session(self, self._validator())
                session.run(stop)
            except _BrokerLost:
                log.warning("kafka: no broker connection for %.0f s; reconnecting", _DOWN_GRACE_S)
            except (KafkaError, OSError) as exc:  # broker down or unreachable: no traceback
                log.warning("kafka: %s: %s", type(exc).__name__, exc)
            except StoreWriteError as exc:  # the messages stay in Kafka: resume from the offsets
                log.error("kafka: %s; resuming from the stored offsets", exc)
            except BrokenProcessPool as exc:
                log.error("kafka: the validation worker died (%s); starting another", exc)
                self._close_pool()
            except Exception:
                log.exception("kafka: source failed; resuming from the stored offsets")
            finally:
                self._up = False
                if session is not None:
                    if session.was_up:
                        delay = _BACKOFF_START_S
                    session.close()
            if stop.is_set():
                break
            log.info("kafka: retrying in %.1f s", delay)
            stop.wait(delay)
            delay = min(delay * 2, _BACKOFF_CAP_S)

    def _validator(self) -> ProcessPoolExecutor | None:
        """The validation worker pool, started once per :meth:`run` (again if it broke).

        Spawned, not forked: ``serve`` runs other threads, and a fork copies their locks.
        """
        if self.workers <= 0:
            return None
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(os.getpid(),),
            )
        return self._pool

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _consumer_config(self) -> dict[str, Any]:
        """Defaults that make the loop responsive, then the caller's options on top."""
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "allow_auto_create_topics": False,
            "max_poll_records": self.max_poll_records,
            "max_partition_fetch_bytes": max(1 << 20, self.max_message_bytes + 4096),
            "bootstrap_timeout_ms": 2000,
            "reconnect_backoff_max_ms": int(_BACKOFF_CAP_S * 1000),
            "metadata_max_age_ms": 30_000,
            **self.client_options,
        }

    def client_options_for_producer(self) -> dict[str, Any]:
        """The caller's options a producer accepts (TLS, SASL, client id), consumer-only dropped."""
        return {k: v for k, v in self.client_options.items() if k in KafkaProducer.DEFAULT_CONFIG}

    def _set_lag(self, values: Mapping[Partition, int], drop: Iterable[Partition] = ()) -> None:
        with self._state_lock:
            self._lag.update(values)
            for key in drop:
                self._lag.pop(key, None)


def _make_consumer(config: dict[str, Any]) -> KafkaConsumer:
    """A KafkaConsumer whose network thread is closed again when construction fails.

    kafka-python 3 starts its IO thread before bootstrapping; a failed bootstrap (broker down)
    would otherwise leak one thread per retry.
    """
    clients: list[KafkaNetClient] = []

    def factory(**kwargs: Any) -> KafkaNetClient:
        client = KafkaNetClient(**kwargs)
        clients.append(client)
        return client

    try:
        return KafkaConsumer(**config, kafka_client=factory)
    except BaseException:
        for client in clients:
            try:
                client.close()
            except Exception:
                log.debug("kafka: closing a half-built client failed", exc_info=True)
        raise


def _worker_init(parent: int) -> None:
    """In a validation worker: leave Ctrl-C to the service, and exit when the service is gone
    (killed with SIGKILL, it cannot shut its pool down). What it imported stays out of the
    collector's full passes, as in the service."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.freeze()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_CHECK_S)
        os._exit(0)

    threading.Thread(target=watch, name="prefleak-parent-watch", daemon=True).start()


@dataclass(slots=True)
class _Job:
    """One poll's messages of one topic, on their way to the store."""

    topic: str
    parts: list[tuple[TopicPartition, list[Any]]]
    """The messages of each partition, in offset order."""
    validated: Future[list[Batch]]
    """One batch per part, from the worker (or already done, when validated in place)."""
    consumer: KafkaConsumer
    grouped: bool
    """From the group consumer: parts whose partition was revoked meanwhile are dropped."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Writes what was validated, then seeks every newly assigned verdict partition to the
    offset stored with its events."""

    def __init__(self, session: _Session) -> None:
        self.session = session

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.session.drain()  # the polls of partitions still ours go in before they leave
        self.session.forget(revoked)

    def on_partitions_lost(self, lost: Iterable[TopicPartition]) -> None:
        self.session.forget(lost)  # another replica may own them already: write nothing more

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        consumer = self.session.group
        assert consumer is not None
        self.session.drain()
        self.session.seek_stored(consumer, assigned)


class _Session:
    """One connected life of a :class:`KafkaSource`: its consumers, from connect to close."""

    def __init__(self, source: KafkaSource, validator: ProcessPoolExecutor | None) -> None:
        self.source = source
        self.validator = validator
        self.was_up = False
        self.group: KafkaConsumer | None = None
        self.provenance: KafkaConsumer | None = None
        self._dead_letters: KafkaProducer | None = None
        self._next: dict[TopicPartition, int] = {}
        self._owned: set[TopicPartition] = set()
        self._pending: deque[_Job] = deque()
        """The group consumer's polls being validated, oldest first; written in this order."""
        self._lock = threading.RLock()
        """Held while a poll's records are stored, so a rebalance never seeks under a batch."""
        self._to_commit: dict[TopicPartition, int] = {}
        self._last_commit = time.monotonic()
        self._last_live = time.monotonic()
        self._last_liveness_check = 0.0
        self._last_refresh = 0.0
        self._stop = threading.Event()
        self._ended = threading.Event()
        self._failure: BaseException | None = None
        config = source._consumer_config()
        try:
            if source.provenance_topics:
                self.provenance = _make_consumer({**config, "group_id": None})
            if source.verdict_topics:
                self.group = _make_consumer({**config, "group_id": source.group_id})
                self.group.subscribe(topics=source.verdict_topics, listener=_Rebalance(self))
        except BaseException:
            self.close()
            raise
        with source._state_lock:  # partitions of the last session may belong to others now
            source._lag.clear()
        log.info(
            "kafka: connected to %s (verdicts %s in group %r, provenance %s)",
            ",".join(source.bootstrap_servers),
            source.verdict_topics,
            source.group_id,
            source.provenance_topics,
        )

    # -- positions --------------------------------------------------------------------------

    def seek_stored(self, consumer: KafkaConsumer, partitions: Iterable[TopicPartition]) -> None:
        """Seek to the stored next offset, or to the beginning of a partition never read here."""
        with self._lock:
            stored = self.source.store.offsets()
            for tp in partitions:
                position = stored.get((_source(tp.topic), str(tp.partition)))
                if position is None:
                    consumer.seek_to_beginning(tp)
                    self._next.pop(tp, None)
                else:
                    consumer.seek(tp, position)
                    self._next[tp] = position
                self._owned.add(tp)
                where = "the beginning" if position is None else f"offset {position}"
                log.info("kafka: %s[%d] starts at %s", tp.topic, tp.partition, where)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop the state of partitions this replica no longer owns."""
        gone = list(partitions)
        with self._lock:
            for tp in gone:
                self._next.pop(tp, None)
                self._to_commit.pop(tp, None)
                self._owned.discard(tp)
        self.source._set_lag({}, drop=[(tp.topic, tp.partition) for tp in gone])

    def _refresh_provenance(self) -> None:
        """Assign every partition of every provenance topic (new ones start at their stored
        offset or the beginning)."""
        consumer = self.provenance
        assert consumer is not None
        self._last_refresh = time.monotonic()
        wanted = {
            TopicPartition(topic, p)
            for topic in self.source.provenance_topics
            for p in consumer.partitions_for_topic(topic)
        }
        current = set(consumer.assignment())
        if wanted == current:
            return
        consumer.assign(sorted(wanted))
        self.forget(current - wanted)
        # kafka-python keeps positions of partitions that stay assigned
        self.seek_stored(consumer, wanted - current)

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Poll each consumer in its own thread until ``stop``; raise what ended the session.

        The group consumer gets a thread of its own that is (almost) always inside ``poll()``:
        kafka-python 3.0 throws away a group join that completes while no ``poll()`` is waiting
        on it and joins again, which with a second consumer polled in between kept a replica
        rejoining forever.
        """
        self._stop = stop
        helpers = []
        if self.group is not None and self.provenance is not None:
            helper = threading.Thread(
                target=self._guarded, args=(self._provenance_loop,), name="prefleak-kafka-lineage"
            )
            helper.start()
            helpers.append(helper)
        try:
            if self.group is not None:
                self._group_loop()
                self.drain()  # stopping: what was polled and validated is written
            else:
                self._provenance_loop()
        finally:
            self._ended.set()
            for helper in helpers:
                helper.join()
        if self._failure is not None:
            raise self._failure

    def _running(self) -> bool:
        if self._failure is not None:
            raise self._failure
        return not (self._stop.is_set() or self._ended.is_set())

    def _guarded(self, loop: Callable[[], None]) -> None:
        """Run a helper loop; its failure ends the whole session."""
        try:
            loop()
        except BaseException as exc:
            self._failure = exc
        finally:
            self._ended.set()

    def _group_loop(self) -> None:
        consumer = self.group
        assert consumer is not None
        while self._running():
            self._check_liveness()
            self._poll(consumer, _POLL_MS)
            self._maybe_commit_to_kafka()

    def _provenance_loop(self) -> None:
        consumer = self.provenance
        assert consumer is not None
        alone = self.group is None
        while self._running():
            if alone:
                self._check_liveness()
            if time.monotonic() - self._last_refresh > _PROVENANCE_REFRESH_S:
                self._refresh_provenance()
            self._poll(consumer, _POLL_MS)

    def _check_liveness(self) -> None:
        now = time.monotonic()
        if now - self._last_liveness_check < _LIVENESS_EVERY_S:
            return
        self._last_liveness_check = now
        consumers = [c for c in (self.group, self.provenance) if c is not None]
        if all(_connection_count(c) > 0 for c in consumers):
            self._last_live = now
            if not self.source._up:
                log.info("kafka: up")
            self.source._up = self.was_up = True
        elif now - self._last_live > _DOWN_GRACE_S:
            raise _BrokerLost
        elif self.source._up:
            log.warning("kafka: lost the broker connection")
            self.source._up = False

    def _poll(self, consumer: KafkaConsumer, timeout_ms: int) -> None:
        """One poll: hand its messages on (one job per topic), write what is due, update lag.

        The group consumer's polls are validated by the worker, if there is one, and written
        in poll order as soon as they are validated, or at the latest once
        :data:`_PIPELINE_DEPTH` younger polls are on their way; an empty poll writes everything,
        so nothing waits while the topic is idle.
        """
        polled: dict[TopicPartition, list[Any]] = consumer.poll(
            timeout_ms=timeout_ms, max_records=self.source.max_poll_records
        )
        grouped = consumer is self.group
        if polled:
            jobs = self._jobs(consumer, polled, grouped)
            if grouped:
                with self._lock:
                    self._pending.extend(jobs)
            else:
                for job in jobs:
                    self._write(job)
        if grouped:
            self._write_pending(_PIPELINE_DEPTH if polled and self.validator else 0)
        with self._lock:
            lag: dict[Partition, int] = {}
            for tp in consumer.assignment():
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    lag[(tp.topic, tp.partition)] = max(0, highwater - self._next.get(tp, 0))
        self.source._set_lag(lag)

    def _jobs(
        self, consumer: KafkaConsumer, polled: Mapping[TopicPartition, list[Any]], grouped: bool
    ) -> list[_Job]:
        """Group a poll by topic and start validating it (in the worker for the group's)."""
        source = self.source
        received_at = datetime.now(UTC)
        by_topic: dict[str, list[tuple[TopicPartition, list[Any]]]] = {}
        for tp, messages in polled.items():
            if messages:
                by_topic.setdefault(tp.topic, []).append((tp, messages))
        jobs = []
        for topic, parts in by_topic.items():
            args = (
                _source(topic),
                [(tp.partition, [m.offset for m in ms], [m.value or b"" for m in ms])
                 for tp, ms in parts],
                source.max_message_bytes,
                received_at,
                source.hash_texts,
            )  # fmt: skip
            validated: Future[list[Batch]]
            if grouped and self.validator is not None:
                validated = self.validator.submit(read_messages, *args)
            else:
                validated = Future()
                validated.set_result(read_messages(*args))
            jobs.append(_Job(topic, parts, validated, consumer, grouped))
        return jobs

    def drain(self) -> None:
        """Write every poll on its way (before a rebalance, and when stopping)."""
        self._write_pending(0)

    def _write_pending(self, keep: int) -> None:
        """Write the oldest pending polls until ``keep`` are left, and any further ones already
        validated (a slow trickle of messages waits for no younger polls); after a failed write
        the rest are dropped unwritten (they are read again from the stored offsets)."""
        with self._lock:
            while len(self._pending) > keep or (
                self._pending and self._pending[0].validated.done()
            ):
                job = self._pending.popleft()
                try:
                    self._write(job)
                except BaseException:
                    for dropped in self._pending:
                        dropped.validated.cancel()
                    self._pending.clear()
                    raise

    def _write(self, job: _Job) -> None:
        """Store one job in one transaction with the next offset of each of its partitions."""
        source = self.source
        name = _source(job.topic)
        batch = Batch(source=name, projection=[])
        with self._lock:
            batches = job.validated.result()
            written: list[tuple[TopicPartition, int]] = []
            for (tp, messages), part in zip(job.parts, batches, strict=True):
                if job.grouped and tp not in self._owned:
                    log.info("kafka: %s[%d] was revoked; not writing its last poll", *tp)
                    continue
                batch.records.extend(part.records)
                batch.rejections.extend(part.rejections)
                if batch.projection is not None and part.projection is not None:
                    batch.projection.extend(part.projection)  # a key twice adds up in SQLite
                else:
                    batch.projection = None
                written.append((tp, messages[-1].offset + 1))
                batch.offsets[(name, str(tp.partition))] = messages[-1].offset + 1
            if not written:
                return
            result = source.store.append(batch)
            if result.errors and source.dead_letter_topic:
                self._dead_letter(result.errors, job, batch)
            lag: dict[Partition, int] = {}
            for tp, position in written:
                self._next[tp] = self._to_commit[tp] = position
                highwater = job.consumer.highwater(tp)
                if highwater is not None:
                    lag[(tp.topic, tp.partition)] = max(0, highwater - position)
            source._set_lag(lag)
        if source.on_result is not None:
            try:
                source.on_result(result)
            except Exception:
                log.exception("kafka: on_result callback failed")

    def _dead_letter(self, rejections: Sequence[Rejection], job: _Job, batch: Batch) -> None:
        """Copy rejected messages to the dead-letter topic; the store's copy is the truth."""
        topic = self.source.dead_letter_topic
        assert topic is not None
        where = {
            kafka_location(tp.partition, m.offset) + batch.source: (tp, m.offset, m.key)
            for tp, messages in job.parts
            for m in messages
        }
        try:
            if self._dead_letters is None:
                self._dead_letters = KafkaProducer(
                    bootstrap_servers=self.source.bootstrap_servers,
                    linger_ms=5,
                    max_request_size=max(1 << 20, self.source.max_message_bytes * 2),
                    **self.source.client_options_for_producer(),
                )
            for rejection in rejections:
                origin = where.get(rejection.location + rejection.source)
                headers = [("prefleak-error", rejection.error.encode())]
                key = None
                if origin is not None:
                    tp, offset, key = origin
                    headers += [
                        ("prefleak-topic", tp.topic.encode()),
                        ("prefleak-partition", str(tp.partition).encode()),
                        ("prefleak-offset", str(offset).encode()),
                    ]
                else:  # an id conflict found by the store: name the batch's source
                    headers.append(("prefleak-source", batch.source.encode()))
                self._dead_letters.send(topic, key=key, value=rejection.raw, headers=headers)
            self._dead_letters.flush(timeout=_DEAD_LETTER_FLUSH_S)
        except Exception:
            log.exception(
                "kafka: %d rejected messages not copied to %s (they are in the store)",
                len(rejections),
                topic,
            )

    def _maybe_commit_to_kafka(self) -> None:
        """Mirror stored offsets to Kafka for external lag tools; never read back."""
        if self.group is None or not self._to_commit:
            return
        if time.monotonic() - self._last_commit < _KAFKA_COMMIT_EVERY_S:
            return
        self._last_commit = time.monotonic()
        with self._lock:
            owned = set(self.group.assignment())
            offsets = {
                tp: OffsetAndMetadata(pos, "", -1)
                for tp, pos in self._to_commit.items()
                if tp in owned
            }
            self._to_commit.clear()
        if offsets:
            try:
                self.group.commit_async(offsets=offsets, callback=_log_commit)
            except Exception:
                log.debug("kafka: offset commit to the broker failed", exc_info=True)

    def close(self) -> None:
        """Close everything; bounded, so ``run`` returns promptly after ``stop``."""
        for consumer in (self.group, self.provenance):
            if consumer is not None:
                try:
                    consumer.close(autocommit=False, timeout_ms=_CLOSE_TIMEOUT_MS)
                except Exception:
                    log.debug("kafka: consumer close failed", exc_info=True)
        if self._dead_letters is not None:
            try:
                self._dead_letters.close(timeout=_CLOSE_TIMEOUT_MS / 1000)
            except Exception:
                log.debug("kafka: dead-letter producer close failed", exc_info=True)


def _log_commit(offsets: object, response: object) -> None:
    if isinstance(response, Exception):
        log.debug("kafka: offset commit to the broker failed: %r", response)
