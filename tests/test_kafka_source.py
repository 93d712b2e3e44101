"""KafkaSource against a real Kafka-protocol broker (Tansu, see tests/broker.py); no mocks.

What is checked: the end-to-end path with dead letters, validation in a worker process equal to
validation in place (and a killed worker replaced without loss), lag from the fetch high-water
mark, a broker that is down at start, a broker that dies mid-stream and comes back (nothing
lost), two replicas splitting the verdict partitions while each holds all provenance (and one
taking over the other's partitions by replaying them), and a consumer process SIGKILLed mid-
stream several times over 100k messages with duplicates and malformed ones (exact counts at the
end).
"""

from __future__ import annotations

import contextlib
import functools
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

pytest.importorskip("kafka")

from kafka import KafkaConsumer, TopicPartition

from broker import FAST_GROUP, TansuBroker
from prefleak.consumers.kafka import KafkaSource, produce_events, verdict_key
from prefleak.lineage import Lineage
from prefleak.models.events import PROVENANCE_TYPES
from prefleak.report import PLSRow, pls_table
from prefleak.stats.cells import Cells
from prefleak.store import AppendResult, EventStore
from services import wait_for

SRC = Path(__file__).resolve().parents[1] / "src"
TS = "2025-03-01T12:00:00+00:00"
JUDGES = ("judge-gpt", "judge-claude", "judge-gemini")
STUDENTS = ("student-a", "student-b", "student-c", "student-d", "student-e", "student-f")

Event = dict[str, Any]


# -- a tiny stream generator (independent of prefleak.simulate on purpose) ----------------------


def provenance_events() -> list[Event]:
    """Judges, datasets they wrote and students trained on them: 3 + 3 + 6 + 6 events."""
    events: list[Event] = []
    for judge in JUDGES:
        events.append({"type": "model", "id": f"m-{judge}", "ts": TS, "model": judge})
        events.append(
            {"type": "dataset", "id": f"d-{judge}", "ts": TS, "dataset": f"data-{judge}",
             "generator": judge}
        )  # fmt: skip
    for i, student in enumerate(STUDENTS):
        judge = JUDGES[i % len(JUDGES)]
        events.append({"type": "model", "id": f"m-{student}", "ts": TS, "model": student})
        events.append(
            {"type": "training", "id": f"t-{student}", "ts": TS, "model": student,
             "base": "base-llm", "method": "sft",
             "datasets": [{"dataset": f"data-{judge}", "share": 1.0}]}
        )  # fmt: skip
    return events


def verdict_events(count: int, *, seed: int = 0, prefix: str = "v") -> list[Event]:
    """``count`` distinct verdicts between random student pairs, with explicit ids."""
    rng = random.Random(seed)
    events = []
    for i in range(count):
        a, b = rng.sample(STUDENTS, 2)
        events.append(
            {"type": "verdict", "id": f"{prefix}-{i}", "ts": TS, "benchmark": "bench",
             "prompt_id": f"p{i // 6}", "judge": JUDGES[i % 3], "model_a": a, "model_b": b,
             "winner": rng.choice(("a", "b", "tie"))}
        )  # fmt: skip
    return events


def malformed_messages(count: int, *, seed: int = 1) -> list[bytes]:
    """Distinct bad messages: broken JSON, a wrong enum, invalid UTF-8, an unknown type."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        kind = rng.randrange(4)
        if kind == 0:
            out.append(b'{"type": "verdict", "id": "bad-json-%d", ' % i)
        elif kind == 1:
            out.append(
                b'{"type": "verdict", "id": "bad-enum-%d", "benchmark": "b", "prompt_id": "p",'
                b' "judge": "j", "model_a": "x", "model_b": "y", "winner": "c"}' % i
            )
        elif kind == 2:
            out.append(b'{"type": "model", "id": "bad-utf8-%d", "model": "\xff\xfe"}' % i)
        else:
            out.append(b'{"type": "rumour", "id": "bad-type-%d"}' % i)
    return out


# -- helpers -------------------------------------------------------------------------------------


@contextlib.contextmanager
def running(source: KafkaSource) -> Iterator[threading.Event]:
    """Run a source in a thread; on exit stop it and check it returned within 5 s."""
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(stop,), name="kafka-source", daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        started = time.monotonic()
        thread.join(timeout=10)
        took = time.monotonic() - started
        assert not thread.is_alive(), "KafkaSource.run did not return after stop"
        assert took < 5, f"KafkaSource.run took {took:.1f} s to stop"


def pls_rows(store: EventStore) -> list[PLSRow]:
    lineage = Lineage.from_events(store.events(PROVENANCE_TYPES))
    return pls_table(Cells.from_rows(store.verdict_rows()), lineage, n_bootstrap=50, min_prompts=1)


def make_source(broker: TansuBroker, store: EventStore, **kwargs: Any) -> KafkaSource:
    kwargs.setdefault("verdict_topics", ["verdicts"])
    kwargs.setdefault("provenance_topics", ["provenance"])
    kwargs.setdefault("client_options", dict(FAST_GROUP))
    return KafkaSource(store, bootstrap_servers=broker.bootstrap_servers, **kwargs)


def produce(broker: TansuBroker, events: list[Any]) -> None:
    produce_events(
        broker.bootstrap_servers, events, verdict_topic="verdicts", provenance_topic="provenance"
    )


def counts(store: EventStore) -> dict[str, int]:
    return {str(k): int(v) for k, v in store.event_counts().items()}


def expected_counts(events: list[Event]) -> dict[str, int]:
    unique = {e["id"]: e["type"] for e in events}
    return dict(sorted(Counter(unique.values()).items()))


def verdict_partitions(source: KafkaSource) -> set[int]:
    return {p for (topic, p) in source.lag() if topic == "verdicts"}


def validation_workers(pid: int) -> list[int]:
    """Live processes the process ``pid`` spawned to validate messages (multiprocessing's
    ``spawn_main``; its resource tracker is not one)."""
    workers = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in children.read_text().split():
                with contextlib.suppress(OSError):
                    command = Path(f"/proc/{child}/cmdline").read_bytes()
                    state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
                    spawned = b"spawn_main" in command and b"resource_tracker" not in command
                    if spawned and state != "Z":
                        workers.append(int(child))
    return workers


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def dead(pids: list[int]) -> bool:
    return not any(map(alive, pids))


def zero_lag(source: KafkaSource) -> bool:
    return set(source.lag().values()) == {0}


def holds_at_least(store: EventStore, count: int) -> bool:
    return sum(counts(store).values()) >= count


def mixed_stream(count: int) -> tuple[list[Event], list[bytes], list[Any]]:
    """Provenance, ``count`` verdicts, re-sent verdicts and malformed messages, interleaved."""
    provenance = provenance_events()
    verdicts = verdict_events(count)
    bad = malformed_messages(count // 100)
    stream: list[Any] = list(provenance)
    for i, verdict in enumerate(verdicts):
        stream.append(verdict)
        if i % 10 == 5:
            stream.append(verdicts[i - 3])  # an at-least-once producer re-sends one
        if i % 100 == 50:
            stream.append(bad[i // 100])
    return provenance + verdicts, bad, stream


def stored_state(store: EventStore) -> tuple[Any, ...]:
    """Everything a source writes, in a form two stores can be compared by."""
    rejected = sorted((r.source, r.location, r.error, r.raw) for r in store.rejections())
    return counts(store), store.offsets(), rejected, store.projection_dump()


# -- fast tests ----------------------------------------------------------------------------------


def test_verdict_key_is_the_unordered_pair() -> None:
    ab = {"model_a": "llama", "model_b": "gpt"}
    ba = {"model_a": "gpt", "model_b": "llama"}
    assert verdict_key(ab) == verdict_key(ba) == b"gpt\x1fllama"


def test_end_to_end_with_dead_letters(tansu_broker: TansuBroker, tmp_path: Path) -> None:
    broker = tansu_broker
    broker.create_topics({"verdicts": 3, "provenance": 2, "dead": 1})
    events = provenance_events() + verdict_events(300)
    bad = malformed_messages(6)
    produce(broker, [*events[:150], *bad, *events[150:]])
    results: list[AppendResult] = []
    with EventStore(tmp_path / "store.db") as store:
        source = make_source(broker, store, dead_letter_topic="dead", on_result=results.append)
        with running(source):
            wait_for(lambda: counts(store) == expected_counts(events), 20, "all events")
            wait_for(lambda: store.rejected_count() == len(bad), 5, "the rejections")
            assert source.up
            wait_for(lambda: set(source.lag().values()) == {0}, 5, "zero lag")
            assert {k for k in source.lag() if k[0] == "provenance"} == {
                ("provenance", 0),
                ("provenance", 1),
            }
        assert not source.up
        assert sum(r.accepted for r in results) == len(events)

        rejected = store.rejections()
        assert sorted(r.raw for r in rejected) == sorted(bad)
        for row in rejected:
            assert row.source == "kafka:verdicts"
            assert row.location.startswith("partition ") and " offset " in row.location
        # the offsets stored with the events are "next offset to read" per partition
        offsets = store.offsets()
        assert sum(v for (s, _), v in offsets.items() if s == "kafka:verdicts") == 306
        assert sum(v for (s, _), v in offsets.items() if s == "kafka:provenance") == 18

    # every rejected message was also copied to the dead-letter topic, with its origin
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, enable_auto_commit=False)
    consumer.assign([TopicPartition("dead", 0)])
    consumer.seek(TopicPartition("dead", 0), 0)
    dead: list[Any] = []
    deadline = time.monotonic() + 10
    while len(dead) < len(bad) and time.monotonic() < deadline:
        for messages in consumer.poll(timeout_ms=200).values():
            dead.extend(messages)
    consumer.close()
    assert sorted(m.value for m in dead) == sorted(bad)
    by_location = {r.location: r for r in rejected}
    for message in dead:
        headers = {k: v.decode() for k, v in message.headers}
        assert headers["prefleak-topic"] == "verdicts"
        location = f"partition {headers['prefleak-partition']} offset {headers['prefleak-offset']}"
        assert by_location[location].raw == message.value
        assert headers["prefleak-error"] == by_location[location].error


def test_lag_comes_from_the_high_water_mark(tansu_broker: TansuBroker, tmp_path: Path) -> None:
    broker = tansu_broker
    broker.create_topics({"verdicts": 1, "provenance": 1})
    verdicts = verdict_events(1000)
    provenance = provenance_events()
    produce(broker, provenance + verdicts)
    seen: list[tuple[dict[tuple[str, int], int], dict[tuple[str, str], int]]] = []
    with EventStore(tmp_path / "store.db") as store:

        def snapshot(result: AppendResult) -> None:
            seen.append((source.lag(), store.offsets()))

        source = make_source(broker, store, max_poll_records=100, on_result=snapshot)
        with running(source):
            wait_for(lambda: sum(counts(store).values()) == 1018, 20, "all events")
            wait_for(lambda: source.lag() == {("verdicts", 0): 0, ("provenance", 0): 0}, 5, "0")
    assert len(seen) >= 10
    # after every poll: lag = high-water mark (messages in the partition) - next offset to read
    for lag, offsets in seen:
        for (topic, partition), value in lag.items():
            total = len(verdicts) if topic == "verdicts" else len(provenance)
            assert value == total - offsets.get((f"kafka:{topic}", str(partition)), 0)
    assert max(lag[("verdicts", 0)] for lag, _ in seen if ("verdicts", 0) in lag) >= 800


def test_broker_down_at_start(tmp_path: Path) -> None:
    broker = TansuBroker(log_path=tmp_path / "tansu.log")  # not started yet
    events = provenance_events() + verdict_events(200)
    try:
        with EventStore(tmp_path / "store.db") as store:
            source = make_source(broker, store)
            with running(source):
                time.sleep(1.5)
                assert not source.up
                broker.start()
                broker.create_topics({"verdicts": 2, "provenance": 1})
                produce(broker, events)
                wait_for(lambda: counts(store) == expected_counts(events), 30, "all events")
                assert source.up
    finally:
        broker.stop()
    # the failed connection attempts left no kafka-python network threads behind
    wait_for(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("kafka-io")],
        5,
        "kafka-python threads to end",
    )


def test_a_validation_worker_stores_what_validating_in_place_stores(
    tansu_broker: TansuBroker, tmp_path: Path
) -> None:
    """Validated in a worker process (the default) or in the consuming thread, a stream with
    duplicates and malformed messages ends as the same events, rejections (with partition and
    offset), offsets and projection."""
    broker = tansu_broker
    broker.create_topics({"verdicts": 3, "provenance": 1})
    events, bad, stream = mixed_stream(3000)
    produce(broker, stream)
    states = []
    for workers in (1, 0):
        with EventStore(tmp_path / f"workers-{workers}.db") as store:
            source = make_source(
                broker, store, group_id=f"w{workers}", max_poll_records=250, workers=workers
            )
            with running(source):
                wait_for(lambda: counts(store) == expected_counts(events), 30, "all events")
                wait_for(lambda: store.rejected_count() == len(bad), 10, "the rejections")
                wait_for(functools.partial(zero_lag, source), 10, "zero lag")
            states.append(stored_state(store))
            live = store.projection_dump()
            store.rebuild()
            assert store.projection_dump() == live  # each verdict projected exactly once
    assert states[0] == states[1]
    assert sum(v for (s, _), v in states[0][1].items() if s == "kafka:verdicts") == len(stream) - 18


# -- slow tests ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_validation_worker_is_replaced_and_nothing_is_lost(
    tansu_broker: TansuBroker, tmp_path: Path
) -> None:
    """SIGKILL the worker that validates the polls, twice, while it has polls on the way: the
    source starts another, resumes from the stored offsets, and counts every message once."""
    broker = tansu_broker
    broker.create_topics({"verdicts": 2, "provenance": 1})
    events, bad, stream = mixed_stream(20_000)
    produce(broker, stream)
    with EventStore(tmp_path / "store.db") as store:

        def slow_down(result: AppendResult) -> None:
            time.sleep(0.02)  # a few thousand messages a second: the kills land mid-stream

        source = make_source(broker, store, max_poll_records=100, on_result=slow_down)
        killed: list[int] = []
        with running(source):
            for threshold in (3000, 9000):
                at_least = functools.partial(holds_at_least, store, threshold)
                wait_for(at_least, 60, f"{threshold} stored")
                worker = wait_for(lambda: validation_workers(os.getpid()), 10, "a worker")[0]
                os.kill(worker, signal.SIGKILL)
                killed.append(worker)
                wait_for(functools.partial(dead, [worker]), 5, "the worker to die")
            wait_for(lambda: counts(store) == expected_counts(events), 90, "every event")
            wait_for(lambda: store.rejected_count() == len(bad), 10, "every rejection")
            assert source.up
            workers = validation_workers(os.getpid())
            assert workers and not set(workers) & set(killed)  # another one took over
        time.sleep(0.5)  # anything more would be a double count
        assert counts(store) == expected_counts(events)
        assert Counter(r.raw for r in store.rejections()) == Counter(bad)
        live = store.projection_dump()
        store.rebuild()
        assert store.projection_dump() == live
    wait_for(lambda: not validation_workers(os.getpid()), 10, "the worker to end with the source")


@pytest.mark.slow
def test_broker_down_mid_stream_loses_nothing(tmp_path: Path) -> None:
    """Kill the broker while the consumer is half way, restart it (memory storage: empty), let
    the producer re-send the whole stream, and check every event is stored exactly once."""
    events = provenance_events() + verdict_events(6000)
    expected = expected_counts(events)
    with (
        TansuBroker(log_path=tmp_path / "tansu.log") as broker,
        EventStore(tmp_path / "store.db") as store,
    ):
        broker.create_topics({"verdicts": 2, "provenance": 1})
        produce(broker, events)
        went_down = threading.Event()

        def slow_down(result: AppendResult) -> None:
            time.sleep(0.05)  # ~4000 msg/s, so the kill lands mid-stream

        source = make_source(broker, store, max_poll_records=200, on_result=slow_down)
        with running(source):
            wait_for(lambda: sum(counts(store).values()) >= 1500, 20, "a first part")
            broker.stop()
            stored_at_kill = sum(counts(store).values())
            wait_for(lambda: not source.up, 10, "the source to notice")
            went_down.set()
            time.sleep(1.0)
            broker.start()
            broker.create_topics({"verdicts": 2, "provenance": 1})
            produce(broker, events)  # the producer re-sends everything; ids dedupe
            wait_for(lambda: counts(store) == expected, 45, "all events after the outage")
            assert source.up
        assert stored_at_kill < sum(expected.values())
        assert store.rejected_count() == 0
        stored_ids = {e.id for e in store.events(["verdict"])}
        assert stored_ids == {e["id"] for e in events if e["type"] == "verdict"}


@pytest.mark.slow
def test_two_replicas_split_verdicts_and_share_provenance(
    tansu_broker: TansuBroker, tmp_path: Path
) -> None:
    broker = tansu_broker
    broker.create_topics({"verdicts": 4, "provenance": 2})
    provenance = provenance_events()
    verdicts = verdict_events(400)
    produce(broker, provenance)
    with (
        EventStore(tmp_path / "a.db") as store_a,
        EventStore(tmp_path / "b.db") as store_b,
    ):
        a = make_source(broker, store_a, group_id="replicas")
        b = make_source(broker, store_b, group_id="replicas")
        with running(a) as stop_a, running(b) as stop_b:

            def split() -> bool:
                pa, pb = verdict_partitions(a), verdict_partitions(b)
                return bool(pa) and bool(pb) and not pa & pb and pa | pb == {0, 1, 2, 3}

            wait_for(split, 30, "the group to split the verdict partitions")
            produce(broker, verdicts)

            def both_done() -> bool:
                ca, cb = counts(store_a), counts(store_b)
                return ca.get("verdict", 0) + cb.get("verdict", 0) == len(verdicts)

            wait_for(both_done, 20, "all verdicts across the replicas")

            def has_all_provenance(store: EventStore) -> bool:
                lineage = {k: v for k, v in counts(store).items() if k != "verdict"}
                return lineage == expected_counts(provenance)

            for store in (store_a, store_b):
                wait_for(
                    functools.partial(has_all_provenance, store), 10, "provenance on every replica"
                )
            ids_a = {e.id for e in store_a.events(["verdict"])}
            ids_b = {e.id for e in store_b.events(["verdict"])}
            assert ids_a and ids_b and not ids_a & ids_b
            assert ids_a | ids_b == {v["id"] for v in verdicts}
            # one candidate pair lives on one replica, whatever the judge or order
            pairs_a = {verdict_key(v) for v in verdicts if v["id"] in ids_a}
            pairs_b = {verdict_key(v) for v in verdicts if v["id"] in ids_b}
            assert not pairs_a & pairs_b

            # PLS is per candidate pair, and a pair lives on one replica: the union of the
            # replicas' PLS tables is a single replica's table
            with EventStore(tmp_path / "single.db") as store_single:
                single = make_source(broker, store_single, group_id="single")
                with running(single):
                    wait_for(
                        lambda: counts(store_single) == expected_counts(provenance + verdicts),
                        30,
                        "a single replica to read everything",
                    )
                union = pls_rows(store_a) + pls_rows(store_b)
                assert union
                assert sorted(union, key=repr) == sorted(pls_rows(store_single), key=repr)

            # B leaves: A takes B's partitions over and replays them from the start of the log
            stop_b.set()
            wait_for(lambda: counts(store_a).get("verdict", 0) == len(verdicts), 30, "takeover")
            # Tansu may rebalance once more when B's session expires; the group settles on A
            wait_for(lambda: verdict_partitions(a) == {0, 1, 2, 3}, 30, "A owning every partition")
            assert not stop_a.is_set()


@pytest.mark.slow
def test_kill_9_mid_stream_counts_every_event_once(
    tansu_broker: TansuBroker, tmp_path: Path
) -> None:
    broker = tansu_broker
    broker.create_topics({"verdicts": 4, "provenance": 2})
    rng = random.Random(7)
    provenance = provenance_events()
    verdicts = verdict_events(90_000)
    bad = malformed_messages(1000)
    stream: list[Any] = list(provenance)
    for i, verdict in enumerate(verdicts):
        stream.append(verdict)
        if i % 10 == 5:  # an at-least-once producer re-sends a recent verdict
            stream.append(verdicts[rng.randrange(max(0, i - 50), i + 1)])
        if i % 90 == 45:
            stream.append(bad[i // 90])
    assert len(stream) > 100_000
    db = tmp_path / "store.db"
    EventStore(db).close()
    # the real daemon, recomputing every second while it ingests, killed with SIGKILL
    command = [
        *(sys.executable, "-m", "prefleak", "serve", "--port", "0"),
        *("--db", str(db), "--kafka", broker.bootstrap_servers[0]),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "PREFLEAK_KAFKA__VERDICT_TOPICS": '["verdicts"]',
        "PREFLEAK_KAFKA__PROVENANCE_TOPICS": '["provenance"]',
        "PREFLEAK_KAFKA__GROUP_ID": "crash",
        "PREFLEAK_KAFKA__MAX_POLL_RECORDS": "1000",
        "PREFLEAK_KAFKA__CLIENT_OPTIONS": json.dumps(FAST_GROUP),
        "PREFLEAK_RECOMPUTE__INTERVAL_S": "1",
    }
    log = (tmp_path / "serve.log").open("ab")

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, stdout=log, stderr=log, env=env)

    reader = sqlite3.connect(db)

    def stored() -> int:
        (events,) = reader.execute("SELECT count(*) FROM events").fetchone()
        (rejected,) = reader.execute("SELECT count(*) FROM rejected").fetchone()
        return int(events) + int(rejected)

    def stored_at_least(count: int) -> bool:
        return stored() >= count

    producer = threading.Thread(target=produce, args=(broker, stream), daemon=True)
    producer.start()
    process = spawn()
    kills = 0
    try:
        for threshold in (12_000, 40_000, 70_000):
            wait_for(functools.partial(stored_at_least, threshold), 60, f"{threshold} stored")
            workers = validation_workers(process.pid)
            assert workers
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            kills += 1
            # its validation worker notices and exits: nothing is left behind to write
            wait_for(functools.partial(dead, workers), 5, "the orphaned worker to exit")
            process = spawn()
        producer.join(timeout=60)
        expected = len(provenance) + len(verdicts) + len(bad)
        wait_for(lambda: stored() == expected, 90, "every message stored once")
        time.sleep(1.0)  # anything more would be a double count
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
        reader.close()
    assert kills == 3
    with EventStore(db) as store:
        assert counts(store) == expected_counts(provenance + verdicts)
        rejected = store.rejections()
        assert Counter(r.raw for r in rejected) == Counter(bad)  # each exactly once
        assert len({(r.source, r.location) for r in rejected}) == len(bad)
        # the projections were applied exactly once too: recomputing them from the log agrees
        live = store.projection_dump()
        assert store.rebuild() == len(provenance) + len(verdicts)
        assert store.projection_dump() == live
