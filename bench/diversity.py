"""Diversity benchmark: lexical measures in texts/s, and embedding overhead against the bare model.

    PYTHONPATH=src python bench/diversity.py [--repeat 3] [--halves 100] [--embed-texts 600 or 0]

Texts: the real AlpacaEval instructions (about 165 characters) and answers (about 2,040) from
../shared/data. Lexical: one :class:`LexicalSample` build plus every measure (no intervals), in
texts/s of wall time and of the process's CPU time (the whole sample's DEFLATE runs on a second
thread, so wall time can be the smaller); then ``--halves`` half-sample calls ``metrics(mask)`` on
one sample, what an interval costs.
Embeddings (with the embed extra): :meth:`Embedder.encode` on fresh caches against
``SentenceTransformer.encode`` with the same options on the same texts, alternating, best of three.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np

from prefleak.diversity.lexical import LexicalSample
from prefleak.diversity.resample import half_masks
from prefleak.embeddings import BATCH_SIZE, Embedder, load_embedder

DATA = (
    Path(__file__).resolve().parents[2]
    / "shared/data/alpacaeval_student_pair_gemini_judged.json.gz"
)


def lexical_rates(texts: list[str], repeat: int, halves: int) -> tuple[float, float, float]:
    """Texts/s of a build plus every measure (wall, CPU); seconds for ``halves`` masked calls."""
    wall = cpu = masked = float("inf")
    masks = list(half_masks(len(texts), halves, np.random.default_rng(0)))
    for _ in range(repeat):
        started, used = time.perf_counter(), time.process_time()
        sample = LexicalSample(texts)
        sample.metrics()
        wall = min(wall, time.perf_counter() - started)
        cpu = min(cpu, time.process_time() - used)
        started = time.perf_counter()
        for mask in masks:
            sample.metrics(mask)
        masked = min(masked, time.perf_counter() - started)
    return len(texts) / wall, len(texts) / cpu, masked


def embedding_rates(embedder: Embedder, texts: list[str]) -> tuple[float, float]:
    model = embedder.model
    model.encode(texts[:64], batch_size=BATCH_SIZE)  # warm up
    direct = ours = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        model.encode(texts, batch_size=BATCH_SIZE, convert_to_numpy=True,
                     normalize_embeddings=True, show_progress_bar=False)  # fmt: skip
        direct = min(direct, time.perf_counter() - started)
        fresh = Embedder(model)
        started = time.perf_counter()
        fresh.encode(texts)
        ours = min(ours, time.perf_counter() - started)
    return len(texts) / direct, len(texts) / ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--halves", type=int, default=100)
    parser.add_argument("--embed-texts", type=int, default=600)
    args = parser.parse_args()
    with gzip.open(DATA) as handle:
        records = json.load(handle)
    short = [r["instruction"] for r in records]
    long = [r[key] for r in records for key in ("output_1", "output_2")]
    for name, texts in (("instructions", short), ("answers", long)):
        chars = sum(map(len, texts)) / len(texts)
        wall, cpu, masked = lexical_rates(texts, args.repeat, args.halves)
        print(f"lexical {name}: {len(texts)} texts of {chars:,.0f} chars: {wall:,.0f} texts/s "
              f"({cpu:,.0f} by CPU time); {args.halves} half-samples {masked:.2f} s")  # fmt: skip
    if not args.embed_texts:  # --embed-texts 0: lexical only
        return
    embedder = load_embedder()
    if isinstance(embedder, str):
        print(embedder)
        return
    texts = (short + long)[: args.embed_texts]
    direct, ours = embedding_rates(embedder, texts)
    print(f"embeddings ({len(texts)} texts): sentence-transformers encode {direct:,.1f} texts/s, "
          f"Embedder.encode {ours:,.1f} texts/s = {ours / direct:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
