"""Evaluation of planners: the ratio R with its bootstrap interval, and the end-of-training policy check."""
import numpy as np
import pytest

from firebreak_exp.factory import build_landscapes
from firebreak_exp.observation import CHANNELS
from firebreak_exp.planning.evaluation import HeldoutEvaluation, bootstrap_ci, ratio_r
from conftest import make_agent

def test_heldout_evaluation_scores_the_policy_against_baselines(make_cfg):
    cfg = make_cfg("simulator=travel_time")
    tile = build_landscapes(cfg).heldout[0]
    agent = make_agent((len(CHANNELS), *tile.shape), channels=4, num_layers=2)
    evaluation = HeldoutEvaluation.from_config(cfg, episodes=2)(agent)
    summary = evaluation["summary"]
    assert summary["episodes"] == 2
    assert summary["burned_area_reduction"] == pytest.approx(
        summary["burned_fraction_untreated"] - summary["burned_fraction_treated"])
    assert summary["R"] == pytest.approx(1 - summary["burned_fraction_treated"] / summary["burned_fraction_untreated"])
    assert summary["R_ci_low"] <= summary["R"] <= summary["R_ci_high"]
    assert {"R_random", "R_domirank", "plan_seconds"} <= set(summary)
    example = evaluation["example"]
    assert example["fuel_breaks"].shape == tile.shape and example["fuel_breaks"].sum() >= 1
    assert example["burn_probability_before"].shape == example["burn_probability_after"].shape == tile.shape
    assert np.all(example["burn_probability_after"] <= 1)


def test_ratio_and_bootstrap_interval():
    burned, untreated = np.array([0.1, 0.2, 0.3, 0.1]), np.array([0.2, 0.4, 0.4, 0.2])
    assert ratio_r(burned, untreated) == pytest.approx(1 - 0.175 / 0.3)
    lo, hi = bootstrap_ci(burned, untreated)
    assert lo <= ratio_r(burned, untreated) <= hi
    assert bootstrap_ci(untreated, untreated) == (0.0, 0.0)
