"""The command line end to end: simulate, ingest, report, status, rejected, rebuild."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from prefleak.cli import _Progress, main
from prefleak.store import AppendResult


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def _report(capsys: pytest.CaptureFixture[str], db: Path, *extra: str) -> list[dict[str, object]]:
    code, out = _run(capsys, "report", "--db", str(db), "--json", "--bootstrap", "300", *extra)
    assert code == 0
    rows: list[dict[str, object]] = json.loads(out)["pls"]
    return rows


def _row(rows: list[dict[str, object]], benchmark: str, i: str, j: str) -> dict[str, object]:
    [row] = [
        r for r in rows
        if (r["benchmark"], r["judge_i"], r["judge_j"]) == (benchmark, i, j)
        and {r["student_i"], r["student_j"]} == {"student-gpt4o", "student-gemini"}
    ]  # fmt: skip
    return row


@pytest.mark.parametrize("leakage", [1.0, 0.0])
def test_simulated_leakage_is_found_and_a_clean_stream_is_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], leakage: float
) -> None:
    stream, db = tmp_path / "sim.jsonl", tmp_path / "sim.db"
    assert main(["simulate", "--seed", "5", "--prompts", "600", "--leakage", str(leakage),
                 "--out", str(stream)]) == 0  # fmt: skip
    code, out = _run(capsys, "ingest", "--db", str(db), str(stream))
    assert code == 0 and " 0 rejected" in out
    row = _row(_report(capsys, db, "--benchmark", "alpacaeval"), "alpacaeval",
               "gemini-1.5-pro", "gpt-4o")  # fmt: skip
    assert (row["relation_i"], row["relation_j"]) == ("same_model", "same_model")
    assert row["n_prompts"] == 600
    assert set(row["win_rates"]) == {"ii", "ij", "jj", "ji"}  # type: ignore[arg-type]
    low, high = row["ci_low"], row["ci_high"]
    assert isinstance(low, float) and isinstance(high, float)
    if leakage:
        assert low > 0, row
    else:
        assert low < 0 < high, row


def test_report_json_shape_and_tie_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stream, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    main(["simulate", "--prompts", "40", "--out", str(stream)])
    main(["ingest", "--db", str(db), str(stream)])
    capsys.readouterr()
    loss = _report(capsys, db)
    half = _report(capsys, db, "--ties", "half")
    assert loss and len(loss) == len(half)
    for key in ("benchmark", "judge_i", "judge_j", "student_i", "student_j", "relation_i",
                "relation_j", "pls", "ci_low", "ci_high", "n_prompts", "win_rates"):  # fmt: skip
        assert key in loss[0]
    assert [r["pls"] for r in loss] != [r["pls"] for r in half]
    code, table = _run(capsys, "report", "--db", str(db), "--bootstrap", "50")
    assert code == 0 and "judge i" in table and "same_model" in table
    # the statistics come from --config as serve's do, and a flag overrides the file
    config = tmp_path / "prefleak.yaml"
    config.write_text("statistics:\n  window: 6h\n  fdr: 0.1\npls:\n  bootstrap: 50\n")
    code, out = _run(capsys, "report", "--db", str(db), "--config", str(config), "--json")
    report = json.loads(out)
    assert (code, report["window_s"], report["fdr"]) == (0, 6 * 3600, 0.1)
    flagged = _run(capsys, "report", "--db", str(db), "--config", str(config), "--fdr", "0.2",
                   "--json")[1]  # fmt: skip
    assert json.loads(flagged)["fdr"] == 0.2
    config.write_text("statistics:\n  window: 90m\n")
    with pytest.raises(SystemExit) as bad:
        main(["report", "--db", str(db), "--config", str(config)])
    assert bad.value.code == 2 and "multiple of 3600" in capsys.readouterr().err


BAD_LINES = [
    b"{not json",
    b'{"type": "vote"}',
    b'{"type": "verdict", "benchmark": "b"}',
    b'{"type": "verdict", "benchmark": "b", "prompt_id": "p", "judge": "j",'
    b' "model_a": "x", "model_b": "y", "winner": "maybe"}',
    b'{"type": "verdict", "benchmark": "b", "prompt_id": "p", "judge": "j",'
    b' "model_a": "x", "model_b": "x", "winner": "a"}',
    b'{"type": "training", "model": "s", "base": "m", "method": "sft",'
    b' "datasets": [{"dataset": "d", "share": 1.2}]}',
    b'{"type": "model", "model": "\xff\xfe"}',
    b'{"type": "dataset", "dataset": "' + b"d" * (10 * 1024 * 1024) + b'", "generator": null}',
]
GOOD = b'{"type": "model", "model": "gpt-4o", "family": "openai", "series": "gpt-4o"}'


def test_bad_lines_are_dead_lettered_and_ingest_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, db = tmp_path / "bad.jsonl", tmp_path / "bad.db"
    path.write_bytes(b"\n".join([GOOD, *BAD_LINES, b"", GOOD.replace(b"gpt-4o", b"gemini")]))
    code, out = _run(capsys, "ingest", "--db", str(db), str(path))
    assert code == 0
    assert f"2 accepted, 0 duplicate, {len(BAD_LINES)} rejected" in out
    code, out = _run(capsys, "status", "--db", str(db), "--json")
    status = json.loads(out)
    assert status["schema"] == "prefleak.status/1"
    assert status["events"] == {"model": 2} and status["rejected"] == len(BAD_LINES)
    code, out = _run(capsys, "rejected", "--db", str(db), "--json", "--limit", "0")
    rejected = json.loads(out)
    assert rejected["schema"] == "prefleak.rejected/1"
    errors = {row["location"]: row["error"] for row in rejected["rejected"]}
    assert errors == {
        "line 2": "Invalid JSON: key must be a string at line 1 column 2",
        "line 3": "Input tag 'vote' found using 'type' does not match any of the expected tags:"
        " 'model', 'dataset', 'training', 'verdict', 'sample', 'relation'",
        "line 4": "prompt_id: Field required; judge: Field required; model_a: Field required;"
        " model_b: Field required; winner: Field required",
        "line 5": "winner: Input should be 'a', 'b' or 'tie'",
        "line 6": "model_a and model_b are both 'x'",
        "line 7": "datasets.0.share: Input should be less than or equal to 1",
        "line 8": "invalid UTF-8 at byte 28",
        "line 9": f"message of {len(BAD_LINES[-1])} bytes exceeds the limit of 1048576",
    }


def test_empty_file_gz_and_stdin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty, packed, db = tmp_path / "empty.jsonl", tmp_path / "m.jsonl.gz", tmp_path / "x.db"
    empty.write_bytes(b"")
    packed.write_bytes(gzip.compress(GOOD + b"\n"))
    code, out = _run(capsys, "ingest", "--db", str(db), str(empty), str(packed))
    assert code == 0
    assert "empty.jsonl: 0 accepted, 0 duplicate, 0 rejected" in out
    assert "total: 1 accepted, 0 duplicate, 0 rejected" in out
    done = subprocess.run(
        [sys.executable, "-m", "prefleak", "ingest", "--db", str(db), "-"],
        input=GOOD + b"\n", capture_output=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0
    assert b"-: 0 accepted, 1 duplicate, 0 rejected" in done.stdout


def test_rebuild_and_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stream, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    main(["simulate", "--prompts", "15", "--out", str(stream)])
    main(["ingest", "--db", str(db), str(stream)])
    capsys.readouterr()
    before = _report(capsys, db)
    code, out = _run(capsys, "rebuild", "--db", str(db))
    assert code == 0 and out.startswith("rebuilt projections from ")
    assert _report(capsys, db) == before
    code, out = _run(capsys, "status", "--db", str(db))
    assert "verdict" in out and "rejected: 0" in out


def test_db_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setenv("PREFLEAK_DB", str(tmp_path / "env.db"))
    code, out = _run(capsys, "status", "--json")
    assert code == 0 and json.loads(out)["db"] == str(tmp_path / "env.db")


def test_errors_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", "--db", str(tmp_path / "x.db"), str(tmp_path / "missing.jsonl")]) == 1
    assert "No such file or directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["report", "--ties", "sometimes"])
    assert usage.value.code == 2


def test_provenance_after_the_verdicts_applies_retroactively(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = tmp_path / "s.jsonl"
    main(["simulate", "--prompts", "30", "--out", str(stream)])
    lines = stream.read_bytes().splitlines()
    verdicts = [line for line in lines if b'"type":"verdict"' in line]
    provenance = [line for line in lines if b'"type":"verdict"' not in line]
    (tmp_path / "v.jsonl").write_bytes(b"\n".join(verdicts))
    (tmp_path / "p.jsonl").write_bytes(b"\n".join(provenance))
    db = tmp_path / "late.db"
    main(["ingest", "--db", str(db), str(tmp_path / "v.jsonl")])
    capsys.readouterr()
    assert _report(capsys, db) == [], "no provenance yet: nobody is related to anybody"
    main(["ingest", "--db", str(db), str(tmp_path / "p.jsonl")])
    capsys.readouterr()
    late = _report(capsys, db)
    in_order = tmp_path / "in-order.db"
    main(["ingest", "--db", str(in_order), str(stream)])
    capsys.readouterr()
    assert late and late == _report(capsys, in_order)


def test_progress_is_shown_on_a_terminal(tmp_path: Path) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    progress = _Progress("f.jsonl", total_bytes=200, stream=screen)
    assert list(progress.lines(iter([b"x" * 100]))) == [b"x" * 100]
    progress.batch(AppendResult(accepted=40, duplicate=5, rejected=5))
    progress.close()
    assert screen.getvalue().startswith("\rf.jsonl:  50.0% 50 events (")
    assert screen.getvalue().endswith("/s)   \n")
    quiet = io.StringIO()
    silent = _Progress("f.jsonl", total_bytes=200, stream=quiet)
    silent.batch(AppendResult(accepted=1))
    silent.close()
    assert quiet.getvalue() == ""
