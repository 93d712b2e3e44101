"""One-sided p-values, Benjamini-Hochberg q-values and the minimum detectable effect (pure).

Every estimate the service reports (a PLS, a leakage effect, a judge bias) comes with a bootstrap
distribution. This module turns that into the few numbers on-call needs: how surprising the
estimate is if there were no leakage (``p``), how surprising after testing many rows at once
(``q``), and how large a leak the data could have caught at all (the minimum detectable effect).
See docs/statistics.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

DEFAULT_FDR = 0.05
"""False discovery rate at which a row is flagged significant."""


_NORMAL = NormalDist()


def p_value_one_sided(estimate: float, se: float) -> float:
    """P-value of H0 "effect <= 0" against "effect > 0", from the normal approximation estimate/se.

    One-sided because only leakage *towards* related models is the failure we watch for. ``se`` is
    a bootstrap standard deviation (:func:`bootstrap_se`). A NaN estimate or se gives NaN (no
    test possible); ``se == 0`` is a degenerate but exact estimate: 0.0 if it is positive, else 1.0.
    """
    if se < 0:
        raise ValueError(f"standard error must be >= 0, got {se}")
    if math.isnan(estimate) or math.isnan(se):
        return math.nan
    if se == 0:
        return 0.0 if estimate > 0 else 1.0
    return 0.5 * math.erfc(estimate / se / math.sqrt(2))  # the normal upper tail


def bh_q_values(p_values: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg adjusted p-values (q-values), in input order.

    The service tests many rows at once (judge pairs, relation kinds, judges); flagging rows with
    ``q <= fdr`` keeps the expected share of false alarms among flagged rows at most ``fdr``
    (for independent or positively dependent tests).
    None or NaN entries (no test possible) stay None and do not count in the number of tests m.
    q-values are monotone in p, at least p and at most 1.
    """
    index = [i for i, p in enumerate(p_values) if p is not None and not math.isnan(p)]
    tested = np.array([p_values[i] for i in index], dtype=np.float64)
    if np.any((tested < 0) | (tested > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {tested.min()}..{tested.max()}")
    q: list[float | None] = [None] * len(p_values)
    order = np.argsort(tested, kind="stable")
    m = len(tested)
    scaled = tested[order] * m / np.arange(1, m + 1)
    # q_(k) = min over j >= k of p_(j)·m/j: a running minimum from the largest p down, which
    # starts at p_(m) <= 1, so no q exceeds 1.
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    for k, value in zip(order, adjusted, strict=True):
        q[index[k]] = float(value)
    return q


def significant(q: float | None, fdr: float = DEFAULT_FDR) -> bool:
    """Whether a row is flagged at false discovery rate ``fdr``; rows without a q never are."""
    if not 0.0 < fdr < 1.0:
        raise ValueError(f"fdr must lie in (0, 1), got {fdr}")
    return q is not None and not math.isnan(q) and q <= fdr


def min_detectable_effect(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true effect the current data would flag (p < alpha) with probability ``power``.

    For a one-sided z-test this is (z_{1-alpha} + z_{power})·se. Report it next to every estimate
    so that "0 % leakage with 12 prompts" is read as "no leak larger than the MDE would have been
    missed", not as good news about small leaks. NaN se gives NaN.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must lie in (0, 1), got {power}")
    if se < 0:
        raise ValueError(f"standard error must be >= 0, got {se}")
    return float((_NORMAL.inv_cdf(1.0 - alpha) + _NORMAL.inv_cdf(power)) * se)


def bootstrap_se(draws: npt.ArrayLike) -> float:
    """Standard error of an estimate from its bootstrap draws: their sample sd (ddof=1).

    Non-finite draws (resamples where the estimate was undefined) are left out; with fewer than
    two finite draws there is no spread to measure, so the result is NaN.
    """
    values = np.asarray(draws, dtype=np.float64).ravel()
    finite = values[np.isfinite(values)]
    if finite.size < 2:
        return math.nan
    return float(np.std(finite, ddof=1))
