"""Alerting end to end: prefleak serve → Prometheus → Alertmanager → a webhook, with our configs.

Unit tests of the rules use synthetic series; this test checks that the real daemon's metrics,
scraped by a real Prometheus, drive the real rules to page on a leaking stream and stay quiet on a
clean one, that the example Alertmanager routing delivers, and that every dashboard query returns
data from that Prometheus. Processes run on free loopback ports and are stopped by PID.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from prefleak.simulate import Scenario, simulate
from services import require_binary, wait_for
from test_dashboard import load_dashboard, panel_queries

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
RULE_FILES = [
    ROOT / "deploy" / "prometheus" / "prefleak-rules.yml",
    ROOT / "deploy" / "prometheus" / "prefleak-alerts.yml",
]
ALERTMANAGER_EXAMPLE = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
LEAKAGE_ALERT = "PrefleakLeakageDetected"
DELIVERY_TIMEOUT_S = 90.0
"""A leaking stream must reach the webhook within this long after the first event is sent."""
QUIET_WINDOW_S = 20.0
"""How long a clean stream is watched once its PLS rows are in Prometheus (the leaking stream
fires well within this; see test_leaking_stream_pages)."""
SHORT_FOR = "2s"
CHUNK_EVENTS = 5000
NO_DATA_PANELS = {
    # Only with Kafka configured; the test feeds events over HTTP.
    ("Kafka consumer lag", "A"),
    # Only while a change detector is in alarm: the simulated leakage does not change over time.
    ("Change alarms", "A"),
    ("Change alarms", "B"),
    # Needs judges that are also candidates (Scenario.judges_as_candidates, off here).
    ("Self-preference and error bias per judge", "A"),
    # Only with probe.enabled (tests/test_probe_runs.py runs probes; a run takes too long here).
    ("Probe runs by outcome", "A"),
    ("Probe run duration (p50, p90)", "A"),
    ("Probe run duration (p50, p90)", "B"),
    ("Since the last successful probe", "A"),
    ("Unparseable judgements", "A"),
}
PROCESS_ENV = {
    "PREFLEAK_RECOMPUTE__INTERVAL_S": "1",
    "PREFLEAK_PLS__BOOTSTRAP": "200",
    # The diversity report every second (default 300 s), lexical only (no model download), with
    # fewer resamples and permutations so that it is ready within seconds.
    "PREFLEAK_DIVERSITY__INTERVAL_S": "1",
    "PREFLEAK_DIVERSITY__EMBEDDINGS": "off",
    "PREFLEAK_DIVERSITY__RESAMPLES": "20",
    "PREFLEAK_DIVERSITY__PERMUTATIONS": "100",
}
SAMPLES_PER_DATASET = 300
"""More than diversity.reference_size (200), so each dataset has a drift window beyond it."""
DIVERSITY_DATASETS = {"e2e-eval": "eval", "e2e-production": "production"}


def sample_events(seed: int = 7) -> list[dict[str, Any]]:
    """Declared eval and production datasets and their samples, the last few minutes in ``ts``.

    Texts are random draws from a small vocabulary; half of the production samples are eval
    samples with a few words changed (covered), the other half fresh draws (mostly uncovered).
    """
    rng = random.Random(seed)
    stems = ("alpha", "beta", "gamma", "delta", "model", "answer", "prompt", "story")
    suffixes = ("", "s", "ed", "ing", "er", "ly", "ful", "ness", "ion", "ish")
    words = [stem + suffix for stem in stems for suffix in suffixes]

    def text() -> str:
        return " ".join(rng.choices(words, k=rng.randint(12, 30)))

    events: list[dict[str, Any]] = [
        {"type": "dataset", "dataset": name, "generator": None, "role": role}
        for name, role in DIVERSITY_DATASETS.items()
    ]
    evals = [text() for _ in range(SAMPLES_PER_DATASET)]
    production = []
    for index, item in enumerate(evals):
        if index % 2:
            production.append(text())
        else:
            tokens = item.split()
            for _ in range(3):
                tokens[rng.randrange(len(tokens))] = rng.choice(words)
            production.append(" ".join(tokens))
    now = time.time()
    for name, texts in zip(DIVERSITY_DATASETS, (evals, production), strict=True):
        for index, sample in enumerate(texts):
            ts = datetime.fromtimestamp(now - len(texts) + index, UTC).isoformat()
            events.append({"type": "sample", "dataset": name, "ts": ts, "text": sample})
    return events


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET returning (status, body); connection errors read as status 0."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def ready(url: str) -> Callable[[], bool]:
    """A check that ``url`` answers 200."""
    return lambda: http_get(url)[0] == 200


class Webhook:
    """A receiver for Alertmanager's webhook: records (path, payload) of every POST."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        lock = threading.Lock()
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    posts.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reports what matters."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        """(path, alert) of every firing alert ``name`` delivered so far."""
        return [
            (path, alert)
            for path, payload in list(self.posts)
            for alert in payload["alerts"]
            if alert["labels"].get("alertname") == name and alert["status"] == "firing"
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Stack:
    """prefleak, Prometheus, Alertmanager and the webhook, started in ``directory``."""

    directory: Path
    processes: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)
    webhook: Webhook = field(default_factory=Webhook)
    prefleak_url: str = ""
    prometheus_url: str = ""

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Path:
        log = self.directory / f"{name}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                args, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=self.directory
            )
        self.processes.append((name, process, log))
        return log

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} (exit {process.poll()}):\n{log.read_text(errors='replace')[-3000:]}"
            for name, process, log in self.processes
        )

    def start(self) -> None:
        """Start the three processes; each must answer its health endpoint."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFLEAK_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
        env.update(PROCESS_ENV)
        log = self.spawn(
            "prefleak",
            [sys.executable, "-m", "prefleak", "serve", "--db", "events.db", "--port", "0"],
            env,
        )
        found = wait_for(
            lambda: re.search(r"metrics at (http://[^/\s]+)/metrics", log.read_text("utf-8")),
            30,
            f"prefleak to listen\n{self.logs()}",
        )
        self.prefleak_url = found.group(1)

        am_port = free_port()
        am_config = self.directory / "alertmanager.yml"
        am_config.write_text(yaml.safe_dump(alertmanager_config(self.webhook.url)))
        self.spawn(
            "alertmanager",
            [
                alertmanager_binary(),
                f"--config.file={am_config}",
                f"--storage.path={self.directory / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ],
        )
        prom_port = free_port()
        prom_config = self.directory / "prometheus.yml"
        prom_config.write_text(
            yaml.safe_dump(prometheus_config(self.directory, self.prefleak_url, am_port))
        )
        self.spawn(
            "prometheus",
            [
                require_binary("prometheus", "apt-get install -y prometheus"),
                f"--config.file={prom_config}",
                f"--storage.tsdb.path={self.directory / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
        )
        self.prometheus_url = f"http://127.0.0.1:{prom_port}"
        for url in (f"http://127.0.0.1:{am_port}/-/ready", f"{self.prometheus_url}/-/ready"):
            wait_for(ready(url), 30, f"{url}\n{self.logs()}")

    def feed(self, scenario: Scenario | list[dict[str, Any]]) -> int:
        """POST the scenario's (or the given) events as NDJSON in chunks; returns how many were
        accepted."""
        events = list(simulate(scenario)) if isinstance(scenario, Scenario) else scenario
        accepted = 0
        for start in range(0, len(events), CHUNK_EVENTS):
            body = b"".join(
                json.dumps(event).encode() + b"\n" for event in events[start : start + CHUNK_EVENTS]
            )
            request = urllib.request.Request(
                f"{self.prefleak_url}/v1/events",
                data=body,
                headers={"Content-Type": "application/x-ndjson"},
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                accepted += json.loads(response.read())["accepted"]
        return accepted

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query against the stack's Prometheus."""
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = http_get(url)
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def stop(self) -> None:
        """Terminate every process by PID (kill after 10 s), then the webhook."""
        for _, process, _ in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for _, process, _ in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.webhook.close()


def alertmanager_binary() -> str:
    """Debian names it prometheus-alertmanager; upstream tarballs alertmanager."""
    if shutil.which("prometheus-alertmanager") is None and shutil.which("alertmanager"):
        return require_binary("alertmanager", "apt-get install -y prometheus-alertmanager")
    return require_binary("prometheus-alertmanager", "apt-get install -y prometheus-alertmanager")


def alertmanager_config(webhook: str) -> dict[str, Any]:
    """The example config, with its receivers pointed at the webhook and its waits shortened."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text(encoding="utf-8"))
    config["route"].update(group_wait="1s", group_interval="1s")
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = f"{webhook}/{receiver['name']}"
    return config


def prometheus_config(directory: Path, prefleak_url: str, am_port: int) -> dict[str, Any]:
    """Scrape and evaluate every second, with copies of our rules whose ``for`` is 2 s."""
    rule_files = []
    for path in RULE_FILES:
        rules = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in rules["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = SHORT_FOR
        copy = directory / path.name
        copy.write_text(yaml.safe_dump(rules, sort_keys=False))
        rule_files.append(str(copy))
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": rule_files,
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
        },
        "scrape_configs": [
            {
                "job_name": "prefleak",
                "static_configs": [{"targets": [urllib.parse.urlsplit(prefleak_url).netloc]}],
            }
        ],
    }


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Stack]]:
    """Starts stacks; all are stopped when the test ends."""
    stacks: list[Stack] = []

    def starter() -> Stack:
        started = Stack(tmp_path_factory.mktemp("stack"))
        stacks.append(started)
        started.start()
        return started

    yield starter
    for started in stacks:
        started.stop()


def test_leaking_stream_pages_and_dashboard_has_data(stack: Callable[[], Stack]) -> None:
    """Leakage reaches the webhook in time, routed by severity; every panel query has data."""
    running = stack()
    began = time.monotonic()
    assert running.feed(Scenario(prompts_per_benchmark=200, seed=1)) > 0
    # Samples of an eval and a production dataset, for the diversity and coverage panels.
    samples = sample_events()
    assert running.feed(samples) == len(samples)
    delivered = wait_for(
        lambda: running.webhook.alerts(LEAKAGE_ALERT),
        DELIVERY_TIMEOUT_S - (time.monotonic() - began),
        f"{LEAKAGE_ALERT} at the webhook\n{running.logs()}",
    )
    print(f"{LEAKAGE_ALERT} delivered {time.monotonic() - began:.1f} s after the first event")
    for path, alert in delivered:
        severity = alert["labels"]["severity"]
        assert path == ("/prefleak-pager" if severity == "critical" else "/prefleak-chat")
        assert alert["annotations"]["runbook_url"].endswith("/runbooks/PrefleakLeakageDetected.md")
        assert re.search(r"\d+(\.\d+)?%", alert["annotations"]["description"]), alert
        # Significance, not the point estimate: the row's lower bound was above 5 %.
        row = {k: v for k, v in alert["labels"].items() if k not in ("alertname", "severity")}
        selector = ",".join(f'{k}="{v}"' for k, v in sorted(row.items()))
        assert running.query(f"max_over_time(prefleak_pls_ci_low_ratio{{{selector}}}[5m]) > 0.05")

    # Two-sample rates need a few scrapes after the stream; 1m covers the whole test.
    time.sleep(3)
    wait_for(
        lambda: (
            running.query("prefleak_diversity_drift_pvalue")
            and running.query("prefleak_eval_coverage_ratio")
        ),
        30,
        f"diversity report in Prometheus\n{running.logs()}",
    )
    empty = [
        (title, ref, expr)
        for title, ref, expr in panel_queries(load_dashboard(), {"__rate_interval": "1m"})
        if not running.query(expr)
    ]
    assert {(title, ref) for title, ref, _ in empty} == NO_DATA_PANELS, empty


def test_clean_stream_stays_quiet(stack: Callable[[], Stack]) -> None:
    """Without injected leakage the PLS alert neither fires nor goes pending."""
    running = stack()
    assert running.feed(Scenario(prompts_per_benchmark=200, seed=1, leakage=0.0)) > 0
    wait_for(
        lambda: running.query("prefleak_pls_ci_low_ratio"),
        60,
        f"PLS rows in Prometheus\n{running.logs()}",
    )
    deadline = time.monotonic() + QUIET_WINDOW_S
    while time.monotonic() < deadline:
        assert not running.query(f'ALERTS{{alertname="{LEAKAGE_ALERT}"}}'), running.query(
            "prefleak_pls_ci_low_ratio > 0.05"
        )
        time.sleep(1)
    assert not running.webhook.alerts(LEAKAGE_ALERT)
    # The clean stream was really evaluated: its PLS rows had enough prompts to count.
    assert running.query("prefleak_pls_prompts >= 50")
