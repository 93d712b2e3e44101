"""Event schema v1: valid events, defaults, ids, and every kind of bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from prefleak.models.events import (
    PROVENANCE_TYPES,
    EventError,
    ModelEvent,
    RelationEvent,
    TrainingEvent,
    VerdictEvent,
    content_id,
    is_human,
    parse_event,
    same_content,
    timeless_id,
    validate,
)

VERDICT = {
    "type": "verdict",
    "benchmark": "alpacaeval",
    "prompt_id": "p1",
    "judge": "gpt-4o",
    "model_a": "student-a",
    "model_b": "student-b",
    "winner": "a",
}


def _raw(**fields: object) -> bytes:
    return json.dumps({**VERDICT, **fields}).encode()


def test_verdict_with_every_optional_field() -> None:
    event = parse_event(
        _raw(game=2, first="b", category="coding", len_a=10, len_b=20, track="main",
             prompt="p", response_a="x", response_b="y", ts="2026-11-01T10:00:00+02:00")
    )  # fmt: skip
    assert isinstance(event, VerdictEvent)
    assert (event.game, event.first, event.len_b) == (2, "b", 20)
    assert event.ts == datetime(2026, 11, 1, 8, tzinfo=UTC)


def test_missing_id_is_a_content_hash_and_ts_defaults_to_ingestion_time() -> None:
    received = datetime(2026, 11, 2, tzinfo=UTC)
    first = parse_event(_raw(), received_at=received)
    again = parse_event(json.dumps(VERDICT, indent=2).encode())
    assert first.id == again.id == content_id(validate(_raw()))
    assert first.ts == received
    assert parse_event(_raw(winner="b")).id != first.id


def test_explicit_id_is_kept() -> None:
    assert parse_event(_raw(id="evt-1")).id == "evt-1"


def test_same_content_ignores_a_defaulted_ts_but_not_other_fields() -> None:
    a = parse_event(_raw(id="x"), received_at=datetime(2026, 1, 1, tzinfo=UTC))
    b = validate(_raw(id="x"))
    assert same_content(a, b)
    assert not same_content(a, validate(_raw(id="x", winner="tie")))


def test_provenance_events() -> None:
    model = parse_event(b'{"type":"model","model":"gpt-4o","family":"openai","series":"gpt-4o"}')
    assert isinstance(model, ModelEvent) and model.family == "openai"
    training = parse_event(
        b'{"type":"training","model":"s","base":"m","method":"sft",'
        b'"datasets":[{"dataset":"d1","share":0.6},{"dataset":"d2","share":0.4}]}'
    )
    assert isinstance(training, TrainingEvent)
    assert [d.share for d in training.datasets] == [0.6, 0.4]
    dataset = parse_event(b'{"type":"dataset","dataset":"human-set","generator":null}')
    assert dataset.type == "dataset" and dataset.generator is None


RELATION = (
    b'{"type": "relation", "judge": "gpt-4o", "candidate": "student-x", "kind": "inheritance",'
    b' "source": "fingerprint", "confidence": 0.74, "share": 0.76, "evidence": {"method":'
    b' "tfidf-char-logreg", "texts": 100, "probability": 0.76, "ci_low": 0.74, "ci_high": 0.78,'
    b' "chance": 0.5, "accuracy": 0.87, "generators": 2}}'
)
"""The example of docs/events.md."""


def test_relation_event_is_provenance_with_an_id_that_ignores_the_time() -> None:
    event = parse_event(RELATION)
    assert isinstance(event, RelationEvent) and "relation" in PROVENANCE_TYPES
    assert event.evidence is not None and event.evidence.ci_low == 0.74
    later = event.model_copy(update={"ts": datetime(2030, 1, 1, tzinfo=UTC)})
    assert timeless_id(later) == timeless_id(event) != content_id(event)
    bare = parse_event(
        b'{"type":"relation","judge":"j","candidate":"c","kind":"unrelated",'
        b'"source":"operator","confidence":1}'
    )
    assert isinstance(bare, RelationEvent) and (bare.share, bare.evidence) == (1.0, None)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"{not json", "Invalid JSON"),
        (b"", "Invalid JSON"),
        (b"[1, 2]", "Input should be an object"),
        (b'{"type":"vote"}', "Input tag 'vote' found using 'type' does not match"),
        (b'{"model":"x"}', "Unable to extract tag using discriminator 'type'"),
        (_raw(winner="c"), "winner: Input should be 'a', 'b' or 'tie'"),
        (_raw(model_b="student-a"), "model_a and model_b are both 'student-a'"),
        (_raw(game=3), "game: Input should be 1 or 2"),
        (_raw(ts="yesterday"), "ts: Input should be a valid datetime"),
        (_raw(ts="2026-11-01T10:00:00"), "ts: Input should have timezone info"),
        (_raw(judgee="x"), "judgee: Extra inputs are not permitted"),
        (_raw(len_a=-1), "len_a: Input should be greater than or equal to 0"),
        (json.dumps({k: v for k, v in VERDICT.items() if k != "judge"}).encode(),
         "judge: Field required"),
        (b'{"type":"training","model":"s","base":"m","method":"sft",'
         b'"datasets":[{"dataset":"d","share":1.5}]}',
         "datasets.0.share: Input should be less than or equal to 1"),
        (b'{"type":"training","model":"s","base":"m","method":"sft",'
         b'"datasets":[{"dataset":"d","share":0}]}',
         "datasets.0.share: Input should be greater than 0"),
        (b'{"type":"training","model":"s","base":"m","method":"sft",'
         b'"datasets":[{"dataset":"d","share":0.7},{"dataset":"e","share":0.7}]}',
         "dataset shares sum to 1.4, more than 1"),
        (b'{"type":"training","model":"s","base":"m","method":"sft","datasets":[]}',
         "datasets: List should have at least 1 item"),
        (b'{"type":"model","model":"m","parent":"m"}', "model 'm' cannot be its own parent"),
        (b'{"type":"relation","judge":"m","candidate":"m","kind":"inheritance",'
         b'"source":"fingerprint","confidence":0.9}', "judge and candidate are both 'm'"),
        (RELATION.replace(b'"inheritance"', b'"cousin"'), "kind: Input should be"),
        (RELATION.replace(b'0.74, "share"', b'1.5, "share"'),
         "confidence: Input should be less than or equal to 1"),
        (RELATION.replace(b'"generators": 2', b'"generators": 2, "x": 1'),
         "evidence.x: Extra inputs are not permitted"),
        (b'{"type":"verdict","benchmark":"b\xff"}', "invalid UTF-8 at byte 32"),
        (b"\xff\xfe{}", "invalid UTF-8 at byte 0"),
    ],
)  # fmt: skip
def test_bad_input_gets_a_precise_error(raw: bytes, error: str) -> None:
    with pytest.raises(EventError) as caught:
        validate(raw)
    assert error in str(caught.value)


def test_humans() -> None:
    assert is_human("human-panel", None)
    assert is_human("annotators", "human")
    assert not is_human("gpt-4o", "llm")
