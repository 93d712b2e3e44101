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
from dataclasses import dataclass
from datetime import datetime
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


@dataclass
class ServeRun:
    """Serve's steady-state rate and its process tree's resident memory (MiB)."""

    rate: float
    rss_10k: float
    rss_end: float
    """When the last message was stored (a recompute may be running then)."""
    rss_settled: float
    """After the first recompute that started once every message was stored had finished."""
    rss_peak: float
    """The most seen in samples every 0.1 s, from the first message to the settled one."""


def serve_rate(servers: list[str], workdir: Path, expected: int) -> ServeRun:
    """Serve's rate and memory over the whole stream (see :class:`ServeRun`)."""
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
        rss_10k = peak = 0.0
        rate = rss_end = 0.0
        ended_at = 0.0  # wall clock when the last message was stored
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
            if first:
                peak = max(peak, rss_mib(daemon.pid))
            if done >= 10_000 and not at_10k:
                at_10k, rss_10k = now, rss_mib(daemon.pid)
            if done >= expected and not ended_at:
                rate, rss_end = expected / (now - first), rss_mib(daemon.pid)
                ended_at = time.time()
            recompute = status.get("recompute") or {}
            if ended_at and _started(recompute) > ended_at:
                return ServeRun(rate, rss_10k, rss_end, rss_mib(daemon.pid), peak)
    finally:
        daemon.terminate()
        daemon.wait(timeout=15)


def _started(recompute: dict[str, Any]) -> float:
    """Wall-clock start of the recompute that ``/v1/status`` describes (0 before the first)."""
    finished = recompute.get("finished_at")
    if not finished:
        return 0.0
    when = datetime.fromisoformat(finished.replace("Z", "+00:00")).timestamp()
    return when - float(recompute.get("duration_s", 0.0))


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
        run = serve_rate(broker.bootstrap_servers, Path(tmp), args.events)
    print(f"raw kafka-python fetch: {raw:,.0f} msg/s")
    print(
        f"prefleak serve ingest:  {run.rate:,.0f} msg/s (ratio {run.rate / raw:.2f}, "
        "target >= 0.75)"
    )
    print(
        f"serve RSS after 10,000: {run.rss_10k:.0f} MiB; after {args.events:,}: "
        f"{run.rss_settled:.0f} MiB once the next recompute had finished (growth "
        f"{run.rss_settled - run.rss_10k:+.0f} MiB, target < 100); when the last message was "
        f"stored {run.rss_end:.0f} MiB ({run.rss_end - run.rss_10k:+.0f}); peak "
        f"{run.rss_peak:.0f} MiB ({run.rss_peak - run.rss_10k:+.0f}, during a recompute)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
