"""Fuzzing the intake with Hypothesis: whatever arrives ends stored, duplicate or rejected with a
reason -- never an exception, never a dropped connection.

(a) :func:`read_message` into a real :class:`EventStore`: arbitrary bytes, deeply nested JSON,
    huge strings, wrong types, Unicode edge cases (lone surrogates, NUL, bidi controls, BOM), and
    ids sent again with the same or other content.
(b) ``POST /v1/events`` of a real ``prefleak serve``: generated bodies and Content-Types; every
    answer is JSON with a 2xx/4xx status, the counts add up to the messages sent, the service
    stays up and stops cleanly.

Each property runs ``PREFLEAK_FUZZ_EXAMPLES`` cases (200 by default, a few seconds; set it to
5000 or more for a long run) and asserts how many it tried and that every outcome was reached.
"""

from __future__ import annotations

import http.client
import json
import os
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from prefleak.consumers.http import NDJSON_TYPES
from prefleak.ingest import MAX_MESSAGE_BYTES, read_message
from prefleak.models.events import same_content, validate_object
from prefleak.store import Batch, EventStore, Rejection, StoredEvent
from test_daemon import Daemon

EXAMPLES = int(os.environ.get("PREFLEAK_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # no .hypothesis/ directory left in the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- strategies -----------------------------------------------------------------------------------

EDGE_CHARS = (
    "\x00", "\x1f", "\x7f", "\ud800", "\udbff", "\udc00", "\udfff",  # NUL, controls, surrogates
    "\u202e", "\u202d", "\u200f", "\u2066", "\u2069", "\u061c",  # bidi overrides and marks
    "\ufeff", "\u200b", "\u0301", "\u2028", "\u2029", "\uffff", "\U0010ffff", "\U0001f600",
    "\n", "\r", "\t", " ", '"', "\\", "/", "ß", "ﬃ", "İ", "מ", "ع",
)  # fmt: skip
edge_text = st.text(st.sampled_from(EDGE_CHARS) | st.characters(), max_size=24)
names = st.sampled_from(["m1", "m2", "judge", " padded ", "x" * 256, "x" * 257, ""]) | edge_text

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | edge_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(edge_text, inner, max_size=4),
    max_leaves=12,
)
"""Any JSON value (and NaN and infinities, which JSON has not), with odd strings everywhere."""

timestamps = st.sampled_from([
    "2025-03-01T12:00:00Z", "2025-03-01T12:00:00+14:00", "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z", "2025-02-30T00:00:00Z", "2025-03-01T12:00:00", "now", 1.7e9, -1e12,
])  # fmt: skip
"""Times valid, invalid and at the ends of the range; beyond it in UTC: OUT_OF_RANGE below."""

verdicts = st.fixed_dictionaries(
    {"type": st.just("verdict"), "benchmark": names, "prompt_id": names, "judge": names,
     "model_a": names, "model_b": names, "winner": st.sampled_from(["a", "b", "tie", "A"])},
    optional={"id": names, "ts": timestamps, "game": st.sampled_from([1, 2, 3, None]),
              "first": st.sampled_from(["a", "b"]), "len_a": st.integers(-1, 10**30),
              "len_b": st.integers(0, 10**6), "category": names, "prompt": edge_text},
)  # fmt: skip
provenance = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("model"), "model": names},
        optional={"family": names, "parent": names, "kind": st.sampled_from(["llm", "human"])},
    ),
    st.fixed_dictionaries(
        {"type": st.just("dataset"), "dataset": names, "generator": st.none() | names},
        optional={"size": st.integers(), "role": st.sampled_from(["training", "eval", "x"])},
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("training"),
            "model": names,
            "base": names,
            "method": names,
            "datasets": st.lists(
                st.fixed_dictionaries({"dataset": names, "share": st.floats()}), max_size=3
            ),
        }
    ),
    st.fixed_dictionaries(
        {"type": st.just("sample"), "dataset": names, "text": edge_text},
        optional={"label": names, "model": names, "ts": timestamps},
    ),
)


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """An event, often broken: a field dropped, given a value of any type, or one added."""
    event: dict[str, Any] = draw(verdicts | provenance)
    for _ in range(draw(st.integers(0, 2))):
        action = draw(st.sampled_from(["drop", "retype", "add", "keep"]))
        key = draw(st.sampled_from(sorted(event)))
        if action == "drop":
            event.pop(key)
        elif action == "retype":
            event[key] = draw(json_values)
        elif action == "add":
            event[draw(edge_text)] = draw(json_values)
        if not event:
            break
    return event


@st.composite
def encoded(draw: st.DrawFn, value: Any) -> bytes:
    """A JSON value as bytes, the way some sender might write it, now and then broken."""
    how = draw(st.sampled_from(["ascii", "utf8", "pretty", "bom", "utf16", "cut"]))
    if how == "ascii":  # a lone surrogate becomes a \\ud800 escape
        return json.dumps(value).encode()
    text = json.dumps(value, ensure_ascii=False, indent=2 if how == "pretty" else None)
    raw = text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes invalid UTF-8
    if how == "bom":
        return b"\xef\xbb\xbf" + raw
    if how == "utf16":
        return text.encode("utf-16", "surrogatepass")
    if how == "cut":
        return raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    return raw


DEPTHS = st.integers(1, 400) | st.integers(550, 2500)
"""Depths of :func:`nested` (two levels each). Python's json gives up near the interpreter's
recursion limit (1000 levels), at a depth that depends on how deep the caller's stack already is:
there the service and this test could each be right about whether a body is JSON, so the depths
skip that band."""


def nested(depth: int, event: bool) -> bytes:
    """``depth`` levels of arrays and objects, alone or as the value of an event's field."""
    inner = b'{"a":[' * depth + b"1" + b"]}" * depth
    return b'{"type":"model","model":"m","family":' + inner + b"}" if event else inner


@st.composite
def huge(draw: st.DrawFn) -> bytes:
    """A valid event whose one string field brings it to about the size limit (1 MiB)."""
    unit = draw(st.sampled_from(["x", "é", "\u202e", "\U0001f600", "\\u0000"]))
    head = b'{"type":"sample","dataset":"d","text":"'
    size = draw(st.integers(MAX_MESSAGE_BYTES - 64, MAX_MESSAGE_BYTES + 64))
    body = unit.encode() * ((size - len(head) - 2) // len(unit.encode()))
    return head + body + b'"}'


messages = st.one_of(
    mutated().flatmap(encoded),
    (verdicts | provenance).flatmap(encoded),
    st.binary(max_size=256),
    st.builds(nested, DEPTHS, st.booleans()),
    json_values.flatmap(encoded),
)
"""One message as it arrives on a line, in an array or on Kafka (``huge`` ones are drawn apart,
at most one per case, to keep the store of a run small)."""


# -- (a) read_message and the store ---------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    with EventStore(tmp_path / "fuzz.db") as opened:
        yield opened


def test_every_message_is_stored_duplicate_or_rejected_with_a_reason(store: EventStore) -> None:
    tried: Counter[str] = Counter()

    @FUZZ
    @given(st.lists(messages, min_size=1, max_size=8), st.none() | huge())
    @example([b'{"type":"model","model":"\\ud800"}', b"\xed\xa0\x80", b"\x00", b""], None)
    @example([nested(100_000, event=False), nested(500, event=True)], None)
    @example([b'{"type":"model","model":"a\\u0000b\\u202e"}'] * 2, None)
    @example([b'{"type":"verdict","benchmark":"b","prompt_id":"p","judge":"j","model_a":"x",'
              b'"model_b":"y","winner":"a","len_a":1e400,"len_b":5}'], None)  # fmt: skip
    def run(raws: list[bytes], big: bytes | None) -> None:
        tried["cases"] += 1
        raws = raws if big is None else [*raws, big]
        batch = Batch(source="fuzz")
        for n, raw in enumerate(raws):
            item = read_message(raw, source="fuzz", location=f"line {n}")
            assert isinstance(item, StoredEvent | Rejection)
            if isinstance(item, Rejection):
                assert item.error.strip() and item.raw == raw
            batch.add(item)
        before = sum(store.event_counts().values())
        result = store.append(batch)
        assert result.accepted + result.duplicate + result.rejected == len(raws)
        assert all(error.error.strip() for error in result.errors)
        assert sum(store.event_counts().values()) == before + result.accepted
        tried.update(accepted=result.accepted, duplicate=result.duplicate, rejected=result.rejected)

    run()
    print(f"cases tried: {dict(tried)}")  # shown with -s or -rP
    stored = list(store.events())  # everything stored reads back as a valid event
    assert len(stored) == tried["accepted"]
    assert tried["cases"] >= EXAMPLES
    assert tried["accepted"] and tried["duplicate"] and tried["rejected"], tried


# -- (a) ids sent again ---------------------------------------------------------------------------

IDS = ("e1", "e2", "e3")


def _variant(event_id: str, content: int) -> dict[str, Any]:
    """Event ``event_id`` in one of three contents (content 2 is another type altogether)."""
    ts = "2025-03-01T12:00:00Z"
    if content == 2:
        return {"id": event_id, "type": "model", "model": f"m-{event_id}", "ts": ts}
    return {"id": event_id, "type": "verdict", "benchmark": "b", "prompt_id": f"p-{event_id}",
            "judge": "j", "model_a": "m1", "model_b": "m2", "winner": "ab"[content],
            "ts": ts}  # fmt: skip


@st.composite
def resent(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    """An event of a few ids and contents, written in one of several equivalent ways."""
    event = _variant(draw(st.sampled_from(IDS)), draw(st.integers(0, 2)))
    keys = draw(st.permutations(sorted(event)))
    pad = draw(st.booleans())  # surrounding whitespace is trimmed: the same content
    spelled = {k: f"  {event[k]} " if k == "judge" and pad else event[k] for k in keys}
    spaced = draw(st.sampled_from([None, 1]))
    return event, json.dumps(spelled, indent=spaced, ensure_ascii=draw(st.booleans())).encode()


def test_an_id_sent_again_is_a_duplicate_or_an_id_conflict() -> None:
    """A fresh store per case, in memory (a file costs 40 ms to set up; the SQL is the same)."""
    tried: Counter[str] = Counter()

    @FUZZ
    @given(st.lists(resent(), min_size=1, max_size=12), st.lists(st.integers(1, 5), min_size=12))
    def run(sent: list[tuple[dict[str, Any], bytes]], cuts: list[int]) -> None:
        tried["cases"] += 1
        first: dict[str, dict[str, Any]] = {}
        expected = Counter[str]()
        for event, _ in sent:  # the model: the first content of an id wins
            known = first.setdefault(event["id"], event)
            same = known is event or known == event
            expected["accepted" if known is event else "duplicate" if same else "rejected"] += 1
        got = Counter[str]()
        with EventStore(":memory:") as store:
            position = 0
            for cut in cuts:  # batches of 1 to 5: repeats inside a batch and across batches
                chunk, position = sent[position : position + cut], position + cut
                batch = Batch(source="fuzz")
                for n, (_, raw) in enumerate(chunk):
                    item = read_message(raw, source="fuzz", location=f"{position}:{n}")
                    assert isinstance(item, StoredEvent), item
                    batch.add(item)
                result = store.append(batch)
                got.update(
                    accepted=result.accepted, duplicate=result.duplicate, rejected=result.rejected
                )
                assert all("id conflict" in e.error for e in result.errors)
                if position >= len(sent):
                    break
            assert +got == +expected, (got, expected)
            stored = {event.id: event for event in store.events()}
            assert stored.keys() == first.keys()
            for event_id, event in first.items():
                assert same_content(stored[event_id], validate_object(event))
            live = store.projection_dump()
            store.rebuild()
            assert store.projection_dump() == live
        tried.update(expected)

    run()
    print(f"cases tried: {dict(tried)}")  # shown with -s or -rP
    assert tried["cases"] >= EXAMPLES
    assert tried["accepted"] and tried["duplicate"] and tried["rejected"], tried


OUT_OF_RANGE = ("9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00")
"""Valid RFC 3339 times whose UTC instant is in year 10000 or year 0."""


@pytest.mark.parametrize("ts", OUT_OF_RANGE)
def test_a_time_out_of_range_in_utc_is_rejected_or_reads_back(store: EventStore, ts: str) -> None:
    raw = json.dumps({"type": "model", "model": "m", "ts": ts}).encode()
    batch = Batch(source="fuzz")
    batch.add(read_message(raw, source="fuzz", location="line 1"))
    store.append(batch)
    assert len(list(store.events())) == store.event_counts().get("model", 0)


def test_a_verdict_with_an_astronomical_length_is_stored_or_rejected() -> None:
    raw = (
        b'{"type":"verdict","benchmark":"b","prompt_id":"p","judge":"j","model_a":"x",'
        b'"model_b":"y","winner":"a","len_a":1' + b"0" * 400 + b',"len_b":5}'
    )
    assert isinstance(read_message(raw, source="fuzz", location="l"), StoredEvent | Rejection)


# -- (b) POST /v1/events of a running service -----------------------------------------------------

CONTENT_TYPES = st.one_of(
    st.sampled_from([
        None, "", "application/json", "application/json; charset=utf-8", *sorted(NDJSON_TYPES),
        "APPLICATION/X-NDJSON; charset=latin-1", "text/plain", "multipart/form-data; boundary=x",
    ]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
)  # fmt: skip
"""Content-Types, the odd ones included (header-safe: no CR, LF or other controls)."""


JSON_DEPTH_LIMIT = 950
"""About where the service's json gives up (the recursion limit, 1000, less its stack). Hypothesis
raises this process's recursion limit, so the test decides by depth instead; DEPTHS keep clear of
the band where the two could disagree."""


def _depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in ``raw``, strings skipped."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            escaped, in_string = (False, True) if escaped else (byte == 0x5C, byte != 0x22)
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


def _is_json(raw: bytes) -> bool:
    if _depth(raw) >= JSON_DEPTH_LIMIT:
        return False
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


def sent_messages(body: bytes, content_type: str | None) -> int | None:
    """How many messages docs/metrics.md says a body holds; None: refused as empty.

    NDJSON by Content-Type: one per non-blank line. Otherwise a JSON array: one per item; any
    other JSON value: one; several lines of which some are JSON: one per non-blank line; else
    the whole body is one (rejected) message.
    """
    if not body.strip():
        return None
    lines = [line for line in body.splitlines() if line.strip()]
    if (content_type or "").split(";", 1)[0].strip().lower() in NDJSON_TYPES:
        return len(lines)
    if not _is_json(body):
        return len(lines) if len(lines) > 1 and any(map(_is_json, lines)) else 1
    value = json.loads(body)
    return len(value) if isinstance(value, list) and body.lstrip().startswith(b"[") else 1


line_messages = messages.map(lambda raw: raw.replace(b"\n", b" ").replace(b"\r", b" "))
bodies = st.one_of(
    st.lists(line_messages, max_size=6).map(b"\n".join),  # NDJSON-like, blank lines included
    st.lists(mutated() | json_values, max_size=6).flatmap(encoded),  # arrays
    mutated().flatmap(encoded),
    st.binary(max_size=512),
    st.builds(nested, DEPTHS, st.booleans()),
)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("fuzz-serve")
    daemon = Daemon(tmp, "--db", str(tmp / "events.db"))
    try:
        yield daemon
    finally:
        daemon.kill()


def _post(daemon: Daemon, body: bytes, content_type: str | None) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection(daemon.host, daemon.port, timeout=30)
    headers = {} if content_type is None else {"Content-Type": content_type}
    try:
        connection.request("POST", "/v1/events", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


@pytest.mark.slow
def test_http_intake_answers_every_body_and_stays_up(service: Daemon) -> None:
    tried: Counter[str] = Counter()

    @FUZZ
    @given(bodies, CONTENT_TYPES)
    @example(b'[{"type":"model","model":"\\ud800"}]', "application/json")
    @example(b"[" * 100_000 + b"]" * 100_000, None)
    @example(b'{"a":' * 990 + b"1" + b"}" * 990, "application/json")
    @example(b"\n\n  \r\n", "application/x-ndjson")
    @example(b'{"type":"model","model":"m"}\n\x00garbage', "text/plain")
    def run(body: bytes, content_type: str | None) -> None:
        tried["cases"] += 1
        status, media, raw = _post(service, body, content_type)
        assert 200 <= status < 500, (status, raw)
        assert media == "application/json"
        answer = json.loads(raw)
        expected = sent_messages(body, content_type)
        if expected is None:
            assert (status, answer) == (400, {"error": "empty body"})
            tried["empty"] += 1
            return
        counts = (answer["accepted"], answer["duplicate"], answer["rejected"])
        assert sum(counts) == expected, (answer, expected)
        assert status == (400 if (counts == (0, 0, 1) and answer["errors"][0]["location"] ==
                                  "body") else 200)  # fmt: skip
        tried.update(dict(zip(("accepted", "duplicate", "rejected"), counts, strict=True)))

    run()
    print(f"cases tried: {dict(tried)}")  # shown with -s or -rP
    assert tried["cases"] >= EXAMPLES
    assert tried["accepted"] and tried["duplicate"] and tried["rejected"], tried
    assert service.proc.poll() is None and service.request("GET", "/healthz")[0] == 200
    for outcome in ("accepted", "duplicate", "rejected"):
        counted = service.value("prefleak_events_ingested_total", source="http", outcome=outcome)
        assert counted == tried[outcome], outcome
    service.stop()
    assert "Exception occurred during processing of request" not in service.log()
    db = sqlite3.connect(Path(service.log_path).parent / "events.db")
    try:
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] == tried["accepted"]
    finally:
        db.close()
