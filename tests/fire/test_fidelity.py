"""Fidelity of the travel-time simulator against the pyretechnics reference on real Worcester, VT tiles."""
import itertools

import numpy as np
import pytest
from conftest import DRY_SUMMER, FAST

from firebreak_exp.fire import fidelity
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


def test_each_simulator_burns_a_tiles_fires_back_to_back_after_one_untimed_fire(meadow, monkeypatch):
    """The speed-up compares like with like: neither simulator's timed burns follow the other's (whose work
    evicts its data from the CPU caches), a process's first fire (imports, compiled code) is not timed, and
    a fast simulator's block of burns is repeated until the machine's load averages out."""
    calls = []

    class Logged(TravelTimeSimulator):
        def burn_maps(self, ignitions, fuel_breaks=None):
            calls.append((self.label, len(ignitions), fuel_breaks is not None))
            return super().burn_maps(ignitions, fuel_breaks)

    reference, candidate = type("Reference", (Logged,), {"label": "ref"}), type("Candidate", (Logged,), {"label": "cand"})

    def details():
        calls.clear()
        return compare_details(reference, candidate, [meadow, meadow], FAST, ignitions_per_tile=3, num_plans=4,
                               seed=5)

    repeated = details()
    runs = [(label, len(list(group))) for label, group in itertools.groupby(calls[2:], key=lambda call: call[0])]
    assert [label for label, _ in runs] == ["ref", "cand"] * 2 and all(n > 3 for _, n in runs)  # passes of a block
    monkeypatch.setattr(fidelity, "MIN_TIMED_SECONDS", 0.0)       # one pass each
    once = details()
    no_breaks, plans = [(3, False)], [(3, True)] * 2             # per tile: the fires without breaks, then 2 plans
    tile = [("ref", *c) for c in no_breaks + plans] + [("cand", *c) for c in no_breaks + plans]
    assert calls == [("ref", 1, False), ("cand", 1, False)] + tile + tile
    assert once["sims"] == repeated["sims"] == [2 * (3 + 2 * 3)] * 2   # a tile's fires count once, warm-up none
    for key in ("fractions", "plan_scores"):
        np.testing.assert_array_equal(once[key][:, 0], once[key][:, 1])
        np.testing.assert_array_equal(once[key], repeated[key])
