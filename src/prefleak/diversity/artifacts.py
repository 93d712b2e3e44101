"""Corrupt or redundant samples, and train-eval n-gram overlap (pure; heuristics in the docs).

Synthetic instruction sets are often heavily corrupted (empty or cut-off answers, refusals,
answers that repeat the prompt, duplicates). Overlap is classic data leakage: an eval item that
shares a long n-gram with training data may have been seen in training.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from prefleak.diversity.resample import proportion_interval
from prefleak.diversity.text import Tokens, incidence, words
from prefleak.stats.estimate import Estimate

ARTIFACT_KINDS = (
    "empty", "truncated", "refusal", "prompt_echo", "exact_duplicate", "near_duplicate",
)  # fmt: skip
NEAR_DUPLICATE_JACCARD = 0.8
SHINGLE_N = 5
OVERLAP_N = 13
"""Eval items sharing a 13-word sequence with training data count as overlapping (GPT-3's test)."""
_ENDINGS = frozenset(".!?:;)]}>\"'`*|”’…。！？")
_REFUSAL = re.compile(
    r"\b(i'?m sorry|i am sorry|i apologi[sz]e|i can(?:no|')t (?:help|assist|provide|comply|do)"
    r"|i cannot|i'?m (?:not able|unable) to|i am (?:not able|unable) to|as an ai\b"
    r"|as a language model|i won'?t be able to)",
    re.IGNORECASE,
)
REFUSAL_WINDOW = 300
"""Refusals are looked for in the first characters only: a refusal leads."""


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def artifact_shares(texts: Sequence[str], prompts: Sequence[str | None]) -> dict[str, float]:
    """Share of samples with each artifact (kinds overlap: a sample can have several)."""
    n = len(texts)
    if not n:
        return {}
    flags = {kind: np.zeros(n, dtype=bool) for kind in ARTIFACT_KINDS}
    seen: dict[str, int] = {}
    for i, (text, prompt) in enumerate(zip(texts, prompts, strict=True)):
        body = text.rstrip()
        flags["empty"][i] = not words(body)
        flags["truncated"][i] = bool(body) and body[-1] not in _ENDINGS and not body.endswith("```")
        flags["refusal"][i] = _REFUSAL.search(body[:REFUSAL_WINDOW]) is not None
        if prompt:
            head = words(prompt)
            flags["prompt_echo"][i] = bool(head) and words(body)[: len(head)] == head
        normal = _normal(body)
        flags["exact_duplicate"][i] = normal in seen
        seen.setdefault(normal, i)
    flags["near_duplicate"] = _near_duplicates(texts)
    return {kind: float(flag.mean()) for kind, flag in flags.items()}


def _near_duplicates(texts: Sequence[str]) -> np.ndarray:
    """Samples whose 5-word shingles have Jaccard similarity ≥ 0.8 with another sample's."""
    near = np.zeros(len(texts), dtype=bool)
    held = incidence(*Tokens.of(texts).ngrams(SHINGLE_N), len(texts)).T.tocsr()  # texts × shingles
    if not held.nnz:
        return near
    sizes = held.sum(axis=1)
    shared = sparse.triu(held @ held.T, k=1).tocoo()
    jaccard = shared.data / (sizes[shared.row] + sizes[shared.col] - shared.data)
    close = jaccard >= NEAR_DUPLICATE_JACCARD
    near[shared.row[close]] = True
    near[shared.col[close]] = True
    return near


@dataclass(frozen=True, slots=True)
class Overlap:
    """Eval items sharing an n-gram with a training dataset's sampled prompts and texts."""

    items: int
    overlapping: Estimate
    examples: tuple[str, ...]


def overlap(
    eval_items: Sequence[tuple[str | None, str]],
    training: Sequence[tuple[str | None, str]],
    n: int = OVERLAP_N,
    examples: int = 3,
) -> Overlap:
    """Share of eval items (prompt or text) with an ``n``-word sequence found in ``training``.

    ``training`` is a sample, so the share is a lower bound of the overlap with the whole set.
    """
    train_keys, _ = Tokens.of([part for item in training for part in item if part]).ngrams(n)
    parts = [(index, part) for index, item in enumerate(eval_items) for part in item if part]
    keys, doc = Tokens.of([part for _, part in parts]).ngrams(n)
    owner = np.array([index for index, _ in parts], dtype=np.intp)
    hit = np.zeros(len(eval_items), dtype=bool)
    if len(keys) and len(train_keys):
        hit[owner[doc[np.isin(keys, train_keys)]]] = True
    share = float(hit.mean()) if len(eval_items) else 0.0
    shown = tuple(eval_items[i][0] or eval_items[i][1] for i in np.flatnonzero(hit)[:examples])
    return Overlap(
        len(eval_items),
        Estimate(share, proportion_interval(int(hit.sum()), len(eval_items))),
        shown,
    )
