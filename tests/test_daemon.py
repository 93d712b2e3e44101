"""``prefleak serve`` end to end: a real process, real HTTP, real SQLite, real Prometheus text.

Each test starts the service in a subprocess on a free port (``--port 0``; the port is read from
the startup log line) and stops it with SIGTERM, checking it exits 0 within 10 s.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import prefleak.daemon.recompute as recompute_module
from broker import TansuBroker
from prefleak.config import MetricsSettings
from prefleak.consumers.kafka import produce_events
from prefleak.daemon.metrics import OTHER, verdict_series
from prefleak.devbroker import FAST_GROUP
from prefleak.lineage import Lineage
from prefleak.models.events import parse_object
from prefleak.report import PLSRow
from prefleak.simulate import Scenario, simulate
from prefleak.store import VerdictCounts
from services import require_binary, wait_for

SRC = Path(__file__).parents[1] / "src"

RUNNER = """\
import argparse, sys
from prefleak.daemon.commands import register
parser = argparse.ArgumentParser(prog="prefleak")
register(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args()
sys.exit(args.handler(args))
"""
"""The daemon's subcommands on a parser of their own, so these tests do not depend on cli.py."""

STOP_WITHIN_S = 10.0
JUDGES = {"gen-a": "stu-a", "gen-b": "stu-b"}
PROMPTS = 60
FAVOURED_SHARE = 0.8
"""Each judge prefers its own student on 4 prompts of 5: PLS = (0.8 - 0.5) / 0.5 = 0.6."""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFLEAK_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env["PREFLEAK_RECOMPUTE__INTERVAL_S"] = "0.5"
    env["PREFLEAK_PLS__BOOTSTRAP"] = "200"
    env.update(extra)
    return env


def prefleak(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a daemon subcommand to completion."""
    return subprocess.run(
        [sys.executable, "-c", RUNNER, *args],
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


class Daemon:
    """One ``serve`` process with helpers for its HTTP API."""

    def __init__(self, tmp_path: Path, *args: str, **env: str) -> None:
        self.log_path = tmp_path / f"serve-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RUNNER, "serve", "--port", "0", *args],
            env=_env(**env),
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        found = wait_for(self._listening, what=f"the startup line in {self.log_path}")
        parts = urlsplit(found)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 0

    def _listening(self) -> str | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"serve exited with {self.proc.returncode}:\n{self.log()}")
        match = re.search(r"metrics at (http://[^/\s]+)/metrics", self.log())
        return match.group(1) if match else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        headers = {"Content-Type": content_type} if content_type else {}
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def get_json(self, path: str) -> tuple[int, Any]:
        status, body = self.request("GET", path)
        return status, json.loads(body)

    def post(self, body: bytes, content_type: str | None = None) -> tuple[int, dict[str, Any]]:
        status, answer = self.request("POST", "/v1/events", body, content_type)
        return status, json.loads(answer)

    def metrics_text(self) -> str:
        status, body = self.request("GET", "/metrics")
        assert status == 200
        return body.decode()

    def samples(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(self.metrics_text())
            for sample in family.samples
        }

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples().get((name, frozenset(labels.items())))

    def stop(self) -> None:
        """SIGTERM, then the process must exit 0 within 10 s."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=STOP_WITHIN_S)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._log.close()
        assert code == 0, self.log()
        assert time.monotonic() - started < STOP_WITHIN_S
        assert "stopped" in self.log()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Starts daemons; any left running when the test ends are killed."""
    daemons: list[Daemon] = []

    def starter(*args: str, **env: str) -> Daemon:
        daemon = Daemon(tmp_path, *args, **env)
        daemons.append(daemon)
        return daemon

    yield starter
    for daemon in daemons:
        daemon.kill()


def _jsonl(events: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def _model(name: str) -> dict[str, Any]:
    return {"type": "model", "model": name, "family": "f"}


def leaking_stream() -> list[dict[str, Any]]:
    """Two generators judging two students, each trained only on one generator's data."""
    events: list[dict[str, Any]] = [
        {"type": "model", "model": "gen-a", "family": "family-a"},
        {"type": "model", "model": "gen-b", "family": "family-b"},
        {"type": "model", "model": "base", "family": "family-c"},
    ]
    for judge, student in JUDGES.items():
        dataset = f"data-{judge}"
        events.append({"type": "dataset", "dataset": dataset, "generator": judge})
        events.append({
            "type": "training", "model": student, "base": "base", "method": "sft",
            "datasets": [{"dataset": dataset, "share": 1.0}],
        })  # fmt: skip
    for k in range(PROMPTS):
        for judge, own in JUDGES.items():
            other = next(s for s in JUDGES.values() if s != own)
            winner = own if k % 5 != 0 else other
            events.append({
                "type": "verdict", "benchmark": "bench", "prompt_id": f"p{k:03d}", "judge": judge,
                "model_a": "stu-a", "model_b": "stu-b", "winner": "a" if winner == "stu-a" else "b",
                "ts": f"2025-01-01T00:{k // 60:02d}:{k % 60:02d}Z",
            })  # fmt: skip
    for event in events:
        event.setdefault("ts", "2024-12-31T00:00:00Z")
    return events


# -- HTTP intake ----------------------------------------------------------------------------------


def test_post_object_array_ndjson_and_malformed(
    start: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = start("--db", str(tmp_path / "events.db"), PREFLEAK_HTTP__MAX_BODY_BYTES="65536")
    assert daemon.request("GET", "/healthz")[0] == 200

    status, answer = daemon.post(json.dumps(_model("m1")).encode(), "application/json")
    assert (status, answer) == (200, {"accepted": 1, "duplicate": 0, "rejected": 0, "errors": []})

    array = [_model("m1"), _model("m2"), {"type": "model"}, 7]
    status, answer = daemon.post(json.dumps(array).encode())
    assert status == 200
    assert (answer["accepted"], answer["duplicate"], answer["rejected"]) == (1, 1, 2)
    assert [e["location"] for e in answer["errors"]] == ["item 3", "item 4"]
    assert "model" in answer["errors"][0]["error"]

    ndjson = _jsonl([_model("m3"), _model("m4")]) + b"\n{not json\n" + _jsonl([_model("m1")])
    status, answer = daemon.post(ndjson, "application/x-ndjson")
    assert status == 200
    assert (answer["accepted"], answer["duplicate"], answer["rejected"]) == (2, 1, 1)
    assert answer["errors"][0]["location"] == "line 4"

    sniffed = _jsonl([_model("m5"), _model("m6")])  # NDJSON without its Content-Type
    status, answer = daemon.post(sniffed, "application/json")
    assert (status, answer["accepted"]) == (200, 2)

    status, answer = daemon.post(b"this is not json at all", "application/json")
    assert status == 400
    assert answer["rejected"] == 1
    assert answer["errors"][0]["location"] == "body"

    status, too_big = daemon.request("POST", "/v1/events", b"[" + b" " * 70_000 + b"]")
    assert status == 413
    assert "limit of 65536" in json.loads(too_big)["error"]

    accepted = {"source": "http", "outcome": "accepted"}
    assert daemon.value("prefleak_events_ingested_total", **accepted) == 6
    assert daemon.value("prefleak_events_ingested_total", source="http", outcome="duplicate") == 2
    assert daemon.value("prefleak_events_ingested_total", source="http", outcome="rejected") == 4
    assert daemon.value("prefleak_source_up", source="http") == 1
    assert daemon.value("prefleak_build_info", version="0.1.0") == 1
    assert wait_for(lambda: daemon.value("prefleak_dead_letters") == 4, what="dead letters")
    assert daemon.value("prefleak_last_ingest_timestamp_seconds") == pytest.approx(
        time.time(), abs=60
    )
    assert daemon.request("GET", "/nope")[0] == 404
    assert daemon.request("GET", "/v1/events")[0] == 405
    daemon.stop()

    with sqlite3.connect(tmp_path / "events.db") as db:
        assert db.execute("SELECT count(*) FROM events").fetchone() == (6,)
        assert db.execute("SELECT count(*) FROM rejected WHERE source = 'http'").fetchone() == (4,)


# -- readiness, recompute and PLS -----------------------------------------------------------------


def test_readyz_waits_for_sources_and_first_recompute(
    start: Callable[..., Daemon], tmp_path: Path
) -> None:
    incoming = tmp_path / "incoming"  # not there yet: the file source is down
    daemon = start(
        "--db",
        str(tmp_path / "e.db"),
        "--watch",
        str(incoming),
        PREFLEAK_WATCH__POLL_INTERVAL_S="0.1",
    )
    status, answer = daemon.get_json("/readyz")
    assert status == 503
    assert "source file is down" in answer["reasons"]
    assert daemon.value("prefleak_source_up", source="file") == 0
    incoming.mkdir()
    wait_for(lambda: daemon.request("GET", "/readyz")[0] == 200, what="/readyz 200")
    assert daemon.value("prefleak_source_up", source="file") == 1
    assert daemon.value("prefleak_last_recompute_timestamp_seconds") is not None
    _, status_json = daemon.get_json("/v1/status")
    assert status_json["ready"] is True
    assert status_json["recompute"]["pls_rows"] == 0
    daemon.stop()


@pytest.fixture(scope="module")
def leaking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon that has ingested the leaking stream and recomputed."""
    tmp_path = tmp_path_factory.mktemp("leaking")
    daemon = Daemon(tmp_path, "--db", str(tmp_path / "leak.db"))
    try:
        status, answer = daemon.post(_jsonl(leaking_stream()), "application/x-ndjson")
        assert (status, answer["accepted"], answer["rejected"]) == (200, 7 + 2 * PROMPTS, 0)
        wait_for(lambda: daemon.get_json("/v1/pls")[1].get("pls"), what="a PLS row")
        yield daemon
    finally:
        daemon.kill()


def test_pls_series_for_a_leaking_stream(leaking: Daemon) -> None:
    labels = {
        "benchmark": "bench", "judge_i": "gen-a", "judge_j": "gen-b", "student_i": "stu-a",
        "student_j": "stu-b", "relation_i": "same_model", "relation_j": "same_model",
    }  # fmt: skip
    expected = (FAVOURED_SHARE - 0.5) / 0.5
    assert leaking.value("prefleak_pls_ratio", **labels) == pytest.approx(expected)
    low = leaking.value("prefleak_pls_ci_low_ratio", **labels)
    high = leaking.value("prefleak_pls_ci_high_ratio", **labels)
    assert low is not None and high is not None
    assert 0 < low <= expected <= high
    assert leaking.value("prefleak_pls_prompts", **labels) == PROMPTS
    assert leaking.value("prefleak_last_event_timestamp_seconds") == pytest.approx(
        1735689600 + PROMPTS - 1
    )


def test_pls_json_has_the_report_row_shape(leaking: Daemon) -> None:
    status, table = leaking.get_json("/v1/pls")
    assert status == 200
    assert table["ties"] == "loss"
    assert table["schema"] == "prefleak.report/2"
    (row,) = table["pls"]
    scored = {"window", "category", "track", "p_value", "q_value", "significant",
              "min_detectable_pls"}  # fmt: skip
    assert set(row) == set(PLSRow.__dataclass_fields__) | scored
    assert (row["judge_i"], row["student_i"], row["n_prompts"]) == ("gen-a", "stu-a", PROMPTS)
    assert {"leakage", "windows", "breakdowns", "changes", "biases", "leaderboard"} <= set(table)
    assert row["pls"] == pytest.approx(0.6)


def test_verdict_counters_split_related_from_unrelated(leaking: Daemon) -> None:
    wins, comparisons = "prefleak_verdict_wins_total", "prefleak_verdict_comparisons_total"
    own = {"benchmark": "bench", "judge": "gen-a", "candidate": "stu-a", "relation": "same_model"}
    foreign = {
        "benchmark": "bench",
        "judge": "gen-a",
        "candidate": "stu-b",
        "relation": "unrelated",
    }
    assert leaking.value(wins, **own) == pytest.approx(FAVOURED_SHARE * PROMPTS)
    assert leaking.value(comparisons, **own) == PROMPTS
    assert leaking.value(wins, **foreign) == pytest.approx((1 - FAVOURED_SHARE) * PROMPTS)
    assert leaking.value(comparisons, **foreign) == PROMPTS


def test_promtool_accepts_the_exposition(leaking: Daemon) -> None:
    promtool = require_binary("promtool", "apt-get install prometheus")
    text = leaking.metrics_text()
    assert "prefleak_pls_ratio{" in text
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_undefined_pls_has_no_series(start: Callable[..., Daemon], tmp_path: Path) -> None:
    """Too few prompts: the row exists in /v1/pls, but no PLS series (never a 0)."""
    daemon = start("--db", str(tmp_path / "few.db"), PREFLEAK_PLS__MIN_PROMPTS="1000")
    daemon.post(_jsonl(leaking_stream()), "application/x-ndjson")
    (row,) = wait_for(lambda: daemon.get_json("/v1/pls")[1].get("pls"), what="a PLS row")
    assert row["pls"] is None and row["undefined"].startswith("too few prompts")
    names = {name for name, _ in daemon.samples()}
    assert "prefleak_pls_prompts" in names
    assert not names & {"prefleak_pls_ratio", "prefleak_pls_ci_low_ratio"}
    daemon.stop()


# -- the file watcher -----------------------------------------------------------------------------


def _file_counts(daemon: Daemon) -> tuple[float | None, float | None]:
    return (
        daemon.value("prefleak_events_ingested_total", source="file", outcome="accepted"),
        daemon.value("prefleak_events_ingested_total", source="file", outcome="duplicate"),
    )


def test_watched_files_are_ingested_once_across_restarts(
    start: Callable[..., Daemon], tmp_path: Path
) -> None:
    incoming, db = tmp_path / "incoming", tmp_path / "files.db"
    incoming.mkdir()
    args = ("--db", str(db), "--watch", str(incoming))
    env = {"PREFLEAK_WATCH__POLL_INTERVAL_S": "0.1", "PREFLEAK_WATCH__SETTLE_S": "600"}
    plain = incoming / "a.jsonl"
    last = json.dumps(_model("a6")).encode()
    # Five complete lines and half of a sixth: the writer is not done with it.
    plain.write_bytes(_jsonl([_model(f"a{i}") for i in range(1, 6)]) + last[:10])
    (incoming / "ignored.txt").write_text("not an event file")

    first = start(*args, **env)
    wait_for(lambda: _file_counts(first) == (5, 0), what="5 complete lines")
    time.sleep(0.3)  # a few more polls: the half line stays
    assert _file_counts(first) == (5, 0)
    first.stop()

    with plain.open("ab") as handle:  # the writer finishes the line while prefleak is down
        handle.write(last[10:] + b"\n")
    with gzip.open(incoming / "b.jsonl.gz", "wb") as compressed:
        compressed.write(_jsonl([_model(f"b{i}") for i in range(1, 4)]))

    second = start(*args, **env)
    wait_for(lambda: _file_counts(second) == (4, 0), what="the rest of a.jsonl and b.jsonl.gz")
    second.stop()

    third = start(*args, **env)
    wait_for(lambda: third.request("GET", "/readyz")[0] == 200, what="ready")
    (incoming / "c.jsonl").write_bytes(_jsonl([_model("c1")]))
    wait_for(lambda: _file_counts(third) == (1, 0), what="c.jsonl alone")
    third.stop()

    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (10,)
        offsets = dict(
            ((source.rsplit("/", 1)[1], part), position)
            for source, part, position in conn.execute("SELECT * FROM offsets")
        )
    assert offsets[("a.jsonl", "lines")] == 6
    assert offsets[("a.jsonl", "bytes")] == plain.stat().st_size
    assert offsets[("b.jsonl.gz", "lines")] == 3
    assert offsets[("c.jsonl", "lines")] == 1


# -- configuration errors and config show ---------------------------------------------------------


def test_invalid_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("http:\n  port: not-a-port\n")
    for command in (["serve"], ["config", "show"]):
        done = prefleak(*command, "--config", str(config))
        assert done.returncode == 2, done.stderr
        assert "http.port" in done.stderr
        assert "Traceback" not in done.stderr
    done = prefleak("serve", PREFLEAK_RECOMPUTE__INTERVAL_S="-1")
    assert done.returncode == 2
    assert "recompute.interval_s" in done.stderr and "Traceback" not in done.stderr
    done = prefleak("config", "show", "--config", str(tmp_path / "missing.yaml"))
    assert done.returncode == 2 and "cannot read config file" in done.stderr


def test_config_show_layers_and_masks_secrets(tmp_path: Path) -> None:
    config = tmp_path / "prefleak.yaml"
    config.write_text(
        "http:\n  port: 1000\nkafka:\n  client_options:\n"
        "    security_protocol: SASL_SSL\n    sasl_plain_password: hunter2\n"
    )
    done = prefleak(
        "config", "show", "--config", str(config), "--kafka", "k1:9092,k2:9092",
        PREFLEAK_HTTP__PORT="2000", PREFLEAK_METRICS__TOP_PAIRS="7",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stdout
    shown = yaml.safe_load(done.stdout)
    assert shown["http"]["port"] == 2000
    assert shown["metrics"]["top_pairs"] == 7
    assert shown["kafka"]["bootstrap_servers"] == ["k1:9092", "k2:9092"]
    assert shown["kafka"]["client_options"] == {
        "security_protocol": "SASL_SSL",
        "sasl_plain_password": "***",
    }
    flagged = prefleak(
        "config", "show", "--config", str(config), "--port", "3000", PREFLEAK_HTTP__PORT="2000"
    )
    assert yaml.safe_load(flagged.stdout)["http"]["port"] == 3000


# -- label bounds (pure) --------------------------------------------------------------------------


def _counts(
    benchmark: str,
    judge: str,
    lo: str,
    hi: str,
    no_game: tuple[int, int, int],
    game1: tuple[int, int, int] = (0, 0, 0),
    game2: tuple[int, int, int] = (0, 0, 0),
    prompt: str = "p1",
) -> VerdictCounts:
    return VerdictCounts(0, benchmark, judge, lo, hi, prompt, *no_game, *game1, *game2)


def _totals(rows: list[VerdictCounts]) -> list[tuple[str, str, str, str, int, int, int]]:
    """What EventStore.verdict_totals gives for these projection rows."""
    out = []
    for row in rows:
        games = row.games()
        lo, hi = (sum(g[k] for g in games) for k in (0, 1))
        out.append((row.benchmark, row.judge, row.model_lo, row.model_hi, lo, hi,
                    sum(map(sum, games))))  # fmt: skip
    return out


def test_verdict_labels_are_bounded_by_configuration() -> None:
    """Every verdict is counted once (games included), under bounded label values."""
    lineage = Lineage.from_events(
        parse_object(e) for e in leaking_stream() if e["type"] != "verdict"
    )
    rows = [
        _counts("bench", "gen-a", "stu-a", "stu-b", (8, 2, 0)),
        _counts("bench", "gen-b", "stu-a", "stu-b", (1, 3, 0), game1=(1, 2, 0), game2=(1, 2, 0)),
        _counts("other-bench", "gen-c", "stu-a", "stu-c", (1, 0, 1)),
    ]
    bounds = MetricsSettings(top_pairs=1, judges=["gen-b"])
    series, named = verdict_series(_totals(rows), lineage, bounds)
    assert len(named) == 1
    labels = {
        (s.benchmark, s.judge, s.candidate, s.relation): (s.wins, s.comparisons) for s in series
    }
    assert labels[("bench", "gen-a", "stu-a", "same_model")] == (8, 10)  # top pair, named
    assert labels[("bench", "gen-b", OTHER, "same_model")] == (7, 10)  # allow-listed judge
    assert labels[("bench", "gen-b", OTHER, "unrelated")] == (3, 10)
    assert labels[("bench", OTHER, OTHER, "unrelated")] == (2, 10)
    assert labels[(OTHER, OTHER, OTHER, "unrelated")] == (1 + 0, 4)
    assert sum(w for w, _ in labels.values()) == 8 + 2 + 3 + 7 + 1 + 0
    # Once named, a pair stays named even when another overtakes it.
    overtaken = [*rows, _counts("bench", "gen-b", "stu-a", "stu-b", (0, 50, 0), prompt="p2")]
    _, still = verdict_series(_totals(overtaken), lineage, bounds, named)
    assert still == named


def test_unreachable_kafka_is_reported_down_and_does_not_block_shutdown(
    start: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = start("--db", str(tmp_path / "k.db"), "--kafka", "127.0.0.1:1")
    status, answer = daemon.get_json("/readyz")
    assert status == 503
    assert "source kafka is down" in answer["reasons"]
    assert daemon.value("prefleak_source_up", source="kafka") == 0
    assert daemon.value("prefleak_events_ingested_total", source="kafka", outcome="accepted") == 0
    daemon.stop()


def test_kafka_stream_reaches_the_metrics(
    start: Callable[..., Daemon], tmp_path: Path, tansu_broker: TansuBroker
) -> None:
    """End to end through a real broker: produce, serve ingests, /metrics counts it and has PLS."""
    tansu_broker.create_topics({"prefleak.verdicts": 4, "prefleak.provenance": 1})
    events = list(simulate(Scenario(seed=2, prompts_per_benchmark=40)))
    produce_events(tansu_broker.bootstrap_servers, events)
    daemon = start(
        "--db", str(tmp_path / "kafka.db"), "--kafka", tansu_broker.bootstrap_servers[0],
        PREFLEAK_KAFKA__CLIENT_OPTIONS=json.dumps(FAST_GROUP),
    )  # fmt: skip
    accepted = {"source": "kafka", "outcome": "accepted"}
    wait_for(
        lambda: daemon.value("prefleak_events_ingested_total", **accepted) == len(events),
        timeout=60,
        what=f"{len(events)} events ingested from Kafka",
    )
    assert daemon.value("prefleak_source_up", source="kafka") == 1
    pls = wait_for(
        lambda: [
            labels for (name, labels), _ in daemon.samples().items()
            if name == "prefleak_pls_ci_low_ratio"
            and ("judge_i", "gemini-1.5-pro") in labels and ("judge_j", "gpt-4o") in labels
        ],
        what="PLS series of the simulated world",
    )  # fmt: skip
    assert ("student_i", "student-gemini") in pls[0] or ("student_j", "student-gpt4o") in pls[0]
    lags = [
        v for (name, _), v in daemon.samples().items() if name == "prefleak_consumer_lag_messages"
    ]
    assert lags and all(lag == 0 for lag in lags)
    daemon.stop()


# -- bearer token ---------------------------------------------------------------------------------

TOKEN = "s3cr3t-" + "0123456789abcdef" * 2
"""A token of the accepted shape: 16+ printable ASCII characters."""


def _call(
    daemon: Daemon,
    method: str,
    path: str,
    body: bytes | None = None,
    token: str | None = None,
    scheme: str = "Bearer",
) -> tuple[int, dict[str, str], bytes]:
    """One request, with ``Authorization: <scheme> <token>`` when a token is given."""
    connection = http.client.HTTPConnection(daemon.host, daemon.port, timeout=30)
    headers = {} if token is None else {"Authorization": f"{scheme} {token}"}
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_token_guards_every_post_and_leaves_reads_open(
    start: Callable[..., Daemon], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    token_file.chmod(0o600)
    daemon = start(
        "--db", str(tmp_path / "events.db"), PREFLEAK_HTTP__AUTH_TOKEN_FILE=str(token_file)
    )
    event = json.dumps(_model("m1")).encode()

    status, headers, body = _call(daemon, "POST", "/v1/events", event)
    assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="prefleak"'
    assert "Bearer" in json.loads(body)["error"]
    for wrong in (TOKEN[:-1] + "X", TOKEN + "X", TOKEN[:16], ""):
        status, headers, _ = _call(daemon, "POST", "/v1/events", event, token=wrong)
        assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"], wrong
    assert _call(daemon, "POST", "/v1/events", event, token=TOKEN, scheme="Basic")[0] == 401
    assert _call(daemon, "POST", "/nope", b"{}")[0] == 401, "no path is found out without it"
    assert _call(daemon, "POST", "/v1/status", b"{}")[0] == 401

    status, _, body = _call(daemon, "POST", "/v1/events", event, token=TOKEN)
    assert status == 200 and json.loads(body)["accepted"] == 1
    status, _, body = _call(daemon, "POST", "/v1/events", event, token=TOKEN, scheme="bearer")
    assert status == 200 and json.loads(body)["duplicate"] == 1, "the scheme is case-insensitive"

    for path in ("/v1/status", "/metrics", "/healthz"):
        assert _call(daemon, "GET", path)[0] == 200, path
    assert _call(daemon, "GET", "/readyz")[0] in (200, 503)
    assert daemon.value("prefleak_events_ingested_total", source="http", outcome="accepted") == 1
    assert daemon.value("prefleak_events_ingested_total", source="http", outcome="rejected") == 0
    daemon.stop()
    log = daemon.log()
    assert "refused POST /v1/events" in log and "bearer token required for POST" in log
    assert TOKEN not in log and TOKEN[:16] not in log


def test_protect_reads_guards_the_api_but_not_metrics_and_probes(
    start: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = start(
        "--db", str(tmp_path / "events.db"),
        PREFLEAK_HTTP__AUTH_TOKEN=TOKEN, PREFLEAK_HTTP__PROTECT_READS="true",
    )  # fmt: skip
    for path in ("/v1/status", "/v1/pls", "/v1/events", "/v1/nope"):
        status, headers, _ = _call(daemon, "GET", path)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer "), path
    assert _call(daemon, "GET", "/v1/status", token="not-the-token-at-all")[0] == 401
    status, _, body = _call(daemon, "GET", "/v1/status", token=TOKEN)
    assert status == 200 and "uptime_s" in json.loads(body)
    assert _call(daemon, "GET", "/metrics")[0] == 200
    assert _call(daemon, "GET", "/healthz")[0] == 200
    assert _call(daemon, "GET", "/readyz")[0] in (200, 503)
    assert _call(daemon, "POST", "/v1/events", b"{}")[0] == 401
    daemon.stop()
    assert TOKEN not in daemon.log()


def test_token_is_masked_and_unusable_token_settings_stop_serve(tmp_path: Path) -> None:
    done = prefleak("config", "show", PREFLEAK_HTTP__AUTH_TOKEN=TOKEN)
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout
    assert yaml.safe_load(done.stdout)["http"]["auth_token"] == "***"

    db = str(tmp_path / "events.db")
    for env, field in [
        ({"PREFLEAK_HTTP__AUTH_TOKEN": "hunter2"}, "http.auth_token"),
        ({"PREFLEAK_HTTP__AUTH_TOKEN_FILE": str(tmp_path / "missing")}, "http.auth_token_file"),
        ({"PREFLEAK_HTTP__PROTECT_READS": "true"}, "http.protect_reads"),
    ]:
        done = prefleak("serve", "--port", "0", "--db", db, **env)
        assert done.returncode == 2 and field in done.stderr, done.stderr
        assert "hunter2" not in done.stderr and "Traceback" not in done.stderr


_FREED_HEAP = """
import sys
from prefleak.daemon.recompute import release_freed_memory

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

blocks = [bytes(1024) for _ in range(200_000)]  # over pymalloc's limit: glibc's heap
fence = bytes(1024)  # keeps the heap's top in place: glibc cannot give it back on its own
del blocks
held = rss_mib()
release_freed_memory()
print(held, rss_mib())
"""


@pytest.mark.skipif(
    not Path("/proc/self/status").exists() or recompute_module._MALLOC_TRIM is None,
    reason="glibc's malloc_trim and /proc are Linux-only",
)
def test_a_recompute_hands_freed_heap_back_to_the_system() -> None:
    """Freed heap stays resident until trimmed: without it, a recompute's peak would stay."""
    out = subprocess.run(
        [sys.executable, "-c", _FREED_HEAP], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(Path(recompute_module.__file__).parents[2])},
    ).stdout  # fmt: skip
    held, released = map(float, out.split())
    assert held - released > 100, (held, released)
