"""Statistics of run comparison on synthetic data with known answers."""

import random

import pytest

from rally_metadata_plugin.core import regression as rg


def sample(seed, center, spread, n):
    rng = random.Random(seed)
    return [max(0.0, rng.gauss(center, spread)) for _ in range(n)]


def test_percentile_matches_linear_interpolation():
    values = [1, 2, 3, 4]
    assert rg.percentile(values, 0) == 1
    assert rg.percentile(values, 100) == 4
    assert rg.percentile(values, 50) == 2.5
    assert rg.percentile(values, 95) == pytest.approx(3.85)
    with pytest.raises(ValueError):
        rg.percentile([], 50)


def test_same_distribution_is_no_significant_change():
    base, cand = sample(1, 1.0, 0.3, 20), sample(2, 1.0, 0.3, 20)
    result = rg.compare(base, cand)
    assert result.verdict == rg.NO_CHANGE
    low, high = result.interval
    assert low <= 0 <= high or abs(result.change) < 0.5


def test_clear_regression_is_found_with_interval_above_zero():
    base, cand = sample(3, 1.0, 0.3, 12), sample(4, 8.0, 1.5, 12)
    result = rg.compare(base, cand)
    assert result.verdict == rg.REGRESSION
    assert result.interval[0] > 0
    assert result.change == pytest.approx(result.candidate.median - result.baseline.median)
    assert result.interval[0] <= result.change <= result.interval[1]


def test_clear_improvement():
    result = rg.compare(sample(5, 8.0, 1.0, 12), sample(6, 1.0, 0.3, 12))
    assert result.verdict == rg.IMPROVEMENT
    assert result.interval[1] < 0


def test_small_but_real_change_stays_under_the_thresholds():
    # 0.10 s -> 0.20 s doubles the median yet is below the 0.5 s absolute threshold.
    base, cand = [0.10] * 10, [0.20] * 10
    result = rg.compare(base, cand)
    assert result.interval == (pytest.approx(0.1), pytest.approx(0.1))
    assert result.verdict == rg.NO_CHANGE
    assert "under the thresholds" in result.reason
    # The same doubling from 3 s to 6 s is a regression.
    assert rg.compare([3.0] * 10, [6.0] * 10).verdict == rg.REGRESSION


def test_relative_threshold_applies_to_large_medians():
    # +0.6 s on a 10 s median is 6 %: under a 20 % relative threshold.
    result = rg.compare([10.0] * 10, [10.6] * 10)
    assert result.verdict == rg.NO_CHANGE
    loose = rg.Thresholds(relative=0.05)
    assert rg.compare([10.0] * 10, [10.6] * 10, loose).verdict == rg.REGRESSION


def test_small_sample_is_insufficient_not_a_verdict():
    result = rg.compare([1.0, 1.1], [9.0, 9.5, 9.9])
    assert result.verdict == rg.INSUFFICIENT
    assert result.change is None and result.interval is None
    assert "at least 3" in result.reason


def test_small_noisy_sample_with_overlap_is_no_change():
    result = rg.compare([0.2, 2.5, 0.4], [0.3, 2.8, 0.6])
    assert result.verdict == rg.NO_CHANGE


def test_zero_baseline_regression_ignores_relative_threshold():
    result = rg.compare([0.0] * 8, [2.0] * 8)
    assert result.verdict == rg.REGRESSION


def test_bootstrap_is_reproducible_with_the_seed():
    base, cand = sample(7, 1.0, 0.5, 9), sample(8, 1.5, 0.5, 9)
    assert rg.compare(base, cand).interval == rg.compare(base, cand).interval
