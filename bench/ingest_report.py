"""Benchmark: `prefleak ingest` against a raw baseline, and `prefleak report` at two sizes.

Targets (issue "Core"): ingest of 1,000,000 verdict lines at >= 0.5x the rate of a raw baseline
measured in the same run (json.loads of each line plus one executemany insert of the raw rows into
SQLite); report over those verdicts in < 2 s including bootstrap CIs, with peak memory that does
not grow with the number of verdicts once projections exist. The report runs twice: the first
after the ingest reads the projection's rows and seals its closed hours (docs/storage.md), the
second, the figure, reads them sealed, as every later report does.

Every figure comes from a separate child process (so peak RSS is that step's own), run in turn.

    python bench/ingest_report.py [--verdicts 1000000] [--small 100000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from itertools import islice
from pathlib import Path

from prefleak.simulate import Scenario, simulate

BASELINE = """
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[2])
db.execute("PRAGMA journal_mode = WAL")
db.execute("CREATE TABLE raw (line BLOB)")
rows = []
with open(sys.argv[1], "rb") as lines:
    for line in lines:
        json.loads(line)
        rows.append((line,))
db.executemany("INSERT INTO raw VALUES (?)", rows)
db.commit()
"""


def write_stream(path: Path, verdicts: int) -> int:
    """Provenance plus ``verdicts`` verdict lines of the simulated world, re-judged in rounds."""
    rounds = verdicts // 80_000 + 1
    events = simulate(Scenario(seed=11, rounds=rounds, days=30.0, late_after=None))
    written = 0
    with path.open("w") as out:
        for event in islice(events, verdicts + 100):
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
            written += event["type"] == "verdict"
            if written >= verdicts:
                break
    return written


_WRAPPER = """
import resource, subprocess, sys, time
started = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
wall = time.perf_counter() - started
print(wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of one child process, measured by a fresh parent."""
    out = subprocess.run([sys.executable, "-c", _WRAPPER, *argv], capture_output=True, check=True)
    wall, peak_kib = out.stdout.split()
    return float(wall), int(peak_kib) / 1024


def measure(workdir: Path, verdicts: int) -> dict[str, float]:
    stream = workdir / f"stream-{verdicts}.jsonl"
    lines = write_stream(stream, verdicts)
    prefleak = [sys.executable, "-m", "prefleak"]
    raw_db, db = workdir / f"raw-{verdicts}.db", workdir / f"prefleak-{verdicts}.db"
    base_s, _ = timed([sys.executable, "-c", BASELINE, str(stream), str(raw_db)])
    ingest_s, ingest_mib = timed([*prefleak, "ingest", "--db", str(db), str(stream)])
    report = [*prefleak, "report", "--db", str(db), "--json"]
    first_s, first_mib = timed(report)  # reads the rows and seals the closed hours
    report_s, report_mib = timed(report)  # what every later report costs
    return {
        "first_report_s": first_s,
        "first_report_peak_mib": first_mib,
        "verdicts": lines,
        "baseline_rate": lines / base_s,
        "ingest_rate": lines / ingest_s,
        "ratio": base_s / ingest_s,
        "ingest_peak_mib": ingest_mib,
        "report_s": report_s,
        "report_peak_mib": report_mib,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verdicts", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = [measure(workdir, n) for n in (args.small, args.verdicts)]
    for r in results:
        print(
            f"{r['verdicts']:>9,} verdicts: baseline {r['baseline_rate']:>9,.0f}/s, "
            f"prefleak ingest {r['ingest_rate']:>9,.0f}/s (ratio {r['ratio']:.2f}, target >= 0.5), "
            f"ingest peak {r['ingest_peak_mib']:.0f} MiB; report {r['report_s']:.2f} s "
            f"(target < 2 s), report peak {r['report_peak_mib']:.0f} MiB; the first report "
            f"after the ingest (which seals the projection's closed hours) "
            f"{r['first_report_s']:.2f} s, peak {r['first_report_peak_mib']:.0f} MiB"
        )
    small, large = results
    growth = large["report_peak_mib"] - small["report_peak_mib"]
    sizes = f"{small['verdicts']:,} -> {large['verdicts']:,}"
    print(f"report peak memory growth {sizes}: {growth:+.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
