"""Soak test: minutes of sustained, paced load through Kafka into `prefleak serve`.

Issue "Hardening". A local Tansu broker (memory storage); `prefleak serve --kafka` consumes a
verdict topic of ``--partitions`` partitions and a provenance topic, recomputes every
``--recompute-interval`` seconds and serves /metrics. For ``--minutes`` a producer thread sends
simulated events at ``--rate`` events/s (paced against the wall clock, so a slow broker shows as a
shortfall rather than a burst), a scraper GETs /metrics every ``--scrape-interval`` seconds and
times it, and the serve process's RSS is sampled every 5 s. Afterwards the daemon is given time to
drain; then it is stopped and its store is counted.

Reported: events/s produced and ingested (per minute and overall), consumer lag (summed over
partitions) at the end of production and its maximum, the recomputes and their durations, scrape
latency p50/p99/max, RSS at start and end and its least-squares slope after the first minute, and
whether every produced event is in the store exactly once.

    python bench/soak.py [--minutes 10] [--rate 2000] [--partitions 4] [--scrape-interval 1.0]
                         [--recompute-interval 30] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from prefleak.consumers.kafka import produce_events
from prefleak.devbroker import FAST_GROUP, LocalBroker, free_port
from prefleak.simulate import Scenario, simulate

VERDICTS, PROVENANCE = "soak.verdicts", "soak.provenance"
RSS_EVERY_S = 5.0
EVENTS_PER_ROUND = 80_000  # a little under the ~89,000 of a default round, to be safe
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")

try:
    import psutil
except ImportError:  # the bench needs nothing outside prefleak's dependencies
    psutil = None


def rss_mib(pid: int) -> float:
    if psutil is not None:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@dataclass(slots=True)
class Scrape:
    """What one /metrics scrape found; ``t`` is seconds since production started."""

    t: float
    latency_s: float
    produced: int
    accepted: float
    other_outcomes: float
    lag: float | None
    recomputes: float
    recompute_sum_s: float
    last_recompute: float | None


@dataclass(slots=True)
class Run:
    produced: int = 0
    """Events handed to the Kafka producer so far (the producer thread bumps it)."""
    production_started: float = 0.0
    production_ended: float | None = None
    producer_error: BaseException | None = None
    scrapes: list[Scrape] = field(default_factory=list)
    failed_scrapes: int = 0
    rss: list[tuple[float, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def now(self) -> float:
        return time.perf_counter() - self.production_started


def parse_metrics(text: str) -> dict[str, float | None]:
    """The few samples the soak reads, summed over their labels."""
    accepted = other = lag = count = total = 0.0
    have_lag = False
    last_recompute: float | None = None
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        match = SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.group(1), match.group(2) or "", float(match.group(3))
        if name == "prefleak_events_ingested_total":
            if 'outcome="accepted"' in labels:
                accepted += value
            else:
                other += value
        elif name == "prefleak_consumer_lag_messages":
            lag += value
            have_lag = True
        elif name == "prefleak_recompute_duration_seconds_count":
            count = value
        elif name == "prefleak_recompute_duration_seconds_sum":
            total = value
        elif name == "prefleak_last_recompute_timestamp_seconds":
            last_recompute = value
    return {
        "accepted": accepted,
        "other": other,
        "lag": lag if have_lag else None,
        "count": count,
        "sum": total,
        "last_recompute": last_recompute,
    }


def get(url: str, timeout: float = 30.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        body: bytes = answer.read()
        return body


def scraper(run: Run, url: str, pid: int, interval: float) -> None:
    next_scrape = next_rss = time.perf_counter()
    while not run.stop.is_set():
        started = time.perf_counter()
        if started >= next_rss:
            run.rss.append((run.now(), rss_mib(pid)))
            next_rss += RSS_EVERY_S
        try:
            body = get(url)
        except OSError:
            run.failed_scrapes += 1
        else:
            latency = time.perf_counter() - started
            values = parse_metrics(body.decode())
            run.scrapes.append(
                Scrape(
                    t=run.now(),
                    latency_s=latency,
                    produced=run.produced,
                    accepted=float(values["accepted"] or 0.0),
                    other_outcomes=float(values["other"] or 0.0),
                    lag=values["lag"],
                    recomputes=float(values["count"] or 0.0),
                    recompute_sum_s=float(values["sum"] or 0.0),
                    last_recompute=values["last_recompute"],
                )
            )
        next_scrape += interval
        run.stop.wait(max(0.0, next_scrape - time.perf_counter()))


def paced(run: Run, events: Iterator[dict[str, Any]], rate: float, seconds: float) -> Iterator:
    """``events`` at ``rate`` per second for ``seconds``, counted in ``run.produced``."""
    run.production_started = time.perf_counter()
    deadline = run.production_started + seconds
    for n, event in enumerate(events):
        if n % 50 == 0:
            now = time.perf_counter()
            if now >= deadline or run.stop.is_set():
                break
            ahead = run.production_started + n / rate - now
            if ahead > 0:
                time.sleep(ahead)
        run.produced = n + 1
        yield event
    else:
        raise RuntimeError("the simulated stream ran out before the soak ended")


def producer(run: Run, servers: list[str], rate: float, seconds: float, seed: int) -> None:
    rounds = math.ceil(rate * seconds * 1.2 / EVENTS_PER_ROUND) + 1
    world = simulate(Scenario(seed=seed, rounds=rounds, days=30.0, late_after=None))
    try:
        produce_events(servers, paced(run, world, rate, seconds),
                       verdict_topic=VERDICTS, provenance_topic=PROVENANCE)  # fmt: skip
    except BaseException as error:  # reported at the end
        run.producer_error = error
    finally:
        run.production_ended = run.now()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t, y); None below three points."""
    if len(points) < 3:
        return None
    mean_t = statistics.fmean(t for t, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    den = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (y - mean_y) for t, y in points) / den if den else None


def backlog(scrape: Scrape) -> float:
    """Events handed to the producer and not yet ingested: unlike the lag gauge (high-water mark
    minus position as of the consumer's last fetch), this also counts what arrived since the last
    fetch and what is still in the producer's buffer (linger 20 ms)."""
    return scrape.produced - scrape.accepted - scrape.other_outcomes


def at(scrapes: list[Scrape], t: float) -> Scrape:
    """The last scrape at or before ``t`` (the first one if none is)."""
    best = scrapes[0]
    for scrape in scrapes:
        if scrape.t > t:
            break
        best = scrape
    return best


def wait_ready(url: str, daemon: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError(f"prefleak serve exited with {daemon.returncode}")
        try:
            status = json.loads(get(url + "/v1/status"))
        except OSError:
            time.sleep(0.2)
            continue
        if status["sources"] and all(status["sources"].values()):
            return
        time.sleep(0.2)
    raise RuntimeError("prefleak serve did not come up")


def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    seconds = args.minutes * 60.0
    run = Run()
    db = workdir / "soak.db"
    with LocalBroker() as broker:
        broker.create_topics({VERDICTS: args.partitions, PROVENANCE: 1})
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "PREFLEAK_KAFKA__VERDICT_TOPICS": json.dumps([VERDICTS]),
            "PREFLEAK_KAFKA__PROVENANCE_TOPICS": json.dumps([PROVENANCE]),
            "PREFLEAK_KAFKA__CLIENT_OPTIONS": json.dumps(FAST_GROUP),
            "PREFLEAK_RECOMPUTE__INTERVAL_S": str(args.recompute_interval),
            "PREFLEAK_LOG_LEVEL": "WARNING",
        }
        daemon = subprocess.Popen(
            [sys.executable, "-m", "prefleak", "serve", "--db", str(db),
             "--kafka", ",".join(broker.bootstrap_servers), "--port", str(port)],
            env=env,
        )  # fmt: skip
        try:
            wait_ready(base, daemon)
            time.sleep(3.0)  # the consumer group join on Tansu takes ~2 s
            run.production_started = time.perf_counter()
            threads = [
                threading.Thread(
                    target=producer,
                    args=(run, broker.bootstrap_servers, args.rate, seconds, args.seed),
                    name="producer",
                ),
                threading.Thread(
                    target=scraper,
                    args=(run, base + "/metrics", daemon.pid, args.scrape_interval),
                    name="scraper",
                    daemon=True,
                ),
            ]
            for thread in threads:
                thread.start()
            last_report = 0.0
            while threads[0].is_alive():
                threads[0].join(timeout=5.0)
                if run.scrapes and run.now() - last_report >= 60.0:
                    last_report = run.now()
                    s = run.scrapes[-1]
                    print(f"  t={s.t:5.0f} s produced {s.produced:,} accepted {s.accepted:,.0f} "
                          f"lag {s.lag} rss {run.rss[-1][1]:.0f} MiB", flush=True)  # fmt: skip
            end_of_production = run.production_ended or run.now()
            # drain: until everything produced is accepted and nothing is behind
            drain_deadline = time.perf_counter() + args.drain_timeout
            drained_at = None
            while time.perf_counter() < drain_deadline:
                time.sleep(args.scrape_interval)
                s = run.scrapes[-1]
                if s.accepted + s.other_outcomes >= run.produced and not s.lag:
                    drained_at = s.t
                    break
            time.sleep(2 * args.scrape_interval)
            run.stop.set()
            threads[1].join(timeout=60.0)
            rss_final = rss_mib(daemon.pid)
        finally:
            run.stop.set()
            daemon.terminate()
            daemon.wait(timeout=60)
    with sqlite3.connect(db) as con:
        stored = int(con.execute("SELECT count(*) FROM events").fetchone()[0])
        distinct = int(con.execute("SELECT count(DISTINCT id) FROM events").fetchone()[0])
        rejected = int(con.execute("SELECT count(*) FROM rejected").fetchone()[0])
    return summarise(run, args, end_of_production, drained_at, rss_final, stored, distinct,
                     rejected)  # fmt: skip


def summarise(
    run: Run,
    args: argparse.Namespace,
    end: float,
    drained_at: float | None,
    rss_final: float,
    stored: int,
    distinct: int,
    rejected: int,
) -> dict[str, Any]:
    scrapes = run.scrapes
    minutes = []
    for minute in range(math.ceil(end / 60.0 - 0.05)):  # no row for a sliver past the end
        lo, hi = at(scrapes, minute * 60.0), at(scrapes, min(end, (minute + 1) * 60.0))
        span = hi.t - lo.t
        if span <= 0:
            continue
        minutes.append({
            "minute": minute + 1,
            "produced_per_s": (hi.produced - lo.produced) / span,
            "ingested_per_s": (hi.accepted - lo.accepted) / span,
            "lag_end": hi.lag,
            "max_lag": max((s.lag or 0.0 for s in scrapes if lo.t <= s.t <= hi.t), default=0.0),
            "max_backlog": max(
                (backlog(s) for s in scrapes if lo.t <= s.t <= hi.t), default=0.0
            ),
        })  # fmt: skip
    during = [s for s in scrapes if s.t <= end]
    last = scrapes[-1]
    durations = []
    for before, after in pairwise(scrapes):
        n = after.recomputes - before.recomputes
        if n > 0:
            durations.append((after.recompute_sum_s - before.recompute_sum_s) / n)
    finished = sorted({s.last_recompute for s in scrapes if s.last_recompute is not None})
    gaps = [b - a for a, b in pairwise(finished)]
    latencies = [s.latency_s * 1000 for s in scrapes]
    rss_after_minute = [(t / 60.0, mib) for t, mib in run.rss if 60.0 <= t <= end]
    end_scrape = at(scrapes, end)
    lag_at_end = end_scrape.lag or 0.0
    return {
        "args": vars(args),
        "cores": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "producer_error": repr(run.producer_error) if run.producer_error else None,
        "production_s": end,
        "produced": run.produced,
        "produced_per_s": run.produced / end,
        "ingested_during_production": end_scrape.accepted,
        "ingested_per_s_during_production": end_scrape.accepted / end,
        "drained_after_s": None if drained_at is None else drained_at - end,
        "ingested_per_s_to_drained": last.accepted / (drained_at or last.t),
        "lag_at_end_of_production": lag_at_end,
        "max_lag": max((s.lag or 0.0 for s in during), default=0.0),
        "backlog_at_end_of_production": backlog(end_scrape),
        "max_backlog": max((backlog(s) for s in during), default=0.0),
        "mean_backlog": statistics.fmean(backlog(s) for s in during) if during else 0.0,
        "lag_scrapes_missing": sum(s.lag is None for s in scrapes),
        "per_minute": minutes,
        "recomputes": int(last.recomputes),
        "recompute_durations_s": durations,
        "recompute_gaps_s": gaps,
        "scrapes": len(scrapes),
        "failed_scrapes": run.failed_scrapes,
        "scrape_ms_p50": percentile(latencies, 0.50),
        "scrape_ms_p99": percentile(latencies, 0.99),
        "scrape_ms_max": max(latencies),
        "rss_start_mib": run.rss[0][1],
        "rss_end_of_production_mib": [mib for t, mib in run.rss if t <= end][-1],
        "rss_final_mib": rss_final,
        "rss_slope_mib_per_min": slope(rss_after_minute),
        "accepted_total": last.accepted,
        "other_outcomes_total": last.other_outcomes,
        "stored": stored,
        "stored_distinct_ids": distinct,
        "rejected_rows": rejected,
        "series": [
            [
                round(s.t, 2),
                round(s.latency_s * 1000, 2),
                s.produced,
                s.accepted,
                s.lag,
                s.recomputes,
            ]
            for s in scrapes
        ],
        "rss_series": [[round(t, 1), round(mib, 1)] for t, mib in run.rss],
        "exactly_once": last.accepted == run.produced == stored == distinct
        and last.other_outcomes == 0
        and rejected == 0,
    }


def report(r: dict[str, Any]) -> None:
    a = r["args"]
    load = ", ".join(f"{x:.2f}" for x in r["load_average_at_end"])
    print(f"\nsoak: {a['minutes']} min at a target of {a['rate']:,} events/s, "
          f"{a['partitions']} partitions, recompute every {a['recompute_interval']} s, "
          f"scrape every {a['scrape_interval']} s; {r['cores']} cores, "
          f"load average at the end {load}")  # fmt: skip
    if r["producer_error"]:
        print(f"PRODUCER FAILED: {r['producer_error']}")
    print("minute  produced/s  ingested/s  lag at end  max lag  max backlog")
    for m in r["per_minute"]:
        lag_end = m["lag_end"] or 0
        print(f"{m['minute']:6d}  {m['produced_per_s']:10,.0f}  {m['ingested_per_s']:10,.0f}  "
              f"{lag_end:10,.0f}  {m['max_lag']:7,.0f}  {m['max_backlog']:11,.0f}")  # fmt: skip
    print(f"overall: produced {r['produced']:,} in {r['production_s']:.1f} s = "
          f"{r['produced_per_s']:,.0f}/s; ingested {r['ingested_during_production']:,.0f} during "
          f"production = {r['ingested_per_s_during_production']:,.0f}/s")  # fmt: skip
    drained = r["drained_after_s"]
    kept_up = drained is not None and drained <= 2 * a["scrape_interval"] + 5.0
    print(f"lag at end of production {r['lag_at_end_of_production']:,.0f}, max "
          f"{r['max_lag']:,.0f}; drained "
          + ("never (timeout)" if drained is None else f"{drained:.1f} s after production ended")
          + f"; backlog (produced - ingested) at end {r['backlog_at_end_of_production']:,.0f}, "
          f"mean {r['mean_backlog']:,.0f}, max {r['max_backlog']:,.0f}"
          + f": ingest {'KEPT UP' if kept_up else 'DID NOT KEEP UP'}")  # fmt: skip
    durations = r["recompute_durations_s"]
    if durations:
        print(f"recomputes: {r['recomputes']}; duration min {min(durations):.2f} s, median "
              f"{statistics.median(durations):.2f} s, max {max(durations):.2f} s; first "
              f"{durations[0]:.2f} s, last {durations[-1]:.2f} s")  # fmt: skip
    else:
        print("recomputes: none seen")
    if r["recompute_gaps_s"]:
        gaps = r["recompute_gaps_s"]
        print(f"  time between finished recomputes: min {min(gaps):.1f} s, max {max(gaps):.1f} s")
    print(f"scrapes: {r['scrapes']} ({r['failed_scrapes']} failed); latency p50 "
          f"{r['scrape_ms_p50']:.1f} ms, p99 {r['scrape_ms_p99']:.1f} ms, max "
          f"{r['scrape_ms_max']:.1f} ms")  # fmt: skip
    slope_text = "n/a" if r["rss_slope_mib_per_min"] is None else (
        f"{r['rss_slope_mib_per_min']:+.2f} MiB/min")  # fmt: skip
    print(f"RSS: start {r['rss_start_mib']:.0f} MiB, end of production "
          f"{r['rss_end_of_production_mib']:.0f} MiB, after drain {r['rss_final_mib']:.0f} MiB; "
          f"slope after the first minute {slope_text}")  # fmt: skip
    print(f"exactly once: produced {r['produced']:,}, accepted {r['accepted_total']:,.0f} "
          f"(duplicate/rejected {r['other_outcomes_total']:,.0f}), stored {r['stored']:,} "
          f"({r['stored_distinct_ids']:,} distinct ids, {r['rejected_rows']} dead letters): "
          + ("YES" if r["exactly_once"] else "NO"))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="target events/s")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--scrape-interval", type=float, default=1.0)
    parser.add_argument("--recompute-interval", type=float, default=30.0)
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = soak(args, Path(tmp))
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0 if results["exactly_once"] and not results["producer_error"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
