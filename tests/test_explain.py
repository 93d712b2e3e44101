"""``prefleak explain``: the on-call view of one judge pair, judge or candidate, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from prefleak.cli import main
from prefleak.explain import Subject, SubjectError, explain, parse_subject
from prefleak.lineage import Lineage
from prefleak.models.events import PROVENANCE_TYPES
from prefleak.stats.analysis import StatisticsOptions, analyse
from prefleak.stats.cells import Cells
from prefleak.store import EventStore
from prefleak.web.pages import explain_href
from test_daemon import Daemon, _env, wait_for

FAST = ("--bootstrap", "200", "--model-bootstrap", "50")
SECTIONS = {
    "schema",
    "generated_at",
    "horizon",
    "window_s",
    "subject",
    "verdict",
    "rows",
    "relations",
    "timeline",
    "changes",
    "evidence",
    "categories",
    "biases",
    "leakage",
    "recommendation",
}


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A leaking stream (the simulator's default leakage) of 60 prompts on one benchmark."""
    root = tmp_path_factory.mktemp("explain")
    stream, db = root / "leak.jsonl", root / "leak.db"
    assert (
        main(
            [
                "simulate",
                "--prompts",
                "60",
                "--benchmarks",
                "alpacaeval",
                "--texts",
                "--out",
                str(stream),
            ]
        )
        == 0
    )
    assert main(["ingest", "--db", str(db), str(stream)]) == 0
    return db


def _explain(capsys: pytest.CaptureFixture[str], db: Path, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["explain", "--db", str(db), *FAST, *argv])
    return code, capsys.readouterr().out


def _json(capsys: pytest.CaptureFixture[str], db: Path, *argv: str) -> dict[str, Any]:
    code, out = _explain(capsys, db, "--json", *argv)
    assert code == 0
    document: dict[str, Any] = json.loads(out)
    return document


def test_a_leaking_judge_pair_is_explained_section_by_section(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = _json(capsys, db, "--judges", "gpt-4o,gemini-1.5-pro")
    assert set(doc) == SECTIONS and doc["schema"] == "prefleak.explain/1"
    assert doc["subject"] == {
        "kind": "judges",
        "names": ["gpt-4o", "gemini-1.5-pro"],
        "benchmark": None,
    }
    # who: every row is this judge pair, most significant first
    rows = doc["rows"]
    assert rows and all({r["judge_i"], r["judge_j"]} == {"gpt-4o", "gemini-1.5-pro"} for r in rows)
    q_values = [r["q_value"] for r in rows]
    assert q_values == sorted(q_values)
    # is it real: the headline is the first row, with its q-value and MDE
    verdict = doc["verdict"]
    assert verdict["related"] and verdict["status"] in ("significant", "not_significant")
    assert verdict["row"]["q_value"] == rows[0]["q_value"]
    assert verdict["row"]["min_detectable_pls"] is not None
    assert "same_model" in verdict["significant_relation_kinds"]  # the injected leak
    # why related: the lineage path names the training dataset
    gpt = next(
        r for r in doc["relations"] if (r["judge"], r["candidate"]) == ("gpt-4o", "student-gpt4o")
    )
    assert gpt["kind"] == "same_model" and gpt["share"] == 1.0 and gpt["in_rows"]
    assert any("ultrachat-gpt-4o" in step for step in gpt["path"])
    # since when: a PLS series per row, the leakage series per kind, and the change states
    assert [t["student_j"] for t in doc["timeline"]["pls"]] == [r["student_j"] for r in rows]
    assert all(len(t["windows"]) == 7 for t in doc["timeline"]["pls"])
    assert doc["timeline"]["leakage"]["same_model"]
    assert {"started_at", "detected_at", "alarm"} <= set(doc["changes"][0])
    assert {c["subject"] for c in doc["changes"]} >= {"pls", "leakage"}
    # evidence: prompts favouring the related students, ranked by contribution
    evidence = doc["evidence"]
    assert evidence["available"] and evidence["texts"] and "texts are those" in evidence["note"]
    with EventStore(db) as store:
        verdicts = [v for v in store.events(["verdict"]) if v.prompt is not None]  # type: ignore[union-attr]
    answers = {(v.prompt_id, v.model_a): v.response_a for v in verdicts}  # type: ignore[union-attr]
    answers.update({(v.prompt_id, v.model_b): v.response_b for v in verdicts})  # type: ignore[union-attr]
    for row in evidence["rows"]:
        for prompt in row["prompts"]:
            texts = prompt["texts"]
            assert (
                texts["prompt"]
                and texts["answer_i"] == answers[(prompt["prompt"], row["student_i"])]
            )
            assert texts["answer_j"] == answers[(prompt["prompt"], row["student_j"])]
    for row in evidence["rows"]:
        contributions = [p["contribution"] for p in row["prompts"]]
        assert 0 < len(contributions) <= 10
        assert contributions == sorted(contributions, reverse=True) and min(contributions) > 0
        assert all(p["category"] and p["prompt"].startswith("alpacaeval-") for p in row["prompts"])
    # per category, and the judges' other habits
    assert {c["category"] for c in doc["categories"]["pls"]} >= {"writing", "coding"}
    assert {b["judge"] for b in doc["biases"]} == {"gpt-4o", "gemini-1.5-pro"}
    assert all("position_bias" in b and "notes" in b for b in doc["biases"])
    # what to do: unrelated judges by human agreement, the leaderboard without each related judge
    rec = doc["recommendation"]
    replacements = [r["judge"] for r in rec["replacements"]]
    assert "claude-3.5-sonnet" in replacements
    assert not {"gpt-4o", "gemini-1.5-pro", "human-panel"} & set(replacements)
    kappas = [r["human_agreement"]["value"] for r in rec["replacements"] if r["human_agreement"]]
    assert kappas == sorted(kappas, reverse=True)
    assert rec["related_judges"] == ["gemini-1.5-pro", "gpt-4o"]
    without = {w["judge"]: w for w in rec["without_judge"]}
    assert set(without) == {"gemini-1.5-pro", "gpt-4o"}
    assert {r["model"] for r in without["gpt-4o"]["rows"]} >= {"student-gpt4o", "student-gemini"}
    assert rec["actions"]


def test_a_judge_with_no_relation_gets_a_clear_answer(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = _json(capsys, db, "--judge", "claude-3.5-sonnet")
    verdict = doc["verdict"]
    assert verdict["status"] == "no_relation" and not verdict["related"]
    assert verdict["summary"].startswith("no relation")
    assert doc["rows"] == [] and doc["relations"] == [] and doc["evidence"]["rows"] == []
    assert [b["judge"] for b in doc["biases"]] == ["claude-3.5-sonnet"]  # other habits still shown
    code, text = _explain(capsys, db, "--judge", "claude-3.5-sonnet")
    assert code == 0 and "no relation" in text
    unknown = _json(capsys, db, "--judge", "no-such-judge")["verdict"]
    assert unknown["status"] == "no_relation" and unknown["unknown"] == ["no-such-judge"]


def test_a_candidate_and_a_single_judge(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _json(capsys, db, "--candidate", "student-gpt4o", "--benchmark", "alpacaeval")
    assert doc["rows"] and all(
        "student-gpt4o" in (r["student_i"], r["student_j"]) for r in doc["rows"]
    )
    assert {r["candidate"] for r in doc["relations"]} == {"student-gpt4o"}
    assert {r["judge"] for r in doc["relations"]} == {"gpt-4o", "gpt-4o-mini"}
    judge = _json(capsys, db, "--judge", "gpt-4o")
    assert judge["rows"] and all("gpt-4o" in (r["judge_i"], r["judge_j"]) for r in judge["rows"])


def test_text_output_reads_most_important_first(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = _explain(capsys, db, "--judges", "gpt-4o,gemini-1.5-pro")
    assert code == 0
    order = [
        "IS IT REAL",
        "WHO",
        "WHY RELATED",
        "SINCE WHEN",
        "TOP PROMPTS",
        "BY CATEGORY",
        "OTHER BIASES",
        "WHAT TO DO",
    ]
    positions = [text.index(section) for section in order]
    assert positions == sorted(positions)
    assert (
        "ultrachat-gpt-4o generated by gpt-4o" in text
        and "texts are those the verdicts carried" in text
    )


@pytest.mark.parametrize(
    "argv",
    [
        (),
        ("--judge", "gpt-4o", "--candidate", "student-gpt4o"),
        ("--judges", "gpt-4o"),
        ("--judges", "gpt-4o,gpt-4o"),
    ],
)
def test_usage_errors_exit_2(
    db: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    capsys.readouterr()
    assert main(["explain", "--db", str(db), *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("prefleak explain: ") and captured.out == ""


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "prefleak explain --judges gpt-4o,gemini-1.5-pro" in out and "--candidate" in out


def test_without_cells_there_is_no_evidence_and_it_says_so(db: Path) -> None:
    with EventStore(db) as store:
        cells = Cells.from_rows(store.verdict_rows())
        lineage = Lineage.from_events(store.events(PROVENANCE_TYPES))
    analysis = analyse(cells, lineage, StatisticsOptions(pls_bootstrap=100, model_bootstrap=20))
    subject = parse_subject(["gpt-4o,gemini-1.5-pro"], None, None)
    doc = explain(analysis, None, lineage, subject)
    assert not doc["evidence"]["available"] and "verdict projection" in doc["evidence"]["note"]
    assert doc["rows"] and doc["relations"]
    assert all("note" in w for w in doc["recommendation"]["without_judge"])
    with_cells = explain(analysis, cells, lineage, subject)
    assert with_cells["rows"] == doc["rows"] and with_cells["evidence"]["available"]


def test_parse_subject() -> None:
    assert parse_subject([" a , b "], None, None, "x") == Subject("judges", ("a", "b"), "x")
    # names with a comma come as two values (the parameter or --judges given twice)
    assert parse_subject(["acme,v2", "b"], None, None) == Subject("judges", ("acme,v2", "b"))
    assert parse_subject(None, "j", None) == Subject("judge", ("j",))
    assert parse_subject(None, None, "c") == Subject("candidate", ("c",))
    for bad in (
        (None, None, None), (["a,b"], "j", None), (["a"], None, None), (None, " ", None),
        (["a", "b", "c"], None, None), (["a", "a"], None, None),
        (["a", "b", ""], None, None), (["a,b,"], None, None), (["a", " "], None, None),
    ):  # fmt: skip
        with pytest.raises(SubjectError):
            parse_subject(*bad)


@pytest.mark.parametrize(
    "names", [("gpt-4o", "gemini-1.5-pro"), ("acme,large", "gemini-1.5-pro"), ("a&b=c", "d,e")]
)
def test_web_links_name_any_judge_pair_the_server_can_parse(names: tuple[str, str]) -> None:
    """The web view links pairs as judges=I,J, and as judges twice when a name has a comma."""
    href = explain_href(judges=names, benchmark="mt,bench")
    query = parse_qs(urlsplit(href).query)
    assert parse_subject(query["judges"], None, None, query["benchmark"][-1]) == Subject(
        "judges", names, "mt,bench"
    )


def test_get_v1_explain_answers_from_the_last_recompute(db: Path, tmp_path: Path) -> None:
    served = tmp_path / "served.db"
    served.write_bytes(db.read_bytes())
    daemon = Daemon(tmp_path, "--db", str(served))
    try:
        query = "/v1/explain?judges=gpt-4o,gemini-1.5-pro"
        wait_for(lambda: daemon.get_json(query)[0] == 200, what="an explain answer")
        status, doc = daemon.get_json(query)
        assert status == 200 and set(doc) == SECTIONS and doc["schema"] == "prefleak.explain/1"
        assert doc["rows"] and doc["relations"] and doc["verdict"]["related"]
        # the recompute's own cells give the evidence `prefleak explain` reads from the store
        assert doc["evidence"]["available"] and doc["evidence"]["rows"]
        cli = subprocess.run(
            [sys.executable, "-m", "prefleak", "explain", "--json", "--db", str(served),
             "--judges", "gpt-4o,gemini-1.5-pro"],
            env=_env(), capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        assert json.loads(cli.stdout)["evidence"] == doc["evidence"]
        twice = "/v1/explain?judges=gpt-4o&judges=gemini-1.5-pro"  # as for names with commas
        status, again = daemon.get_json(twice)
        assert status == 200 and again["rows"] == doc["rows"] and again["subject"] == doc["subject"]
        status, doc = daemon.get_json("/v1/explain?judge=claude-3.5-sonnet")
        assert status == 200 and doc["verdict"]["status"] == "no_relation"
        status, error = daemon.get_json("/v1/explain?judge=a&candidate=b")
        assert status == 400 and "exactly one" in error["error"]
        assert daemon.request("POST", "/v1/explain", b"{}", "application/json")[0] == 405
    finally:
        daemon.kill()
