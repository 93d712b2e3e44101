"""Window results of an earlier analysis are reused only where nothing changed, to the same end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from prefleak.config import load_settings
from prefleak.daemon.metrics import Detached, Metrics, verdict_series
from prefleak.daemon.recompute import Recomputer, statistics_options
from prefleak.ingest import Ingestor
from prefleak.lineage import Lineage
from prefleak.models.events import PROVENANCE_TYPES
from prefleak.segments import ProjectionColumns
from prefleak.simulate import Scenario, simulate
from prefleak.stats.analysis import Analysis, StatisticsOptions, analyse, horizon_cells
from prefleak.stats.cells import Cells
from prefleak.store import EventStore

OPTIONS = StatisticsOptions(pls_bootstrap=200, model_bootstrap=100, max_breakdowns=2)


def _tables(analysis: Analysis) -> str:
    return json.dumps(
        {**analysis.tables_json(), "changes": [c.to_json() for c in analysis.changes]},
        sort_keys=True,
    )


def test_reusing_untouched_windows_gives_the_fresh_answer(tmp_path: Path) -> None:
    scenario = Scenario(seed=4, prompts_per_benchmark=120, benchmarks=("alpacaeval",), days=6)
    with EventStore(tmp_path / "s.db") as store:
        lines = [json.dumps(e).encode() for e in simulate(scenario)]
        Ingestor(store).ingest_lines(lines, source="sim")
        lineage = Lineage.from_events(store.events(PROVENANCE_TYPES))
        cells = Cells.from_rows(store.verdict_rows())
    day = cells.window // OPTIONS.window_s * OPTIONS.window_s
    last = int(day.max())
    earlier = analyse(cells.select(day < last), lineage, OPTIONS)  # before the last day arrived
    fresh = analyse(cells, lineage, OPTIONS)
    reuse = {start: result for start, result in earlier.windows.items() if start != last}
    assert reuse and last not in reuse
    reused = analyse(cells, lineage, OPTIONS, reuse=reuse)
    assert _tables(reused) == _tables(fresh)
    # a reused window is taken as it is: the same objects, not refitted
    assert all(reused.windows[start] is result for start, result in reuse.items())
    assert reused.windows[last] is not earlier.windows.get(last)
    assert np.isfinite([r.log_odds for r in fresh.leakage]).all()


def test_the_service_reuses_windows_and_agrees_with_a_fresh_recompute(tmp_path: Path) -> None:
    """Two recomputes with a new day in between: the second reuses the untouched windows and
    reports what a recompute from scratch reports."""
    scenario = Scenario(seed=5, prompts_per_benchmark=120, benchmarks=("alpacaeval",), days=6)
    lines = [json.dumps(e).encode() for e in simulate(scenario)]
    settings = load_settings(
        overrides={"db": str(tmp_path / "s.db"), "diversity": {"enabled": False},
                   "pls": {"bootstrap": 200}, "statistics": {"model_bootstrap": 100}}
    )  # fmt: skip
    with EventStore(settings.db) as store:
        recomputer = Recomputer(store, settings, Metrics(Detached(), settings.metrics, []))
        cut = len(lines) * 2 // 3
        Ingestor(store).ingest_lines(lines[:cut], source="sim")
        recomputer.once()
        first = recomputer.latest
        Ingestor(store).ingest_lines(lines[cut:], source="sim")
        recomputer.once()
        second = recomputer.latest
        lineage = Lineage.from_events(store.events(PROVENANCE_TYPES))
        fresh = analyse(
            Cells.from_rows(store.verdict_rows()), lineage, statistics_options(settings)
        )
    assert first is not None and first.analysis is not None
    assert second is not None and second.analysis is not None
    kept = [s for s, r in second.analysis.windows.items() if r is first.analysis.windows.get(s)]
    assert kept, "no window was reused"
    assert len(kept) < len(second.analysis.windows), "a touched window was reused"
    assert _tables(second.analysis) == _tables(fresh)


def _named_rows(cells: Cells) -> list[tuple[object, ...]]:
    """Every cell with names for its codes, sorted: equal for the same verdicts whatever the
    vocabularies (a read that starts later knows fewer names)."""

    def names(vocabulary: tuple[str, ...], codes: np.ndarray) -> list[str | None]:
        return [vocabulary[c] if c >= 0 else None for c in codes.tolist()]

    return sorted(zip(
        cells.window.tolist(), names(cells.benchmarks, cells.benchmark),
        names(cells.models, cells.judge), names(cells.models, cells.lo),
        names(cells.models, cells.hi), names(cells.prompts, cells.prompt),
        names(cells.categories, cells.category), names(cells.tracks, cells.track),
        map(tuple, cells.verdicts.tolist()), map(tuple, cells.outcomes.tolist()),
        map(tuple, cells.lo_first.tolist()), map(tuple, cells.hi_first.tolist()),
        cells.length.tolist(), strict=True,
    ), key=repr)  # fmt: skip


def _canonical(cells: Cells) -> dict[str, object]:
    """Every column in one row order, with the vocabularies: equal for equal cells."""
    order = np.lexsort(
        (cells.prompt, cells.hi, cells.lo, cells.judge, cells.benchmark, cells.window)
    )
    columns: dict[str, object] = {
        name: getattr(cells, name)[order].tolist()
        for name in ("window", "benchmark", "judge", "lo", "hi", "prompt", "category", "track",
                     "outcomes", "verdicts", "lo_first", "hi_first", "length", "has_length")
    }  # fmt: skip
    for name in ("models", "benchmarks", "categories", "tracks", "prompts"):
        columns[name] = getattr(cells, name)
    columns["prompt_keys"] = cells.prompt_keys.tolist()
    return columns


def test_cells_of_parts_equal_one_read_of_all_rows(tmp_path: Path) -> None:
    """Parts with vocabularies of their own (as sealed segments have) merge into the cells of
    one read: names in use only, codes in name order."""
    scenario = Scenario(seed=6, prompts_per_benchmark=40, days=3)
    with EventStore(tmp_path / "s.db") as store:
        Ingestor(store).ingest_lines(
            [json.dumps(e).encode() for e in simulate(scenario)], source="sim"
        )
        rows = list(store.verdict_rows())
    rng = np.random.default_rng(0)
    part = rng.integers(0, 3, size=len(rows))
    part[: len(rows) // 2] = 0  # one large part; the others miss some names of it
    parts = [
        ProjectionColumns.from_rows(r for r, p in zip(rows, part, strict=True) if p == k)
        for k in range(3)
    ]
    assert _canonical(Cells.from_columns(parts)) == _canonical(Cells.from_rows(rows))
    whole = ProjectionColumns.from_rows(rows)
    last = whole.window.max()
    kept = whole.select(whole.window < last)  # names only the last hour has go
    assert _canonical(Cells.from_columns([kept])) == _canonical(
        Cells.from_rows(r for r in rows if r[0] < last)
    )
    assert len(Cells.from_columns([])) == 0


def test_the_service_reads_what_a_full_read_gives_and_tallies_what_a_scan_gives(
    tmp_path: Path,
) -> None:
    """Late verdicts, new days and days leaving the kept windows: the horizon cells of every
    snapshot (read through sealed segments) are what a full read of the rows gives."""
    scenario = Scenario(seed=7, prompts_per_benchmark=60, benchmarks=("alpacaeval",), days=6)
    events = list(simulate(scenario))
    verdicts = [e for e in events if e["type"] == "verdict"]
    others = [e for e in events if e["type"] != "verdict"]
    rng = np.random.default_rng(1)
    late = set(rng.choice(len(verdicts), size=len(verdicts) // 10, replace=False).tolist())
    on_time = [v for i, v in enumerate(verdicts) if i not in late]
    newest_day = max(v["ts"] for v in verdicts)[:10]  # ISO times: the date comes first
    today = [{**v, "id": f"again-{v['id']}"} for v in verdicts if v["ts"] >= newest_day][:300]
    batches = [others + on_time[: len(on_time) // 3], on_time[len(on_time) // 3 :],
               [verdicts[i] for i in sorted(late)], today]  # fmt: skip
    settings = load_settings(
        overrides={"db": str(tmp_path / "s.db"), "diversity": {"enabled": False},
                   "fingerprint": {"enabled": False}, "pls": {"bootstrap": 50},
                   "statistics": {"model_bootstrap": 20, "horizon": 2 * 86_400,
                                  "max_windows": 3}}
    )  # fmt: skip
    with EventStore(settings.db) as store:
        recomputer = Recomputer(store, settings, Metrics(Detached(), settings.metrics, []))
        options = statistics_options(settings)
        for batch in batches:
            Ingestor(store).ingest_lines([json.dumps(e).encode() for e in batch], source="sim")
            recomputer.once()
            newest = store.newest_verdict_window()
            assert newest is not None
            read = Cells.from_rows(store.verdict_rows(since=options.kept_since(newest)))
            latest = recomputer.latest
            assert latest is not None and latest.analysis is not None
            horizon = horizon_cells(read, latest.analysis)
            assert latest.cells is not None and horizon is not None
            assert _named_rows(latest.cells) == _named_rows(horizon)
            # read from the horizon (or the first touched window) on, the rest reused: the
            # answer of a recompute from scratch
            lineage = Lineage.from_events(store.events(PROVENANCE_TYPES))
            assert _tables(latest.analysis) == _tables(analyse(read, lineage, options))
            # what the snapshot tallies without scanning the store equals a scan of it
            assert latest.events == store.event_counts()
            assert latest.newest_event_ts == store.newest_event_ts()
            scanned, _ = verdict_series(store.verdict_totals(), lineage, settings.metrics)
            assert list(latest.verdicts) == scanned
            recomputer.once()  # nothing new: the same again, not even recomputed
            again = recomputer.latest
            assert again is not None and again.verdicts == latest.verdicts
            assert again.analysis is latest.analysis and again.finished_at > latest.finished_at
        assert len(read) < len(list(store.verdict_rows()))  # some days were left out
        # the last batch touched only the newest day: the recompute read from the horizon on
        assert newest is not None and recomputer._older_totals is not None
        assert (
            recomputer._older_totals[0]
            == options.horizon_since(newest)
            > options.kept_since(newest)
        )
