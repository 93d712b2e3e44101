"""Prometheus metrics: counters the sources bump, and a collector over the last recompute.

Every metric is documented in docs/metrics.md; alert rules are written against these names, so a
rename is a breaking change. Store-derived values come from the last recompute, never from a
query at scrape time, so a scrape costs nothing however large the store grows.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from prefleak import __version__
from prefleak.config import MetricsSettings
from prefleak.lineage import Lineage
from prefleak.report import PLSRow
from prefleak.stats.analysis import Analysis
from prefleak.stats.cells import Cells
from prefleak.store import AppendResult

if TYPE_CHECKING:  # the report's numpy-heavy modules load only when diversity is on
    from prefleak.diversity.report import DiversityReport
    from prefleak.fingerprint import FingerprintReport

OTHER = "other"
"""The label value that stands for every judge, candidate or benchmark not named on its own."""

OUTCOMES = ("accepted", "duplicate", "rejected")
PLS_LABELS = (
    "benchmark",
    "judge_i",
    "judge_j",
    "student_i",
    "student_j",
    "relation_i",
    "relation_j",
)
VERDICT_LABELS = ("benchmark", "judge", "candidate", "relation")
RECOMPUTE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
PROBE_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14_400.0, 28_800.0, 86_400.0)
PROBE_OUTCOMES = ("success", "error", "hung", "killed", "interrupted", "no_data", "probe_extra")
"""``outcome`` of ``prefleak_probe_runs_total``: how a probe run ended (docs/metrics.md)."""

Triple = tuple[str, str, str]
"""benchmark, judge, candidate."""


@dataclass(frozen=True, slots=True)
class VerdictSeries:
    """Verdicts of one (bounded) label set: wins of the candidate and comparisons it was in."""

    benchmark: str
    judge: str
    candidate: str
    relation: str
    wins: int
    comparisons: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one recompute found; the collector and the JSON API serve the latest one."""

    finished_at: float
    duration_s: float
    pls: tuple[PLSRow, ...]
    verdicts: tuple[VerdictSeries, ...]
    events: dict[str, int]
    dead_letters: int
    newest_event_ts: float | None
    diversity: DiversityReport | None = None
    """The last diversity report (recomputed every ``diversity.interval_s``), if any yet."""
    analysis: Analysis | None = None
    """Statistics of the recompute: significance, leakage effects, changes, judge biases."""
    fingerprint: FingerprintReport | None = None
    """The last style fingerprint (recomputed every ``fingerprint.interval_s``), if any yet."""
    inferred_relations: dict[str, int] | None = None
    """Relations in force that are inferences, per kind (from the recompute's lineage)."""
    cells: Cells | None = None
    """The verdict cells of the analysis's horizon: explain's per-prompt evidence."""


def verdict_series(
    totals_by_pair: Iterable[tuple[str, str, str, str, int, int, int]],
    lineage: Lineage,
    bounds: MetricsSettings,
    named: frozenset[Triple] = frozenset(),
) -> tuple[list[VerdictSeries], frozenset[Triple]]:
    """Win and comparison counts per judge and candidate, with label values bounded by ``bounds``.

    ``totals_by_pair`` are :meth:`EventStore.verdict_totals` rows: every verdict ever stored,
    so the counters only grow, whatever the statistics' retention. A (benchmark, judge,
    candidate) triple keeps its own labels when it is among the ``top_pairs`` with most
    comparisons; ``named`` are the triples chosen before, which stay named so that counters do
    not move between series. Every other triple is counted under its allow-listed names, with
    :data:`OTHER` for the rest; ``relation`` (one of five kinds) is always kept. Returns the
    series and the triples now named.
    """
    totals: dict[Triple, list[int]] = defaultdict(lambda: [0, 0])
    for benchmark, judge, lo, hi, lo_wins, hi_wins, verdicts in totals_by_pair:
        for candidate, wins in ((lo, lo_wins), (hi, hi_wins)):
            total = totals[(benchmark, judge, candidate)]
            total[0] += int(wins)
            total[1] += int(verdicts)
    keep = {triple for triple in named if triple in totals}
    for triple in sorted(totals, key=lambda t: (-totals[t][1], t)):
        if len(keep) >= bounds.top_pairs:
            break
        keep.add(triple)
    benchmarks = set(bounds.benchmarks) | {triple[0] for triple in keep}
    judges, candidates = set(bounds.judges), set(bounds.candidates)
    series: dict[tuple[str, str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for (benchmark, judge, candidate), (wins, comparisons) in totals.items():
        relation = lineage.relation(judge, candidate).kind.value
        if (benchmark, judge, candidate) not in keep:
            benchmark = benchmark if benchmark in benchmarks else OTHER
            judge = judge if judge in judges else OTHER
            candidate = candidate if candidate in candidates else OTHER
        total = series[(benchmark, judge, candidate, relation)]
        total[0] += wins
        total[1] += comparisons
    return (
        [VerdictSeries(*labels, wins, n) for labels, (wins, n) in sorted(series.items())],
        frozenset(keep),
    )


def exported_pls(rows: Iterable[PLSRow], limit: int) -> list[PLSRow]:
    """The PLS rows exported as series: defined scores first, the highest lower bound first."""

    def alarm(row: PLSRow) -> tuple[bool, float]:
        low = row.ci_low if row.ci_low is not None else row.pls
        return (row.pls is None, -(low if low is not None else -math.inf))

    return sorted(rows, key=alarm)[:limit]


class ServiceView(Protocol):
    """What the collector reads from the running service at scrape time."""

    def snapshot(self) -> Snapshot | None: ...

    def sources_up(self) -> dict[str, bool]: ...

    def consumer_lag(self) -> dict[tuple[str, int], int]: ...

    def store_write_failures(self) -> int: ...


class Detached:
    """A :class:`ServiceView` of no running service (no snapshot, no sources): for a
    :class:`~prefleak.daemon.recompute.Recomputer` driven outside ``serve``, as the recompute
    benchmark and tests drive it."""

    def snapshot(self) -> Snapshot | None:
        return None

    def sources_up(self) -> dict[str, bool]:
        return {}

    def consumer_lag(self) -> dict[tuple[str, int], int]:
        return {}

    def store_write_failures(self) -> int:
        return 0


class Metrics:
    """The service's registry: instrumented counters plus :class:`_StoreCollector`."""

    def __init__(
        self,
        view: ServiceView,
        bounds: MetricsSettings,
        sources: Iterable[str],
        max_diversity_datasets: int = 50,
    ) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._totals: dict[str, dict[str, int]] = {}
        self._last_ingest: float | None = None
        self.ingested = Counter(
            "prefleak_events_ingested",
            "Messages ingested by this process, by source and outcome (accepted: new event "
            "stored; duplicate: already stored; rejected: dead-lettered).",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.recompute_duration = Histogram(
            "prefleak_recompute_duration_seconds",
            "Wall time of one recompute of the PLS table and store aggregates.",
            buckets=RECOMPUTE_BUCKETS,
            registry=self.registry,
        )
        self.recompute_errors = Counter(
            "prefleak_recompute_errors",
            "Recomputes that failed; the previous results stay exported.",
            registry=self.registry,
        )
        Gauge(
            "prefleak_build_info",
            "Always 1; the version label says which prefleak is running.",
            ["version"],
            registry=self.registry,
        ).labels(__version__).set(1)
        for source in sources:
            self._totals[source] = dict.fromkeys(OUTCOMES, 0)
            for outcome in OUTCOMES:
                self.ingested.labels(source, outcome)
        ProcessCollector(registry=self.registry)
        self.registry.register(
            _StoreCollector(view, bounds, self.last_ingest, max_diversity_datasets)
        )

    def record(self, source: str, result: AppendResult) -> None:
        """Count one append's outcomes (called by every source after each batch)."""
        counts = {
            "accepted": result.accepted,
            "duplicate": result.duplicate,
            "rejected": result.rejected,
        }
        with self._lock:
            totals = self._totals.setdefault(source, dict.fromkeys(OUTCOMES, 0))
            for outcome, count in counts.items():
                totals[outcome] += count
            if result.accepted:
                self._last_ingest = time.time()
        for outcome, count in counts.items():
            if count:
                self.ingested.labels(source, outcome).inc(count)

    def totals(self) -> dict[str, dict[str, int]]:
        """Messages ingested by this process per source and outcome, for ``/v1/status``."""
        with self._lock:
            return {source: dict(counts) for source, counts in self._totals.items()}

    def last_ingest(self) -> float | None:
        """Wall time this process last stored a new event, or None if it has not yet."""
        with self._lock:
            return self._last_ingest


class ProbeMetrics:
    """The probe runs' series, registered only where probes run: a daemon without them exports
    none (a last-success of 0 would read as "stale" to the alerts)."""

    def __init__(self, registry: CollectorRegistry, last_success: float | None) -> None:
        self.runs = Counter(
            "prefleak_probe_runs",
            "Leakage probe runs this process finished, by outcome (success or why not).",
            ["outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "prefleak_probe_run_duration_seconds",
            "Wall time of each finished probe run, failed ones included.",
            buckets=PROBE_BUCKETS,
            registry=registry,
        )
        self.unparseable = Counter(
            "prefleak_probe_unparseable_judgements",
            "Probe judgements that could not be parsed after retries (never made verdicts).",
            registry=registry,
        )
        self.last_success = Gauge(
            "prefleak_probe_last_success_timestamp_seconds",
            "Unix time the last successful probe run ended, as recorded in the store.",
            registry=registry,
        )
        for outcome in PROBE_OUTCOMES:
            self.runs.labels(outcome)
        self._registry: CollectorRegistry | None = None
        """Set while ``last_success`` waits, unregistered, for the first success."""
        if last_success is not None:
            self.last_success.set(last_success)
        else:  # absent until a run succeeds, never 0
            registry.unregister(self.last_success)
            self._registry = registry

    def record(self, outcome: str, duration_s: float, unparseable: int, ended: float) -> None:
        """Count one finished probe run."""
        self.runs.labels(outcome).inc()
        self.duration.observe(duration_s)
        self.unparseable.inc(unparseable)
        if outcome == "success":
            self.last_success.set(ended)
            if self._registry is not None:
                self._registry.register(self.last_success)
                self._registry = None


class _StoreCollector(Collector):
    """Exports the last recompute and the sources' live state; absent values stay absent."""

    def __init__(
        self,
        view: ServiceView,
        bounds: MetricsSettings,
        last_ingest: Callable[[], float | None],
        max_datasets: int,
    ) -> None:
        self._view = view
        self._bounds = bounds
        self._last_ingest = last_ingest
        self._max_datasets = max_datasets

    def collect(self) -> Iterator[Metric]:
        yield from self._live()
        snapshot = self._view.snapshot()
        if snapshot is None:
            return
        yield _gauge(
            "prefleak_last_recompute_timestamp_seconds",
            "Unix time the last successful recompute finished.",
            snapshot.finished_at,
        )
        yield _gauge(
            "prefleak_dead_letters",
            "Rows in the dead-letter (rejected) table, as of the last recompute.",
            snapshot.dead_letters,
        )
        if snapshot.newest_event_ts is not None:
            yield _gauge(
                "prefleak_last_event_timestamp_seconds",
                "Event time (ts) of the newest stored event, as of the last recompute.",
                snapshot.newest_event_ts,
            )
        yield from _pls_families(exported_pls(snapshot.pls, self._bounds.max_pls_series))
        if snapshot.analysis is not None:
            yield from _statistics_families(snapshot.analysis, self._bounds)
        yield from _verdict_families(snapshot.verdicts)
        if snapshot.diversity is not None:
            yield from _diversity_families(snapshot.diversity, self._max_datasets)
        if snapshot.inferred_relations is not None:
            yield _inferred_family(snapshot.inferred_relations)
        if snapshot.fingerprint is not None:
            yield from _fingerprint_families(snapshot.fingerprint)

    def _live(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "prefleak_source_up", "1 while the source can take events, else 0.", labels=["source"]
        )
        for source, is_up in sorted(self._view.sources_up().items()):
            up.add_metric([source], 1.0 if is_up else 0.0)
        yield up
        lag = GaugeMetricFamily(
            "prefleak_consumer_lag_messages",
            "Kafka messages not yet consumed per topic partition (log end minus committed).",
            labels=["topic", "partition"],
        )
        for (topic, partition), behind in sorted(self._view.consumer_lag().items()):
            lag.add_metric([topic, str(partition)], float(behind))
        yield lag
        yield CounterMetricFamily(
            "prefleak_store_write_failures",
            "Batches the event store could not write (full disk, I/O error) and rolled back; "
            "their sources re-send them.",
            value=self._view.store_write_failures(),
        )
        last_ingest = self._last_ingest()
        if last_ingest is not None:
            yield _gauge(
                "prefleak_last_ingest_timestamp_seconds",
                "Unix time this process last stored a new event (absent until it has).",
                last_ingest,
            )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


_PLS_GAUGES = (
    ("prefleak_pls_ratio", "Preference Leakage Score of a judge pair and student pair, as a "
     "fraction (0.18 = 18 %); absent while undefined.", "pls"),
    ("prefleak_pls_ci_low_ratio", "Lower bound of the 95 % bootstrap interval of the PLS.",
     "ci_low"),
    ("prefleak_pls_ci_high_ratio", "Upper bound of the 95 % bootstrap interval of the PLS.",
     "ci_high"),
    ("prefleak_pls_prompts", "Prompts behind a PLS row (the PLS is undefined below the "
     "configured minimum).", "n_prompts"),
)  # fmt: skip


def _pls_families(rows: list[PLSRow]) -> Iterator[GaugeMetricFamily]:
    for name, documentation, attribute in _PLS_GAUGES:
        family = GaugeMetricFamily(name, documentation, labels=list(PLS_LABELS))
        for row in rows:
            value = getattr(row, attribute)
            if value is not None:
                family.add_metric([getattr(row, label) for label in PLS_LABELS], float(value))
        yield family


def _statistics_families(analysis: Analysis, bounds: MetricsSettings) -> Iterator[Metric]:
    """Significance of PLS rows, leakage effects, change alarms and judge biases (horizon)."""
    scored = [s for s in analysis.pls if s.slice == "horizon"]
    exported = {id(row) for row in exported_pls((s.row for s in scored), bounds.max_pls_series)}
    significant = GaugeMetricFamily(
        "prefleak_pls_significant",
        "1 when the PLS row is significant at the configured FDR (Benjamini-Hochberg), else 0.",
        labels=list(PLS_LABELS),
    )
    detectable = GaugeMetricFamily(
        "prefleak_pls_min_detectable_ratio",
        "Smallest PLS the row's prompts would detect with 80 % power (one-sided 5 %).",
        labels=list(PLS_LABELS),
    )
    for s in scored:
        if id(s.row) not in exported or s.test.p_value is None:
            continue
        labels = [getattr(s.row, label) for label in PLS_LABELS]
        significant.add_metric(labels, 1.0 if s.test.significant else 0.0)
        if s.test.min_detectable is not None:
            detectable.add_metric(labels, s.test.min_detectable)
    yield significant
    yield detectable
    leakage = [r for r in analysis.leakage if r.slice == "horizon"]
    for name, documentation, value in (
        ("prefleak_leakage_effect_logodds", "Leakage effect of a relation kind: log-odds a judge "
         "adds for a fully related candidate (paired-comparison model).", lambda r: r.log_odds),
        ("prefleak_leakage_effect_ci_low_logodds", "Lower bound of the 95 % one-step prompt "
         "bootstrap interval of the leakage effect.", lambda r: r.log_odds_ci and r.log_odds_ci[0]),
        ("prefleak_leakage_effect_ci_high_logodds", "Upper bound of that interval.",
         lambda r: r.log_odds_ci and r.log_odds_ci[1]),
        ("prefleak_leakage_effect_ratio", "The leakage effect as a change of win rate against an "
         "equal candidate (0.05 = 5 points).", lambda r: r.effect_pp / 100),
        ("prefleak_leakage_significant", "1 when the leakage effect is significant at the "
         "configured FDR, else 0.", lambda r: float(r.test.significant)),
        ("prefleak_leakage_verdicts", "Verdicts whose covariate for the relation kind is not "
         "zero: the evidence behind the effect.", lambda r: r.n_verdicts),
    ):  # fmt: skip
        family = GaugeMetricFamily(name, documentation, labels=["benchmark", "relation"])
        for row in leakage:
            found = value(row)
            if found is not None:
                family.add_metric([row.benchmark, row.relation], float(found))
        yield family
    yield from _change_families(analysis, bounds)
    yield from _bias_families(analysis, bounds)


_CHANGE_LABELS = ("subject", "benchmark", "judge_i", "judge_j", "student_i", "student_j",
                  "relation", "judge")  # fmt: skip


def _change_families(analysis: Analysis, bounds: MetricsSettings) -> Iterator[Metric]:
    """One series per windowed series the detector watches; labels it does not use are empty."""
    detected = GaugeMetricFamily(
        "prefleak_leakage_change_detected",
        "1 while the CUSUM detector of a windowed series (PLS pair, leakage kind or judge "
        "habit) is in alarm, else 0.",
        labels=list(_CHANGE_LABELS),
    )
    started = GaugeMetricFamily(
        "prefleak_leakage_change_start_timestamp_seconds",
        "Start of the window where the alarming excursion began (the estimated change point).",
        labels=list(_CHANGE_LABELS),
    )
    alarms_first = sorted(analysis.changes, key=lambda c: not c.state.alarm)
    for change in alarms_first[: bounds.max_pls_series]:
        labels = [change.subject, *(change.labels.get(k, "") for k in _CHANGE_LABELS[1:])]
        detected.add_metric(labels, 1.0 if change.state.alarm else 0.0)
        if change.state.alarm and change.state.started_at is not None:
            started.add_metric(labels, float(change.state.started_at))
    yield detected
    yield started


def _bias_families(analysis: Analysis, bounds: MetricsSettings) -> Iterator[Metric]:
    """Per-judge biases; judges outside the allow-list (when one is set) are left out."""
    allowed = set(bounds.judges)
    for name, documentation, attribute in (
        ("prefleak_judge_position_bias_ratio", "Share of decisive verdicts won by the response "
         "shown first (0.5 = no position bias).", "position_bias"),
        ("prefleak_judge_length_bias_logodds", "Log-odds a judge adds per doubling of the length "
         "ratio of the two responses.", "length_bias"),
        ("prefleak_judge_self_preference_ratio", "Win-rate points (as a fraction) a judge gives "
         "its own answers above what other judges give them.", "self_preference"),
        ("prefleak_judge_human_agreement_kappa", "Cohen's kappa of the judge with human "
         "verdicts on the same comparisons.", "human_agreement"),
        ("prefleak_judge_error_bias_ratio", "Win-rate points (as a fraction) the judge gives "
         "related candidates above the humans' on the same comparisons.", "error_bias"),
    ):  # fmt: skip
        family = GaugeMetricFamily(name, documentation, labels=["judge"])
        scale = 0.01 if attribute in ("self_preference", "error_bias") else 1.0
        for judge in analysis.biases:
            estimate = getattr(judge, attribute)
            if estimate is not None and (not allowed or judge.judge in allowed):
                family.add_metric([judge.judge], estimate.value * scale)
        yield family


def _verdict_families(verdicts: Iterable[VerdictSeries]) -> Iterator[CounterMetricFamily]:
    wins = CounterMetricFamily(
        "prefleak_verdict_wins",
        "Verdicts in which the judge preferred the candidate (ties are not wins).",
        labels=list(VERDICT_LABELS),
    )
    comparisons = CounterMetricFamily(
        "prefleak_verdict_comparisons",
        "Verdicts of the judge on a pair that included the candidate (ties included).",
        labels=list(VERDICT_LABELS),
    )
    for series in verdicts:
        labels = [series.benchmark, series.judge, series.candidate, series.relation]
        wins.add_metric(labels, series.wins)
        comparisons.add_metric(labels, series.comparisons)
    yield wins
    yield comparisons


_DIVERSITY_GAUGES = (
    # (metric in the report, exported name, extra label and its value, help)
    ("distinct_1", "prefleak_diversity_distinct_ratio", ("n", "1"),
     "Distinct n-grams over all n-grams of the dataset's sample (distinct-n)."),
    ("distinct_2", "prefleak_diversity_distinct_ratio", ("n", "2"), ""),
    ("distinct_3", "prefleak_diversity_distinct_ratio", ("n", "3"), ""),
    ("compression_ratio", "prefleak_diversity_compression_ratio", None,
     "DEFLATE-compressed over raw size of the joined sample texts; lower is more repetitive."),
    ("self_repetition", "prefleak_diversity_self_repetition", None,
     "Mean log(1 + 4-grams a text shares with the other texts); higher is more repetitive."),
    ("length_mean", "prefleak_diversity_length_words", ("statistic", "mean"),
     "Length of the sample's texts in words: mean, median (p50) and 90th percentile (p90)."),
    ("length_p50", "prefleak_diversity_length_words", ("statistic", "p50"), ""),
    ("length_p90", "prefleak_diversity_length_words", ("statistic", "p90"), ""),
    ("label_entropy_bits", "prefleak_diversity_label_entropy_bits", None,
     "Shannon entropy of the labels of labelled samples."),
    ("majority_label_share", "prefleak_diversity_majority_label_ratio", None,
     "Share of labelled samples carrying the most common label."),
    ("embedding_cosine_distance", "prefleak_diversity_embedding_cosine_distance", None,
     "Mean pairwise cosine distance of MiniLM embeddings (absent without the embed extra)."),
    ("vendi_score", "prefleak_diversity_vendi_score", None,
     "Vendi score: effective number of distinct samples (absent without the embed extra)."),
)  # fmt: skip


def _diversity_families(report: DiversityReport, max_datasets: int) -> Iterator[Metric]:
    """Diversity gauges of the ``max_datasets`` most sampled datasets and the pairs among them."""
    rows = sorted(report.datasets, key=lambda r: (-r.n_samples, r.dataset))[:max_datasets]
    named = {row.dataset for row in rows}
    samples = GaugeMetricFamily(
        "prefleak_diversity_samples",
        "Samples of the dataset the diversity measures rest on (the bounded sample).",
        labels=["dataset", "role"],
    )
    generation = GaugeMetricFamily(
        "prefleak_diversity_generation",
        "Generation of synthetic data (0 human, 1 written by a model trained on none).",
        labels=["dataset"],
    )
    artifacts = GaugeMetricFamily(
        "prefleak_diversity_artifact_ratio",
        "Share of the dataset's samples with an artifact (kind: empty, truncated, refusal, "
        "prompt_echo, exact_duplicate, near_duplicate).",
        labels=["dataset", "kind"],
    )
    drift = GaugeMetricFamily(
        "prefleak_diversity_drift_pvalue",
        "Permutation p-value of the MMD test of the latest window against the reference.",
        labels=["dataset"],
    )
    families: dict[str, GaugeMetricFamily] = {}
    for _, name, extra, documentation in _DIVERSITY_GAUGES:
        labels = ["dataset"] if extra is None else ["dataset", extra[0]]
        families.setdefault(name, GaugeMetricFamily(name, documentation, labels=labels))
    for row in rows:
        samples.add_metric([row.dataset, row.role], row.n_samples)
        if row.generation is not None:
            generation.add_metric([row.dataset], row.generation.generation)
        for kind, share in row.artifacts.items():
            artifacts.add_metric([row.dataset, kind], share)
        if row.drift is not None and row.drift.test is not None:
            drift.add_metric([row.dataset], row.drift.test.p_value)
        for metric, name, extra, _ in _DIVERSITY_GAUGES:
            if metric in row.metrics:
                labels = [row.dataset] if extra is None else [row.dataset, extra[1]]
                families[name].add_metric(labels, row.metrics[metric].value)
    coverage = GaugeMetricFamily(
        "prefleak_eval_coverage_ratio",
        "Share of the production dataset's samples whose nearest eval sample is within the "
        "coverage threshold.",
        labels=["eval", "production"],
    )
    for cov in report.coverage:
        if {cov.eval, cov.production} <= named:
            coverage.add_metric([cov.eval, cov.production], 1 - cov.result.uncovered.value)
    overlap = GaugeMetricFamily(
        "prefleak_eval_training_overlap_ratio",
        "Share of the eval dataset's items sharing a 13-word sequence with the training "
        "dataset's sampled prompts and texts (a lower bound).",
        labels=["eval", "training"],
    )
    for ov in report.overlap:
        if {ov.eval, ov.training} <= named:
            overlap.add_metric([ov.eval, ov.training], ov.result.overlapping.value)
    yield samples
    yield generation
    yield from families.values()
    yield artifacts
    yield drift
    yield coverage
    yield overlap
    yield _gauge(
        "prefleak_diversity_last_timestamp_seconds",
        "Unix time the diversity report behind these series was computed.",
        report.generated_at,
    )


MAX_FINGERPRINT_GENERATORS = 50
"""Generators exported as recall series (the most texts first); ``fingerprint --json`` has all."""
INFERRED_KINDS = ("same_model", "inheritance", "same_series", "same_family")


def _inferred_family(counts: dict[str, int]) -> Metric:
    """Inferred relations in force per kind; every kind is always present, 0 when none."""
    family = GaugeMetricFamily(
        "prefleak_inferred_relations",
        "Judge-candidate relations in force that were inferred (relation events, e.g. from "
        "style fingerprints) with nothing declared for the pair, by kind.",
        labels=["kind"],
    )
    for kind in INFERRED_KINDS:
        family.add_metric([kind], counts.get(kind, 0))
    return family


def _fingerprint_families(report: FingerprintReport) -> Iterator[Metric]:
    """Separability of the generators' styles; absent until a classifier could be trained."""
    separability = report.separability
    if separability is None:
        return
    yield _gauge(
        "prefleak_fingerprint_accuracy_ratio",
        "Cross-validated accuracy of the style classifier telling the generators apart.",
        separability.accuracy.value,
    )
    yield _gauge(
        "prefleak_fingerprint_chance_ratio",
        "Accuracy of always guessing the generator with most texts: the floor to compare with.",
        separability.chance,
    )
    recall = GaugeMetricFamily(
        "prefleak_fingerprint_recall_ratio",
        "Share of a generator's texts the style classifier attributes to it (cross-validated).",
        labels=["generator"],
    )
    top = sorted(separability.per_generator, key=lambda s: (-s.texts, s.generator))
    for score in top[:MAX_FINGERPRINT_GENERATORS]:
        recall.add_metric([score.generator], score.recall.value)
    yield recall
    yield _gauge(
        "prefleak_fingerprint_last_timestamp_seconds",
        "Unix time the exported style fingerprint was computed.",
        report.computed_at,
    )
