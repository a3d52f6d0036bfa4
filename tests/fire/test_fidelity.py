"""Fidelity of the travel-time simulator against the pyretechnics reference on real Worcester, VT tiles."""
import numpy as np
import pytest
from conftest import DRY_SUMMER, FAST

from firebreak_exp.fire.fidelity import compare_details, compare_simulators, fit_rate_factor
from firebreak_exp.fire.reference import PyretechnicsSimulator
from firebreak_exp.fire.scenario import random_ignitions
from firebreak_exp.fire.scenario import Scenario
from firebreak_exp.fire.travel_time import TravelTimeSimulator
from firebreak_exp.landscape import split_tiles


@pytest.mark.slow
def test_travel_time_agrees_with_reference_on_heldout_tiles(tiles25):
    _, heldout = split_tiles(tiles25, 0.2)                          # eastern tiles, never used for fitting
    picked = [heldout[i] for i in np.linspace(0, len(heldout) - 1, 3).round().astype(int)]
    report = compare_simulators(PyretechnicsSimulator, TravelTimeSimulator, picked, DRY_SUMMER,
                                ignitions_per_tile=4, num_plans=12, budget_fraction=0.05, seed=11)
    assert set(report) == {"reference", "simulator", "speedup", "burned_fraction_mae", "iou_mean",
                           "plan_spearman", "num_tiles", "num_ignitions", "num_plans"}
    assert report["reference"] == "pyretechnics" and report["simulator"] == "travel_time"
    assert report["num_tiles"] == 3 and report["num_ignitions"] == 12 and report["num_plans"] >= 12
    assert report["burned_fraction_mae"] <= 0.03, report
    assert report["plan_spearman"] >= 0.9, report
    assert report["iou_mean"] >= 0.75, report
    assert report["speedup"] >= 30, report


def test_plans_are_scored_on_the_first_plan_ignitions(meadow):
    def details(plan_ignitions):
        return compare_details(TravelTimeSimulator, TravelTimeSimulator, [meadow], FAST, ignitions_per_tile=4,
                               num_plans=4, seed=5, plan_ignitions=plan_ignitions)
    every, first, one = details(None), details(4), details(1)
    assert every["sims"] == first["sims"] == [4 + 4 * 4] * 2 and one["sims"] == [4 + 4 * 1] * 2
    np.testing.assert_array_equal(one["fractions"], every["fractions"])      # the same fires without breaks
    np.testing.assert_array_equal(first["plan_scores"], every["plan_scores"])
    assert not np.array_equal(one["plan_scores"], every["plan_scores"])


def test_fit_rate_factor_scores_each_factor_as_a_simulator_with_that_factor(meadow):
    """Scoring every factor from one search gives each the error a travel-time simulator with that factor has."""
    factors = [0.9, 1.0, 1.1]
    result = fit_rate_factor([meadow], FAST, ignitions_per_tile=2, seed=0, factors=factors)
    ignitions = random_ignitions(meadow, 2, np.random.default_rng(0))
    reference = PyretechnicsSimulator(meadow, FAST).burned_fraction(ignitions)
    for factor in factors:
        candidate = TravelTimeSimulator(meadow, FAST, rate_factor=factor).burned_fraction(ignitions)
        assert result["mae_by_factor"][factor] == pytest.approx(np.mean(np.abs(candidate - reference)), abs=1e-12)
    assert result["rate_factor"] == min(factors, key=result["mae_by_factor"].get)
    assert result["mae"] == result["mae_by_factor"][result["rate_factor"]] and result["num_pairs"] == 2
