"""Benchmark: sustained Kafka ingest through `prefleak serve` against a raw kafka-python fetch.

Targets (issue "The daemon"): serve ingests at >= 0.75x the rate of a raw kafka-python fetch of the
same topic, measured in the same run; the daemon's resident memory after 1,000,000 ingested verdicts
stays within 100 MB of its memory after 10,000 (its process tree: the validation worker counts).

Both rates are steady-state: from the first message to the last, so connecting and the consumer
group join are not counted against either. The broker is the local Tansu (memory storage).

    python bench/kafka_ingest.py [--events 1000000] [--partitions 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from prefleak.consumers.kafka import produce_events
from prefleak.devbroker import FAST_GROUP, LocalBroker, free_port
from prefleak.simulate import Scenario, simulate

VERDICTS, PROVENANCE = "bench.verdicts", "bench.provenance"


def stream(events: int) -> Iterator[dict[str, Any]]:
    world = simulate(Scenario(seed=3, rounds=events // 80_000 + 1, days=30.0, late_after=None))
    return islice(world, events)


def raw_fetch_rate(servers: list[str], topic: str, partitions: int, expected: int) -> float:
    """Messages/s of a plain consumer reading the whole topic from the beginning."""
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False,
                             max_poll_records=5000, consumer_timeout_ms=30_000)  # fmt: skip
    assignment = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(assignment)
    consumer.seek_to_beginning(*assignment)
    seen, first = 0, 0.0
    while seen < expected:
        batch = consumer.poll(timeout_ms=1000)
        if batch and not first:
            first = time.perf_counter()
        seen += sum(len(records) for records in batch.values())
    elapsed = time.perf_counter() - first
    consumer.close()
    return seen / elapsed


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its descendants (serve's validation worker)."""
    total = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1]) / 1024
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            with contextlib.suppress(OSError):
                total += rss_mib(int(child))
    return total


def serve_rate(servers: list[str], workdir: Path, expected: int) -> tuple[float, float, float]:
    """(messages/s of serve, RSS MiB after 10,000, RSS MiB at the end)."""
    port = free_port()
    env = {
        **os.environ,
        "PREFLEAK_KAFKA__VERDICT_TOPICS": json.dumps([VERDICTS]),
        "PREFLEAK_KAFKA__PROVENANCE_TOPICS": json.dumps([PROVENANCE]),
        "PREFLEAK_KAFKA__CLIENT_OPTIONS": json.dumps(FAST_GROUP),
        "PREFLEAK_LOG_LEVEL": "WARNING",
    }
    daemon = subprocess.Popen(
        [sys.executable, "-m", "prefleak", "serve", "--db", str(workdir / "serve.db"),
         "--kafka", ",".join(servers), "--port", str(port)],
        env=env,
    )  # fmt: skip
    try:
        first = at_10k = 0.0
        rss_10k = 0.0
        while True:
            time.sleep(0.1)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status") as answer:
                    status = json.load(answer)
            except OSError:
                continue
            done = sum(sum(by.values()) for by in status["ingested"].values())
            now = time.perf_counter()
            if done and not first:
                first = now
            if done >= 10_000 and not at_10k:
                at_10k, rss_10k = now, rss_mib(daemon.pid)
            if done >= expected:
                return expected / (now - first), rss_10k, rss_mib(daemon.pid)
    finally:
        daemon.terminate()
        daemon.wait(timeout=15)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalBroker() as broker:
        broker.create_topics({VERDICTS: args.partitions, PROVENANCE: 1})
        events = list(stream(args.events))
        verdicts = sum(e["type"] == "verdict" for e in events)
        started = time.perf_counter()
        produce_events(broker.bootstrap_servers, events,
                       verdict_topic=VERDICTS, provenance_topic=PROVENANCE)  # fmt: skip
        produced = time.perf_counter() - started
        del events
        print(f"produced {args.events:,} events ({verdicts:,} verdicts) in {produced:.1f} s")
        raw = raw_fetch_rate(broker.bootstrap_servers, VERDICTS, args.partitions, verdicts)
        rate, rss_10k, rss_end = serve_rate(broker.bootstrap_servers, Path(tmp), args.events)
    print(f"raw kafka-python fetch: {raw:,.0f} msg/s")
    print(f"prefleak serve ingest:  {rate:,.0f} msg/s (ratio {rate / raw:.2f}, target >= 0.75)")
    print(
        f"serve RSS after 10,000: {rss_10k:.0f} MiB; after {args.events:,}: {rss_end:.0f} MiB "
        f"(growth {rss_end - rss_10k:+.0f} MiB, target < 100)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
