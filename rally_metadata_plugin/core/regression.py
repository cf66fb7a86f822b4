"""Decide whether a metric got worse between two runs (pure statistics).

Per-migration downtimes are skewed, often zero-heavy and come in small
samples (a few iterations times a few migrations), so nothing here assumes a
distribution.  The change is the difference of medians, candidate minus
baseline, in the metric's own unit (seconds), with a percentile-bootstrap
confidence interval: it answers "by how much" in the unit the thresholds
are written in, which a rank test's p-value does not.  A verdict needs both
statistical evidence (the interval excludes zero) and practical
significance (the change exceeds the absolute AND the relative threshold),
since a move from 0.1 s to 0.2 s doubles the median yet matters less than a
move from 3 s to 6 s.
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
from typing import Optional, Sequence

REGRESSION = "regression"
IMPROVEMENT = "improvement"
NO_CHANGE = "no significant change"
INSUFFICIENT = "insufficient data"


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """What counts as a change worth a verdict."""

    absolute: float = 0.5
    relative: float = 0.2
    confidence: float = 0.95
    min_samples: int = 3
    resamples: int = 4000
    seed: int = 0


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (q in [0, 100]) of a non-empty sample."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of an empty sample")
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclasses.dataclass(frozen=True)
class Summary:
    count: int
    median: Optional[float]
    p95: Optional[float]
    max: Optional[float]

    @classmethod
    def of(cls, values: Sequence[float]) -> "Summary":
        if not values:
            return cls(0, None, None, None)
        return cls(len(values), statistics.median(values), percentile(values, 95), max(values))


@dataclasses.dataclass(frozen=True)
class Comparison:
    baseline: Summary
    candidate: Summary
    change: Optional[float]
    interval: Optional[tuple[float, float]]
    relative_change: Optional[float]
    verdict: str
    reason: str


def bootstrap_median_difference(
    baseline: Sequence[float], candidate: Sequence[float], thresholds: Thresholds
) -> tuple[float, float]:
    """Percentile-bootstrap interval of median(candidate) - median(baseline)."""
    rng = random.Random(thresholds.seed)
    diffs = []
    for _ in range(thresholds.resamples):
        a = [baseline[rng.randrange(len(baseline))] for _ in baseline]
        b = [candidate[rng.randrange(len(candidate))] for _ in candidate]
        diffs.append(statistics.median(b) - statistics.median(a))
    tail = (1 - thresholds.confidence) / 2 * 100
    return percentile(diffs, tail), percentile(diffs, 100 - tail)


def compare(
    baseline: Sequence[float], candidate: Sequence[float], thresholds: Thresholds = Thresholds()
) -> Comparison:
    """Compare two samples of a "lower is better" metric."""
    base, cand = Summary.of(baseline), Summary.of(candidate)
    if base.count < thresholds.min_samples or cand.count < thresholds.min_samples:
        return Comparison(
            base, cand, None, None, None, INSUFFICIENT,
            f"need at least {thresholds.min_samples} values per run, got {base.count} and "
            f"{cand.count}",
        )
    change = cand.median - base.median
    relative = change / base.median if base.median else (math.inf if change > 0 else 0.0)
    low, high = bootstrap_median_difference(baseline, candidate, thresholds)
    level = f"{thresholds.confidence:.0%}"
    big_enough = abs(change) >= thresholds.absolute and (
        base.median == 0 or abs(relative) >= thresholds.relative
    )
    if low > 0 and change > 0 and big_enough:
        verdict, reason = REGRESSION, f"median up {change:+.3g} s, {level} interval above 0"
    elif high < 0 and change < 0 and big_enough:
        verdict, reason = IMPROVEMENT, f"median down {change:+.3g} s, {level} interval below 0"
    elif low > 0 or high < 0:
        verdict = NO_CHANGE
        reason = (f"change {change:+.3g} s is real but under the thresholds "
                  f"({thresholds.absolute} s and {thresholds.relative:.0%})")
    else:
        verdict, reason = NO_CHANGE, f"{level} interval [{low:+.3g}, {high:+.3g}] s includes 0"
    return Comparison(base, cand, change, (low, high), relative, verdict, reason)
