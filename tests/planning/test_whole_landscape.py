"""Planning a whole landscape in process: the grid over a raster with nodata, budgets, batch selection, the
env's batch step and batched fire-flow planning, on a small synthetic raster with real simulations."""
import dataclasses
import types

import numpy as np
import pytest
import torch

from firebreak_exp.environment import FuelBreakEnv
from firebreak_exp.fire import TravelTimeSimulator
from firebreak_exp.landscape import read_layers, write_synthetic_landscape
from firebreak_exp.observation import CHANNELS
from firebreak_exp.planning.evaluation import draw_ignitions
from firebreak_exp.planning.whole_landscape import (CroppedRatesSimulator, PolicyScorer, batch_size, budget_cells,
                                                    burn_probability, flow_scorer, plan_in_batches, plan_in_windows,
                                                    search_in_windows, top_cells, whole_landscape, window_budgets,
                                                    window_landscape)
from firebreak_exp.planning.search import FlowSearchPlanner
from firebreak_exp.rl.network import QNetwork
from conftest import DRY_SUMMER


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A 36 x 44 synthetic stack whose north-west corner is nodata (as read_layers leaves nodata: 0, invalid)."""
    stack = read_layers(write_synthetic_landscape(tmp_path_factory.mktemp("whole") / "rasters", 36, 44, seed=5))
    rows, cols = np.mgrid[0:36, 0:44]
    corner = rows + cols < 14
    stack.valid[corner] = False
    for layer in stack.layers.values():
        layer[corner] = 0
    return stack


@pytest.fixture(scope="module")
def small(stack):
    landscape = whole_landscape(stack)
    scenario = dataclasses.replace(DRY_SUMMER, burn_duration=240.0)
    return landscape, scenario, TravelTimeSimulator(landscape.tile, scenario)


def test_whole_landscape_makes_nodata_non_burnable(small, stack):
    landscape, _, _ = small
    assert landscape.tile.shape == stack.shape and landscape.transform == stack.transform
    assert not landscape.valid.all() and not landscape.tile.burnable[~landscape.valid].any()
    np.testing.assert_array_equal(landscape.tile.burnable[landscape.valid],
                                  ~np.isin(stack.layers["fuel_model"][landscape.valid], [91, 92, 93, 98, 99]))
    assert landscape.tile.elevation[~landscape.valid].min() >= stack.layers["elevation"][stack.valid].min()
    assert landscape.cell_hectares == pytest.approx(0.09)


def test_budget_cells(small):
    landscape, _, _ = small
    burnable = landscape.num_burnable
    assert budget_cells(landscape, 5.0) == round(0.05 * burnable)
    assert budget_cells(landscape, 5.0, budget_hectares=0.9) == 10
    for bad in (0, 100, -1, 150):
        with pytest.raises(ValueError, match="budget_percent"):
            budget_cells(landscape, bad)


def test_top_cells_takes_the_best_valid_cells_then_the_tiebreak():
    score = np.array([5.0, 9.0, 1.0, 9.0, 0.0, 0.0])
    mask = np.array([True, False, True, True, True, True])
    assert top_cells(score, mask, 3).tolist() == [3, 0, 2]
    assert top_cells(score, mask, 5, tiebreak=np.array([0, 0, 0, 0, 1.0, 2.0])).tolist() == [3, 0, 2, 5, 4]


def test_step_batch_places_the_breaks_of_single_steps(small):
    """A batch step ends where single steps over the same cells end, with one evaluation for the batch."""
    landscape, scenario, simulator = small
    tile = landscape.tile
    ignitions = np.argwhere(tile.burnable)[::97][:6]
    cells = np.flatnonzero(tile.burnable)[::13][:40]
    envs = [FuelBreakEnv([tile], lambda tile, scenario: simulator, scenario, budget_percent=10.0,
                         percentage_increment=0.5, num_ignitions=len(ignitions), reward_ignitions=None)
            for _ in range(2)]
    for env in envs:
        env.reset(seed=0, options={"tile_index": 0, "ignitions": ignitions})
    cells = cells[:len(cells) // envs[0].evaluation_interval * envs[0].evaluation_interval]   # ends evaluated
    assert len(cells) > envs[0].evaluation_interval
    for cell in cells:
        obs_single, reward_single, _, _, _ = envs[0].step(cell)
    obs_batch, reward_batch, terminated, _, info = envs[1].step_batch(cells)
    assert info["evaluated"] and not info["invalid_action"] and not terminated
    np.testing.assert_array_equal(envs[0].fuel_breaks, envs[1].fuel_breaks)
    assert envs[1].fuel_breaks.sum() == len(cells) and envs[1].steps_taken == len(cells)
    assert envs[0].episode_return == pytest.approx(envs[1].episode_return)
    np.testing.assert_array_equal(obs_single, obs_batch)
    _, _, _, _, info = envs[1].step_batch(cells[:2])                 # already broken: masked
    assert info["invalid_action"] and envs[1].fuel_breaks.sum() == len(cells)


def test_flow_in_batches_spends_the_budget_on_burnable_cells(small):
    landscape, scenario, simulator = small
    ignitions = np.argwhere(landscape.tile.burnable)[::41][:10]
    budget = budget_cells(landscape, 8.0)
    cells, batches, burned = plan_in_batches(landscape, simulator, scenario, budget, ignitions, 25, flow_scorer,
                                             env_class=FuelBreakEnv)
    assert len(cells) == len(set(cells.tolist())) == budget and batches == -(-budget // 25)
    assert landscape.tile.burnable.ravel()[cells].all()
    untreated = simulator.burned_fraction(ignitions).mean()
    assert burned < untreated


def test_a_window_simulator_from_cropped_rates_burns_as_one_built_on_the_window(small):
    landscape, scenario, simulator = small
    window = window_landscape(landscape, 8, 10, 20, 25)
    cropped = CroppedRatesSimulator(simulator, TravelTimeSimulator)(window, scenario)
    fresh = TravelTimeSimulator(window.tile, scenario)
    ignitions = np.argwhere(window.tile.burnable)[::37][:5]
    breaks = np.zeros(window.tile.shape, bool)
    breaks[:, 12] = True
    for fuel_breaks in (None, breaks):
        np.testing.assert_array_equal(cropped.arrival_times(ignitions, fuel_breaks),
                                      fresh.arrival_times(ignitions, fuel_breaks))
    np.testing.assert_array_equal(window.valid, landscape.valid[8:28, 10:35])
    assert window.transform.c == landscape.transform.c + 10 * landscape.tile.cell_size


def test_window_budgets_share_the_breaks_by_burnable_cells():
    budgets = window_budgets(np.array([600, 300, 0, 100, 1]), 50)
    assert budgets.tolist() == [30, 15, 0, 5, 0] and budgets.sum() == 50
    assert window_budgets(np.array([10, 10, 10]), 4).sum() == 4


def test_window_budgets_follow_the_weights_up_to_each_window_s_room():
    burnable = np.array([100, 100, 100, 100, 2])
    budgets = window_budgets(burnable, 50, np.array([10.0, 1.0, 0.0, 1.0, 5.0]))
    assert budgets.tolist() == [41, 4, 0, 4, 1] and budgets.sum() == 50   # the last window holds one break
    budgets = window_budgets(burnable, 150, np.array([100.0, 1.0, 0.0, 1.0, 1.0]))
    assert budgets.tolist() == [99, 25, 0, 25, 1]                          # the first is full: the rest shared
    budgets = window_budgets(burnable, 380, np.array([100.0, 1.0, 0.0, 1.0, 1.0]))
    assert budgets.sum() == 380 and budgets[2] == 380 - 99 * 3 - 1         # weight 0 takes what others cannot


def test_windows_share_the_budget_by_fire_risk(small):
    landscape, scenario, simulator = small
    budget = budget_cells(landscape, 5.0)
    risk = burn_probability(simulator, landscape.tile, 64, np.random.default_rng(1))
    assert risk.shape == landscape.tile.shape and risk.max() <= 1.0 and risk[~landscape.tile.burnable].max() == 0.0
    per_window = {}
    for name, weights in (("risk", risk), ("burnable", None)):
        cells, _, windows = plan_in_windows(landscape, simulator, scenario, budget, 16, 8, 1.0, flow_scorer,
                                            np.random.default_rng(0), weights, env_class=FuelBreakEnv)
        assert windows == 9 and len(cells) == len(set(cells.tolist())) == budget
        assert landscape.tile.burnable.ravel()[cells].all()
        rows, cols = np.divmod(cells, landscape.tile.shape[1])
        per_window[name] = np.bincount((rows // 16) * 3 + cols // 16, minlength=9)
    window_risk = np.array([risk[r:r + 16, c:c + 16].sum() for r in (0, 16, 32) for c in (0, 16, 32)])
    burnable = np.array([landscape.tile.burnable[r:r + 16, c:c + 16].sum() for r in (0, 16, 32) for c in (0, 16, 32)])
    riskiest, safest = np.argmax(window_risk / burnable), np.argmin(np.where(burnable > 0, window_risk / burnable, 9))
    assert window_risk[riskiest] / burnable[riskiest] > 2 * window_risk[safest] / burnable[safest]
    # per burnable cell, risk shares give the riskiest window more breaks than the safest, burnable shares do not
    assert per_window["risk"][riskiest] * burnable[safest] > per_window["risk"][safest] * burnable[riskiest]
    assert per_window["risk"][riskiest] > per_window["burnable"][riskiest]


def test_planning_window_by_window_covers_the_grid(small):
    landscape, scenario, simulator = small
    budget = budget_cells(landscape, 5.0)
    cells, batches, windows = plan_in_windows(landscape, simulator, scenario, budget, 16, 8, 1.0, flow_scorer,
                                              np.random.default_rng(0), env_class=FuelBreakEnv)
    assert windows == 3 * 3 and len(cells) == len(set(cells.tolist())) == budget
    assert landscape.tile.burnable.ravel()[cells].all()
    rows, cols = np.divmod(cells, landscape.tile.shape[1])
    per_window = np.bincount((rows // 16) * 3 + cols // 16, minlength=9)
    assert (per_window > 0).sum() >= 7                   # every window with burnable cells gets its share


@pytest.mark.parametrize("method", ["flow", "policy"])
def test_windows_planned_together_plan_as_each_alone(small, method):
    """Lockstep planning (policy values of all windows in one forward pass) gives each window the plan that
    planning it alone gives."""
    landscape, scenario, simulator = small
    torch.manual_seed(0)
    network = QNetwork(len(CHANNELS), 8, 2).eval()
    agent = types.SimpleNamespace(q_values=lambda obs: network(torch.as_tensor(obs)).detach().double().numpy())
    scorer = flow_scorer if method == "flow" else PolicyScorer(agent)
    budget = budget_cells(landscape, 5.0)
    cells, _, _ = plan_in_windows(landscape, simulator, scenario, budget, 16, 8, 1.0, scorer, np.random.default_rng(0),
                                  env_class=FuelBreakEnv)
    rng, alone = np.random.default_rng(0), []
    budgets = window_budgets(np.array([landscape.tile.burnable[r:r + 16, c:c + 16].sum()
                                       for r in (0, 16, 32) for c in (0, 16, 32)]), budget)
    for (row, col), share in zip([(r, c) for r in (0, 16, 32) for c in (0, 16, 32)], budgets):
        if share < 1:
            continue
        window = window_landscape(landscape, row, col, min(16, 36 - row), min(16, 44 - col))
        ignitions = draw_ignitions(window.tile, 8, rng)
        local, _, _ = plan_in_batches(window, CroppedRatesSimulator(simulator, TravelTimeSimulator)(window, scenario),
                                      scenario, int(share), ignitions, batch_size(window.num_burnable, 1.0), scorer,
                                      env_class=FuelBreakEnv)
        rows, cols = np.divmod(local, window.tile.shape[1])
        alone.extend(((rows + row) * 44 + cols + col).tolist())
    assert cells.tolist() == alone


def test_a_search_plans_each_window_as_a_tile_on_the_windows_fires(small):
    """Each window's searched plan is the search planning that window alone on the fires every windowed method
    draws there, and the rollouts and swaps leave the windows' planning fires burning less than the guide's
    own plan."""
    landscape, scenario, simulator = small
    budget = budget_cells(landscape, 5.0)
    env = "firebreak_exp.environment.FuelBreakEnv"
    search = FlowSearchPlanner(rollouts=3, temperature=0.05, swap_candidates=3, swap_passes=2, env_class=env)
    guide_only = FlowSearchPlanner(rollouts=1, temperature=0.05, swap_candidates=0, swap_passes=0, env_class=env)
    cells, placed, windows = search_in_windows(landscape, simulator, scenario, budget, 16, 8, search,
                                               np.random.default_rng(0), lambda index: np.random.default_rng(index))
    assert windows == 9 and placed == len(cells) == len(set(cells.tolist())) == budget
    assert landscape.tile.burnable.ravel()[cells].all()
    fires_rng, alone, burned = np.random.default_rng(0), [], []
    budgets = window_budgets(np.array([landscape.tile.burnable[r:r + 16, c:c + 16].sum()
                                       for r in (0, 16, 32) for c in (0, 16, 32)]), budget)
    for index, ((row, col), share) in enumerate(zip([(r, c) for r in (0, 16, 32) for c in (0, 16, 32)], budgets)):
        if share < 1:
            continue
        window = window_landscape(landscape, row, col, min(16, 36 - row), min(16, 44 - col))
        window_sim = CroppedRatesSimulator(simulator, TravelTimeSimulator)(window, scenario)
        ignitions = draw_ignitions(window.tile, 8, fires_rng)
        local = search.plan(window.tile, window_sim, scenario, int(share), ignitions, np.random.default_rng(index))
        rows, cols = np.divmod(local, window.tile.shape[1])
        alone.extend(((rows + row) * 44 + cols + col).tolist())
        plain = guide_only.plan(window.tile, window_sim, scenario, int(share), ignitions, np.random.default_rng(0))
        for plan, into in ((local, 0), (plain, 1)):
            breaks = np.zeros(window.tile.shape, bool)
            breaks.flat[plan] = True
            burned.append((into, int(window_sim.burn_maps(ignitions, breaks).sum())))
    assert cells.tolist() == alone
    searched = sum(b for into, b in burned if into == 0)
    guided = sum(b for into, b in burned if into == 1)
    assert searched < guided
