"""Window results of an earlier analysis are reused only where nothing changed, to the same end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from prefleak.config import load_settings
from prefleak.daemon.metrics import Metrics
from prefleak.daemon.recompute import Recomputer, statistics_options
from prefleak.ingest import Ingestor
from prefleak.lineage import Lineage
from prefleak.models.events import PROVENANCE_TYPES
from prefleak.simulate import Scenario, simulate
from prefleak.stats.analysis import Analysis, StatisticsOptions, analyse
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


class _NoService:
    """The metrics' view of a service that has no sources: enough for a Recomputer."""

    def snapshot(self) -> None:
        return None

    def sources_up(self) -> dict[str, bool]:
        return {}

    def consumer_lag(self) -> dict[tuple[str, int], int]:
        return {}


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
        recomputer = Recomputer(store, settings, Metrics(_NoService(), settings.metrics, []))
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
