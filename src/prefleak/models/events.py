"""Event schema v1: the only definition of what prefleak accepts (documented in docs/events.md).

Every event is one JSON object discriminated by ``type``. Events are the truth; everything else
prefleak knows is a projection of them. An event without ``id`` gets a deterministic one, a hash of
its canonical content, so re-ingesting the same file is a no-op.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

Id = Annotated[str, Field(min_length=1, max_length=256)]
"""Identifiers of models, datasets, benchmarks, prompts and events."""


class _Event(BaseModel):
    """Fields every event may carry."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    id: Id | None = None
    ts: AwareDatetime | None = None

    @field_validator("ts")
    @classmethod
    def _representable(cls, ts: datetime | None) -> datetime | None:
        """A time whose UTC instant leaves years 1..9999 could be stored but never read back."""
        if ts is not None and not 1 < ts.year < 9999:  # only the edge years can leave the range
            try:
                ts.astimezone(UTC).timestamp()
            except (OverflowError, ValueError):
                raise ValueError("ts is outside the years 1 to 9999 in UTC") from None
        return ts


class ModelEvent(_Event):
    """A model exists, with its family and series (and, if fine-tuned, the weights it came from)."""

    type: Literal["model"]
    model: Id
    family: Id | None = None
    series: Id | None = None
    parent: Id | None = None
    kind: Literal["llm", "human"] | None = None

    @model_validator(mode="after")
    def _not_own_parent(self) -> ModelEvent:
        if self.parent == self.model:
            raise ValueError(f"model {self.model!r} cannot be its own parent")
        return self


class DatasetEvent(_Event):
    """A dataset exists; ``generator`` is the model that wrote it, or null for human data."""

    type: Literal["dataset"]
    dataset: Id
    generator: Id | None
    size: Annotated[int, Field(ge=0)] | None = None
    role: Literal["training", "eval", "production"] = "training"
    """What the data is for: training data, an eval set, or a sample of real user traffic."""


class DatasetShare(BaseModel):
    """One dataset of a training mixture and its share of the training data."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    dataset: Id
    share: Annotated[float, Field(gt=0.0, le=1.0)]


SHARE_SUM_TOLERANCE = 1e-6


class TrainingEvent(_Event):
    """``model`` was trained from ``base`` on a mixture of datasets."""

    type: Literal["training"]
    model: Id
    base: Id
    method: Annotated[str, Field(min_length=1, max_length=64)]
    """``sft``, ``dpo``, ``distill``, ``icl`` or any other method name."""
    datasets: Annotated[list[DatasetShare], Field(min_length=1)]

    @model_validator(mode="after")
    def _consistent(self) -> TrainingEvent:
        if self.model == self.base:
            raise ValueError(f"model {self.model!r} cannot be trained from itself")
        total = sum(d.share for d in self.datasets)
        if total > 1.0 + SHARE_SUM_TOLERANCE:
            raise ValueError(f"dataset shares sum to {total:.6g}, more than 1")
        names = [d.dataset for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError("a dataset is listed twice in datasets")
        return self


class VerdictEvent(_Event):
    """Judge ``judge`` compared ``model_a`` with ``model_b`` on one prompt and named a winner."""

    type: Literal["verdict"]
    benchmark: Id
    prompt_id: Id
    judge: Id
    model_a: Id
    model_b: Id
    winner: Literal["a", "b", "tie"]
    game: Literal[1, 2] | None = None
    """Which of the two position-swapped games of one comparison this is."""
    first: Literal["a", "b"] | None = None
    """Which response the judge was shown first."""
    category: Id | None = None
    len_a: Annotated[int, Field(ge=0)] | None = None
    len_b: Annotated[int, Field(ge=0)] | None = None
    track: Id | None = None
    prompt: str | None = None
    response_a: str | None = None
    response_b: str | None = None

    @model_validator(mode="after")
    def _two_candidates(self) -> VerdictEvent:
        if self.model_a == self.model_b:
            raise ValueError(f"model_a and model_b are both {self.model_a!r}")
        return self


class SampleEvent(_Event):
    """One item of a dataset (or one answer of a candidate), kept for diversity measures."""

    type: Literal["sample"]
    dataset: Id
    text: Annotated[str, Field(min_length=1)]
    prompt: str | None = None
    label: Annotated[str, Field(max_length=256)] | None = None
    model: Id | None = None
    """The model that wrote ``text``, when it is a candidate's answer rather than a dataset item."""


RelationKindName = Literal["same_model", "inheritance", "same_series", "same_family", "unrelated"]
"""The kinds of :class:`prefleak.lineage.RelationKind`, strongest first."""

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class RelationEvidence(BaseModel):
    """What a style fingerprint saw, kept small so a person can judge the inference."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    method: Annotated[str, Field(min_length=1, max_length=64)]
    texts: Annotated[int, Field(ge=1)]
    """Texts of the candidate that were scored."""
    probability: Probability
    """Mean predicted probability that a text of the candidate is in the judge's style."""
    ci_low: Probability
    ci_high: Probability
    chance: Probability
    """The probability a style-blind classifier would give (1 / number of generators)."""
    typicality: Probability | None = None
    """Share of the candidate's texts as close to the judge's texts as 90 % of the judge's own."""
    accuracy: Probability
    """Cross-validated accuracy of the classifier over every generator."""
    generators: Annotated[int, Field(ge=2)]


class RelationEvent(_Event):
    """A relation between a judge and a candidate that was *inferred*, not declared.

    Nobody sent provenance that makes them related; something (a style fingerprint, say) found
    the candidate's texts written in the judge's style. Lineage uses it only where the declared
    provenance finds nothing, and the newest such event for a pair wins, so ``kind: unrelated``
    withdraws an earlier inference.
    """

    type: Literal["relation"]
    judge: Id
    candidate: Id
    kind: RelationKindName
    source: Annotated[str, Field(min_length=1, max_length=64)]
    """What inferred it: ``fingerprint``, or e.g. ``operator`` for a person's correction."""
    confidence: Probability
    """How sure the source is; for a fingerprint, the lower 95 % bound of the probability."""
    share: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    """Estimated share of the candidate's training behind the relation (as for declared ones)."""
    evidence: RelationEvidence | None = None

    @model_validator(mode="after")
    def _two_models(self) -> RelationEvent:
        if self.judge == self.candidate:
            raise ValueError(f"judge and candidate are both {self.judge!r}")
        return self


Event = Annotated[
    ModelEvent | DatasetEvent | TrainingEvent | VerdictEvent | SampleEvent | RelationEvent,
    Field(discriminator="type"),
]
EVENT_TYPES: tuple[str, ...] = ("model", "dataset", "training", "verdict", "sample", "relation")
PROVENANCE_TYPES: frozenset[str] = frozenset({"model", "dataset", "training", "relation"})

_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
_validate_json = _EVENT_ADAPTER.validator.validate_json  # skips the adapter's per-call wrapper


class EventError(ValueError):
    """A message that is not a valid event, with a reason a person can act on."""


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        path = item["loc"][1:] if item["loc"][:1] and item["loc"][0] in EVENT_TYPES else item["loc"]
        location = ".".join(str(p) for p in path)
        message = item["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts)


def _content(event: Event, *, with_ts: bool) -> bytes:
    """Canonical content: fields in schema order, no nulls, never the id."""
    exclude = {"id"} if with_ts else {"id", "ts"}
    return event.model_dump_json(exclude=exclude, exclude_none=True).encode()


def content_id(event: Event) -> str:
    """Deterministic id of an event sent without one: a hash of its canonical content."""
    return hashlib.blake2b(_content(event, with_ts=True), digest_size=16).hexdigest()


def timeless_id(event: Event) -> str:
    """A deterministic id that ignores ``ts``: what an inference records again, at any time and
    on any replica, with the same content, is the same event (stored once)."""
    return hashlib.blake2b(_content(event, with_ts=False), digest_size=16).hexdigest()


def same_content(one: Event, other: Event) -> bool:
    """Whether two events with one id say the same thing (``ts`` compared only if both have one).

    A re-sent event whose ``ts`` was defaulted at ingestion is the same event, not a conflict.
    """
    with_ts = one.ts is not None and other.ts is not None
    return _content(one, with_ts=with_ts) == _content(other, with_ts=with_ts)


def validate(raw: bytes | str) -> Event:
    """Validate one JSON object; raises :class:`EventError` with a precise reason."""
    try:
        event: Event = _validate_json(raw)
    except ValidationError as exc:
        if isinstance(raw, bytes):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as bad:
                raise EventError(f"invalid UTF-8 at byte {bad.start}") from None
        raise EventError(_describe(exc)) from None
    return event


def validate_object(obj: Any) -> Event:
    """Like :func:`validate`, for an already decoded JSON value."""
    try:
        return _EVENT_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        raise EventError(_describe(exc)) from None


def complete(event: Event, *, received_at: datetime | None = None) -> Event:
    """Fill the defaults: ``id`` from the content, ``ts`` from the time of ingestion."""
    updates: dict[str, Any] = {}
    if event.id is None:
        updates["id"] = content_id(event)
    if event.ts is None:
        updates["ts"] = received_at or datetime.now(UTC)
    return event.model_copy(update=updates) if updates else event


def parse_event(raw: bytes | str, *, received_at: datetime | None = None) -> Event:
    """Validate one JSON object into an event with ``id`` and ``ts`` filled in."""
    return complete(validate(raw), received_at=received_at)


def parse_object(obj: Any, *, received_at: datetime | None = None) -> Event:
    """Like :func:`parse_event`, for an already decoded JSON value."""
    return complete(validate_object(obj), received_at=received_at)


def is_human(model: str, kind: str | None) -> bool:
    """A judge is human when registered with kind ``human`` or when its id starts with ``human``."""
    return kind == "human" or model.startswith("human")
