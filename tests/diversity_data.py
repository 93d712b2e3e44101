"""Corpora for the diversity tests: generated ones, and the real AlpacaEval outputs when present."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import pytest

SHARED = Path(__file__).parents[2] / "shared" / "data"
ALPACA = SHARED / "alpacaeval_student_pair_gemini_judged.json.gz"

_TOPIC_WORDS = {
    "cooking": "recipe oven bake flour sugar butter simmer sauce garlic onion roast dough",
    "sports": "football match goal referee league striker coach season penalty stadium",
    "tax": "tax deduction invoice audit refund income filing bracket accountant vat",
    "space": "planet orbit rocket telescope galaxy astronaut comet nebula gravity moon",
    "filler": "how do i get the best result with my when should you use a for in",
}
TOPICS = {topic: words.split() for topic, words in _TOPIC_WORDS.items()}
FILLER = TOPICS.pop("filler")


def alpaca() -> list[dict[str, Any]]:
    """The 805 AlpacaEval records (instruction, output_1, output_2), or skip the test."""
    if not ALPACA.exists():
        pytest.skip(f"shared test data not found at {ALPACA} (see shared/data/README.md)")
    with gzip.open(ALPACA) as handle:
        records: list[dict[str, Any]] = json.load(handle)
    return records


def topic_texts(topic: str, count: int, seed: int, length: int = 12) -> list[str]:
    """Short requests about one topic: topic words mixed with common filler words."""
    rng = random.Random(f"{topic}-{seed}")
    words = TOPICS[topic]
    return [
        " ".join(rng.choice(words) if rng.random() < 0.6 else rng.choice(FILLER)
                 for _ in range(length)).capitalize() + "?"
        for _ in range(count)
    ]  # fmt: skip


def vocabulary_texts(vocabulary: int, count: int, seed: int, length: int = 20) -> list[str]:
    """Random texts over ``vocabulary`` distinct words: fewer words, less diverse."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocabulary)]
    return [" ".join(rng.choices(words, k=length)) + "." for _ in range(count)]
