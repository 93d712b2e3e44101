"""One-sided p-values, BH q-values, the significance flag, the MDE and the bootstrap se."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import false_discovery_control, kstest

from prefleak.stats.significance import (
    DEFAULT_FDR,
    bh_q_values,
    bootstrap_se,
    min_detectable_effect,
    p_value_one_sided,
    significant,
)


def _bootstrap_se_of_means(rng: np.random.Generator, data: np.ndarray, n_boot: int) -> float:
    """Standard error of ``data.mean()`` from resampling ``data`` with replacement."""
    draws = data[rng.integers(0, data.size, (n_boot, data.size))].mean(axis=1)
    return bootstrap_se(draws)


def test_p_value_is_the_normal_upper_tail() -> None:
    assert p_value_one_sided(0.0, 1.0) == pytest.approx(0.5)
    assert p_value_one_sided(1.6448536, 1.0) == pytest.approx(0.05, abs=1e-6)
    assert p_value_one_sided(0.32897072, 0.2) == pytest.approx(0.05, abs=1e-6)
    assert p_value_one_sided(-1.6448536, 1.0) == pytest.approx(0.95, abs=1e-6)


def test_p_value_degenerate_cases() -> None:
    assert p_value_one_sided(0.1, 0.0) == 0.0
    assert p_value_one_sided(0.0, 0.0) == 1.0
    assert p_value_one_sided(-0.1, 0.0) == 1.0
    assert math.isnan(p_value_one_sided(0.1, math.nan))
    assert math.isnan(p_value_one_sided(math.nan, 1.0))
    with pytest.raises(ValueError, match="standard error"):
        p_value_one_sided(0.1, -1.0)


def test_bh_hand_computed_example() -> None:
    # m = 6 tested; sorted p·m/rank = .03 .03 .06 .06 .0492 .2, running minimum from the top.
    p = [0.01, 0.04, 0.03, 0.005, None, math.nan, 0.2, 0.041]
    q = bh_q_values(p)
    expected = [0.03, 0.0492, 0.0492, 0.03, None, None, 0.2, 0.0492]
    assert q[4] is None and q[5] is None
    assert q == [None if e is None else pytest.approx(e) for e in expected]


def test_bh_edge_cases() -> None:
    assert bh_q_values([]) == []
    assert bh_q_values([None, math.nan]) == [None, None]
    assert bh_q_values([0.3]) == [0.3]
    assert bh_q_values([0.9, 0.95, 1.0]) == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bh_q_values([0.1, 1.5])


@given(
    st.lists(st.one_of(st.none(), st.just(math.nan), st.floats(0.0, 1.0)), min_size=1, max_size=40)
)
def test_bh_matches_scipy_and_is_monotone(p: list[float | None]) -> None:
    q = bh_q_values(p)
    tested = [i for i, x in enumerate(p) if x is not None and not math.isnan(x)]
    assert all(q[i] is None for i in range(len(p)) if i not in tested)
    if not tested:
        return
    p_t = np.array([p[i] for i in tested], dtype=float)
    q_t = np.array([q[i] for i in tested], dtype=float)
    np.testing.assert_allclose(q_t, false_discovery_control(p_t, method="bh"), rtol=1e-12)
    assert np.all((q_t >= p_t * (1 - 1e-12)) & (q_t <= 1.0))
    order = np.argsort(p_t)
    assert np.all(np.diff(q_t[order]) >= 0)


def test_significant() -> None:
    assert DEFAULT_FDR == 0.05
    assert significant(0.05)
    assert significant(0.049, 0.05)
    assert not significant(0.051)
    assert significant(0.09, fdr=0.1)
    assert not significant(None)
    assert not significant(math.nan)
    with pytest.raises(ValueError, match="fdr"):
        significant(0.01, fdr=0.0)


def test_min_detectable_effect() -> None:
    assert min_detectable_effect(1.0) == pytest.approx(1.6448536 + 0.8416212)
    assert min_detectable_effect(0.1) == pytest.approx(0.24864748)
    assert min_detectable_effect(1.0, alpha=0.025, power=0.5) == pytest.approx(1.959964)
    assert min_detectable_effect(0.0) == 0.0
    assert math.isnan(min_detectable_effect(math.nan))
    for bad in ({"alpha": 0.0}, {"alpha": 1.0}, {"power": 0.0}, {"power": 1.2}):
        with pytest.raises(ValueError):
            min_detectable_effect(1.0, **bad)


def test_bootstrap_se() -> None:
    draws = np.array([0.1, 0.3, math.nan, 0.2, math.inf, 0.6])
    assert bootstrap_se(draws) == pytest.approx(np.std([0.1, 0.3, 0.2, 0.6], ddof=1))
    assert math.isnan(bootstrap_se(np.array([0.4, math.nan])))
    assert math.isnan(bootstrap_se(np.array([])))


def test_null_p_values_are_uniform_and_bh_flags_few() -> None:
    """2000 one-sided tests of N(0, 1) samples (50 each) with bootstrap standard errors."""
    rng = np.random.default_rng(20250601)
    p = np.empty(2000)
    for row in range(p.size):
        data = rng.normal(0.0, 1.0, 50)
        p[row] = p_value_one_sided(float(data.mean()), _bootstrap_se_of_means(rng, data, 200))
    assert kstest(p, "uniform").pvalue > 0.01
    deciles = np.histogram(p, bins=10, range=(0.0, 1.0))[0] / p.size
    assert np.all(np.abs(deciles - 0.1) < 0.025)
    assert 0.03 < np.mean(p < 0.05) < 0.08
    flagged = [significant(q) for q in bh_q_values(list(p))]
    assert np.mean(flagged) < 0.07


@pytest.mark.parametrize(("alpha", "power"), [(0.05, 0.8), (0.01, 0.9), (0.1, 0.5)])
def test_true_effect_at_the_mde_is_flagged_with_the_promised_power(
    alpha: float, power: float
) -> None:
    """Estimates around a true effect equal to the MDE reach p < alpha ``power`` of the time."""
    rng = np.random.default_rng(7)
    se = 0.04
    effect = min_detectable_effect(se, alpha, power)
    estimates = rng.normal(effect, se, 4000)
    flagged = np.mean([p_value_one_sided(float(e), se) < alpha for e in estimates])
    assert flagged == pytest.approx(power, abs=0.025)


def test_mde_power_holds_with_bootstrap_standard_errors() -> None:
    """The full path: data with a true mean equal to the MDE, se from a bootstrap of the data."""
    rng = np.random.default_rng(11)
    n = 60
    effect = min_detectable_effect(1.0 / math.sqrt(n))
    flagged = []
    for _ in range(1000):
        data = rng.normal(effect, 1.0, n)
        se = _bootstrap_se_of_means(rng, data, 200)
        flagged.append(p_value_one_sided(float(data.mean()), se) < 0.05)
    assert np.mean(flagged) == pytest.approx(0.8, abs=0.05)
