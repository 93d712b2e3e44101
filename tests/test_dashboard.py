"""The Grafana dashboard: generated, never hand-edited, and every query valid PromQL.

The committed JSON must equal what deploy/grafana/build_dashboard.py prints, so a reviewer reads
the script's diff. Every panel needs a title, a unit and a query; promtool parses each query (as a
recording rule) so a typo shows here and not as an empty panel during an incident.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from prefleak.lineage import RelationKind
from services import require_binary
from test_alert_rules import (
    EXPORTED_METRICS,
    GRAFANA_BASE,
    metric_names,
    recorded_names,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "grafana" / "build_dashboard.py"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "prefleak.json"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
GRAFANA_INTERVALS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
STATISTICS_ROWS = {
    # Row title: metrics its panels must read (docs/metrics.md, docs/statistics.md).
    "Leakage model": {
        "prefleak_leakage_effect_logodds",
        "prefleak_leakage_effect_ci_low_logodds",
        "prefleak_leakage_effect_ci_high_logodds",
        "prefleak_leakage_significant",
        "prefleak_leakage_change_detected",
    },
    "Judge biases": {
        "prefleak_judge_position_bias_ratio",
        "prefleak_judge_length_bias_logodds",
        "prefleak_judge_human_agreement_kappa",
    },
}


def load_dashboard() -> dict[str, Any]:
    """The committed dashboard JSON."""
    board: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return board


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every non-row panel, including panels nested in collapsed rows."""
    for panel in board["panels"]:
        if panel["type"] == "row":
            yield from panels({"panels": panel.get("panels", [])})
        else:
            yield panel


def rows(board: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Panels by the title of the row they sit in (open rows: the panels after a row panel)."""
    found: dict[str, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] = found.setdefault("", [])
    for panel in board["panels"]:
        if panel["type"] == "row":
            current = found.setdefault(panel["title"], list(panel.get("panels", [])))
        else:
            current.append(panel)
    return found


def builder() -> ModuleType:
    """deploy/grafana/build_dashboard.py as a module (it is a script, not a package)."""
    pytest.importorskip("grafana_foundation_sdk", reason="pip install grafana-foundation-sdk")
    spec = importlib.util.spec_from_file_location("build_dashboard", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def concrete(expr: str, intervals: dict[str, str] | None = None) -> str:
    """The query Grafana would send with every variable on "All" (regex ``.*``)."""
    values = {**GRAFANA_INTERVALS, **(intervals or {})}

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, ".*")

    return VARIABLE.sub(substitute, expr)


def panel_queries(
    board: dict[str, Any], intervals: dict[str, str] | None = None
) -> list[tuple[str, str, str]]:
    """(panel title, refId, concrete expr) of every target."""
    return [
        (panel["title"], target["refId"], concrete(target["expr"], intervals))
        for panel in panels(board)
        for target in panel["targets"]
    ]


def test_committed_json_is_generated() -> None:
    """deploy/grafana/dashboards/prefleak.json is exactly the script's output."""
    pytest.importorskip("grafana_foundation_sdk", reason="pip install grafana-foundation-sdk")
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, check=True
    )
    assert result.stdout == DASHBOARD.read_text(encoding="utf-8"), (
        "dashboard JSON out of date: python deploy/grafana/build_dashboard.py "
        "--out deploy/grafana/dashboards/prefleak.json"
    )


def test_identity_matches_alert_links() -> None:
    """The uid and slug the alerts' dashboard_url points at, and the four variables."""
    board = load_dashboard()
    assert GRAFANA_BASE.endswith(f"/d/{board['uid']}/{board['title']}")
    names = [variable["name"] for variable in board["templating"]["list"]]
    assert names == ["datasource", "benchmark", "judge", "dataset"]


def test_every_panel_has_title_unit_and_queries() -> None:
    """Title, unit, data source variable, and at least one PromQL target per panel."""
    board = load_dashboard()
    seen = list(panels(board))
    assert len(seen) >= 10
    for panel in seen:
        title = panel.get("title")
        assert title, panel
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{title}: no unit"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel.get("targets"), f"{title}: no query"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"{title}: empty expr"
            assert target["datasource"]["uid"] == "${datasource}", title
    titles = [panel["title"] for panel in seen]
    assert len(titles) == len(set(titles)), "duplicate panel titles"


def test_queries_use_known_metrics() -> None:
    """Panels read exported metrics or recorded series only (planned metrics are left out)."""
    known = EXPORTED_METRICS | recorded_names()
    for title, ref, expr in panel_queries(load_dashboard()):
        unknown = metric_names(expr) - known
        assert not unknown, f"{title} {ref}: unknown metrics {unknown}"


@pytest.mark.parametrize("row", sorted(STATISTICS_ROWS))
def test_statistics_rows_read_exported_metrics(row: str) -> None:
    """The leakage-model and judge-bias rows exist and read the statistics metrics that ship."""
    by_row = rows(load_dashboard())
    assert row in by_row, f"no row {row!r}"
    read: set[str] = set()
    for panel in by_row[row]:
        for target in panel["targets"]:
            names = metric_names(concrete(target["expr"]))
            assert names, (panel["title"], target["refId"])
            assert names <= EXPORTED_METRICS, (panel["title"], names - EXPORTED_METRICS)
            read |= names
    assert STATISTICS_ROWS[row] <= read, STATISTICS_ROWS[row] - read


def test_leakage_model_panels() -> None:
    """Pooled effects are the benchmark="*" rows; the alarm table lists detectors in alarm."""
    model = {panel["title"]: panel for panel in rows(load_dashboard())["Leakage model"]}
    effect = next(panel for title, panel in model.items() if title.startswith("Pooled leakage"))
    exprs = {target["refId"]: target["expr"] for target in effect["targets"]}
    assert set(exprs) == {"A", "B", "C"}
    for expr in exprs.values():
        assert 'benchmark="*"' in expr, expr
    alarms = model["Change alarms"]
    assert alarms["type"] == "table"
    assert all(
        "prefleak_leakage_change_detected == 1" in target["expr"] for target in alarms["targets"]
    )
    assert all(target.get("instant") for target in alarms["targets"])


def test_effect_band_covers_every_relation_kind() -> None:
    """Each related kind has a fixed-colour line and a band from its lower to its upper bound."""
    kinds = builder().RELATION_KINDS
    assert set(kinds) == {kind.value for kind in RelationKind if kind.related}
    model = rows(load_dashboard())["Leakage model"]
    effect = next(panel for panel in model if panel["title"].startswith("Pooled leakage"))
    overrides = {
        override["matcher"]["options"]: {p["id"]: p["value"] for p in override["properties"]}
        for override in effect["fieldConfig"]["overrides"]
        if override["matcher"]["id"] == "byName"
    }
    legends = {target["refId"]: target["legendFormat"] for target in effect["targets"]}
    assert legends == {"A": "{{relation}}", "B": "{{relation}} low", "C": "{{relation}} high"}
    for kind, color in kinds.items():
        assert overrides[f"{kind} high"]["custom.fillBelowTo"] == f"{kind} low", kind
        for name in (kind, f"{kind} low", f"{kind} high"):
            assert overrides[name]["color"] == {"mode": "fixed", "fixedColor": color}, name


def test_queries_parse_as_promql(tmp_path: Path) -> None:
    """promtool parses every query, with variables on "All" and Grafana's intervals filled in."""
    promtool = require_binary("promtool", "apt-get install -y prometheus")
    queries = panel_queries(load_dashboard())
    rules = [
        {"record": f"dashboard:panel_{index}:check", "expr": expr}
        for index, (_, _, expr) in enumerate(queries)
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    listing = "\n".join(f"{title} {ref}: {expr}" for title, ref, expr in queries)
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\n{listing}"


def test_provisioning_files() -> None:
    """A Prometheus data source and a file provider for the dashboards folder."""
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prefleak.yml").read_text())
    assert datasources["apiVersion"] == 1
    assert [source["type"] for source in datasources["datasources"]] == ["prometheus"]
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "prefleak.yml").read_text())
    assert providers["providers"][0]["type"] == "file"
    assert providers["providers"][0]["options"]["path"]
