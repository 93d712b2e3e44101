"""Diversity measures, the bounded sample, generations, coverage, artifacts, overlap and the CLI.

Everything here runs without the embed extra (embeddings off); tests/test_diversity_embeddings.py
covers the MiniLM path.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from diversity_data import TOPICS, alpaca, topic_texts, vocabulary_texts
from prefleak.config import DiversitySettings
from prefleak.diversity.artifacts import artifact_shares, overlap
from prefleak.diversity.commands import register, render, sparkline
from prefleak.diversity.generations import chains, generations
from prefleak.diversity.lexical import COMPRESSION_LEVEL, LexicalSample
from prefleak.diversity.report import DiversityAnalyzer, DiversityReport, load_inputs
from prefleak.diversity.resample import estimate
from prefleak.diversity.sample import SAMPLE_CAPACITY, priority
from prefleak.diversity.semantic import mmd_test
from prefleak.diversity.text import words
from prefleak.diversity.vectors import TfIdf
from prefleak.ingest import Ingestor
from prefleak.lineage import Lineage
from prefleak.models.events import parse_object
from prefleak.store import EventStore

LEXICAL = ("distinct_1", "distinct_2", "distinct_3", "compression_ratio")
START = datetime(2026, 3, 1, tzinfo=UTC)


def _lines(events: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(e).encode() for e in events]


def _samples(
    dataset: str, texts: list[str], start: datetime = START, **extra: Any
) -> list[dict[str, Any]]:
    return [
        {"type": "sample", "dataset": dataset, "text": text,
         "ts": (start + timedelta(seconds=i)).isoformat(), **extra}
        for i, text in enumerate(texts)
    ]  # fmt: skip


def _report(store: EventStore, **settings: Any) -> DiversityReport:
    options = DiversitySettings(embeddings="off", resamples=40, permutations=200, **settings)
    return DiversityAnalyzer(options).analyze(*load_inputs(store, options))


# -- lexical measures -------------------------------------------------------------------------


def test_lexical_measures_match_hand_computed_values() -> None:
    metrics = LexicalSample(["The cat sat.", "the cat ran"], ["x", "y"]).metrics()
    # words: the cat sat | the cat ran -> unigrams 4 of 6, bigrams 3 of 4, trigrams 2 of 2
    assert metrics["distinct_1"] == pytest.approx(4 / 6)
    assert metrics["distinct_2"] == pytest.approx(3 / 4)
    assert metrics["distinct_3"] == pytest.approx(1.0)
    assert metrics["self_repetition"] == 0.0  # no text has four words
    assert metrics["length_mean"] == metrics["length_p50"] == 3.0
    raw = b"The cat sat.\nthe cat ran"
    assert metrics["compression_ratio"] == len(zlib.compress(raw, COMPRESSION_LEVEL)) / len(raw)

    # 4-grams: text 1 {abcd, bcde}, text 2 {abcd, bcdf}, text 3 none; abcd is in two texts
    repeated = LexicalSample(["a b c d e", "a b c d f", "g h"], ["p", "p", None]).metrics()
    assert repeated["self_repetition"] == pytest.approx((2 * math.log(2) + 0) / 3)
    assert repeated["label_entropy_bits"] == 0.0
    assert repeated["majority_label_share"] == 1.0
    assert repeated["length_p90"] == pytest.approx(5.0)
    labelled = LexicalSample(["a", "b", "c", "d"], ["x", "x", "y", None]).metrics()
    assert labelled["label_entropy_bits"] == pytest.approx(
        -(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3)
    )
    assert labelled["majority_label_share"] == pytest.approx(2 / 3)
    assert "label_entropy_bits" not in LexicalSample(["no labels here"]).metrics()


def _grams(text: str, n: int) -> list[tuple[bytes, ...]]:
    found = words(text)
    return [tuple(found[i : i + n]) for i in range(len(found) - n + 1)]


def test_lexical_measures_match_a_plain_python_count_on_awkward_words() -> None:
    """Words cut at every kind of separator, of every length around the 8- and 16-byte limits of
    the byte-level keys, with NUL bytes, non-ASCII letters and copies; checked under masks too."""
    rng = random.Random(7)
    pieces = [
        "a", "\x00a", "a\x00", "abcdefg", "abcdefgh", "abcdefgi", "abcdefghi", "abcdefghj",
        "abcdefghijklmnop", "abcdefghijklmnoq", "abcdefghijklmnopq", "abcdefghijklmnopr",
        "internationalization", "internationalisation", "Ünïcödé", "ÜNÏCÖDÉ", "tab\tsep",
        "vt\x0bff\x0ccr\r", "rec\x1esep", "nb\u00a0sp", "The", "the", "THE,", "end.",
    ]  # fmt: skip
    texts = [" ".join(rng.choices(pieces, k=rng.randint(0, 30))) for _ in range(60)] + [""]
    sample = LexicalSample(texts)
    for mask in (None, np.array([rng.random() < 0.5 for _ in texts])):
        chosen = [t for i, t in enumerate(texts) if mask is None or mask[i]]
        found = sample.metrics(mask)
        for n in (1, 2, 3):
            grams = [gram for text in chosen for gram in _grams(text, n)]
            assert found[f"distinct_{n}"] == pytest.approx(len(set(grams)) / len(grams))
        fours = [set(_grams(text, 4)) for text in chosen]
        shared = [sum(sum(gram in other for other in fours) - 1 for gram in own) for own in fours]
        assert found["self_repetition"] == pytest.approx(np.mean(np.log1p(shared)))
        assert found["length_mean"] == pytest.approx(np.mean([len(words(t)) for t in chosen]))


def _more_repetitive(texts: list[str], seed: int) -> list[str]:
    """Half of the texts replaced by copies of five of them: what a collapsing generator does."""
    rng = random.Random(seed)
    templates = rng.sample(texts, 5)
    return [rng.choice(templates) if i % 2 else text for i, text in enumerate(texts)]


def _assert_less_diverse(diverse: list[str], repetitive: list[str]) -> None:
    before, after = LexicalSample(diverse).metrics(), LexicalSample(repetitive).metrics()
    for name in LEXICAL:
        assert after[name] < before[name], name
    assert after["self_repetition"] > before["self_repetition"]


def test_a_more_repetitive_corpus_is_less_diverse_on_every_lexical_measure() -> None:
    texts = vocabulary_texts(2000, 300, seed=1)
    _assert_less_diverse(texts, _more_repetitive(texts, seed=1))


def test_real_answers_made_repetitive_are_less_diverse() -> None:
    texts = [record["output_1"] for record in alpaca()[:300]]
    _assert_less_diverse(texts, _more_repetitive(texts, seed=2))


def test_half_sample_intervals_bracket_the_value() -> None:
    sample = LexicalSample(vocabulary_texts(500, 200, seed=3), ["a", "b"] * 100)
    estimates = estimate(sample, 60, np.random.default_rng(0))
    for name, found in estimates.items():
        assert found.ci is not None, name
        assert found.ci[0] <= found.value <= found.ci[1], name
    assert estimates["distinct_2"].ci[1] - estimates["distinct_2"].ci[0] < 0.1  # type: ignore[index]
    assert all(e.ci is None for e in estimate(sample, 0, np.random.default_rng(0)).values())


# -- the bounded sample -----------------------------------------------------------------------


def test_bottom_k_sample_is_order_independent_and_survives_rebuild(tmp_path: Path) -> None:
    day_two = START + timedelta(days=1)
    events = _samples("d", [f"text {i}" for i in range(1500)]) + _samples(
        "d", [f"later {i}" for i in range(300)], start=day_two
    )
    forward, shuffled = EventStore(tmp_path / "a.db"), EventStore(tmp_path / "b.db")
    Ingestor(forward, batch_size=250).ingest_lines(_lines(events), source="f")
    random.Random(4).shuffle(events)
    Ingestor(shuffled, batch_size=777).ingest_lines(_lines(events + events[:50]), source="f")
    live = forward.projection_dump()["samples"]
    assert shuffled.projection_dump()["samples"] == live
    assert len(live) == SAMPLE_CAPACITY + 300  # day one is cut to the capacity, day two is not
    ids = [parse_object(e).id for e in events if e["ts"] < day_two.isoformat()]
    lowest = sorted(ids, key=lambda i: (priority(i or ""), i))[:SAMPLE_CAPACITY]
    assert {row[3] for row in live if row[1] < day_two.timestamp()} == set(lowest)
    assert forward.rebuild(batch_size=100) == len(events)
    assert forward.projection_dump()["samples"] == live
    first = forward.samples("d", 10)
    assert [s.priority for s in first] == sorted(s.priority for s in first)
    assert all(
        s.text.startswith("later") for s in forward.samples("d", 50, since=day_two.timestamp())
    )


# -- generations, drift, coverage, overlap, artifacts -----------------------------------------


def _chain_events() -> list[dict[str, Any]]:
    """Human data, then three generations, each generator trained on the previous data."""
    events: list[dict[str, Any]] = [
        {"type": "dataset", "dataset": "human", "generator": None},
    ]
    source = "human"
    for generation in (1, 2, 3):
        model, dataset = f"gen{generation}-model", f"gen{generation}-data"
        events.append({"type": "training", "model": model, "base": "base-7b", "method": "sft",
                       "datasets": [{"dataset": source, "share": 1.0}]})  # fmt: skip
        events.append({"type": "dataset", "dataset": dataset, "generator": model})
        events += _samples(dataset, vocabulary_texts(4000 // 4**generation, 200, seed=generation))
        source = dataset
    events += _samples("human", vocabulary_texts(4000, 200, seed=0))
    return events


def test_generations_follow_training_on_synthetic_data() -> None:
    events = [parse_object(e) for e in _chain_events() if e["type"] != "sample"]
    found = generations(Lineage.from_events(events))
    assert {d: (g.generation, g.previous) for d, g in found.items()} == {
        "human": (0, None), "gen1-data": (1, None), "gen2-data": (2, "gen1-data"),
        "gen3-data": (3, "gen2-data"),
    }  # fmt: skip
    assert chains(found) == [["gen1-data", "gen2-data", "gen3-data"]]


def test_data_written_by_people_is_generation_zero_whoever_wrote_it() -> None:
    """A person named as generator is no model: their data starts a chain, as unnamed data does."""
    events = [
        {"type": "model", "model": "annotators", "kind": "human"},
        {"type": "dataset", "dataset": "crowd", "generator": "annotators"},
        {"type": "dataset", "dataset": "panel", "generator": "human-panel"},
        {"type": "training", "model": "student", "base": "base-7b", "method": "sft",
         "datasets": [{"dataset": "crowd", "share": 1.0}]},
        {"type": "dataset", "dataset": "student-data", "generator": "student"},
    ]  # fmt: skip
    found = generations(Lineage.from_events(parse_object(e) for e in events))
    assert {d: (g.generation, g.previous) for d, g in found.items()} == {
        "crowd": (0, None), "panel": (0, None), "student-data": (1, None),
    }  # fmt: skip


def test_report_shows_monotone_collapse_along_a_generation_chain(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "chain.db")
    Ingestor(store).ingest_lines(_lines(_chain_events()), source="sim")
    report = _report(store).to_json()
    assert report["generations"] == [["gen1-data", "gen2-data", "gen3-data"]]
    rows = {row["dataset"]: row for row in report["datasets"]}
    assert [rows[d]["generation"] for d in report["generations"][0]] == [1, 2, 3]
    for name in LEXICAL:
        values = [rows[d]["metrics"][name]["value"] for d in ["human", *report["generations"][0]]]
        assert values == sorted(values, reverse=True), (name, values)


def test_drift_detects_a_topic_shift_and_not_a_steady_stream(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "drift.db")
    steady = topic_texts("cooking", 240, seed=1)
    shifted = topic_texts("cooking", 120, seed=2) + topic_texts("space", 120, seed=2)
    Ingestor(store).ingest_lines(_lines(
        _samples("steady", steady) + _samples("shifted", shifted)
    ), source="t")  # fmt: skip
    rows = {r["dataset"]: r for r in _report(store, reference_size=120).to_json()["datasets"]}
    assert rows["shifted"]["drift"]["test"]["p_value"] < 0.01
    assert rows["steady"]["drift"]["test"]["p_value"] > 0.01
    assert rows["steady"]["drift"]["test"]["method"] == "mmd-rbf-tfidf"
    change = rows["shifted"]["drift"]["changes"]["distinct_1"]
    assert set(change) == {"value", "ci"}


def test_mmd_permutation_test_on_lexical_vectors() -> None:
    rng = np.random.default_rng(0)
    same = TfIdf(topic_texts("sports", 80, 1) + topic_texts("sports", 80, 2)).vectors
    assert mmd_test(same[:80], same[80:], 200, rng).p_value > 0.01
    apart = TfIdf(topic_texts("sports", 80, 1) + topic_texts("tax", 80, 2)).vectors
    shift = mmd_test(apart[:80], apart[80:], 200, rng)
    assert shift.p_value == pytest.approx(1 / 201) and shift.mmd2 > 0


def _coverage_store(tmp_path: Path) -> EventStore:
    store = EventStore(tmp_path / "coverage.db")
    eval_texts = topic_texts("cooking", 60, seed=1) + topic_texts("sports", 60, seed=1)
    production = (topic_texts("cooking", 50, seed=2) + topic_texts("sports", 50, seed=2)
                  + topic_texts("tax", 40, seed=2))  # fmt: skip
    events = [
        {"type": "dataset", "dataset": "evalset", "generator": "gpt", "role": "eval"},
        {"type": "dataset", "dataset": "traffic", "generator": None, "role": "production"},
        *_samples("evalset", eval_texts),
        *_samples("traffic", production),
    ]
    Ingestor(store).ingest_lines(_lines(events), source="t")
    return store


def test_production_topic_missing_from_the_eval_set_is_the_top_uncovered_cluster(
    tmp_path: Path,
) -> None:
    (row,) = _report(_coverage_store(tmp_path)).to_json()["coverage"]
    assert (row["eval"], row["production"], row["vectors"]) == ("evalset", "traffic", "tfidf")
    assert 35 / 140 <= row["uncovered"]["value"] <= 40 / 140  # the tax requests, nearly all
    top = row["clusters"][0]
    tax_words = set(TOPICS["tax"])
    assert all(set(example.lower().rstrip("?").split()) & tax_words for example in top["examples"])
    assert set(top["terms"]) & tax_words


def test_artifacts_are_found_by_kind() -> None:
    texts = [
        "...",  # empty: no words
        "The answer is that the cut-off sentence stops in the",  # truncated
        "I'm sorry, but I cannot help with that request.",  # refusal
        "Write a poem about the sea. Here is a poem about the sea.",  # prompt echo
        "A complete answer that is fine.",
        "a   complete answer that is fine.",  # exact duplicate after normalising
        "The quick brown fox jumps over the lazy dog near the river bank today.",
        "The quick brown fox jumps over the lazy dog near the river bank today!",
    ]
    prompts = [None, None, None, "Write a poem about the sea.", None, None, None, None]
    shares = artifact_shares(texts, prompts)
    assert shares["empty"] == shares["refusal"] == shares["prompt_echo"] == 1 / 8
    assert shares["truncated"] == pytest.approx(1 / 8)
    assert shares["exact_duplicate"] == 1 / 8
    assert shares["near_duplicate"] == 4 / 8  # both pairs of (near) copies


def test_train_eval_overlap_counts_items_sharing_13_words() -> None:
    leaked = "one two three four five six seven eight nine ten eleven twelve thirteen"
    training = [(None, f"prefix words then {leaked} and more"), ("a prompt", "an answer")]
    eval_items = [(leaked.upper() + "?", "answer"), (None, "one two three four five six seven")]
    found = overlap(eval_items, training)
    assert found.items == 2 and found.overlapping.value == 0.5
    assert found.examples == (leaked.upper() + "?",)
    assert (
        found.overlapping.ci is not None and found.overlapping.ci[0] < 0.5 < found.overlapping.ci[1]
    )


# -- windows ----------------------------------------------------------------------------------

VOCABULARIES = (1000, 150, 50, 15, 5)
"""One day each: the later days draw on fewer words, so they are more repetitive."""


def _collapsing_store(tmp_path: Path) -> EventStore:
    store = EventStore(tmp_path / "days.db")
    events = [
        event
        for day, vocabulary in enumerate(VOCABULARIES)
        for event in _samples("daily", vocabulary_texts(vocabulary, 60, seed=day),
                              start=START + timedelta(days=day, hours=6))
    ]  # fmt: skip
    random.Random(1).shuffle(events)  # arrival order does not matter
    Ingestor(store).ingest_lines(_lines(events), source="t")
    return store


def test_windows_show_falling_diversity_in_time_order(tmp_path: Path) -> None:
    row = _report(_collapsing_store(tmp_path)).to_json()["datasets"][0]
    windows = row["windows"]
    days = [START + timedelta(days=day) for day in range(len(VOCABULARIES))]
    assert [w["start"] for w in windows] == [day.isoformat() for day in days]
    assert [w["n_samples"] for w in windows] == [60] * len(VOCABULARIES)
    for name in LEXICAL:
        values = [w["metrics"][name]["value"] for w in windows]
        assert values == sorted(values, reverse=True) and values[0] > values[-1], (name, values)
    for window in windows:
        assert set(window) == {"start", "n_samples", "metrics"}
        assert set(window["metrics"]) == set(row["metrics"])  # the same measures as the row
        for estimate_ in window["metrics"].values():
            assert set(estimate_) == {"value", "ci"}
        low, high = window["metrics"]["distinct_2"]["ci"]
        assert low <= window["metrics"]["distinct_2"]["value"] <= high


def test_windows_are_bounded_by_max_windows_newest_kept(tmp_path: Path) -> None:
    store = _collapsing_store(tmp_path)
    assert store.sample_windows("daily", 2) == [
        int((START + timedelta(days=day)).timestamp()) for day in (3, 4)
    ]
    windows = _report(store, max_windows=3).to_json()["datasets"][0]["windows"]
    assert [w["start"] for w in windows] == [
        (START + timedelta(days=day)).isoformat() for day in (2, 3, 4)
    ]
    row = _report(store, max_windows=0).to_json()["datasets"][0]
    assert row["windows"] == [] and row["n_samples"] == 300  # the row itself is unchanged


def test_windows_are_measured_on_at_most_sample_size_texts(tmp_path: Path) -> None:
    store = _collapsing_store(tmp_path)
    (window,) = load_inputs(store, DiversitySettings(sample_size=10, max_windows=1))[0][0].windows
    assert len(window.samples) == 10
    assert [s.priority for s in window.samples] == sorted(s.priority for s in window.samples)
    assert all(s.ts >= window.start for s in window.samples)


def test_table_shows_distinct_2_per_window_as_a_sparkline(tmp_path: Path) -> None:
    text = render(_report(_collapsing_store(tmp_path)))
    (line,) = [line for line in text.splitlines() if line.startswith("  daily ")]
    assert sparkline([0.9, 0.5, None, 0.1]) == "█▅·▁"
    assert sparkline([0.5, 0.51]) == "▁▂"  # within the minimum span: small bars
    bars = line.split()[1]
    assert len(bars) == len(VOCABULARIES) and bars[0] == "█" and bars[-1] == "▁"
    assert "2026-03-01 .. 2026-03-05, 5 days, n 60-60" in line


# -- the command ------------------------------------------------------------------------------


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="prefleak")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code, capsys.readouterr().out


def test_cli_json_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = _coverage_store(tmp_path)
    db = str(store.path)
    store.close()
    code, out = _run(capsys, "diversity", "--db", db, "--json", "--embeddings", "off")
    assert code == 0
    report = json.loads(out)
    assert report["schema"] == "prefleak.diversity/1"
    assert {"datasets", "coverage", "overlap", "generations", "notes"} <= set(report)
    row = report["datasets"][0]
    assert {"dataset", "role", "n_samples", "metrics", "drift", "windows"} <= set(row)
    assert [w["start"] for w in row["windows"]] == [START.isoformat()]
    assert set(row["metrics"]["distinct_2"]) == {"value", "ci"}
    assert any("embeddings off" in note for note in report["notes"])
    code, out = _run(capsys, "diversity", "--db", db, "--embeddings", "off")
    assert code == 0
    assert "coverage of traffic by evalset" in out and "dist-2" in out


def test_cli_on_an_empty_store_says_what_to_send(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _run(capsys, "diversity", "--db", str(tmp_path / "empty.db"), "--embeddings", "off")
    assert code == 0 and "No samples stored yet" in out
