"""The guests' CPU budget: probes per second times CPU per probe."""

import pytest

from rally_metadata_plugin.devcloud.sizing import (PROBE_CPU_SECONDS,
                                                    guest_cpu_budget)


def test_budget_is_probes_per_second_times_cost_per_probe():
    budget = guest_cpu_budget(50, 0.2, 0.05, cores=2)
    wget = PROBE_CPU_SECONDS["wget"]
    assert budget.steady_cores == pytest.approx(50 * 5 * wget)
    assert budget.migrating_cores == pytest.approx(50 * 20 * wget)
    assert budget.available_cores == 1.0
    assert not budget.fits
    advice = budget.advice()
    assert "50 guests" in advice and "3.7 CPU cores" in advice
    assert "probe_interval" in advice and "concurrency" in advice


def test_slow_probes_fit_where_default_ones_do_not():
    assert guest_cpu_budget(200, 1.0, 1.0, cores=2).fits        # 0.74 cores
    assert not guest_cpu_budget(25, 0.2, 0.05, cores=2).fits    # 1.85 cores
    assert guest_cpu_budget(10, 0.2, 0.05, cores=2).fits        # 0.74 cores


def test_the_faster_interval_sets_the_peak_whichever_it_is():
    budget = guest_cpu_budget(10, 0.05, 0.2, cores=2, tool="curl")
    assert budget.migrating_cores == budget.steady_cores
    assert budget.migrating_cores == pytest.approx(10 * 20 * PROBE_CPU_SECONDS["curl"])
