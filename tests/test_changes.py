"""The standardized CUSUM: false alarms, detection delay, change point, missing and pinned data."""

from __future__ import annotations

import math
from typing import Unpack

import numpy as np
import pytest

from prefleak.stats.changes import (
    DEFAULT_THRESHOLD,
    ChangeState,
    Cusum,
    CusumOptions,
    detect,
)

WINDOWS = 30
STEP = 15
SEEDS = range(200)


def _series(values: np.ndarray, se: float = 1.0) -> list[tuple[int, float | None, float | None]]:
    return [(t, float(v), se) for t, v in enumerate(values)]


def _first_alarm(values: np.ndarray, **kwargs: Unpack[CusumOptions]) -> int | None:
    """The first window at which the detector is in alarm, or None."""
    cusum = Cusum(**kwargs)
    for t, value in enumerate(values):
        cusum.update(t, float(value), 1.0)
        if cusum.get().alarm:
            return t
    return None


def test_stationary_series_rarely_alarms() -> None:
    alarms = [_first_alarm(np.random.default_rng(seed).normal(0, 1, WINDOWS)) for seed in SEEDS]
    rate = np.mean([a is not None for a in alarms])
    assert rate <= 0.05  # measured: 2.0 % of these 200 seeds (1.4 % of 3000 seeds)


def test_in_control_average_run_length() -> None:
    """Windows monitored until a false alarm, after the 3 that seed the baseline."""
    run_lengths = []
    for seed in range(300):
        rng = np.random.default_rng(1_000 + seed)
        cusum = Cusum()
        t = 0
        while True:
            cusum.update(t, float(rng.normal()), 1.0)
            if cusum.get().alarm:
                break
            t += 1
        run_lengths.append(t - 2)
    arl = float(np.mean(run_lengths))
    # Siegmund's approximation for h = 5.5, k = 0.5 gives about 1550; measured: 1513 ± 82.
    assert 1300 < arl < 1800


def test_step_of_three_standard_errors_is_detected_quickly() -> None:
    delays, start_errors = [], []
    for seed in SEEDS:
        values = np.random.default_rng(10_000 + seed).normal(0, 1, WINDOWS)
        values[STEP:] += 3.0
        state = detect(_series(values))
        assert state.alarm and state.direction == "up"
        assert state.detected_at is not None and state.started_at is not None
        delays.append(state.detected_at - STEP)
        start_errors.append(state.started_at - STEP)
    delay = np.array(delays)
    assert np.mean((delay >= 0) & (delay <= 4)) >= 0.95  # measured: 0.99, mean delay 1.8
    assert np.mean(np.abs(start_errors) <= 2) >= 0.7  # measured: 0.765


def test_hand_computed_statistic_and_change_point() -> None:
    cusum = Cusum()
    for t, value in enumerate([1.0, 2.0, 3.0]):  # baseline 2, se_baseline² = 1/3
        cusum.update(t, value, 1.0)
        assert cusum.get().statistic == 0.0
    assert cusum.get().baseline == pytest.approx(2.0)
    cusum.update(3, 2.0 + 0.2 * math.sqrt(1 + 1 / 3), 1.0)  # z = 0.2 < slack: S stays 0
    state = cusum.get()
    assert state.statistic == 0.0 and state.started_at is None and state.direction is None
    assert state.baseline == pytest.approx(2.0 + 0.05 * math.sqrt(1 + 1 / 3))  # learnt
    for t, expected in [(4, 2.5), (5, 5.0), (6, 7.5)]:
        # z = 3 against the baseline learnt so far (n windows of se 1: se_baseline² = 1/n).
        baseline = cusum.get().baseline
        assert baseline is not None
        cusum.update(t, baseline + 3.0 * math.sqrt(1 + 1 / t), 1.0)
        assert cusum.get().statistic == pytest.approx(expected)
    state = cusum.get()
    assert state.alarm and state.direction == "up"
    assert state.started_at == 4 and state.detected_at == 6
    assert state.baseline == baseline  # the alarming window is not learnt
    assert state.n_windows == 7


def test_baseline_is_precision_weighted() -> None:
    state = detect([(0, 0.0, 1.0), (1, 3.0, 0.5)], baseline_windows=2)
    assert state.baseline == pytest.approx((0.0 * 1 + 3.0 * 4) / 5)


def test_baseline_is_frozen_while_an_excursion_has_alarmed_and_resumes_after() -> None:
    cusum = Cusum(baseline_windows=1)
    cusum.update(0, 0.0, 1.0)
    for t in range(1, 6):
        cusum.update(t, 10.0, 1.0)  # z = 10/√2: alarms at once
        assert cusum.get().alarm and cusum.get().baseline == 0.0
    cusum.update(6, -60.0, 1.0)  # S falls back to zero: the excursion ends, learning resumes
    state = cusum.get()
    assert state.statistic == 0.0 and not state.alarm
    assert state.started_at is None and state.detected_at is None
    assert state.baseline == pytest.approx(-30.0)


def test_alarm_clears_below_threshold_but_excursion_is_kept() -> None:
    cusum = Cusum(baseline=0.0)
    for t in range(3):
        cusum.update(t, 3.0, 1.0)  # S = 2.5, 5, 7.5
    cusum.update(3, -1.5, 1.0)  # S = 5.5: not above the threshold
    state = cusum.get()
    assert state.statistic == pytest.approx(DEFAULT_THRESHOLD)
    assert not state.alarm and state.started_at == 0 and state.detected_at == 2


def test_missing_windows_are_skipped() -> None:
    values = np.random.default_rng(3).normal(0, 1, WINDOWS)
    values[STEP:] += 3.0
    full = [(2 * t, float(v), 1.0) for t, v in enumerate(values)]
    gaps: list[tuple[int, float | None, float | None]] = [
        (1, None, 1.0),
        (3, 1e6, None),
        (5, math.nan, 1.0),
        (7, 1e6, math.nan),
        (9, 1e6, math.inf),
        (11, 1e6, 0.0),
        (33, math.inf, 1.0),
    ]
    with_gaps = sorted(full + gaps, key=lambda row: row[0])
    assert detect(with_gaps) == detect(full)
    assert detect(with_gaps).n_windows == WINDOWS


def test_windows_out_of_order_raise() -> None:
    with pytest.raises(ValueError, match="increasing"):
        detect([(0, 0.0, 1.0), (2, 0.0, 1.0), (1, 0.0, 1.0)])
    with pytest.raises(ValueError, match="increasing"):
        detect([(0, 0.0, 1.0), (0, 0.0, 1.0)])
    with pytest.raises(ValueError, match="increasing"):
        detect([(5, None, None), (4, 0.0, 1.0)])


def test_pinned_baseline_is_used_from_the_first_window() -> None:
    state = detect([(0, 0.55, 0.1), (1, 0.55, 0.1)], baseline=0.2)
    # z = (0.55 − 0.2) / 0.1 = 3.5, S = 3, then 6: no windows spent learning a baseline.
    assert state.baseline == 0.2
    assert state.statistic == pytest.approx(6.0)
    assert state.alarm and state.started_at == 0 and state.detected_at == 1


def test_direction_down_detects_drops_and_up_ignores_them() -> None:
    values = np.random.default_rng(5).normal(0, 1, WINDOWS)
    values[STEP:] -= 3.0
    down = detect(_series(values), direction="down")
    assert down.alarm and down.direction == "down"
    assert down.detected_at is not None and STEP <= down.detected_at <= STEP + 4
    assert not detect(_series(values), direction="up").alarm
    both = detect(_series(values), direction="both")
    assert both.alarm and both.direction == "down" and both.statistic == down.statistic


def test_direction_both_reports_rises() -> None:
    values = np.random.default_rng(6).normal(0, 1, WINDOWS)
    values[STEP:] += 3.0
    state = detect(_series(values), direction="both")
    assert state.alarm and state.direction == "up"


def test_empty_series() -> None:
    assert detect([]) == ChangeState(
        statistic=0.0,
        alarm=False,
        started_at=None,
        detected_at=None,
        direction=None,
        baseline=None,
        n_windows=0,
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 0.0},
        {"slack": -0.1},
        {"baseline_windows": 0},
        {"direction": "sideways"},
        {"baseline": math.nan},
    ],
)
def test_invalid_parameters_raise(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Cusum(**kwargs)  # type: ignore[arg-type]


def test_negative_standard_error_raises() -> None:
    with pytest.raises(ValueError, match="standard error"):
        Cusum().update(0, 1.0, -1.0)
