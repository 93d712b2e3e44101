"""A recompute gives the same answer whatever number of threads computes its slices, and its
sped-up parts (select, Poisson weights) the numbers of the plain numpy they replace."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prefleak.config import load_settings
from prefleak.daemon.recompute import statistics_options
from prefleak.ingest import Ingestor
from prefleak.lineage import Lineage
from prefleak.models.events import PROVENANCE_TYPES
from prefleak.simulate import Scenario, simulate
from prefleak.stats.analysis import Analysis, StatisticsOptions, analyse
from prefleak.stats.cells import Cells
from prefleak.stats.estimate import _POISSON_CDF, _poisson_quantile
from prefleak.stats.parallel import Serial, default_threads
from prefleak.store import EventStore

OPTIONS = StatisticsOptions(pls_bootstrap=200, model_bootstrap=100, max_breakdowns=3)


def _everything(analysis: Analysis) -> str:
    leaderboard = analysis.leaderboard
    return json.dumps(
        {
            **analysis.tables_json(),
            "biases": [b.to_json() for b in analysis.biases],
            "leaderboard": None if leaderboard is None else leaderboard.to_json(),
            "changes": [c.to_json() for c in analysis.changes],
        },
        sort_keys=True,
    )


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cells, Lineage]:
    """Two benchmarks over five days: per-benchmark fits, breakdowns and windows to split."""
    scenario = Scenario(seed=6, prompts_per_benchmark=80, benchmarks=("alpacaeval", "mtbench"),
                        days=5)  # fmt: skip
    path = tmp_path_factory.mktemp("threads") / "s.db"
    with EventStore(path) as store:
        Ingestor(store).ingest_lines(
            [json.dumps(e).encode() for e in simulate(scenario)], source="sim"
        )
        lineage = Lineage.from_events(store.events(PROVENANCE_TYPES))
        cells = Cells.from_rows(store.verdict_rows())
    return cells, lineage


def test_threads_give_the_serial_answer(stream: tuple[Cells, Lineage]) -> None:
    cells, lineage = stream
    serial = analyse(cells, lineage, replace(OPTIONS, threads=1))
    threaded = analyse(cells, lineage, replace(OPTIONS, threads=2))
    assert len(serial.windows) == 5 and serial.biases and serial.leaderboard is not None
    assert any(row.slice == "breakdown" for row in serial.leakage)
    assert {row.benchmark for row in serial.leakage} > {"*"}  # per-benchmark fits ran
    assert _everything(threaded) == _everything(serial)
    assert list(threaded.windows) == list(serial.windows)
    assert threaded.options == serial.options  # the number of threads is not an option of results


def test_threads_with_reused_windows_give_the_fresh_answer(stream: tuple[Cells, Lineage]) -> None:
    cells, lineage = stream
    options = replace(OPTIONS, threads=3)
    fresh = analyse(cells, lineage, options)
    newest = max(fresh.windows)
    reuse = {start: result for start, result in fresh.windows.items() if start != newest}
    reused = analyse(cells, lineage, options, reuse=reuse)
    assert _everything(reused) == _everything(fresh)
    assert all(reused.windows[start] is result for start, result in reuse.items())


def test_a_failing_slice_raises_from_analyse(
    stream: tuple[Cells, Lineage], monkeypatch: pytest.MonkeyPatch
) -> None:
    cells, lineage = stream

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("slice failed")

    monkeypatch.setattr("prefleak.stats.analysis.judge_biases", broken)
    for threads in (1, 2):
        with pytest.raises(RuntimeError, match="slice failed"):
            analyse(cells, lineage, replace(OPTIONS, threads=threads))


def test_serial_executor_runs_in_the_caller_and_defers_errors() -> None:
    done = Serial().submit(sum, [1, 2, 3])
    assert done.done() and done.result() == 6
    failed = Serial().submit(int, "x")
    with pytest.raises(ValueError):
        failed.result()


@pytest.mark.parametrize(("cores", "command", "service"), [(1, 1, 1), (2, 2, 1), (8, 4, 4)])
def test_default_threads_per_core(
    monkeypatch: pytest.MonkeyPatch, cores: int, command: int, service: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert (default_threads(), default_threads(spare=1)) == (command, service)


def test_threads_setting_reaches_the_options(tmp_path: Path) -> None:
    assert 1 <= default_threads() <= 4
    assert StatisticsOptions().threads == default_threads()
    unset = load_settings(overrides={"db": str(tmp_path / "s.db")})
    assert unset.statistics.threads is None
    assert statistics_options(unset).threads == default_threads()
    # serve leaves a core to ingest, unless told otherwise
    assert statistics_options(unset, service=True).threads == default_threads(spare=1)
    settings = load_settings(overrides={"db": str(tmp_path / "s.db"), "statistics": {"threads": 2}})
    assert statistics_options(settings).threads == 2
    assert statistics_options(settings, service=True).threads == 2
    with pytest.raises(ValueError, match="threads"):
        StatisticsOptions(threads=0)


def test_select_gives_the_masked_cells(stream: tuple[Cells, Lineage]) -> None:
    """Contiguous runs (views) and scattered cells (gathered) both equal boolean indexing."""
    cells, _ = stream
    day = cells.window // 86_400
    for mask in (
        day == day.min(),
        cells.benchmark == 1,
        np.zeros(len(cells), dtype=bool),
        np.ones(len(cells), dtype=bool),
    ):
        part = cells.select(mask)
        for name in ("window", "judge", "prompt", "outcomes", "lo_first", "has_length", "length"):
            column = getattr(part, name)
            expected = getattr(cells, name)[mask]
            assert column.dtype == expected.dtype and column.shape == expected.shape
            assert np.array_equal(column, expected)
        assert part.models == cells.models and part.prompt_keys is cells.prompt_keys


def test_poisson_weights_are_the_inverse_cdf() -> None:
    """The vectorised count equals searchsorted on the CDF, up to the tail."""
    uniform = np.concatenate([np.linspace(0, 1, 10_001)[:-1], _POISSON_CDF, _POISSON_CDF - 1e-17])
    expected = np.searchsorted(_POISSON_CDF, uniform, side="right").astype(np.float64)
    assert np.array_equal(_poisson_quantile(uniform[None, :])[0], expected)
