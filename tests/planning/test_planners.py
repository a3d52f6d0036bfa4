"""Planners on real generated tiles with real fire simulations: DomiRank, greedy, random, the policy."""
import numpy as np
import pytest

from firebreak_exp.factory import build_landscapes, env_factory
from firebreak_exp.fire.flows import fire_flow
from firebreak_exp.fire.travel_time import TravelTimeSimulator
from firebreak_exp.landscape import Tile
from firebreak_exp.observation import CHANNELS
from firebreak_exp.planning.evaluation import (compare_planners, draw_ignitions, evaluation_rng, PLANNER_STREAM,
                                               score_plan, summarize)
from firebreak_exp.planning.planners import (domirank, domirank_scores, DomiRankPlanner, FireFlowPlanner,
                                             GreedyPlanner, NoTreatmentPlanner, PolicyPlanner, RandomPlanner,
                                             spread_network)
from conftest import make_agent


@pytest.fixture
def setting(make_cfg):
    """A 12 x 12 held-out tile with non-burnable cells, its scenario and a travel-time simulator."""
    cfg = make_cfg("landscape.grid_size=12")
    tiles = build_landscapes(cfg).train
    tile = max(tiles, key=lambda t: (0 < t.burnable.sum() < t.burnable.size, t.burnable.sum()))
    scenario = env_factory(cfg).keywords["scenario"]
    return {"cfg": cfg, "tile": tile, "scenario": scenario, "simulator": TravelTimeSimulator(tile, scenario),
            "tiles": tiles}


def _valid_plan(plan, tile, size):
    assert plan.dtype == np.int64 and plan.ndim == 1
    assert len(plan) == size
    assert len(np.unique(plan)) == len(plan)
    assert tile.burnable.ravel()[plan].all()


def test_domirank_plan_is_finite_burnable_and_distinct(setting):
    tile, scenario, sim = setting["tile"], setting["scenario"], setting["simulator"]
    scores = domirank_scores(tile, scenario)
    assert np.isfinite(scores[tile.burnable]).all()
    assert np.isneginf(scores[~tile.burnable]).all()
    assert scores[tile.burnable].std() > 0
    planner = DomiRankPlanner(sigma_fraction=0.5, symmetric=True)
    plan = planner.plan(tile, sim, scenario, 7, np.zeros((0, 2), np.int64), np.random.default_rng(0))
    _valid_plan(plan, tile, 7)
    assert np.all(np.diff(scores.ravel()[plan]) <= 0)                      # best first
    assert np.array_equal(planner.plan(tile, sim, scenario, 3, None, None), plan[:3])   # nested


def _tiny_tile(fuel_model, cell_size=30.0):
    shape = np.shape(fuel_model)
    zeros = np.zeros(shape, np.float32)
    return Tile(name="tiny", row=0, col=0, cell_size=cell_size, elevation=zeros, slope=zeros,
                aspect=np.full(shape, -1.0, np.float32), fuel_model=np.asarray(fuel_model, np.int16),
                canopy_cover=zeros, canopy_height=zeros, canopy_base_height=zeros, canopy_bulk_density=zeros)


def _dense_domirank(A, fraction=0.5, symmetric=True):
    lam = np.linalg.eigvalsh(A).min() if symmetric else np.linalg.eigvals(A).real.min()
    sigma = fraction * (-1.0 / lam)
    n = len(A)
    return sigma * np.linalg.inv(sigma * A + np.eye(n)) @ A @ np.ones(n), sigma


def test_domirank_matches_the_dense_formula_on_a_hand_made_graph():
    from scipy.sparse import csr_matrix
    # a weighted path 0-1-2-3 with a triangle 1-2-4 hanging off it
    A = np.zeros((5, 5))
    for a, b, w in ((0, 1, 1.0), (1, 2, 0.5), (2, 3, 0.8), (1, 4, 0.3), (2, 4, 0.9)):
        A[a, b] = A[b, a] = w
    gamma, sigma = domirank(csr_matrix(A), sigma_fraction=0.5)
    expected, expected_sigma = _dense_domirank(A)
    assert sigma == pytest.approx(expected_sigma)
    assert np.allclose(gamma, expected, rtol=1e-10, atol=1e-12)
    # directed: the smallest real part of the spectrum sets sigma
    D = np.triu(A) + 0.3 * np.tril(A)
    gamma, sigma = domirank(csr_matrix(D), sigma_fraction=0.7)
    expected, expected_sigma = _dense_domirank(D, 0.7, symmetric=False)
    assert sigma == pytest.approx(expected_sigma) and np.allclose(gamma, expected)


def test_spread_network_weights_are_edge_conductances():
    # 2 x 3 tile, the middle of the bottom row non-burnable; uniform rates: orthogonal edges weigh 1,
    # diagonal ones 1/sqrt(2) (longer), none touch the non-burnable cell
    tile = _tiny_tile([[102, 102, 102], [102, 99, 102]])
    rates = np.full((8, 2, 3), 2.0)
    A, nodes = spread_network(tile, None, symmetric=True, rates=rates)
    assert nodes.tolist() == [0, 1, 2, 3, 5]
    dense = A.toarray()
    node = {cell: i for i, cell in enumerate(nodes)}
    assert dense[node[0], node[1]] == pytest.approx(1.0) and dense[node[0], node[3]] == pytest.approx(1.0)
    assert dense[node[1], node[3]] == pytest.approx(1 / np.sqrt(2)) and dense[node[1], node[5]] == pytest.approx(1 / np.sqrt(2))
    assert dense[node[0], node[5]] == 0 and np.allclose(dense, dense.T)
    # faster spread toward the east (azimuth 90, offset index 2) makes eastward edges heavier when directed
    rates[2] = 6.0
    A, _ = spread_network(tile, None, symmetric=False, rates=rates)
    dense = A.toarray()
    assert dense[node[0], node[1]] == pytest.approx(1.0) and dense[node[1], node[0]] < 1.0
    gamma, _ = domirank(A)
    assert np.isfinite(gamma).all()


def test_greedy_first_pick_has_the_largest_single_break_reduction(setting):
    tile, scenario, sim = setting["tile"], setting["scenario"], setting["simulator"]
    ignitions = draw_ignitions(tile, 4, np.random.default_rng(3))
    untreated = sim.burn_maps(ignitions).reshape(len(ignitions), -1).sum()
    ign_cells = set((ignitions[:, 0] * tile.shape[1] + ignitions[:, 1]).tolist())
    brute = {}
    for cell in np.flatnonzero(tile.burnable):
        if int(cell) in ign_cells:
            continue
        breaks = np.zeros(tile.shape, bool)
        breaks.flat[cell] = True
        brute[int(cell)] = untreated - sim.burn_maps(ignitions, breaks).reshape(len(ignitions), -1).sum()
    planner = GreedyPlanner(exclude_ignitions=True, max_candidates=None)
    plan = planner.plan(tile, sim, scenario, 3, ignitions, np.random.default_rng(0))
    _valid_plan(plan, tile, 3)
    assert brute[int(plan[0])] == max(brute.values()) > 0
    assert not ign_cells & set(plan.tolist())
    candidates, reductions, _ = planner.single_break_reductions(sim, ignitions, np.zeros(tile.shape, bool))
    assert all(brute[int(c)] == r for c, r in zip(candidates, reductions))
    assert all(v == 0 for c, v in brute.items() if c not in set(candidates.tolist()))
    # greedy is nested, and its steps are timed
    assert np.array_equal(planner.plan(tile, sim, scenario, 2, ignitions, np.random.default_rng(0)), plan[:2])
    assert len(planner.cumulative_seconds) == 2 and np.all(np.diff(planner.cumulative_seconds) >= 0)


def test_flow_planner_breaks_the_cell_most_fire_passes_through(setting):
    tile, scenario, sim = setting["tile"], setting["scenario"], setting["simulator"]
    ignitions = draw_ignitions(tile, 4, np.random.default_rng(3))
    planner = FireFlowPlanner()
    plan = planner.plan(tile, sim, scenario, 4, ignitions, np.random.default_rng(0))
    _valid_plan(plan, tile, 4)
    flow = fire_flow(sim.arrival_times(ignitions), sim.spread_graph()).ravel()
    assert plan[0] == int(np.argmax(np.where(tile.burnable.ravel(), flow, -1)))
    breaks = np.zeros(tile.shape, bool)
    breaks.flat[plan[0]] = True
    flow = fire_flow(sim.arrival_times(ignitions, breaks), sim.spread_graph()).ravel()   # the next pick: flow after the first break
    assert plan[1] == int(np.argmax(np.where(tile.burnable.ravel() & ~breaks.ravel(), flow, -1)))
    # breaking where the fires run saves more burned area than breaking at random
    burned = lambda cells: sim.burn_maps(ignitions, np.isin(np.arange(tile.burnable.size), cells).reshape(tile.shape)).sum()
    random_plan = RandomPlanner().plan(tile, sim, scenario, 4, ignitions, np.random.default_rng(0))
    assert burned(plan) < burned(random_plan)
    assert np.array_equal(planner.plan(tile, sim, scenario, 2, ignitions, np.random.default_rng(0)), plan[:2])


def test_random_plans_are_averaged_over_seeds(setting):
    tile, scenario = setting["tile"], setting["scenario"]
    factory = lambda tile, scenario: TravelTimeSimulator(tile, scenario)   # noqa: E731
    raw = compare_planners([tile], {"no_treatment": NoTreatmentPlanner(), "random": RandomPlanner()}, factory,
                           scenario, [5, 10], seed=7, num_scoring_ignitions=6,
                           num_planning_ignitions=int(setting["cfg"].env.num_ignitions), random_seeds=3)
    sim = factory(tile, scenario)
    from firebreak_exp.planning.evaluation import SCORING_STREAM
    scoring = draw_ignitions(tile, 6, evaluation_rng(7, SCORING_STREAM, 0))
    plans = [RandomPlanner().plan(tile, sim, scenario, int(raw["num_breaks"][0, 1]), None,
                                  evaluation_rng(7, PLANNER_STREAM, 0, s)) for s in range(3)]
    assert len({tuple(p) for p in plans}) == 3                                 # the seeds differ
    for j in range(2):
        k = int(raw["num_breaks"][0, j])
        per_seed = [score_plan(sim, scoring, p[:k])[0] for p in plans]
        assert raw["burned_fraction"]["random"][0, j] == pytest.approx(np.mean(per_seed))
    summary = summarize(raw)
    assert summary["methods"]["no_treatment"]["R"] == [0.0, 0.0]
    assert summary["methods"]["no_treatment"]["R_ci"] == [[0.0, 0.0], [0.0, 0.0]]


def test_policy_planner_runs_the_mdp_greedily(setting):
    tile, scenario, sim = setting["tile"], setting["scenario"], setting["simulator"]
    agent = make_agent((len(CHANNELS), *tile.shape), channels=4, num_layers=2)
    ignitions = draw_ignitions(tile, 3, np.random.default_rng(1))
    planner = PolicyPlanner(agent, "firebreak_exp.environment.FuelBreakEnv")
    plan = planner.plan(tile, sim, scenario, 5, ignitions, np.random.default_rng(0))
    _valid_plan(plan, tile, 5)
    episode = planner.last_episode
    assert episode["length"] == 5
    assert episode["initial_burned_fraction"] == pytest.approx(sim.burned_fraction(ignitions).mean())
    breaks = np.zeros(tile.shape, bool)
    breaks.flat[plan] = True
    assert episode["final_burned_fraction"] == pytest.approx(sim.burned_fraction(ignitions, breaks).mean())
    # deterministic: the same agent and ignitions give the same plan
    assert np.array_equal(planner.plan(tile, sim, scenario, 5, ignitions, None), plan)
