"""A standardized CUSUM change detector for windowed estimates with standard errors (pure).

The service computes, per time window, estimates with bootstrap standard errors: the PLS of each
judge pair, the leakage effect of each relation kind, each judge's bias. A single window is
usually too noisy to act on; a CUSUM accumulates evidence of a sustained shift over windows and
alarms once the evidence is strong. See docs/statistics.md for the defaults and their measured
false-alarm rate and detection delay.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, TypedDict, Unpack

Direction = Literal["up", "down", "both"]
"""Which shifts to watch: increases (leakage growing), decreases, or both."""

DEFAULT_THRESHOLD = 5.5
"""Alarm level h for S, in standard errors: false alarms in under 2 % of 30-window series."""
DEFAULT_SLACK = 0.5
"""Allowance k per window, in standard errors: tuned to shifts of about 2k = 1 standard error."""
DEFAULT_BASELINE_WINDOWS = 3
"""Windows with data that only seed the baseline before monitoring starts."""


@dataclass(frozen=True, slots=True)
class ChangeState:
    """Where the detector stands after the windows seen so far.

    ``started_at`` and ``detected_at`` belong to the current excursion (the run of windows since
    the statistic last left zero): the window where it began, the CUSUM estimate of the change
    point, and the first window in it where the statistic exceeded the threshold. Both are None
    while the statistic is zero. ``alarm`` is whether the statistic is above the threshold now,
    so ``detected_at`` set with ``alarm`` False means the excursion alarmed and has since fallen
    back below the threshold without returning to zero.
    """

    statistic: float
    alarm: bool
    started_at: int | None
    detected_at: int | None
    direction: Literal["up", "down"] | None
    baseline: float | None
    n_windows: int


@dataclass(slots=True)
class _Side:
    """One one-sided CUSUM: its statistic and the windows where its excursion began and alarmed."""

    statistic: float = 0.0
    started_at: int | None = None
    detected_at: int | None = None

    def update(self, window_start: int, z: float, slack: float, threshold: float) -> None:
        """Accumulate one standardized window; a statistic back at zero ends the excursion."""
        self.statistic = max(0.0, self.statistic + z - slack)
        if self.statistic == 0.0:
            self.started_at = self.detected_at = None
            return
        if self.started_at is None:
            self.started_at = window_start
        if self.detected_at is None and self.statistic > threshold:
            self.detected_at = window_start


class Cusum:
    """Standardized CUSUM over windows of (value, se); ``update`` one window at a time, ``get``.

    Each window is standardized against the baseline learnt from the windows before it,
    z = (value − baseline) / sqrt(se² + se_baseline²), and accumulated as
    S_up = max(0, S_up + z − slack) (and S_down = max(0, S_down − z − slack) for "down"/"both").
    The alarm holds while S > threshold.

    The baseline is pinned (``baseline``, taken as exact) or self-starting: the precision-weighted
    mean of the windows with data seen so far, with monitoring from the window after the first
    ``baseline_windows``. It keeps learning from every window except those of an excursion that
    has alarmed, so the z are independent N(0, 1) while nothing changes (a baseline frozen after
    a few windows would shift all later z by its own error and raise false alarms several times
    as often) and a detected shift is never learnt as normal.

    There is no reset on alarm: a persistent shift keeps S growing, and once the data return to
    the baseline S falls by about ``slack`` per window; start a new detector to re-arm sooner.

    Windows must arrive with strictly increasing ``window_start``. A window whose value or se is
    None, NaN or infinite, or whose se is 0 (a degenerate bootstrap with no usable precision),
    is skipped: missing data does not move the statistic.
    """

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        slack: float = DEFAULT_SLACK,
        baseline_windows: int = DEFAULT_BASELINE_WINDOWS,
        direction: Direction = "up",
        baseline: float | None = None,
    ) -> None:
        if threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        if slack < 0:
            raise ValueError(f"slack must be >= 0, got {slack}")
        if baseline_windows < 1:
            raise ValueError(f"baseline_windows must be >= 1, got {baseline_windows}")
        if direction not in ("up", "down", "both"):
            raise ValueError(f"direction must be 'up', 'down' or 'both', got {direction!r}")
        if baseline is not None and not math.isfinite(baseline):
            raise ValueError(f"a pinned baseline must be finite, got {baseline}")
        self.threshold = threshold
        self.slack = slack
        self.baseline_windows = baseline_windows
        self.direction: Direction = direction
        self._pinned = baseline is not None
        self._baseline = baseline
        self._baseline_var = 0.0
        self._weight_sum = 0.0
        self._weighted_sum = 0.0
        self._n_windows = 0
        self._last_window: int | None = None
        self._up = _Side()
        self._down = _Side()

    def update(self, window_start: int, value: float | None, se: float | None) -> None:
        """Take the next window's estimate and standard error (None or NaN: no data, skipped)."""
        if se is not None and se < 0:
            raise ValueError(f"standard error must be >= 0, got {se}")
        if self._last_window is not None and window_start <= self._last_window:
            raise ValueError(
                f"windows must be in increasing order: {window_start} after {self._last_window}"
            )
        self._last_window = window_start
        if value is None or se is None or not (math.isfinite(value) and 0 < se < math.inf):
            return
        self._n_windows += 1
        if self._baseline is not None:
            z = (value - self._baseline) / math.sqrt(se * se + self._baseline_var)
            if self.direction != "down":
                self._up.update(window_start, z, self.slack, self.threshold)
            if self.direction != "up":
                self._down.update(window_start, -z, self.slack, self.threshold)
        if not self._pinned and self._up.detected_at is None and self._down.detected_at is None:
            self._learn(value, se)

    def _learn(self, value: float, se: float) -> None:
        """Fold a window into the precision-weighted baseline; it is known once enough are in."""
        weight = 1.0 / (se * se)
        self._weight_sum += weight
        self._weighted_sum += weight * value
        if self._n_windows >= self.baseline_windows:
            self._baseline = self._weighted_sum / self._weight_sum
            self._baseline_var = 1.0 / self._weight_sum

    def get(self) -> ChangeState:
        """The current state; with direction "both" the side with the larger statistic."""
        side = self._up if self._up.statistic >= self._down.statistic else self._down
        direction: Literal["up", "down"] | None = None
        if side.statistic > 0:
            direction = "up" if side is self._up else "down"
        return ChangeState(
            statistic=side.statistic,
            alarm=side.statistic > self.threshold,
            started_at=side.started_at,
            detected_at=side.detected_at,
            direction=direction,
            baseline=self._baseline,
            n_windows=self._n_windows,
        )


class CusumOptions(TypedDict, total=False):
    """Keyword arguments of :class:`Cusum`, for :func:`detect`."""

    threshold: float
    slack: float
    baseline_windows: int
    direction: Direction
    baseline: float | None


def detect(
    series: Iterable[tuple[int, float | None, float | None]], **kwargs: Unpack[CusumOptions]
) -> ChangeState:
    """Run a :class:`Cusum` (built with ``kwargs``) over a whole series of (window, value, se).

    Windows must be in strictly increasing order (ValueError otherwise).
    """
    cusum = Cusum(**kwargs)
    for window_start, value, se in series:
        cusum.update(window_start, value, se)
    return cusum.get()
