"""Prometheus rules of deploy/prometheus: valid, unit-tested, documented, on real metric names.

promtool checks syntax and runs the rule unit tests in deploy/prometheus/tests; the Python checks
catch what promtool cannot: an alert without a runbook in docs/runbooks/, or a rule on a metric
that prefleak does not export (which would never fire).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services import require_binary

ROOT = Path(__file__).resolve().parents[1]
PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "prefleak-rules.yml"
ALERTS = PROM / "prefleak-alerts.yml"
RULE_TESTS = {ALERTS: PROM / "tests" / "prefleak-alerts.test.yml"}
DOCS = ROOT / "docs" / "alerts.md"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOKS = ROOT / "docs" / "runbooks"
RUNBOOK_BASE = "https://github.com/prefleak/prefleak/blob/main/docs/runbooks/"
GRAFANA_BASE = "http://grafana.example/d/prefleak-overview/prefleak"
PROMTOOL_HINT = "apt-get install -y prometheus"

EXPORTED_METRICS = frozenset(
    {
        # docs/metrics.md, exported by prefleak serve.
        "prefleak_events_ingested_total",
        "prefleak_store_write_failures_total",
        "prefleak_inferred_relations",
        "prefleak_dead_letters",
        "prefleak_consumer_lag_messages",
        "prefleak_source_up",
        "prefleak_last_event_timestamp_seconds",
        "prefleak_last_ingest_timestamp_seconds",
        "prefleak_last_recompute_timestamp_seconds",
        "prefleak_recompute_duration_seconds_bucket",
        "prefleak_recompute_duration_seconds_sum",
        "prefleak_recompute_duration_seconds_count",
        "prefleak_recompute_errors_total",
        "prefleak_pls_ratio",
        "prefleak_pls_ci_low_ratio",
        "prefleak_pls_ci_high_ratio",
        "prefleak_pls_prompts",
        "prefleak_verdict_wins_total",
        "prefleak_verdict_comparisons_total",
        "prefleak_build_info",
        # docs/metrics.md, Diversity: from the diversity report, every diversity.interval_s.
        "prefleak_diversity_samples",
        "prefleak_diversity_generation",
        "prefleak_diversity_distinct_ratio",
        "prefleak_diversity_compression_ratio",
        "prefleak_diversity_self_repetition",
        "prefleak_diversity_length_words",
        "prefleak_diversity_label_entropy_bits",
        "prefleak_diversity_majority_label_ratio",
        "prefleak_diversity_embedding_cosine_distance",
        "prefleak_diversity_vendi_score",
        "prefleak_diversity_artifact_ratio",
        "prefleak_diversity_drift_pvalue",
        "prefleak_eval_coverage_ratio",
        "prefleak_eval_training_overlap_ratio",
        "prefleak_diversity_last_timestamp_seconds",
        # docs/metrics.md and docs/statistics.md: significance, the leakage model, change
        # detection and judge biases, every recompute (horizon rows; benchmark="*" is pooled).
        "prefleak_pls_significant",
        "prefleak_pls_min_detectable_ratio",
        "prefleak_leakage_effect_logodds",
        "prefleak_leakage_effect_ci_low_logodds",
        "prefleak_leakage_effect_ci_high_logodds",
        "prefleak_leakage_effect_ratio",
        "prefleak_leakage_significant",
        "prefleak_leakage_verdicts",
        "prefleak_leakage_change_detected",
        "prefleak_leakage_change_start_timestamp_seconds",
        "prefleak_judge_position_bias_ratio",
        "prefleak_judge_length_bias_logodds",
        "prefleak_judge_self_preference_ratio",
        "prefleak_judge_human_agreement_kappa",
        "prefleak_judge_error_bias_ratio",
        # docs/metrics.md, Probes: only where probe.enabled.
        "prefleak_probe_runs_total",
        "prefleak_probe_last_success_timestamp_seconds",
        "prefleak_probe_run_duration_seconds_bucket",
        "prefleak_probe_run_duration_seconds_sum",
        "prefleak_probe_run_duration_seconds_count",
        "prefleak_probe_unparseable_judgements_total",
        # The client's process collector (docs/metrics.md) and Prometheus' own scrape health.
        "process_start_time_seconds",
        "up",
    }
)
PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
    | {"bool", "offset", "inf", "nan"}
)


def load_rules(path: Path) -> list[dict[str, Any]]:
    """Every rule of a rule file, in order."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def recorded_names() -> frozenset[str]:
    """Series the recording rules create; alerts and the dashboard may read them."""
    return frozenset(rule["record"] for rule in load_rules(RULES))


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (a lexical scan; enough for our rules).

    Drops strings, label matchers, ranges, grouping clauses and function calls, then keeps the
    identifiers left over that are not PromQL keywords.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)\b(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call is None and name.lower() not in PROMQL_WORDS:
            names.add(name)
    return names


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub derives from the headings of a Markdown file."""
    anchors = set()
    for line in markdown.splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*$", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_metric_name_scan() -> None:
    """The scanner finds selectors and skips functions, labels, keywords and durations."""
    expr = (
        'sum by (job, source) (rate(a_total{outcome="x"}[5m])) / on (job) b:c:rate5m '
        "and time() - d_seconds offset 1h > 2 * 86400"
    )
    assert metric_names(expr) == {"a_total", "b:c:rate5m", "d_seconds"}


def test_promtool_check_rules() -> None:
    """Every rule file parses and passes promtool's lint."""
    promtool = require_binary("promtool", PROMTOOL_HINT)
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES), str(ALERTS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", RULE_TESTS.values(), ids=lambda p: p.name)
def test_promtool_rule_unit_tests(test_file: Path) -> None:
    """The alerts fire on the series they should, with the expected labels and annotations."""
    promtool = require_binary("promtool", PROMTOOL_HINT)
    result = subprocess.run(
        [promtool, "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_example_prometheus_config() -> None:
    """The example config is valid and loads the rules."""
    promtool = require_binary("promtool", PROMTOOL_HINT)
    config = yaml.safe_load((PROM / "prometheus.yml").read_text(encoding="utf-8"))
    assert config["rule_files"] == [RULES.name, ALERTS.name]
    assert config["scrape_configs"][0]["job_name"] == "prefleak"
    result = subprocess.run(
        [promtool, "check", "config", str(PROM / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_are_complete() -> None:
    """Name, severity, for, and the four annotations on-call relies on."""
    alerts = [rule for rule in load_rules(ALERTS) if "alert" in rule]
    assert alerts
    for rule in alerts:
        name = rule["alert"]
        assert re.fullmatch(r"Prefleak(?:[A-Z][a-z0-9]*)+", name), name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert "for" in rule, f"{name}: no 'for', it would flap"
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url", "dashboard_url"}, name
        assert annotations["runbook_url"] == f"{RUNBOOK_BASE}{name}.md", name
        assert annotations["dashboard_url"].startswith(GRAFANA_BASE), name
        assert (
            "$value" in annotations["description"]
            or "absent" in rule["expr"]
            or ("== 1" in rule["expr"] or "== 0" in rule["expr"])
        ), f"{name}: description should show the value"


def alert_rules(path: Path) -> list[dict[str, Any]]:
    return [rule for rule in load_rules(path) if "alert" in rule]


def test_every_alert_has_a_runbook() -> None:
    """docs/runbooks/<AlertName>.md: meaning, how to confirm and act; linked from docs/alerts.md."""
    docs = DOCS.read_text(encoding="utf-8")
    alerts = alert_rules(ALERTS)
    names = {rule["alert"] for rule in alerts}
    assert {path.stem for path in RUNBOOKS.glob("*.md")} == names, "a runbook without an alert"
    for name in names:
        runbook = (RUNBOOKS / f"{name}.md").read_text(encoding="utf-8")
        assert runbook.startswith(f"# {name}\n"), name
        assert "**Runbook" in runbook, name
        assert f"](runbooks/{name}.md)" in docs, f"{name}: not linked from {DOCS}"
    for rule in alert_rules(ALERTS):
        runbook = (RUNBOOKS / f"{rule['alert']}.md").read_text(encoding="utf-8")
        for part in ("**Meaning.**", "**Runbook.**", "**Silencing.**"):
            assert part in runbook, (rule["alert"], part)


def test_rules_use_known_metrics() -> None:
    """Rules read exported metrics or recorded series."""
    recorded = recorded_names()
    for rule in load_rules(RULES) + load_rules(ALERTS):
        unknown = metric_names(rule["expr"]) - EXPORTED_METRICS - recorded
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: unknown {unknown}"


@pytest.mark.parametrize(("rules", "test_file"), RULE_TESTS.items())
def test_every_alert_has_firing_and_quiet_cases(rules: Path, test_file: Path) -> None:
    """For each alert, a promtool case where it fires and one where it must stay quiet."""
    cases = yaml.safe_load(test_file.read_text(encoding="utf-8"))["tests"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for group in cases:
        for case in group.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in load_rules(rules) if "alert" in rule}
    assert names <= fires, f"never shown to fire: {names - fires}"
    assert names <= quiet, f"never shown to stay quiet: {names - quiet}"


def test_alertmanager_example() -> None:
    """The example Alertmanager config is valid and only names alerts that exist."""
    amtool = require_binary("amtool", "apt-get install -y prometheus-alertmanager")
    result = subprocess.run(
        [amtool, "check-config", str(ALERTMANAGER)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    names = {rule["alert"] for rule in load_rules(ALERTS) if "alert" in rule}
    mentioned = set(re.findall(r"Prefleak[A-Za-z]+", ALERTMANAGER.read_text(encoding="utf-8")))
    assert mentioned <= names, mentioned - names
