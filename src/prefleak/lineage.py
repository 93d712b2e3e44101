"""Model lineage and judge-candidate relatedness: the one place the relatedness rules live.

Preference leakage (Li et al. 2025, arXiv 2502.01534) happens when a judge favours students trained
on synthetic data that the judge, or a model related to it, generated. :class:`Lineage` folds model,
dataset and training events, in any order, into a provenance graph and says how a judge relates to
a candidate. The rules are written out with examples in docs/relatedness.md; keep both in step.

Relations are *declared* (they follow from provenance someone sent) or *inferred* (a ``relation``
event, e.g. from a style fingerprint, says a candidate's texts carry a judge's style). A declared
relation always wins; an inferred one is used only where the declared provenance finds nothing,
so an inference can add a relation but never weaken or duplicate one somebody declared.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from prefleak.models.events import (
    DatasetEvent,
    Event,
    ModelEvent,
    RelationEvent,
    TrainingEvent,
    timeless_id,
)
from prefleak.models.events import is_human as _is_human_id

LineageEvent = Event
"""What :meth:`Lineage.update` accepts; events other than provenance are ignored."""

_SHARE_DIGITS = 12
"""Shares are rounded so that sums such as 0.1 + 0.2 compare equal to 0.3."""

RelationSource = Literal["declared", "inferred"]
DECLARED: RelationSource = "declared"
INFERRED: RelationSource = "inferred"


class RelationKind(StrEnum):
    """How a judge is related to a candidate, from strongest to weakest."""

    SAME_MODEL = "same_model"
    INHERITANCE = "inheritance"
    SAME_SERIES = "same_series"
    SAME_FAMILY = "same_family"
    UNRELATED = "unrelated"

    @property
    def strength(self) -> int:
        """4 for ``same_model`` down to 0 for ``unrelated``: the order in which kinds win."""
        members = list(RelationKind)
        return len(members) - 1 - members.index(self)

    @property
    def related(self) -> bool:
        """Every kind but ``unrelated`` can leak preference."""
        return self is not RelationKind.UNRELATED


@dataclass(frozen=True)
class Relation:
    """A judge's relation to a candidate, with the evidence a person needs to check it.

    ``share`` is the share of the candidate's training data behind the relation: 1.0 when it runs
    through the candidate's own identity or weights, 0.0 when unrelated. ``source`` says whether
    it follows from declared provenance or was inferred (a ``relation`` event); only inferred
    relations carry a ``confidence``, the one their event gave.
    """

    kind: RelationKind
    share: float
    path: tuple[str, ...] = ()
    source: RelationSource = DECLARED
    confidence: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"share {self.share!r} is outside [0, 1]")

    @property
    def related(self) -> bool:
        """Whether the judge may favour the candidate for reasons of lineage."""
        return self.kind.related


UNRELATED = Relation(RelationKind.UNRELATED, 0.0, ())


@dataclass(frozen=True)
class _ModelInfo:
    family: str | None
    series: str | None
    parent: str | None
    kind: str | None


@dataclass(frozen=True)
class _Training:
    """One training run; kept as a value so that a repeated event is recognised as such."""

    base: str
    method: str
    datasets: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class _Edge:
    """``source`` descends from ``target``: through its weights (share 1.0) or its data."""

    target: str
    share: float
    steps: tuple[str, ...]


@dataclass
class _Frame:
    """One model being explored by :meth:`Lineage._descent` (iterative, so deep chains are fine)."""

    node: str
    edges: list[_Edge]
    next: int = 0
    total: float = 0.0
    best: float = 0.0
    best_steps: tuple[str, ...] = ()

    def absorb(self, edge: _Edge, value: tuple[float, tuple[str, ...]]) -> None:
        share = edge.share * value[0]
        if share > 0.0:
            self.total += share
            if share > self.best:
                self.best, self.best_steps = share, edge.steps + value[1]


@dataclass(frozen=True)
class _Finding:
    """What one source of the candidate (its identity, or one dataset) contributes."""

    kind: RelationKind
    share: float
    path: tuple[str, ...] = ()


_Label = Literal["series", "family"]
_LABEL_KINDS: tuple[tuple[_Label, RelationKind], ...] = (
    ("series", RelationKind.SAME_SERIES),
    ("family", RelationKind.SAME_FAMILY),
)


class Lineage:
    """Provenance graph of models and datasets, folded from events that may arrive in any order.

    Every answer reflects all events seen so far, so a late dataset or model registration changes
    earlier answers (the cache is dropped on every update that changes something).
    """

    def __init__(self) -> None:
        self._models: dict[str, _ModelInfo] = {}
        self._datasets: dict[str, str | None] = {}
        self._trainings: dict[str, set[_Training]] = {}
        self._relations: dict[tuple[str, str], Relation] = {}
        self._ancestries: dict[str, dict[str, tuple[str, ...]]] = {}
        self._edge_lists: dict[str, list[_Edge]] = {}
        self._label_maps: dict[tuple[str, _Label], dict[str, str]] = {}
        self._inferred: dict[tuple[str, str], tuple[tuple[float, str], RelationEvent]] = {}
        """Per (judge, candidate): the newest ``relation`` event, with its (ts, id) order key."""

    @classmethod
    def from_events(cls, events: Iterable[LineageEvent]) -> Lineage:
        """A lineage with every event applied, in the order given (which does not matter)."""
        lineage = cls()
        for event in events:
            lineage.update(event)
        return lineage

    def update(self, event: LineageEvent) -> None:
        """Apply one event; repeating an event changes nothing.

        The latest registration of a model or dataset replaces earlier ones; training runs of a
        model accumulate (a model may have several, e.g. SFT then DPO). Of the ``relation`` events
        of one pair, the one with the latest ``ts`` wins whatever the arrival order (ties go to
        the larger content id, so every replica picks the same one).
        """
        if isinstance(event, RelationEvent):
            pair = (event.judge, event.candidate)
            key = (event.ts.timestamp() if event.ts else float("-inf"), timeless_id(event))
            held = self._inferred.get(pair)
            if held is None or key > held[0]:
                self._inferred[pair] = (key, event)
            return  # declared relations do not depend on it: no cache to drop
        if isinstance(event, ModelEvent):
            info = _ModelInfo(event.family, event.series, event.parent, event.kind)
            if self._models.get(event.model) == info:
                return
            self._models[event.model] = info
        elif isinstance(event, DatasetEvent):
            if event.dataset in self._datasets and self._datasets[event.dataset] == event.generator:
                return
            self._datasets[event.dataset] = event.generator
        elif isinstance(event, TrainingEvent):
            mixture = tuple(sorted((d.dataset, d.share) for d in event.datasets))
            training = _Training(event.base, event.method, mixture)
            runs = self._trainings.setdefault(event.model, set())
            if training in runs:
                return
            runs.add(training)
        else:
            return
        for cache in (self._relations, self._ancestries, self._edge_lists, self._label_maps):
            cache.clear()

    def is_human(self, model: str) -> bool:
        """Whether ``model`` is a person (registered kind ``human`` or an id starting ``human``)."""
        info = self._models.get(model)
        return _is_human_id(model, info.kind if info else None)

    def models(self) -> set[str]:
        """Every model id mentioned by any event, registered or not."""
        names = set(self._models)
        names.update(info.parent for info in self._models.values() if info.parent)
        names.update(gen for gen in self._datasets.values() if gen is not None)
        for model, runs in self._trainings.items():
            names.add(model)
            names.update(run.base for run in runs)
        for judge, candidate in self._inferred:
            names.update((judge, candidate))
        return names

    def relation(self, judge: str, candidate: str) -> Relation:
        """The strongest declared relation of ``judge`` to ``candidate`` (docs/relatedness.md), or
        else the inferred one, if any."""
        declared = self.declared(judge, candidate)
        if declared.related:
            return declared
        return self.inferred(judge, candidate) or declared

    def declared(self, judge: str, candidate: str) -> Relation:
        """The relation that declared provenance alone gives, ignoring every inference."""
        key = (judge, candidate)
        cached = self._relations.get(key)
        if cached is None:
            cached = self._relations[key] = self._compute(judge, candidate)
        return cached

    def inferred(self, judge: str, candidate: str) -> Relation | None:
        """The newest inferred relation of the pair; None when there is none or it was withdrawn
        (``kind: unrelated``)."""
        held = self._inferred.get((judge, candidate))
        if held is None or held[1].kind == RelationKind.UNRELATED.value:
            return None
        event = held[1]
        return Relation(
            RelationKind(event.kind),
            event.share,
            (_inferred_step(event),),
            source=INFERRED,
            confidence=event.confidence,
        )

    def inferred_event(self, judge: str, candidate: str) -> RelationEvent | None:
        """The newest ``relation`` event of the pair, withdrawals included; None when none."""
        held = self._inferred.get((judge, candidate))
        return None if held is None else held[1]

    def inferred_pairs(self) -> dict[tuple[str, str], Relation]:
        """Pairs whose relation is an inference: inferred, not withdrawn, nothing declared."""
        found = {pair: self.relation(*pair) for pair in sorted(self._inferred)}
        return {pair: r for pair, r in found.items() if r.source == INFERRED}

    # -- the rules ----------------------------------------------------------------------------

    def _compute(self, judge: str, candidate: str) -> Relation:
        if judge == candidate:
            return Relation(RelationKind.SAME_MODEL, 1.0, (f"{candidate} is the judge itself",))
        ancestry = self._ancestry(judge)
        # Paths back through the candidate count 0: it cannot explain itself (and cycles end).
        memo: dict[str, tuple[float, tuple[str, ...]]] = {candidate: (0.0, ())}
        findings = [self._identity_finding(judge, candidate, ancestry, memo)]
        for dataset, share in sorted(self.training_data(candidate).items()):
            generator = self.generator(dataset)
            if generator is None:
                continue  # human-written or not yet registered: relates to nothing
            steps = _data_steps(candidate, dataset, share, generator)
            if generator == judge:
                findings.append(_Finding(RelationKind.SAME_MODEL, share, steps))
                continue
            findings.append(self._source_finding(judge, generator, share, steps, ancestry, memo))
        return _aggregate(findings)

    def _identity_finding(
        self,
        judge: str,
        candidate: str,
        ancestry: dict[str, tuple[str, ...]],
        memo: dict[str, tuple[float, tuple[str, ...]]],
    ) -> _Finding:
        """The candidate's own weights: the judge descends from it, or it from the judge."""
        options: list[_Finding] = []
        if candidate in ancestry:
            options.append(_Finding(RelationKind.INHERITANCE, 1.0, ancestry[candidate]))
        total, best = 0.0, 0.0
        best_steps: tuple[str, ...] = ()
        for base in self.bases(candidate):
            share, chain = self._descent(base, judge, memo)
            total += share
            if share > best:
                best, best_steps = share, _weights_steps(candidate, base) + chain
        if total > 0.0:
            options.append(_Finding(RelationKind.INHERITANCE, min(1.0, total), best_steps))
        options.extend(self._label_findings(judge, candidate, 1.0, ()))
        return _strongest(options)

    def _source_finding(
        self,
        judge: str,
        generator: str,
        share: float,
        steps: tuple[str, ...],
        ancestry: dict[str, tuple[str, ...]],
        memo: dict[str, tuple[float, tuple[str, ...]]],
    ) -> _Finding:
        """One dataset of the candidate, written by ``generator`` (not the judge)."""
        options: list[_Finding] = []
        if generator in ancestry:
            options.append(_Finding(RelationKind.INHERITANCE, share, steps + ancestry[generator]))
        descent, chain = self._descent(generator, judge, memo)
        if descent > 0.0:
            options.append(_Finding(RelationKind.INHERITANCE, share * descent, steps + chain))
        options.extend(self._label_findings(judge, generator, share, steps))
        return _strongest(options)

    def _label_findings(
        self, judge: str, source: str, share: float, steps: tuple[str, ...]
    ) -> list[_Finding]:
        """``same_series``/``same_family``: a label on both the judge's and the source's weights."""
        findings = []
        for label, kind in _LABEL_KINDS:
            mine = self._labels(judge, label)
            theirs = self._labels(source, label)
            common = sorted(set(mine) & set(theirs))
            if common:
                value = common[0]
                evidence = (
                    _label_step(source, theirs[value], label, value),
                    _label_step(judge, mine[value], label, value),
                )
                findings.append(_Finding(kind, share, steps + evidence))
        return findings

    # -- the graph ----------------------------------------------------------------------------

    def datasets(self) -> list[str]:
        """Every dataset a ``dataset`` event registered, sorted."""
        return sorted(self._datasets)

    def training_data(self, model: str) -> dict[str, float]:
        """Datasets ``model`` was trained on, each with its largest share over training runs."""
        mixture: dict[str, float] = {}
        for run in self._trainings.get(model, ()):
            for dataset, share in run.datasets:
                mixture[dataset] = max(share, mixture.get(dataset, 0.0))
        return mixture

    def bases(self, model: str) -> list[str]:
        """Models whose weights ``model`` started from: its ``parent`` and training ``base``s."""
        bases = {run.base for run in self._trainings.get(model, ())}
        info = self._models.get(model)
        if info is not None and info.parent is not None:
            bases.add(info.parent)
        return sorted(bases)

    def generator(self, dataset: str) -> str | None:
        """The model that wrote ``dataset``; None for human, unknown or unregistered data."""
        generator = self._datasets.get(dataset)
        if generator is None or self.is_human(generator):
            return None
        return generator

    def _edges(self, model: str) -> list[_Edge]:
        """What ``model`` directly descends from, in a fixed order so answers are deterministic."""
        cached = self._edge_lists.get(model)
        if cached is not None:
            return cached
        edges = [_Edge(base, 1.0, _weights_steps(model, base)) for base in self.bases(model)]
        for dataset, share in sorted(self.training_data(model).items()):
            generator = self.generator(dataset)
            if generator is not None:
                edges.append(_Edge(generator, share, _data_steps(model, dataset, share, generator)))
        self._edge_lists[model] = edges
        return edges

    def _ancestry(self, model: str) -> dict[str, tuple[str, ...]]:
        """Everything ``model`` descends from, through data or weights, with the shortest path."""
        cached = self._ancestries.get(model)
        if cached is not None:
            return cached
        found: dict[str, tuple[str, ...]] = {}
        queue: deque[tuple[str, tuple[str, ...]]] = deque([(model, ())])
        while queue:
            node, path = queue.popleft()
            for edge in self._edges(node):
                if edge.target != model and edge.target not in found:
                    found[edge.target] = path + edge.steps
                    queue.append((edge.target, found[edge.target]))
        self._ancestries[model] = found
        return found

    def _descent(
        self, start: str, judge: str, memo: dict[str, tuple[float, tuple[str, ...]]]
    ) -> tuple[float, tuple[str, ...]]:
        """Share of ``start``'s lineage that comes from ``judge``, and its strongest chain.

        The judge counts 1; any other model counts the sum over what it descends from of edge share
        (weights 1.0, data its share) times that model's own count, capped at 1. An edge back onto
        the chain being explored counts 0, so cycles end.
        """
        if start == judge:
            return 1.0, ()
        if start in memo:
            return memo[start]
        stack = [_Frame(start, self._edges(start))]
        on_chain = {start}
        result: tuple[float, tuple[str, ...]] = (0.0, ())
        while stack:
            frame = stack[-1]
            if frame.next < len(frame.edges):
                target = frame.edges[frame.next].target
                if target == judge:
                    value: tuple[float, tuple[str, ...]] = (1.0, ())
                elif target in memo:
                    value = memo[target]
                elif target in on_chain:
                    value = (0.0, ())
                else:
                    on_chain.add(target)
                    stack.append(_Frame(target, self._edges(target)))
                    continue
                frame.absorb(frame.edges[frame.next], value)
                frame.next += 1
                continue
            stack.pop()
            on_chain.discard(frame.node)
            value = (min(1.0, frame.total), frame.best_steps)
            memo[frame.node] = value
            if stack:
                parent = stack[-1]
                parent.absorb(parent.edges[parent.next], value)
                parent.next += 1
            else:
                result = value
        return result

    def _labels(self, model: str, label: _Label) -> dict[str, str]:
        """Non-null ``label`` values of ``model`` and its weights ancestors -> who carries them."""
        cached = self._label_maps.get((model, label))
        if cached is not None:
            return cached
        labels: dict[str, str] = {}
        seen = {model}
        queue = deque([model])
        while queue:
            node = queue.popleft()
            info = self._models.get(node)
            value = getattr(info, label) if info is not None else None
            if isinstance(value, str) and value not in labels:
                labels[value] = node
            for base in self.bases(node):
                if base not in seen:
                    seen.add(base)
                    queue.append(base)
        self._label_maps[(model, label)] = labels
        return labels


def _data_steps(model: str, dataset: str, share: float, generator: str) -> tuple[str, ...]:
    return (
        f"{model} trained on {dataset} (share {share:g})",
        f"{dataset} generated by {generator}",
    )


def _inferred_step(event: RelationEvent) -> str:
    """``stu's texts carry gpt-4o's style (inferred by fingerprint, confidence 0.93; ...)``."""
    why = f"inferred by {event.source}, confidence {event.confidence:.2f}"
    evidence = event.evidence
    if evidence is not None:
        why += (
            f"; mean probability {evidence.probability:.2f} "
            f"[{evidence.ci_low:.2f}, {evidence.ci_high:.2f}] over {evidence.texts} texts, "
            f"chance {evidence.chance:.2f}"
        )
        return f"{event.candidate}'s texts carry {event.judge}'s style ({why})"
    return f"{event.candidate} related to {event.judge} ({why})"


def _weights_steps(model: str, base: str) -> tuple[str, ...]:
    return (f"{model} fine-tuned from {base}",)


def _label_step(model: str, carrier: str, label: _Label, value: str) -> str:
    if carrier == model:
        return f"{model} is in {label} {value}"
    return f"{model} descends from the weights of {carrier}, in {label} {value}"


def _strongest(options: list[_Finding]) -> _Finding:
    """The strongest kind among one source's options, the largest share breaking ties."""
    if not options:
        return _Finding(RelationKind.UNRELATED, 0.0)
    return max(options, key=lambda f: (f.kind.strength, f.share))


def _aggregate(findings: list[_Finding]) -> Relation:
    """Strongest kind over all sources; its share sums over the sources giving that kind."""
    related = [f for f in findings if f.kind.related and f.share > 0.0]
    if not related:
        return UNRELATED
    kind = max((f.kind for f in related), key=lambda k: k.strength)
    winners = [f for f in related if f.kind is kind]
    share = round(min(1.0, sum(f.share for f in winners)), _SHARE_DIGITS)
    path = tuple(dict.fromkeys(step for f in winners for step in f.path))
    return Relation(kind, share, path)
