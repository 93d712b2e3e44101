"""Data retention and privacy: ``prefleak compact`` and hashed texts (prefleak.retention)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from prefleak import retention
from prefleak.cli import main
from prefleak.consumers.http import ingest_body
from prefleak.ingest import read_message
from prefleak.models.events import validate
from prefleak.store import Batch, EventStore, StoredEvent

HORIZON = "2026-11-04T06:30:00+00:00"
"""In the middle of the simulated stream (it starts 2026-11-01 and spans 7 days)."""
HORIZON_TS = datetime.fromisoformat(HORIZON).timestamp()
REPORT_KEYS = ("pls", "leakage", "windows", "breakdowns")


def _sample(n: int, day: int) -> dict[str, Any]:
    return {"type": "sample", "id": f"s{day}-{n}", "dataset": "prod", "text": f"text {n} {day}",
            "prompt": f"q{n}", "ts": f"2026-11-0{day}T0{n % 10}:00:00+00:00"}  # fmt: skip


@pytest.fixture
def stream(tmp_path: Path) -> Path:
    """30 simulated prompts plus samples on both sides of the horizon."""
    path = tmp_path / "sim.jsonl"
    assert main(["simulate", "--prompts", "30", "--out", str(path)]) == 0
    samples = [_sample(n, day) for day in (2, 4, 6) for n in range(25)]
    with path.open("a") as out:
        out.writelines(json.dumps(s) + "\n" for s in samples)
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def _report(capsys: pytest.CaptureFixture[str], db: Path) -> dict[str, Any]:
    report = json.loads(_run(capsys, "report", "--db", str(db), "--json", "--bootstrap", "200"))
    return {key: report[key] for key in REPORT_KEYS}


def _size(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


def test_compaction_keeps_every_number_rebuild_and_idempotency(
    tmp_path: Path, stream: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "store.db"
    _run(capsys, "ingest", "--db", str(db), str(stream))
    before = _report(capsys, db)
    assert before["pls"] and before["windows"]
    with EventStore(db) as store:
        projections = store.projection_dump()
        counts = store.event_counts()
        store.vacuum()
    size = _size(db)

    dry = json.loads(_run(capsys, "compact", "--db", str(db), "--before", HORIZON,
                          "--dry-run", "--json"))  # fmt: skip
    assert dry["dry_run"] and dry["events"] > 0
    assert dry["horizon"] == "2026-11-04T06:00:00+00:00"  # rounded down to the hour
    with EventStore(db) as store:
        assert store.compacted_horizon() is None
    done = json.loads(_run(capsys, "compact", "--db", str(db), "--before", HORIZON,
                           "--vacuum", "--json"))  # fmt: skip
    assert done["events"] == dry["events"] and not done["dry_run"]
    assert _size(db) < size  # the bodies' space is given back after VACUUM

    assert _report(capsys, db) == before
    with EventStore(db) as store:
        assert store.projection_dump() == projections
        assert store.event_counts() == counts  # ids stay
        assert store.compacted_horizon() == HORIZON_TS - 1800
        (kept,) = store._db.execute(
            "SELECT count(*) FROM events WHERE length(body) > 0 AND ts < ?"
            " AND type IN ('verdict', 'sample')",
            (HORIZON_TS - 1800,),
        ).fetchone()
        assert kept == 0
        assert len(list(store.events(["model", "dataset", "training"]))) > 0  # provenance kept
        assert store.rebuild() < sum(counts.values())  # only the live log is replayed
        assert store.projection_dump() == projections
    assert _report(capsys, db) == before

    out = _run(capsys, "ingest", "--db", str(db), str(stream))
    assert " 0 accepted" in out and " 0 rejected" in out  # every line a duplicate
    assert _report(capsys, db) == before
    out = _run(capsys, "check-db", "--deep", "--db", str(db))
    assert "is sound" in out


def test_late_events_and_repeated_compactions_stay_exact(
    tmp_path: Path, stream: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "store.db"
    _run(capsys, "ingest", "--db", str(db), str(stream))
    with EventStore(db) as store:
        early = store.compact(HORIZON_TS - 86_400)
        assert early.events > 0
        # late arrivals in a compacted window: a new verdict and a sample
        late = [
            {"type": "verdict", "id": "late-1", "ts": "2026-11-02T03:15:00+00:00",
             "benchmark": "alpacaeval", "prompt_id": "p-late", "judge": "gpt-4o",
             "model_a": "student-gpt4o", "model_b": "student-gemini", "winner": "a"},
            _sample(99, 2) | {"id": "late-sample"},
        ]  # fmt: skip
        batch = Batch(source="test")
        for event in late:
            item = read_message(json.dumps(event).encode(), source="test", location="late")
            assert isinstance(item, StoredEvent)
            batch.add(item)
        assert store.append(batch).accepted == 2
        live = store.projection_dump()
        assert store.rebuild() and store.projection_dump() == live
        assert store.compact(HORIZON_TS).events > 0
        assert store.compact(HORIZON_TS).events == 0  # nothing left before it
        assert store.projection_dump() == live
        store.rebuild()
        assert store.projection_dump() == live
        assert store.append(batch).duplicate == 2  # re-sent compacted events
    out = _run(capsys, "check-db", "--deep", "--db", str(db))
    assert "is sound" in out


def test_compact_by_age_and_usage_errors(
    tmp_path: Path, stream: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "store.db"
    _run(capsys, "ingest", "--db", str(db), str(stream))
    # the simulated stream lies in 2026-11; 100 years of age compacts nothing
    out = _run(capsys, "compact", "--db", str(db), "--older-than", "36500d")
    assert "compacted 0 events" in out
    with pytest.raises(SystemExit):
        main(["compact", "--db", str(db)])  # a horizon is required
    with pytest.raises(SystemExit):
        main(["compact", "--db", str(db), "--before", "last tuesday"])
    assert main(["compact", "--db", str(tmp_path / "missing.db"), "--older-than", "1d"]) == 1


VERDICT = {"type": "verdict", "benchmark": "b", "prompt_id": "p1", "judge": "j",
           "model_a": "x", "model_b": "y", "winner": "a", "prompt": "What is 2+2?",
           "response_a": "4", "response_b": "Vier ✓", "ts": "2026-11-02T00:00:00Z"}  # fmt: skip


def test_redact_hashes_verdict_texts_only() -> None:
    body = json.dumps(VERDICT).encode()
    hashed = json.loads(retention.redact(body))
    assert hashed["prompt"] == retention.hash_text("What is 2+2?")
    assert hashed["response_b"].startswith("sha256:") and len(hashed["response_b"]) == 71
    assert {k: v for k, v in hashed.items() if k not in retention.REDACTED_FIELDS["verdict"]} == {
        k: v for k, v in VERDICT.items() if k not in retention.REDACTED_FIELDS["verdict"]
    }
    assert retention.redact(retention.redact(body)) == retention.redact(body)  # idempotent
    sample = json.dumps(_sample(1, 2)).encode()
    assert retention.redact(sample) == sample  # diversity needs the words
    assert retention.redact(b"not json") == b"not json"
    validate(retention.redact(body))


def test_ingest_hash_texts_stores_no_verdict_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, db = tmp_path / "texts.jsonl", tmp_path / "store.db"
    path.write_text(json.dumps(VERDICT) + "\n" + json.dumps(_sample(1, 2)) + "\n")
    out = _run(capsys, "ingest", "--db", str(db), "--hash-texts", str(path))
    assert "2 accepted" in out
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("store.db*"))
    assert b"What is 2+2?" not in raw and b"Vier" not in raw
    with EventStore(db) as store:
        [verdict] = store.events(["verdict"])
        assert verdict.prompt == retention.hash_text("What is 2+2?")
        assert [s.text for s in store.samples("prod", 10)] == ["text 1 2"]
    # the id is the full content's: re-sending in hashed mode is a duplicate
    out = _run(capsys, "ingest", "--db", str(db), "--hash-texts", str(path))
    assert "0 accepted, 2 duplicate" in out
    # the choice is the command's only: the next ingest without the flag keeps full texts
    other = tmp_path / "full.db"
    _run(capsys, "ingest", "--db", str(other), str(path))
    with EventStore(other) as store:
        [verdict] = store.events(["verdict"])
        assert verdict.prompt == "What is 2+2?"


def test_the_service_intake_hashes_texts_when_configured(tmp_path: Path) -> None:
    """POST /v1/events bodies pass ``privacy.store_texts`` down to every message they hold."""
    body = (json.dumps(VERDICT) + "\n" + json.dumps({**VERDICT, "prompt_id": "p2"})).encode()
    with EventStore(tmp_path / "http.db") as store:
        result = ingest_body(
            store, body, "application/x-ndjson", max_message_bytes=1 << 20, hash_texts=True
        ).result
        assert result.accepted == 2
        for verdict in store.events(["verdict"]):
            assert verdict.prompt == retention.hash_text("What is 2+2?")


def test_text_policy_from_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from prefleak.config import load_settings

    assert load_settings().privacy.store_texts == "full"
    monkeypatch.setenv("PREFLEAK_PRIVACY__STORE_TEXTS", "hashed")
    assert load_settings().privacy.store_texts == "hashed"
    path, db = tmp_path / "texts.jsonl", tmp_path / "store.db"
    path.write_text(json.dumps(VERDICT) + "\n")
    assert main(["ingest", "--db", str(db), str(path)]) == 0
    with EventStore(db) as store:
        [verdict] = store.events(["verdict"])
        assert verdict.response_a == retention.hash_text("4")
    item = read_message(json.dumps(VERDICT).encode(), source="t", location="l", hash_texts=False)
    assert isinstance(item, StoredEvent) and b"What is 2+2?" in item.body
