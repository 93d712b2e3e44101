"""One recompute of every statistic: windows, PLS with significance, leakage, biases, changes.

Pure: takes the verdict projection as :class:`Cells`, a :class:`Lineage` and options, returns an
:class:`Analysis` that the CLI prints and the daemon exports (docs/statistics.md). Time is event
time: the horizon ends with the window of the newest verdict, so replaying an old stream gives
the same answer as watching it live.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from prefleak.lineage import Lineage
from prefleak.pls import DEFAULT_BOOTSTRAP, DEFAULT_MIN_PROMPTS, TiePolicy
from prefleak.report import PLSRow, pls_table
from prefleak.segments import NO_LABEL
from prefleak.stats.biases import JudgeBiases, judge_biases
from prefleak.stats.cells import Cells
from prefleak.stats.changes import (
    DEFAULT_BASELINE_WINDOWS,
    DEFAULT_SLACK,
    DEFAULT_THRESHOLD,
    ChangeState,
    Cusum,
)
from prefleak.stats.estimate import Estimate, percentile_ci, round_sig
from prefleak.stats.leakage import LeakageFit, Parameter, effect_pp, fit_leakage
from prefleak.stats.parallel import default_threads, executor
from prefleak.stats.relations import RelationTable, relation_table
from prefleak.stats.significance import (
    bh_q_values,
    bootstrap_se,
    min_detectable_effect,
    p_value_one_sided,
    significant,
)

SCHEMA = "prefleak.statistics/1"
POOLED = "*"
"""The ``benchmark`` of rows that pool every benchmark."""
MIN_WINDOW_VERDICTS = 50
"""A window with fewer verdicts gets no leakage fit: its interval would say nothing."""
CHANGE_MIN_PROMPTS = 30
"""Windowed PLS on fewer prompts is skipped by the change detector: its bootstrap error is too
small below that (measured: the standardised deviations have variance 3.1 at 10 prompts, 1.2 at
20, 0.9 at 30), and a detector fed overconfident errors raises false alarms."""
CHANGE_MIN_VERDICTS = 200
"""Per-judge habits are watched in windows where the judge gave at least this many verdicts."""


@dataclass(frozen=True)
class StatisticsOptions:
    """How a recompute slices time and tests (the ``statistics`` settings section)."""

    window_s: int = 86_400
    """Tumbling window length; a multiple of the projection's hour."""
    horizon_s: int = 7 * 86_400
    """The sliding horizon the headline numbers pool, ending with the newest verdict's window."""
    max_windows: int = 30
    """Windows kept in the time series (older ones are not read)."""
    fdr: float = 0.05
    model_bootstrap: int = 200
    pls_bootstrap: int = DEFAULT_BOOTSTRAP
    ties: TiePolicy = "loss"
    min_prompts: int = DEFAULT_MIN_PROMPTS
    scale_by_share: bool = True
    change_threshold: float = DEFAULT_THRESHOLD
    change_slack: float = DEFAULT_SLACK
    baseline_windows: int = DEFAULT_BASELINE_WINDOWS
    reference: str | None = None
    max_breakdowns: int = 20
    """Categories and tracks with the most verdicts that get their own rows."""
    threads: int = field(default_factory=default_threads, compare=False)
    """Threads that compute independent slices at once; 1: serially. Results do not depend on
    it (so two options that differ only here compare equal)."""

    def kept_since(self, newest_window: int) -> int:
        """The earliest event time a recompute needs, given the newest projection window: older
        cells are out of the horizon and the kept windows, so they are not even read."""
        newest = newest_window // self.window_s * self.window_s
        span = max(self.horizon_s, self.max_windows * self.window_s)
        return newest + self.window_s - span

    def horizon_since(self, newest_window: int) -> int:
        """Where the horizon starts, given the newest projection window."""
        return newest_window // self.window_s * self.window_s + self.window_s - self.horizon_s

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.window_s % 3600:
            raise ValueError("window_s must be a positive multiple of 3600 (one hour)")
        if self.horizon_s < self.window_s:
            raise ValueError("horizon_s must be at least one window")
        if self.threads < 1:
            raise ValueError("threads must be at least 1")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _ci_json(ci: tuple[float, float] | None) -> list[float] | None:
    return None if ci is None else [round_sig(ci[0]), round_sig(ci[1])]


def _slice(window: int | None, category: str | None, track: str | None) -> str:
    """``horizon``, ``window`` or ``breakdown``: which table of the report a row belongs to."""
    if window is not None:
        return "window"
    return "horizon" if category is None and track is None else "breakdown"


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round_sig(value)


@dataclass(frozen=True)
class Significance:
    """A one-sided test of "more than zero" and what the data could have detected."""

    p_value: float | None
    q_value: float | None = None
    significant: bool = False
    min_detectable: float | None = None


@dataclass(frozen=True)
class ScoredPLS:
    """A PLS row with its window (None: the horizon), breakdown and significance."""

    row: PLSRow
    window: int | None
    test: Significance
    category: str | None = None
    track: str | None = None

    @property
    def slice(self) -> str:
        return _slice(self.window, self.category, self.track)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.row.to_json(),
            "window": None if self.window is None else _iso(self.window),
            "category": self.category,
            "track": self.track,
            "p_value": _num(self.test.p_value),
            "q_value": _num(self.test.q_value),
            "significant": self.test.significant,
            "min_detectable_pls": _num(self.test.min_detectable),
        }


@dataclass(frozen=True)
class LeakageRow:
    """The leakage effect of one relation kind, in log-odds and win-rate points."""

    benchmark: str
    relation: str
    log_odds: float
    log_odds_ci: tuple[float, float] | None
    effect_pp: float
    effect_pp_ci: tuple[float, float] | None
    se: float
    n_verdicts: int
    test: Significance
    window: int | None = None
    category: str | None = None
    track: str | None = None

    @property
    def slice(self) -> str:
        return _slice(self.window, self.category, self.track)

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "relation": self.relation,
            "log_odds": round_sig(self.log_odds),
            "log_odds_ci": _ci_json(self.log_odds_ci),
            "effect_pp": round_sig(self.effect_pp),
            "effect_pp_ci": _ci_json(self.effect_pp_ci),
            "p_value": _num(self.test.p_value),
            "q_value": _num(self.test.q_value),
            "significant": self.test.significant,
            "min_detectable_log_odds": _num(self.test.min_detectable),
            "n_verdicts": self.n_verdicts,
            "window": None if self.window is None else _iso(self.window),
            "category": self.category,
            "track": self.track,
        }


@dataclass(frozen=True)
class Change:
    """What the change detector says about one windowed series."""

    subject: str
    """``pls``, ``leakage``, ``position``, ``length`` or ``self_preference``."""
    labels: dict[str, str]
    state: ChangeState
    points: tuple[tuple[int, float | None, float | None], ...] = ()
    """(window, value, standard error) as the detector saw them, oldest first; None skipped."""
    threshold: float = DEFAULT_THRESHOLD
    """The alarm threshold this series' detector used (raised for big families of series)."""

    def to_json(self) -> dict[str, Any]:
        state = self.state
        return {
            "subject": self.subject,
            **self.labels,
            "alarm": state.alarm,
            "statistic": round_sig(state.statistic),
            "direction": state.direction,
            "started_at": None if state.started_at is None else _iso(state.started_at),
            "detected_at": None if state.detected_at is None else _iso(state.detected_at),
            "baseline": _num(state.baseline),
            "n_windows": state.n_windows,
        }


@dataclass(frozen=True)
class LeaderboardRow:
    model: str
    raw_win_rate: float
    debiased_win_rate: float
    raw_rank: int
    debiased_rank: int
    comparisons: int

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "raw_win_rate": round_sig(self.raw_win_rate),
            "debiased_win_rate": round_sig(self.debiased_win_rate),
            "raw_rank": self.raw_rank,
            "debiased_rank": self.debiased_rank,
            "rank_change": self.raw_rank - self.debiased_rank,
            "comparisons": self.comparisons,
        }


@dataclass(frozen=True)
class Leaderboard:
    """Win rates against a reference, as a naive fit and with the leakage terms removed."""

    reference: str
    rows: list[LeaderboardRow]

    def to_json(self) -> dict[str, Any]:
        return {"reference": self.reference, "rows": [row.to_json() for row in self.rows]}


@dataclass(frozen=True)
class WindowResult:
    """What one window contributes to the series: reusable while its cells do not change."""

    pls: list[ScoredPLS]
    leakage: list[LeakageRow]
    fit: LeakageFit | None


@dataclass(frozen=True)
class Analysis:
    """Everything one recompute found; the JSON of ``report``, ``leaderboard`` and ``biases``."""

    horizon: tuple[int, int] | None
    options: StatisticsOptions
    pls: list[ScoredPLS] = field(default_factory=list)
    leakage: list[LeakageRow] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    biases: list[JudgeBiases] = field(default_factory=list)
    leaderboard: Leaderboard | None = None
    fit: LeakageFit | None = None
    windows: dict[int, WindowResult] = field(default_factory=dict)
    """Per kept window, its results: what a later recompute may reuse (``analyse(reuse=...)``)."""

    def tables_json(self) -> dict[str, Any]:
        """PLS and leakage rows of the horizon, and apart from them per window and breakdown."""

        def rows(found: list[ScoredPLS] | list[LeakageRow], part: str) -> list[dict[str, Any]]:
            return [row.to_json() for row in found if row.slice == part]

        return {
            "pls": rows(self.pls, "horizon"),
            "leakage": rows(self.leakage, "horizon"),
            "windows": {"pls": rows(self.pls, "window"), "leakage": rows(self.leakage, "window")},
            "breakdowns": {
                "pls": rows(self.pls, "breakdown"),
                "leakage": rows(self.leakage, "breakdown"),
            },
        }

    @property
    def window_s(self) -> int:
        return self.options.window_s

    def horizon_json(self) -> dict[str, Any] | None:
        if self.horizon is None:
            return None
        return {"start": _iso(self.horizon[0]), "end": _iso(self.horizon[1])}


# -- the recompute ----------------------------------------------------------------------------


def analyse(
    cells: Cells,
    lineage: Lineage,
    options: StatisticsOptions,
    *,
    reuse: Mapping[int, WindowResult] | None = None,
) -> Analysis:
    """Every statistic over the horizon and per window, with q-values and change detection.

    ``reuse`` holds results of windows (by start) from an earlier analysis whose cells, lineage
    and options have not changed since: they are taken as they are instead of refitted, and
    ``cells`` need not hold their cells (only the horizon's must all be there). The horizon, the
    q-values and the change detectors are always recomputed.
    """
    if len(cells) == 0:
        return Analysis(None, options)
    pool = executor(options.threads)
    try:
        return _analyse(cells, lineage, options, reuse, pool)
    except BaseException:
        pool.shutdown(cancel_futures=True)  # a failed slice: the queued ones would be wasted
        raise
    finally:
        pool.shutdown()


def _analyse(
    cells: Cells,
    lineage: Lineage,
    options: StatisticsOptions,
    reuse: Mapping[int, WindowResult] | None,
    pool: Executor,
) -> Analysis:
    """:func:`analyse` with its slices submitted to ``pool``, the biggest first (so the last to
    finish are small), and their results taken in the serial order.

    The slices share only read-only arrays and the lineage, which they ask nothing that
    :func:`relation_table` (computed here first) has not already put in its caches."""
    windows = cells.window // options.window_s * options.window_s
    end = int(windows.max()) + options.window_s
    start = end - options.max_windows * options.window_s
    horizon = cells.select(windows >= end - options.horizon_s)
    judges = np.unique(cells.judge).tolist()
    context = _Context(lineage, relation_table(lineage, cells.models, judges), options)
    fit_job = pool.submit(_fit, horizon, context)
    pls_job = pool.submit(_pls, horizon, context)
    raw_job = pool.submit(_raw_fit, horizon, context)
    # the length terms come from the horizon fit; the rest of the biases need not wait for it
    biases_job = pool.submit(
        judge_biases, horizon, lineage, length=None, n_bootstrap=options.model_bootstrap
    )
    # a slice is selected in the job that uses it: in parallel, and alive only while it runs
    benchmark_jobs = [
        (name, pool.submit(_fit_slice, horizon, horizon.benchmark == code, context))
        for code, name in enumerate(horizon.benchmarks)
        if len(horizon.benchmarks) > 1
    ]
    breakdown_jobs = [
        (label, names[code], pool.submit(_breakdown, horizon, codes == code, context))
        for label, codes, names in (
            ("category", horizon.category, horizon.categories),
            ("track", horizon.track, horizon.tracks),
        )
        for code in _busiest(codes, horizon, options.max_breakdowns)
    ]
    kept = cells.select(windows >= start)
    kept_windows = windows[windows >= start]
    window_jobs: dict[int, WindowResult | Future[WindowResult]] = {}
    present = set(kept_windows.tolist())
    left_out = {window for window in reuse or {} if start <= window < end} - present
    for window in sorted(present | left_out):
        reused = reuse.get(window) if reuse is not None else None
        window_jobs[window] = (
            reused
            if reused is not None
            else pool.submit(_window, kept.select(kept_windows == window), window, context)
        )

    fit = fit_job.result()
    pls = [ScoredPLS(row, None, _pls_test(row)) for row in pls_job.result()]
    leakage = _leakage_rows(fit, POOLED)
    for name, job in benchmark_jobs:
        leakage += _leakage_rows(job.result(), name)
    for label, name, breakdown in breakdown_jobs:
        part_fit, part_pls = breakdown.result()
        found = _leakage_rows(part_fit, POOLED)
        scored = [ScoredPLS(row, None, _pls_test(row)) for row in part_pls]
        if label == "category":
            leakage += [replace(r, category=name) for r in found]
            pls += [replace(p, category=name) for p in scored]
        else:
            leakage += [replace(r, track=name) for r in found]
            pls += [replace(p, track=name) for p in scored]
    _adjust(pls, leakage, options.fdr)

    series_pls: list[ScoredPLS] = []
    series_leakage: list[LeakageRow] = []
    window_fits: dict[int, LeakageFit | None] = {}
    results: dict[int, WindowResult] = {}
    for window, window_job in window_jobs.items():
        done = window_job.result() if isinstance(window_job, Future) else window_job
        results[window] = done
        series_pls += done.pls
        series_leakage += done.leakage
        window_fits[window] = done.fit
    _adjust(series_pls, series_leakage, options.fdr)

    lengths = _length_estimates(fit)
    return Analysis(
        horizon=(end - options.horizon_s, end),
        options=options,
        pls=pls + series_pls,
        leakage=leakage + series_leakage,
        changes=_changes(series_pls, series_leakage, window_fits, options),
        biases=[replace(b, length_bias=lengths.get(b.judge)) for b in biases_job.result()],
        leaderboard=_leaderboard(fit, raw_job.result(), context),
        fit=fit,
        windows=results,
    )


def horizon_cells(
    cells: Cells | None, analysis: Analysis, benchmark: str | None = None
) -> Cells | None:
    """The cells of an analysis's horizon (of one benchmark, if named; None without a horizon):
    what commands that look at single prompts after the statistics read (explain, review)."""
    if cells is None or analysis.horizon is None:
        return None
    window_s = analysis.window_s
    keep = cells.window // window_s * window_s >= analysis.horizon[0]  # as analyse selects it
    if benchmark is not None:
        code = cells.benchmarks.index(benchmark) if benchmark in cells.benchmarks else NO_LABEL
        keep &= cells.benchmark == code
    return cells.select(keep)


def _window(part: Cells, window: int, context: _Context) -> WindowResult:
    """One window's PLS rows and leakage fit (none below MIN_WINDOW_VERDICTS verdicts)."""
    pls = [
        ScoredPLS(row, window, _pls_test(row))
        for row in _pls(part, context, context.options.model_bootstrap)
    ]
    fit = _fit(part, context) if part.verdicts.sum() >= MIN_WINDOW_VERDICTS else None
    leakage = [replace(r, window=window) for r in _leakage_rows(fit, POOLED)]
    return WindowResult(pls, leakage, fit)


@dataclass(frozen=True)
class _Context:
    """What every slice of one recompute shares: the lineage, its relation arrays, options."""

    lineage: Lineage
    relations: RelationTable
    options: StatisticsOptions


def _fit(cells: Cells, context: _Context) -> LeakageFit | None:
    if len(cells) == 0:
        return None
    return fit_leakage(
        cells,
        context.lineage,
        scale_by_share=context.options.scale_by_share,
        n_bootstrap=context.options.model_bootstrap,
        relations=context.relations,
    )


def _fit_slice(cells: Cells, mask: npt.NDArray[np.bool_], context: _Context) -> LeakageFit | None:
    return _fit(cells.select(mask), context)


def _breakdown(
    cells: Cells, mask: npt.NDArray[np.bool_], context: _Context
) -> tuple[LeakageFit | None, list[PLSRow]]:
    """The leakage fit and the PLS table of one category or track."""
    part = cells.select(mask)
    return _fit(part, context), _pls(part, context, context.options.model_bootstrap)


def _pls(cells: Cells, context: _Context, n_bootstrap: int | None = None) -> list[PLSRow]:
    options = context.options
    return pls_table(
        cells,
        context.lineage,
        ties=options.ties,
        n_bootstrap=options.pls_bootstrap if n_bootstrap is None else n_bootstrap,
        min_prompts=options.min_prompts,
        relations=context.relations,
    )


def _busiest(codes: np.ndarray, cells: Cells, limit: int) -> list[int]:
    """Label codes with the most verdicts, at most ``limit``; none when there is only one."""
    present = codes != NO_LABEL
    if not present.any():
        return []
    counts = np.bincount(codes[present], weights=cells.verdicts[present].sum(axis=1))
    found = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
    return found[:limit] if len(found) > 1 else []


def _pls_test(row: PLSRow) -> Significance:
    if row.pls is None or row.se is None:
        return Significance(None)
    return Significance(
        p_value_one_sided(row.pls, row.se), min_detectable=min_detectable_effect(row.se)
    )


def _leakage_rows(fit: LeakageFit | None, benchmark: str) -> list[LeakageRow]:
    if fit is None:
        return []
    rows = []
    for relation, parameter in fit.kinds.items():
        se = bootstrap_se(parameter.draws)
        pp_draws = effect_pp(parameter.draws, fit.tau_draws)
        rows.append(
            LeakageRow(
                benchmark=benchmark,
                relation=relation,
                log_odds=parameter.value,
                log_odds_ci=percentile_ci(parameter.draws),
                effect_pp=float(effect_pp(parameter.value, fit.tau)),
                effect_pp_ci=percentile_ci(pp_draws),
                se=se,
                n_verdicts=parameter.n_verdicts,
                test=Significance(
                    p_value_one_sided(parameter.value, se),
                    min_detectable=min_detectable_effect(se),
                ),
            )
        )
    return rows


def _adjust(pls: list[ScoredPLS], leakage: list[LeakageRow], fdr: float) -> None:
    """Benjamini-Hochberg across every PLS and leakage row of one family, in place."""
    p_values = [s.test.p_value for s in pls] + [r.test.p_value for r in leakage]
    q_values = bh_q_values(p_values)

    def tested(test: Significance, q: float | None) -> Significance:
        return replace(test, q_value=q, significant=significant(q, fdr))

    for index, scored in enumerate(pls):
        pls[index] = replace(scored, test=tested(scored.test, q_values[index]))
    for index, row in enumerate(leakage):
        leakage[index] = replace(row, test=tested(row.test, q_values[len(pls) + index]))


def _length_estimates(fit: LeakageFit | None) -> dict[str, Estimate]:
    """Length coefficients per judge in log-odds per doubling of the length ratio."""
    if fit is None:
        return {}
    return {
        judge: Estimate(p.value * math.log(2), _scaled_ci(p, math.log(2)))
        for judge, p in fit.length.items()
    }


def _scaled_ci(parameter: Parameter, scale: float) -> tuple[float, float] | None:
    return percentile_ci(parameter.draws * scale)


def _changes(
    pls: list[ScoredPLS],
    leakage: list[LeakageRow],
    fits: dict[int, LeakageFit | None],
    options: StatisticsOptions,
) -> list[Change]:
    """A CUSUM over every windowed series: PLS per pair, leakage per kind, per-judge habits.

    A subject with m series gets the threshold ``h + ln m``: CUSUM's in-control run length grows
    about as ``e^h``, so this keeps the whole family's false-alarm rate near one series' (a
    Bonferroni correction for detectors).
    """
    series: dict[
        tuple[str, tuple[tuple[str, str], ...]], list[tuple[int, float | None, float | None]]
    ] = {}

    def add(
        subject: str, labels: dict[str, str], window: int, value: float | None, se: float | None
    ) -> None:
        series.setdefault((subject, tuple(sorted(labels.items()))), []).append((window, value, se))

    for scored in pls:
        row = scored.row
        if scored.window is not None:
            labels = {"benchmark": row.benchmark, "judge_i": row.judge_i, "judge_j": row.judge_j,
                      "student_i": row.student_i, "student_j": row.student_j}  # fmt: skip
            enough = row.n_prompts >= CHANGE_MIN_PROMPTS
            add("pls", labels, scored.window, row.pls if enough else None, row.se)
    for leak in leakage:
        if leak.window is not None:
            add("leakage", {"relation": leak.relation}, leak.window, leak.log_odds, leak.se)
    for window, fit in sorted(fits.items()):
        if fit is None:
            continue
        for subject, parameters in (
            ("position", fit.position),
            ("length", fit.length),
            ("self_preference", fit.self_preference),
        ):
            for judge, parameter in parameters.items():
                if parameter.n_verdicts < CHANGE_MIN_VERDICTS:
                    continue
                add(
                    subject,
                    {"judge": judge},
                    window,
                    parameter.value,
                    bootstrap_se(parameter.draws),
                )
    per_subject = Counter(subject for subject, _ in series)
    changes = []
    for (subject, label_items), points in sorted(series.items()):
        # one series' false-alarm rate for each subject's whole family (see the docstring)
        threshold = options.change_threshold + math.log(per_subject[subject])
        detector = Cusum(
            threshold=threshold,
            slack=options.change_slack,
            baseline_windows=options.baseline_windows,
            direction="up" if subject in ("pls", "leakage") else "both",
        )
        ordered = tuple(sorted(points, key=lambda p: p[0]))
        for window, value, se in ordered:
            detector.update(window, value, se)
        changes.append(Change(subject, dict(label_items), detector.get(), ordered, threshold))
    return changes


def _raw_fit(cells: Cells, context: _Context) -> LeakageFit | None:
    """The leaderboard's naive fit: strengths without leakage terms or intervals."""
    if len(cells) == 0:
        return None
    return fit_leakage(
        cells, context.lineage, relation_terms=False, n_bootstrap=0, relations=context.relations
    )


def _leaderboard(
    fit: LeakageFit | None, raw: LeakageFit | None, context: _Context
) -> Leaderboard | None:
    if fit is None or not fit.strengths or raw is None:
        return None
    reference = context.options.reference
    if reference is None or reference not in fit.strengths:
        reference = max(fit.comparisons, key=lambda m: (fit.comparisons[m], m))
    models = sorted(fit.strengths)
    raw_rates = {m: raw.win_rate(m, reference) for m in models}
    debiased = {m: fit.win_rate(m, reference) for m in models}
    raw_rank = _ranks(raw_rates)
    debiased_rank = _ranks(debiased)
    rows = [
        LeaderboardRow(
            m, raw_rates[m], debiased[m], raw_rank[m], debiased_rank[m], fit.comparisons[m]
        )
        for m in sorted(models, key=lambda m: debiased_rank[m])
    ]
    return Leaderboard(reference, rows)


def _ranks(rates: dict[str, float]) -> dict[str, int]:
    ordered = sorted(rates, key=lambda m: (-rates[m], m))
    return {model: rank for rank, model in enumerate(ordered, start=1)}
