"""Generate prefleak's Grafana dashboard (deploy/grafana/dashboards/prefleak.json).

Dashboard as code (grafana-foundation-sdk), so that a change is reviewed as a diff of this
script and the JSON stays in step with the metric names of docs/metrics.md and the recording
rules of deploy/prometheus/prefleak-rules.yml. tests/test_dashboard.py fails when the committed
JSON differs from what this script prints, so never edit the JSON by hand; run::

    python deploy/grafana/build_dashboard.py --out deploy/grafana/dashboards/prefleak.json

See docs/alerts.md, "Dashboard".
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
    ValueMap,
    ValueMappingResult,
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
JUDGE = 'judge=~"$judge"'
POOLED = 'benchmark="*"'
"""The leakage model's rows pooled over all benchmarks (docs/statistics.md)."""
PER_BENCHMARK = 'benchmark!="*", benchmark=~"$benchmark"'
RELATION_KINDS = {
    "same_model": "red",
    "inheritance": "orange",
    "same_series": "yellow",
    "same_family": "blue",
}
"""Related kinds (prefleak.lineage.RelationKind, unrelated excepted), each with the colour of its
line and interval band; fixed names, so the band can fill between named series."""


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


def leakage_model_panels() -> list[dashboard.Panel | timeseries.Panel | stat.Panel | table.Panel]:
    """The leakage model: effect per relation kind, its significance, and the change alarms."""
    effect = (
        graph(
            "Pooled leakage effect per relation kind (95 % CI, log-odds)",
            "none",
            "Leakage effect of each relation kind from the paired-comparison model of all verdicts "
            '(benchmark="*": pooled over benchmarks and judges), in log-odds a judge adds for a '
            "fully related candidate, with its 95 % prompt-bootstrap interval as a band. "
            "PrefleakLeakageEffectSignificant fires when it is significant and the lower bound is "
            "above 0.1. docs/statistics.md.",
            query(f"prefleak_leakage_effect_logodds{{{POOLED}}}", "{{relation}}", "A"),
            query(f"prefleak_leakage_effect_ci_low_logodds{{{POOLED}}}", "{{relation}} low", "B"),
            query(f"prefleak_leakage_effect_ci_high_logodds{{{POOLED}}}", "{{relation}} high", "C"),
        )
        .span(16)
        .height(9)
    )
    hidden_bound = [
        DynamicConfigValue(id_val="custom.lineWidth", value=0),
        DynamicConfigValue(
            id_val="custom.hideFrom", value={"legend": True, "tooltip": False, "viz": False}
        ),
    ]
    for kind, color in RELATION_KINDS.items():
        fixed = DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color})
        effect = (
            effect.override_by_name(kind, [fixed])
            .override_by_name(f"{kind} low", [fixed, *hidden_bound])
            .override_by_name(
                f"{kind} high",
                [
                    fixed,
                    *hidden_bound,
                    DynamicConfigValue(id_val="custom.fillBelowTo", value=f"{kind} low"),
                    DynamicConfigValue(id_val="custom.fillOpacity", value=15),
                ],
            )
        )
    flags = (
        stat.Panel()
        .title("Significant leakage effects")
        .description(
            "prefleak_leakage_significant: 1 when a relation kind's effect is significant at "
            "statistics.fdr (Benjamini-Hochberg), pooled and per selected benchmark."
        )
        .unit("none")
        .datasource(DATASOURCE)
        .span(8)
        .height(9)
        .with_target(
            query(f"prefleak_leakage_significant{{{POOLED}}}", "{{relation}} (pooled)", "A")
        )
        .with_target(
            query(
                f"prefleak_leakage_significant{{{PER_BENCHMARK}}}",
                "{{relation}} {{benchmark}}",
                "B",
            )
        )
        .mappings(
            [
                ValueMap(
                    options={
                        "0": ValueMappingResult(text="no", color="green", index=0),
                        "1": ValueMappingResult(text="significant", color="red", index=1),
                    }
                )
            ]
        )
        .thresholds(
            dashboard.ThresholdsConfig()
            .mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value=None, color="green"), Threshold(value=1.0, color="red")])
        )
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
    )
    pls_rows = (
        stat.Panel()
        .title("PLS rows significant at the FDR")
        .description(
            "PLS rows (filtered by benchmark and judge) flagged by prefleak_pls_significant "
            "(Benjamini-Hochberg at statistics.fdr), out of the rows with a test."
        )
        .unit("none")
        .datasource(DATASOURCE)
        .span(12)
        .height(8)
        .with_target(query(f"sum({pls('prefleak_pls_significant')})", "significant", "A"))
        .with_target(query(f"count({pls('prefleak_pls_significant')})", "tested", "B"))
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
    )
    detected = "prefleak_leakage_change_detected == 1"
    alarms = (
        table.Panel()
        .title("Change alarms")
        .description(
            "Series whose CUSUM change detector is in alarm (prefleak_leakage_change_detected "
            "== 1): a PLS row (subject pls), the pooled effect of a relation kind (leakage) or a "
            "judge's habit (position, length, self_preference), with the start of the window "
            "where the change began. Empty is good. prefleak report --json lists them all."
        )
        .unit("none")
        .datasource(DATASOURCE)
        .span(24)
        .height(8)
        # Aggregation and arithmetic drop the metric name, so the two frames merge by labels.
        .with_target(query(f"max without () ({detected})", ref="A", instant=True))
        .with_target(
            query(
                f"1000 * (prefleak_leakage_change_start_timestamp_seconds and ({detected}))",
                ref="B",
                instant=True,
            )
        )
        .with_transformation(DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {
                        "Time": True,
                        "job": True,
                        "instance": True,
                        "Value #A": True,
                    },
                    "renameByName": {"Value #B": "change started"},
                },
            )
        )
        .override_by_name(
            "change started", [DynamicConfigValue(id_val="unit", value="dateTimeAsIso")]
        )
        .sort_by(
            [common_builders.TableSortByFieldState().display_name("change started").desc(True)]
        )
    )
    return [
        effect,
        flags,
        graph(
            "Leakage effect per benchmark (win-rate points)",
            "percentunit",
            "prefleak_leakage_effect_ratio per selected benchmark and relation kind: the win "
            "rate a fully related candidate gains against an equal one (0.05 = 5 points).",
            query(
                f"prefleak_leakage_effect_ratio{{{PER_BENCHMARK}}}", "{{benchmark}} {{relation}}"
            ),
        ).span(12),
        pls_rows,
        alarms,
    ]


def judge_bias_panels() -> list[dashboard.Panel | timeseries.Panel | stat.Panel | table.Panel]:
    """Per-judge habits over the horizon (prefleak biases); read them before blaming leakage."""
    return [
        graph(
            "Position bias per judge",
            "percentunit",
            "Share of decisive verdicts won by the response shown first (50 % = no position "
            "bias), from verdicts that say which response came first.",
            query(f"prefleak_judge_position_bias_ratio{{{JUDGE}}}", "{{judge}}"),
        ).span(6),
        graph(
            "Length bias per judge (log-odds per doubling)",
            "none",
            "Log-odds a judge adds per doubling of the length ratio of the two responses, from "
            "the leakage model (quality held fixed); 0 = no length bias.",
            query(f"prefleak_judge_length_bias_logodds{{{JUDGE}}}", "{{judge}}"),
        ).span(6),
        graph(
            "Agreement with humans (Cohen's kappa)",
            "none",
            "Cohen's kappa of each judge with the human verdicts on the same comparisons "
            "(needs 10 shared comparisons); 1 = perfect, 0 = chance.",
            query(f"prefleak_judge_human_agreement_kappa{{{JUDGE}}}", "{{judge}}"),
        ).span(6),
        graph(
            "Self-preference and error bias per judge",
            "percentunit",
            "Self-preference: win-rate points a judge gives its own answers above what other "
            "judges give them. Error bias: points it gives related candidates above the humans "
            "on the same comparisons.",
            query(f"prefleak_judge_self_preference_ratio{{{JUDGE}}}", "{{judge}} self", "A"),
            query(f"prefleak_judge_error_bias_ratio{{{JUDGE}}}", "{{judge}} vs humans", "B"),
        ).span(6),
    ]


def judge_panels() -> list[dashboard.Panel | timeseries.Panel | stat.Panel | table.Panel]:
    """Per-judge views on the verdict counters; the model's biases have a row of their own."""
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


def probe_panels() -> list[dashboard.Panel | timeseries.Panel | stat.Panel | table.Panel]:
    """Leakage probe runs (docs/probes.md): are they succeeding, how long, how many judgements
    fail to parse. Empty where probes are off."""
    last_success = (
        stat.Panel()
        .title("Since the last successful probe")
        .description(
            "time() - prefleak_probe_last_success_timestamp_seconds; PrefleakProbeStale fires "
            "after 2 days."
        )
        .unit("s")
        .datasource(DATASOURCE)
        .span(6)
        .height(8)
        .with_target(
            query("time() - prefleak_probe_last_success_timestamp_seconds", "{{instance}}")
        )
    )
    return [
        last_success,
        graph(
            "Probe runs by outcome",
            "short",
            "Finished probe runs per outcome over 1 d (prefleak_probe_runs_total): success, "
            "error, hung, killed, interrupted, no_data, probe_extra.",
            query("sum by (outcome) (increase(prefleak_probe_runs_total[1d]))", "{{outcome}}"),
        ).span(6),
        graph(
            "Probe run duration (p50, p90)",
            "s",
            "Quantiles of prefleak_probe_run_duration_seconds over 1 d; failed runs included.",
            query(
                "histogram_quantile(0.5, sum by (le) "
                "(increase(prefleak_probe_run_duration_seconds_bucket[1d])))",
                "p50",
            ),
            query(
                "histogram_quantile(0.9, sum by (le) "
                "(increase(prefleak_probe_run_duration_seconds_bucket[1d])))",
                "p90",
                "B",
            ),
        ).span(6),
        graph(
            "Unparseable judgements",
            "short",
            "Probe judgements no retry could parse, over 1 d "
            "(prefleak_probe_unparseable_judgements_total); never turned into verdicts.",
            query("sum(increase(prefleak_probe_unparseable_judgements_total[1d]))", "unparseable"),
        ).span(6),
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
        ("Leakage model", leakage_model_panels()),
        ("Judges", judge_panels()),
        ("Judge biases", judge_bias_panels()),
        ("Diversity and coverage", diversity_panels()),
        ("Probes", probe_panels()),
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
