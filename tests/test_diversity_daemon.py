"""``prefleak serve`` exports the diversity measures from its recompute loop (embeddings off)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from diversity_data import topic_texts
from services import require_binary, wait_for
from test_daemon import Daemon


def _events() -> bytes:
    events = [
        {"type": "dataset", "dataset": "evalset", "generator": "gpt", "role": "eval"},
        {"type": "dataset", "dataset": "traffic", "generator": None, "role": "production"},
    ]
    for dataset, topics in (("evalset", ("cooking",)), ("traffic", ("cooking", "tax"))):
        for topic in topics:
            for i, text in enumerate(topic_texts(topic, 30, seed=len(dataset))):
                events.append({"type": "sample", "dataset": dataset, "text": text,
                               "ts": f"2026-03-01T00:{i // 60:02d}:{i % 60:02d}Z"})  # fmt: skip
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def test_serve_exports_diversity_metrics(tmp_path: Path) -> None:
    daemon = Daemon(
        tmp_path, "--db", str(tmp_path / "d.db"),
        PREFLEAK_DIVERSITY__EMBEDDINGS="off", PREFLEAK_DIVERSITY__INTERVAL_S="0.5",
        PREFLEAK_DIVERSITY__RESAMPLES="20", PREFLEAK_DIVERSITY__PERMUTATIONS="50",
        PREFLEAK_DIVERSITY__REFERENCE_SIZE="30",
    )  # fmt: skip
    try:
        status, answer = daemon.post(_events(), "application/x-ndjson")
        assert (status, answer["accepted"]) == (200, 2 + 90)
        wait_for(
            lambda: daemon.value(
                "prefleak_diversity_samples", dataset="traffic", role="production"
            ),
            what="diversity series",
        )
        assert daemon.value("prefleak_diversity_samples", dataset="evalset", role="eval") == 30
        distinct = daemon.value("prefleak_diversity_distinct_ratio", dataset="traffic", n="2")
        assert distinct is not None and 0 < distinct <= 1
        assert daemon.value("prefleak_diversity_compression_ratio", dataset="traffic")
        assert daemon.value(
            "prefleak_diversity_artifact_ratio", dataset="traffic", kind="refusal"
        ) == 0  # fmt: skip
        covered = daemon.value("prefleak_eval_coverage_ratio", eval="evalset", production="traffic")
        assert covered is not None and covered <= 0.6  # the tax half is not covered
        assert daemon.value("prefleak_diversity_drift_pvalue", dataset="traffic") is not None
        names = {name for name, _ in daemon.samples()}
        assert "prefleak_diversity_vendi_score" not in names  # embeddings off: absent, never 0
        text = daemon.metrics_text()
        daemon.stop()
    finally:
        daemon.kill()
    promtool = require_binary("promtool", "apt-get install prometheus")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
