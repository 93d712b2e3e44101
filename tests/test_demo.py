"""`prefleak demo`: broker, service and live producer together, stopped cleanly."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from prefleak.demo import summary_line
from prefleak.devbroker import free_port


def test_summary_names_the_strongest_significant_row() -> None:
    status = {
        "ingested": {"kafka": {"accepted": 90, "duplicate": 5, "rejected": 5}},
        "store": {"events": {"verdict": 80, "model": 10}, "dead_letters": 5},
    }
    rows = [
        {"benchmark": "b", "judge_i": "x", "judge_j": "y", "pls": 0.2, "ci_low": 0.1,
         "ci_high": 0.3},
        {"benchmark": "b", "judge_i": "u", "judge_j": "v", "pls": 0.3, "ci_low": -0.1,
         "ci_high": 0.7},
        {"benchmark": "b", "judge_i": "p", "judge_j": "q", "pls": None, "ci_low": None,
         "ci_high": None},
    ]  # fmt: skip
    line = summary_line(status, {"pls": rows})
    assert line == (
        "100 events ingested since start (90 stored at the last recompute), 5 dead letters; "
        "1 of 2 PLS rows "
        "significant; strongest: x vs y on b PLS 20.0% [10.0, 30.0]"
    )


@pytest.mark.slow
def test_demo_runs_finds_leakage_and_stops(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    done = subprocess.run(
        [sys.executable, "-m", "prefleak", "demo", "--db", str(db), "--port", str(free_port()),
         "--duration", "30", "--rate", "3000"],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("[demo]")]
    assert "metrics: http://127.0.0.1:" in lines[1]
    summaries = [line for line in lines if "PLS rows significant" in line]
    assert summaries, done.stdout
    assert "strongest:" in summaries[-1], summaries[-1]
    assert lines[-1].startswith("[demo] stopped")
    report = subprocess.run(
        [sys.executable, "-m", "prefleak", "status", "--db", str(db), "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert '"verdict"' in report.stdout


def test_demo_on_a_taken_port_fails_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "prefleak", "demo", "--db", str(tmp_path / "d.db"),
             "--port", str(port), "--duration", "5"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 1
    assert "prefleak: demo stopped: prefleak serve exited with code 1" in done.stderr
    assert "Traceback" not in done.stderr
