"""``prefleak review export``: the comparisons a human label would help most, end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from prefleak.cli import main
from prefleak.models.events import VerdictEvent, validate
from prefleak.store import EventStore

FAST = ("--bootstrap", "0", "--model-bootstrap", "0")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A leaking stream (the simulator's default leakage) of 30 prompts per benchmark."""
    root = tmp_path_factory.mktemp("review")
    stream, db = root / "leak.jsonl", root / "leak.db"
    assert main(["simulate", "--prompts", "30", "--out", str(stream)]) == 0
    assert main(["ingest", "--db", str(db), str(stream)]) == 0
    return db


def _export(db: Path, out: Path, *argv: str) -> list[dict[str, Any]]:
    assert main(["review", "export", "--db", str(db), *FAST, "--out", str(out), *argv]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def _human_judged(db: Path) -> set[tuple[str, str, str, str]]:
    with EventStore(db) as store:
        return {
            (row[1], row[5], row[3], row[4])
            for row in store.verdict_rows()
            if str(row[2]).startswith("human")
        }


def test_export_is_ranked_jsonl_of_unlabelled_comparisons(db: Path, tmp_path: Path) -> None:
    items = _export(db, tmp_path / "all.jsonl", "--limit", "0")
    assert len(items) > 50
    assert all(item["schema"] == "prefleak.review/1" for item in items)
    assert [item["rank"] for item in items] == list(range(1, len(items) + 1))
    scores = [item["score"] for item in items]
    assert scores == sorted(scores, reverse=True)
    humans = _human_judged(db)
    assert humans, "the simulated human panel judges some comparisons"
    for item in items:
        key = (item["benchmark"], item["prompt_id"], item["model_a"], item["model_b"])
        assert key not in humans
        assert item["model_a"] < item["model_b"]
        assert all(not v["judge"].startswith("human") for v in item["verdicts"])
        assert all(v["winner"] in ("a", "b", "tie") for v in item["verdicts"])


def test_top_items_have_a_related_judge_disagreeing(db: Path, tmp_path: Path) -> None:
    items = _export(db, tmp_path / "top.jsonl", "--limit", "5")
    assert len(items) == 5
    for item in items:
        orientation = {item["model_a"]: "a", item["model_b"]: "b"}
        unrelated = {v["winner"] for v in item["verdicts"] if v["related_to"] is None}
        related = [v for v in item["verdicts"] if v["related_to"] is not None]
        assert unrelated and related
        assert any(
            orientation[v["related_to"]] == v["winner"] and unrelated != {v["winner"]}
            for v in related
        ), item
        assert "unrelated judges" in item["reasons"][0]


def test_template_is_a_verdict_once_filled(db: Path, tmp_path: Path) -> None:
    (item,) = _export(db, tmp_path / "one.jsonl", "--limit", "1")
    template = item["verdict_template"]
    assert template["winner"] is None
    event = validate(json.dumps({**template, "winner": "a", "judge": "human-alice"}))
    assert isinstance(event, VerdictEvent)
    assert (event.benchmark, event.prompt_id) == (item["benchmark"], item["prompt_id"])
    assert validate(json.dumps({**template, "winner": "tie"})).type == "verdict"


def test_text_table_and_usage(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", "export", "--db", str(db), *FAST, "--limit", "3"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["rank", "score", "benchmark"]
    assert sum(1 for line in out.splitlines() if line[:1].isdigit()) == 3
    assert main(["review", "export", "--db", str(db), "--limit", "-1"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["review"])
    assert exc.value.code == 2


def test_stdout_jsonl_and_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.db"
    assert main(["review", "export", "--db", str(empty), *FAST, "--out", "-"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["review", "export", "--db", str(empty), *FAST]) == 0
    assert "nothing to review" in capsys.readouterr().out


@pytest.mark.parametrize("store_texts", ["full", "hashed"])
def test_items_carry_the_texts_the_verdicts_carried(
    tmp_path: Path, store_texts: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prompt and both answers come from the verdict bodies; hashed texts are not shown."""
    stream, db = tmp_path / "texts.jsonl", tmp_path / "texts.db"
    assert main(["simulate", "--prompts", "20", "--texts", "--out", str(stream)]) == 0
    monkeypatch.setenv("PREFLEAK_PRIVACY__STORE_TEXTS", store_texts)
    assert main(["ingest", "--db", str(db), str(stream)]) == 0
    items = _export(db, tmp_path / "items.jsonl", "--limit", "5")
    assert items
    sent = {}
    for line in stream.read_text().splitlines():
        event = json.loads(line)
        if event["type"] == "verdict" and "prompt" in event:
            key = (event["benchmark"], event["prompt_id"])
            sent.setdefault(key, {"prompt": event["prompt"]})
            sent[key][event["model_a"]] = event["response_a"]
            sent[key][event["model_b"]] = event["response_b"]
    for item in items:
        texts = item["texts"]
        if store_texts == "hashed":
            assert texts == {"prompt": None, "response_a": None, "response_b": None}
            continue
        known = sent[(item["benchmark"], item["prompt_id"])]
        assert texts == {"prompt": known["prompt"], "response_a": known[item["model_a"]],
                         "response_b": known[item["model_b"]]}  # fmt: skip
