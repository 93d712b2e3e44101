"""Generate prefleak's Grafana dashboard (deploy/grafana/dashboards/prefleak.json).

Dashboard as code (grafana-foundation-sdk), so that a change is reviewed as a diff of this
script and the JSON stays in step with the metric names of docs/metrics.md and the recording
rules of deploy/prometheus/prefleak-rules.yml. tests/test_dashboard.py fails when the committed
JSON differs from what this script prints, so never edit the JSON by hand; run::

    python deploy/grafana/build_dashboard.py --out deploy/grafana/dashboards/prefleak.json

Left out on purpose (no metric yet; later issues add them): judge position/length bias panels
and the probes row (prefleak_probe_*). See docs/alerts.md, "Dashboard".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

UID = "prefleak-overview"
"""Stable: the alerts' dashboard_url annotations link to /d/prefleak-overview/prefleak."""
TITLE = "prefleak"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
PLS_LABELS = "benchmark, judge_i, judge_j, student_i, student_j, relation_i, relation_j"
VERDICTS = 'benchmark=~"$benchmark", judge=~"$judge"'
DATASET = 'dataset=~"$dataset"'


def query(
    expr: str, legend: str = "", ref: str = "A", *, instant: bool = False
) -> prometheus.Dataquery:
    """One PromQL target on the dashboard's data source variable."""
    target = (
        prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE).legend_format(legend)
    )
    if instant:
        target = target.instant().format(PromQueryFormat.TABLE)
    return target


def pls(metric: str) -> str:
    """A PLS-labelled series filtered by benchmark and by judge on either side of the pair."""
    return (
        f'({metric}{{benchmark=~"$benchmark", judge_i=~"$judge"}}'
        f' or {metric}{{benchmark=~"$benchmark", judge_j=~"$judge"}})'
    )


def win_rate(relation: str, by: str) -> str:
    """Win rate of candidates with ``relation`` (a label matcher), from the verdict totals."""
    return (
        f"sum by ({by}) (prefleak_verdict_wins_total{{{VERDICTS}, {relation}}})\n"
        f"  / sum by ({by}) (prefleak_verdict_comparisons_total{{{VERDICTS}, {relation}}})"
    )


def graph(
    title: str, unit: str, description: str, *targets: prometheus.Dataquery
) -> timeseries.Panel:
    """A time series panel; every panel states its unit so values read right."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(8)
        .height(8)
        .line_width(1)
        .fill_opacity(5)
        .legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .calcs(["lastNotNull", "max"])
        )
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def overview_panels() -> list[dashboard.Panel | timeseries.Panel | stat.Panel | table.Panel]:
    """Is data flowing and are results fresh: the first things on-call checks."""
    sources_up = (
        stat.Panel()
        .title("Sources up")
        .description("prefleak_source_up: 1 while a configured source can take events.")
        .unit("bool_on_off")
        .datasource(DATASOURCE)
        .span(4)
        .height(8)
        .with_target(query("prefleak_source_up", "{{instance}} {{source}}"))
        .thresholds(
            dashboard.ThresholdsConfig()
            .mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value=None, color="red"), Threshold(value=1.0, color="green")])
        )
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
    )
    version = (
        stat.Panel()
        .title("Version")
        .description("prefleak_build_info: the running prefleak version per instance.")
        .unit("none")
        .datasource(DATASOURCE)
        .span(4)
        .height(8)
        .with_target(query("prefleak_build_info", "{{instance}} {{version}}"))
        .text_mode(common.BigValueTextMode.NAME)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
    )
    return [
        graph(
            "Events ingested",
            "cps",
            "Messages per second by source and outcome (accepted, duplicate, rejected).",
            query(
                "sum by (source, outcome) (rate(prefleak_events_ingested_total[$__rate_interval]))",
                "{{source}} {{outcome}}",
            ),
        ),
        sources_up,
        version,
        graph(
            "Kafka consumer lag",
            "short",
            "Messages not consumed yet per topic and partition (only with Kafka configured).",
            query(
                "sum by (topic, partition) (prefleak_consumer_lag_messages)",
                "{{topic}}/{{partition}}",
            ),
        ),
        graph(
            "Dead letters",
            "short",
            "Rows in the dead-letter table (prefleak rejected lists them).",
            query("prefleak_dead_letters", "{{instance}}"),
        ),
        graph(
            "Data freshness",
            "s",
            "Seconds since the last successful recompute, since the last accepted event, "
            "since the event time of the newest stored event, and since the last diversity "
            "report (every diversity.interval_s, 300 s by default).",
            query("time() - prefleak_last_recompute_timestamp_seconds", "since recompute", "A"),
            query("time() - prefleak_last_ingest_timestamp_seconds", "since last accepted", "B"),
            query("time() - prefleak_last_event_timestamp_seconds", "event-time lag", "C"),
            query(
                "time() - prefleak_diversity_last_timestamp_seconds", "since diversity report", "D"
            ),
        ),
        graph(
            "Recompute duration",
            "s",
            "Median and 90th percentile wall time of a recompute; near recompute.interval_s "
            "means results get older than configured.",
            query(
                "histogram_quantile(0.5, sum by (le) "
                "(rate(prefleak_recompute_duration_seconds_bucket[$__rate_interval])))",
                "p50",
                "A",
            ),
            query(
                "histogram_quantile(0.9, sum by (le) "
                "(rate(prefleak_recompute_duration_seconds_bucket[$__rate_interval])))",
                "p90",
                "B",
            ),
        ),
        graph(
            "Recompute errors",
            "short",
            "Failed recomputes per interval (the previous results stay exported).",
            query(
                "sum by (instance) (increase(prefleak_recompute_errors_total[$__rate_interval]))",
                "{{instance}}",
            ),
        ),
    ]


def leakage_panels() -> list[dashboard.Panel | timeseries.Panel | stat.Panel | table.Panel]:
    """The Preference Leakage Score with its interval, and the judges' related-vs-unrelated gap."""
    dashed = [
        DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [4, 4]}),
        DynamicConfigValue(id_val="custom.fillOpacity", value=0),
    ]
    pls_graph = graph(
        "PLS per pair (95 % CI)",
        "percentunit",
        "Preference Leakage Score per judge pair and student pair (solid) with the lower and "
        "upper bound of its 95 % bootstrap interval (dashed). Leakage is significant where the "
        "lower bound is above 0; the alert wants it above 5 %.",
        query(pls("prefleak_pls_ratio"), "PLS {{benchmark}} {{judge_i}}/{{judge_j}}", "A"),
        query(pls("prefleak_pls_ci_low_ratio"), "low {{benchmark}} {{judge_i}}/{{judge_j}}", "B"),
        query(pls("prefleak_pls_ci_high_ratio"), "high {{benchmark}} {{judge_i}}/{{judge_j}}", "C"),
    )
    pls_graph = (
        pls_graph.span(24).height(10).override_by_query("B", dashed).override_by_query("C", dashed)
    )
    significant = f"({pls('prefleak_pls_ci_low_ratio')} > 0)"
    pairs = (
        table.Panel()
        .title("Significant pairs (CI lower bound > 0)")
        .description(
            "PLS rows whose 95 % interval lies above 0, with the prompts behind them. "
            "/v1/pls has every row."
        )
        .unit("percentunit")
        .datasource(DATASOURCE)
        .span(24)
        .height(8)
        .with_target(query(f"{pls('prefleak_pls_ratio')} and {significant}", ref="A", instant=True))
        .with_target(query(significant, ref="B", instant=True))
        .with_target(
            query(f"{pls('prefleak_pls_ci_high_ratio')} and {significant}", ref="C", instant=True)
        )
        .with_target(
            query(f"{pls('prefleak_pls_prompts')} and {significant}", ref="D", instant=True)
        )
        .with_transformation(DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True, "job": True, "instance": True},
                    "renameByName": {
                        "Value #A": "PLS",
                        "Value #B": "CI low",
                        "Value #C": "CI high",
                        "Value #D": "prompts",
                    },
                },
            )
        )
        .override_by_name("prompts", [DynamicConfigValue(id_val="unit", value="none")])
        .sort_by([common_builders.TableSortByFieldState().display_name("CI low").desc(True)])
    )
    return [
        pls_graph,
        pairs,
        graph(
            "Win rate: related vs unrelated candidates",
            "percentunit",
            "Share of each judge's verdicts won by candidates related to it (same model, "
            "inheritance, series, family) and by unrelated ones, over all stored verdicts.",
            query(win_rate('relation!="unrelated"', "judge"), "{{judge}} related", "A"),
            query(win_rate('relation="unrelated"', "judge"), "{{judge}} unrelated", "B"),
        ).span(12),
        graph(
            "Related minus unrelated win rate (last hour)",
            "percentunit",
            "Recording rule benchmark_judge:prefleak_verdict_related_win_rate_gap:ratio1h; "
            "PrefleakJudgeFavoursRelated fires above 10 % with z > 3.",
            query(
                f"benchmark_judge:prefleak_verdict_related_win_rate_gap:ratio1h{{{VERDICTS}}}",
                "{{benchmark}} {{judge}}",
            ),
        ).span(12),
    ]


def judge_panels() -> list[dashboard.Panel | timeseries.Panel | stat.Panel | table.Panel]:
    """Per-judge views on existing metrics; position and length bias wait for their metrics."""
    return [
        graph(
            "Win rate by relation of judge to candidate",
            "percentunit",
            "Win rate of candidates per relation kind; same_model is self-preference (a judge "
            "rating its own answers).",
            query(win_rate('relation=~".+"', "relation"), "{{relation}}"),
        ).span(12),
        graph(
            "Verdicts per judge",
            "cps",
            "Verdicts per second of each judge (each verdict counts for both candidates, "
            "hence the division by 2).",
            query(
                "sum by (judge) (rate(prefleak_verdict_comparisons_total"
                f"{{{VERDICTS}}}[$__rate_interval])) / 2",
                "{{judge}}",
            ),
        ).span(12),
    ]


def diversity_panels() -> list[dashboard.Panel | timeseries.Panel | stat.Panel | table.Panel]:
    """Diversity of the sampled datasets, their drift, and how well eval sets cover production."""
    return [
        graph(
            "Distinct n-grams per dataset",
            "percentunit",
            "Distinct n-grams over all n-grams of each dataset's sample (distinct-1, -2, -3). "
            "Falling: fewer distinct phrasings. PrefleakDiversityCollapse watches distinct-2.",
            query(f"prefleak_diversity_distinct_ratio{{{DATASET}}}", "{{dataset}} distinct-{{n}}"),
        ),
        graph(
            "Compression ratio per dataset",
            "percentunit",
            "DEFLATE-compressed over raw size of each dataset's joined sample texts; lower is "
            "more repetitive.",
            query(f"prefleak_diversity_compression_ratio{{{DATASET}}}", "{{dataset}}"),
        ),
        graph(
            "Drift p-value per dataset",
            "none",
            "Permutation p-value of the MMD test of each dataset's latest window against its "
            "earliest samples; below 0.01 the data shifted (absent until a window beyond the "
            "reference exists).",
            query(f"prefleak_diversity_drift_pvalue{{{DATASET}}}", "{{dataset}}"),
        ),
        graph(
            "Eval coverage of production data",
            "percentunit",
            "Share of a production dataset's samples whose nearest eval sample is within the "
            "coverage threshold, per (eval, production) pair; PrefleakEvalCoverageLow fires "
            "below 50 %.",
            query(
                '(prefleak_eval_coverage_ratio{eval=~"$dataset"}'
                ' or prefleak_eval_coverage_ratio{production=~"$dataset"})',
                "{{eval}} → {{production}}",
            ),
        ),
        graph(
            "Artifact shares per dataset",
            "percentunit",
            "Share of each dataset's samples that are empty, truncated, refusals, prompt "
            "echoes, exact or near duplicates.",
            query(f"prefleak_diversity_artifact_ratio{{{DATASET}}}", "{{dataset}} {{kind}}"),
        ),
        graph(
            "Samples per dataset",
            "short",
            "Samples each dataset's measures rest on (the bounded sample, at most "
            "diversity.sample_size), by role (training, eval, production).",
            query(
                f"sum by (dataset, role) (prefleak_diversity_samples{{{DATASET}}})",
                "{{dataset}} ({{role}})",
            ),
        ),
    ]


def variables() -> list[dashboard.DatasourceVariable | dashboard.QueryVariable]:
    """Data source, benchmark, judge and dataset; the alerts link here with var-benchmark,
    var-judge and var-dataset."""

    def label_values(
        name: str, label: str, selector: str, metric: str = "prefleak_verdict_comparisons_total"
    ) -> dashboard.QueryVariable:
        return (
            dashboard.QueryVariable(name)
            .label(label)
            .datasource(DATASOURCE)
            .query(f"label_values({metric}{selector}, {name})")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .allow_custom_value(True)
        )

    return [
        dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        label_values("benchmark", "Benchmark", ""),
        label_values("judge", "Judge", '{benchmark=~"$benchmark"}'),
        label_values("dataset", "Dataset", "", "prefleak_diversity_samples"),
    ]


def build() -> dict[str, object]:
    """The dashboard as a JSON-ready dict."""
    board = (
        dashboard.Dashboard(TITLE)
        .uid(UID)
        .description("Preference leakage (Li et al. 2025) and the health of the prefleak daemon.")
        .tags(["prefleak", "llm-evaluation"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("browser")
    )
    for variable in variables():
        board = board.with_variable(variable)
    rows: list[tuple[str, list[dashboard.Panel | timeseries.Panel | stat.Panel | table.Panel]]] = [
        ("Overview", overview_panels()),
        ("Leakage", leakage_panels()),
        ("Judges", judge_panels()),
        ("Diversity and coverage", diversity_panels()),
    ]
    for title, panels in rows:
        board = board.with_row(dashboard.Row(title))
        for panel in panels:
            board = board.with_panel(panel)
    encoded: dict[str, object] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return encoded


def render() -> str:
    """Stable text of the dashboard: sorted keys, so that diffs show real changes only."""
    return json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the dashboard JSON, or write it to --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    text = render()
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
