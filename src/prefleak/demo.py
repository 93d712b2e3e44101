"""`prefleak demo`: the whole service on one machine, fed a live stream with known leakage.

Starts a local Kafka-protocol broker (Tansu, from the ``demo`` extra), ``prefleak serve`` reading
from it, and a producer that sends the simulated world's events in real time; prints where the
metrics are and a short live summary. Ctrl-C (or ``--duration``) stops all of it cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from prefleak.devbroker import FAST_GROUP, LocalBroker
from prefleak.simulate import Scenario, simulate

VERDICT_TOPIC, PROVENANCE_TOPIC = "prefleak.verdicts", "prefleak.provenance"
VERDICT_PARTITIONS = 4


@dataclass(frozen=True)
class DemoOptions:
    """What the demo runs; the defaults are the README's main command."""

    db: Path = Path("demo.db")
    port: int = 9464
    rate: float = 2000.0
    """Events produced per second."""
    duration: float | None = None
    """Seconds to run; None runs until Ctrl-C."""
    seed: int = 1
    leakage: float = 1.0
    summary_every: float = 5.0
    recompute_interval: float = 5.0


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.load(response)


def _paced(
    events: Iterator[dict[str, Any]], rate: float, stop: threading.Event
) -> Iterator[dict[str, Any]]:
    """Events at ``rate`` per second, stamped with the time they are sent, until ``stop``."""
    started = time.monotonic()
    for sent, event in enumerate(events):
        if stop.is_set():
            return
        delay = started + sent / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield {**event, "ts": datetime.now(UTC).isoformat()}


def summary_line(status: dict[str, Any], pls: dict[str, Any] | None) -> str:
    """One line for a person watching: how much came in and what leaks most."""
    ingested = sum(n for by_outcome in status["ingested"].values() for n in by_outcome.values())
    store = status.get("store") or {}
    events = sum((store.get("events") or {}).values())
    rows = [] if pls is None else [r for r in pls["pls"] if r["pls"] is not None]
    significant = [r for r in rows if r["ci_low"] is not None and r["ci_low"] > 0]
    line = (
        f"{ingested:,} events ingested since start ({events:,} stored at the last recompute), "
        f"{store.get('dead_letters', 0)} dead letters; "
        f"{len(significant)} of {len(rows)} PLS rows significant"
    )
    if significant:
        top = max(significant, key=lambda r: r["ci_low"])
        line += (
            f"; strongest: {top['judge_i']} vs {top['judge_j']} on {top['benchmark']} "
            f"PLS {100 * top['pls']:.1f}% [{100 * top['ci_low']:.1f}, {100 * top['ci_high']:.1f}]"
        )
    return line


def _report_until(base: str, options: DemoOptions, stop: threading.Event, out: IO[str]) -> None:
    while not stop.wait(options.summary_every):
        try:
            status = _get_json(f"{base}/v1/status")
            pls = _get_json(f"{base}/v1/pls") if status.get("recompute") else None
        except OSError as exc:
            print(f"[demo] the service did not answer: {exc}", file=out, flush=True)
            continue
        print(f"[demo] {summary_line(status, pls)}", file=out, flush=True)


def _wait_healthy(base: str, daemon: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError(f"prefleak serve exited with code {daemon.returncode}")
        try:
            _get_json(f"{base}/v1/status")
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"prefleak serve did not answer on {base} within {timeout:.0f} s")


def run_demo(options: DemoOptions, out: IO[str] = sys.stdout) -> int:
    """Run broker, service and producer until Ctrl-C or ``options.duration``; returns 0."""
    from prefleak.consumers.kafka import produce_events

    stop = threading.Event()
    with LocalBroker() as broker:
        broker.create_topics({VERDICT_TOPIC: VERDICT_PARTITIONS, PROVENANCE_TOPIC: 1})
        servers = ",".join(broker.bootstrap_servers)
        env = {
            **os.environ,
            "PREFLEAK_RECOMPUTE__INTERVAL_S": str(options.recompute_interval),
            "PREFLEAK_KAFKA__CLIENT_OPTIONS": json.dumps(FAST_GROUP),
            "PREFLEAK_LOG_LEVEL": os.environ.get("PREFLEAK_LOG_LEVEL", "WARNING"),
        }
        daemon = subprocess.Popen(
            [sys.executable, "-m", "prefleak", "serve", "--db", str(options.db),
             "--kafka", servers, "--port", str(options.port)],
            env=env, start_new_session=True,
        )  # fmt: skip
        base = f"http://127.0.0.1:{options.port}"
        reporter = threading.Thread(target=_report_until, args=(base, options, stop, out))
        timer = None
        try:
            _wait_healthy(base, daemon)
            print(
                f"[demo] Kafka broker at {servers}; prefleak serve reads {VERDICT_TOPIC} and "
                f"{PROVENANCE_TOPIC} into {options.db}\n"
                f"[demo] metrics: {base}/metrics   PLS table: {base}/v1/pls   "
                f"status: {base}/v1/status\n"
                f"[demo] producing {options.rate:,.0f} events/s with injected leakage "
                f"x{options.leakage}; Ctrl-C stops everything",
                file=out,
                flush=True,
            )
            reporter.start()
            if options.duration is not None:
                timer = threading.Timer(options.duration, stop.set)
                timer.start()
            scenario = Scenario(seed=options.seed, leakage=options.leakage, rounds=1000)
            produce_events(
                broker.bootstrap_servers,
                _paced(simulate(scenario), options.rate, stop),
                verdict_topic=VERDICT_TOPIC,
                provenance_topic=PROVENANCE_TOPIC,
            )
        except KeyboardInterrupt:
            print("\n[demo] stopping", file=out, flush=True)
        finally:
            stop.set()
            if timer is not None:
                timer.cancel()
            if reporter.is_alive():
                reporter.join()
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
    print(f"[demo] stopped; the events stay in {options.db} (prefleak report --db {options.db})",
          file=out, flush=True)  # fmt: skip
    return 0
