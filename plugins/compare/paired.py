"""Paired speed statistics: the credited figure of a speed case is the median of its per-trial ratios, with a bootstrap
interval, and trials go on until that interval is narrow enough or a cap is reached.

Each trial times the submission and the reference on the same fresh inputs, one right after the other (their order
alternates from trial to trial), so both see the same load on the machine: the ratio of one trial cancels what the
two calls shared. The ratio of the two medians throws that pairing away: on a loaded GPU host the reference's own
median differed 2.5x between two submissions of one case (issue 19), and so did their credited ratios.

- **Figure**: the median of ``submission_i / reference_i`` over the trials.
- **Interval**: a percentile bootstrap of that median (:data:`RESAMPLES` resamples of the trials with replacement,
  :data:`CONFIDENCE`), from a fixed seed: the same times always give the same interval.
- **When to stop** (:class:`TrialPlan`): after ``least`` trials (``--speed-repeats``), as soon as the interval lies
  within :data:`TARGET` of the median on both sides; else at ``most`` trials (``--speed-max-trials``) or once the timed
  calls add up to ``budget_s`` (whichever first). The record says which ended it.

Pure functions of the measured times: nothing here runs in a sandbox child or reads a clock.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TARGET = 0.10  # the interval within 10% of the median on each side
CONFIDENCE = 0.95
RESAMPLES = 2000
BOOTSTRAP_SEED = 19  # any fixed seed: the interval is a function of the times alone
# Timed calls (both sides) past which no trial is added beyond the least: a case of seconds per call whose ratio stays
# noisy would otherwise take minutes of the speed phase.
BUDGET_S = 20.0


@dataclass(frozen=True)
class PairedRatio:
    """The median per-trial ratio and its bootstrap interval over ``trials`` paired trials."""

    ratio: float
    low: float
    high: float
    trials: int

    @property
    def half_width(self) -> float:
        """The interval's larger side as a share of the ratio (0.08: within ±8%)."""
        if not self.ratio > 0:
            return math.inf
        return max(self.ratio - self.low, self.high - self.ratio) / self.ratio

    def within(self, target: float = TARGET) -> bool:
        return self.half_width <= target


def trial_ratios(mine: Sequence[float], theirs: Sequence[float]) -> list[float]:
    """``mine[i] / theirs[i]`` for every trial where both times are positive and finite (the others are left out)."""
    pairs = zip(mine, theirs, strict=True)
    return [a / b for a, b in pairs if math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0]


def bootstrap_interval(
    ratios: Sequence[float], confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """A percentile bootstrap interval of the median of ``ratios`` (deterministic: a fixed seed)."""
    values = np.asarray(ratios, dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan
    if values.size == 1:
        return float(values[0]), float(values[0])
    draws = np.random.default_rng(seed).integers(0, values.size, size=(resamples, values.size))
    medians = np.median(values[draws], axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(medians, [tail, 1.0 - tail])
    return float(low), float(high)


def paired(mine: Sequence[float], theirs: Sequence[float]) -> PairedRatio:
    """The paired figure of a speed case's times (NaN ratio when no trial has two usable times)."""
    ratios = trial_ratios(mine, theirs)
    if not ratios:
        return PairedRatio(math.nan, math.nan, math.nan, 0)
    low, high = bootstrap_interval(ratios)
    return PairedRatio(float(statistics.median(ratios)), low, high, len(ratios))


@dataclass(frozen=True)
class TrialPlan:
    """How many paired trials a speed case gets: at least ``least``, at most ``most``, and none past ``least`` once the
    timed calls add up to ``budget_s``; in between, until the interval is within ``target``."""

    least: int
    most: int
    budget_s: float = BUDGET_S
    target: float = TARGET

    def stop(self, mine: Sequence[float], theirs: Sequence[float]) -> str | None:
        """Why the trials end now, or None to take another."""
        done = len(mine)
        if done < self.least:
            return None
        figure = paired(mine, theirs)
        if figure.trials and figure.within(self.target):
            return f"interval within ±{self.target:.0%} after {done} trials"
        width = f"±{figure.half_width:.0%}" if math.isfinite(figure.half_width) else "no usable trial"
        if done >= self.most:
            return f"trial cap of {self.most} reached (interval {width})"
        if sum(mine) + sum(theirs) >= self.budget_s:
            return f"time budget of {self.budget_s:g} s reached after {done} trials (interval {width})"
        return None


def figures(mine: Sequence[float], theirs: Sequence[float]) -> dict[str, object]:
    """The speed record's figures from both sides' per-trial times (trial i of each ran on the same inputs): the
    credited ``ratio`` (median per-trial ratio) with ``ratio_low`` / ``ratio_high`` (its interval at ``confidence``),
    both medians and the submission's spread, and the raw times."""
    figure = paired(mine, theirs)
    return {
        "median_s": float(statistics.median(mine)),
        "spread_s": float(max(mine) - min(mine)),
        "baseline_median_s": float(statistics.median(theirs)),
        "ratio": figure.ratio,  # under 1: faster than the reference
        "ratio_low": figure.low,
        "ratio_high": figure.high,
        "confidence": CONFIDENCE,
        "paired": True,  # ratio is the median of per-trial ratios (records before issue 19: ratio of the medians)
        "repeats": len(mine),
        "times_s": [float(t) for t in mine],  # each trial's, in the order they ran
        "baseline_times_s": [float(t) for t in theirs],  # trial i of the reference ran on trial i's inputs
    }
