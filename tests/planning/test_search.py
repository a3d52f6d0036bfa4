"""Decision-time search (policy_search, flow_search) on real tiles and simulations, and the summary across
checkpoints of an evaluation multirun."""
import numpy as np
import pytest

from firebreak_exp.environment import FuelBreakEnv
from firebreak_exp.observation import CHANNELS
from firebreak_exp.planning.evaluation import draw_ignitions, evaluation_rng, num_breaks_for
from firebreak_exp.commands.evaluation_sweep import mean_interval, summarize_checkpoints
from firebreak_exp.factory import build_landscapes, env_factory
from firebreak_exp.fire.simulator import FireSimulator
from firebreak_exp.planning.search import (FlowSearchPlanner, LocalSearchPlanner, PolicySearchPlanner, improve_by_swaps,
                                         sample_cells)
from conftest import make_agent

ENV = "firebreak_exp.environment.FuelBreakEnv"


@pytest.fixture
def setting(make_cfg):
    """A smoke tile, its travel-time simulator, scenario, planning ignitions and a 10 % budget."""
    cfg = make_cfg("simulator=travel_time")
    kwargs = env_factory(cfg).keywords
    tile = build_landscapes(cfg).train[0]
    simulator = kwargs["simulator_factory"](tile=tile, scenario=kwargs["scenario"])
    ignitions = draw_ignitions(tile, 6, evaluation_rng(0, 1, 0))
    return {"tile": tile, "simulator": simulator, "scenario": kwargs["scenario"], "ignitions": ignitions,
            "num_breaks": num_breaks_for(10.0, int(tile.burnable.sum()))}


def shown_burned_fraction(setting, cells) -> float:
    """The shown fires' burned fraction after breaking ``cells`` in the environment (as the search measures)."""
    tile = setting["tile"]
    env = FuelBreakEnv([tile], lambda tile, scenario: setting["simulator"], setting["scenario"],
                       budget_percent=100.0 * len(cells) / tile.burnable.sum(), percentage_increment=100.0,
                       num_ignitions=len(setting["ignitions"]), reward_ignitions=None)
    env.reset(seed=0, options={"tile_index": 0, "ignitions": setting["ignitions"]})
    for cell in cells:
        env.step(int(cell))
    return env.burned_fraction


def plan(planner, setting, seed=0):
    return planner.plan(setting["tile"], setting["simulator"], setting["scenario"], setting["num_breaks"],
                        setting["ignitions"], np.random.default_rng(seed))


def test_sample_cells_keeps_to_valid_cells_and_greedy_rows_take_the_best():
    rng = np.random.default_rng(0)
    scores = np.array([[5.0, 1.0, 9.0, 2.0], [5.0, 1.0, 9.0, 2.0]])
    masks = np.array([[True, True, False, True], [True, True, False, True]])
    greedy = np.array([True, False])
    draws = np.array([sample_cells(scores, masks, 0.5, greedy, rng) for _ in range(300)])
    assert (draws[:, 0] == 0).all()                     # the masked 9.0 is never taken
    assert set(draws[:, 1]) <= {0, 1, 3} and len(set(draws[:, 1])) == 3
    counts = np.bincount(draws[:, 1], minlength=4)
    assert counts[0] > counts[3] > counts[1]             # higher score, drawn more often
    cold = np.array([sample_cells(scores, masks, 1e-4, greedy, rng) for _ in range(50)])
    assert (cold == 0).all()


def test_flow_search_keeps_the_best_rollout_on_the_shown_fires(setting):
    one = FlowSearchPlanner(rollouts=1, temperature=0.02, swap_candidates=0, swap_passes=0, env_class=ENV)
    many = FlowSearchPlanner(rollouts=6, temperature=0.3, swap_candidates=0, swap_passes=0, env_class=ENV)
    single, best = plan(one, setting), plan(many, setting)
    assert len(set(best.tolist())) == len(best) == setting["num_breaks"]
    assert setting["tile"].burnable.ravel()[best].all()
    burned = many.last_search["burned_fraction"]
    assert len(burned) == 6 and burned[many.last_search["chosen"]] == burned.min()
    assert burned[0] == pytest.approx(one.last_search["burned_fraction"][0])   # rollout 0: the guide's own plan
    assert shown_burned_fraction(setting, best) == pytest.approx(burned.min())
    assert shown_burned_fraction(setting, best) <= shown_burned_fraction(setting, single) + 1e-12
    assert len({round(b, 12) for b in burned}) > 1      # the sampled rollouts differ
    assert np.array_equal(best, plan(many, setting))    # seeded: the same plan again


def test_policy_search_with_one_rollout_is_the_policy(setting):
    from firebreak_exp.planning.planners import PolicyPlanner
    agent = make_agent((len(CHANNELS), *setting["tile"].shape), channels=4, num_layers=2)
    greedy = plan(PolicyPlanner(agent, ENV), setting)
    assert np.array_equal(plan(PolicySearchPlanner(agent, rollouts=1, temperature=0.02, swap_candidates=0, swap_passes=0, env_class=ENV), setting), greedy)
    searched = PolicySearchPlanner(agent, rollouts=5, temperature=0.3, swap_candidates=0, swap_passes=0, env_class=ENV)
    cells = plan(searched, setting)
    assert shown_burned_fraction(setting, cells) <= shown_burned_fraction(setting, greedy) + 1e-12


def test_search_settings_are_checked():
    with pytest.raises(ValueError, match="rollouts"):
        FlowSearchPlanner(rollouts=0, temperature=0.02, swap_candidates=0, swap_passes=0, env_class=ENV)
    with pytest.raises(ValueError, match="temperature"):
        FlowSearchPlanner(rollouts=8, temperature=0.0, swap_candidates=0, swap_passes=0, env_class=ENV)
    with pytest.raises(ValueError, match="swap_passes=-1: expected an integer >= 0"):
        FlowSearchPlanner(rollouts=8, temperature=0.02, swap_candidates=4, swap_passes=-1, env_class=ENV)


class FromScratch(FireSimulator):
    """The travel-time simulator without its incremental search: every fire burned from scratch."""

    def __init__(self, simulator):
        super().__init__(simulator.tile, simulator.scenario)
        self.inner = simulator

    def _arrival(self, ignitions, breaks):
        return self.inner._arrival(ignitions, breaks)

    def spread_graph(self):
        return self.inner.spread_graph()


@pytest.fixture
def crowded(setting):
    """The smoke tile with 32 planning fires (the environment's default count) and a 10 % budget."""
    return {**setting, "ignitions": draw_ignitions(setting["tile"], 32, evaluation_rng(0, 1, 0))}


def test_swaps_count_what_burning_every_fire_counts_and_never_burn_more(crowded):
    """The swaps score a candidate by burning again only the fires that reach it (continuing their search
    on the travel-time simulator): the plan and counts equal those of a simulator that burns every fire
    from scratch, and the count is the plan's. Every swap kept lowers both halves of the fires; a break no
    fire reaches stays where it is; no break is moved onto an ignition cell."""
    from firebreak_exp.planning.evaluation import breaks_map
    from firebreak_exp.planning.planners import FireFlowPlanner
    simulator, ignitions, tile = crowded["simulator"], crowded["ignitions"], crowded["tile"]
    start = plan(FireFlowPlanner(), crowded).tolist()
    maps = simulator.burn_maps(ignitions, breaks_map(start, simulator.shape))
    idle = int(np.flatnonzero(tile.burnable.ravel() & ~maps.any(axis=0).ravel()
                              & ~breaks_map(start, simulator.shape).ravel())[0])
    start[-1] = idle                                   # a break no planning fire reaches
    improved, stats = improve_by_swaps(start, tile, simulator, ignitions, candidates=6, max_passes=2)
    again, again_stats = improve_by_swaps(start, tile, FromScratch(simulator), ignitions, 6, 2)
    assert improved == again and stats == again_stats
    assert stats["swaps"] > 0 and len(set(improved)) == len(improved) == len(start)
    assert idle in improved
    ignition_cells = set((ignitions[:, 0] * tile.shape[1] + ignitions[:, 1]).tolist())
    assert not ignition_cells & (set(improved) - set(start))
    per_fire = {name: simulator.burn_maps(ignitions, breaks_map(cells, simulator.shape)).sum(axis=(1, 2))
                for name, cells in (("start", start), ("improved", improved))}
    assert per_fire["improved"].sum() == stats["burned_cells"] < stats["initial_burned_cells"] == per_fire["start"].sum()
    for half in (slice(0, None, 2), slice(1, None, 2)):
        assert per_fire["improved"][half].sum() < per_fire["start"][half].sum()


def test_search_with_swaps_burns_no_more_than_the_rollout_it_kept(crowded):
    sampled = FlowSearchPlanner(rollouts=4, temperature=0.3, swap_candidates=0, swap_passes=0, env_class=ENV)
    swapped = FlowSearchPlanner(rollouts=4, temperature=0.3, swap_candidates=6, swap_passes=1, env_class=ENV)
    before, after = plan(sampled, crowded), plan(swapped, crowded)
    assert swapped.last_search["chosen"] == sampled.last_search["chosen"]
    swaps = swapped.last_search["swaps"]
    assert swaps["passes"] == 1 and swaps["swaps"] > 0
    assert shown_burned_fraction(crowded, after) < shown_burned_fraction(crowded, before)
    assert len(set(after.tolist())) == len(after) == crowded["num_breaks"]


def evaluation(r_flow, r_greedy, r_policy, tiles=4, seed=0):
    """An evaluation.json-like result on ``tiles`` tiles whose per-tile BA gives exactly these R."""
    rng = np.random.default_rng(seed)
    untreated = rng.uniform(0.3, 0.6, tiles)
    methods, per_tile = {}, {}
    for name, r in (("flow", r_flow), ("greedy", r_greedy), ("policy", r_policy)):
        burned = untreated * (1 - r) * rng.uniform(0.9, 1.1, tiles)
        burned *= (1 - r) * untreated.mean() / burned.mean()
        methods[name] = {"R": [1 - burned.mean() / untreated.mean()], "R_ci": [[0, 1]],
                         "burned_fraction": [burned.mean()], "plan_seconds": [0.1]}
        per_tile[name] = burned[:, None].tolist()
    return {"budgets": [5.0], "methods": methods, "burned_fraction_untreated": untreated.tolist(),
            "burned_fraction_per_tile": per_tile, "checkpoint": f"ckpt{seed}"}


def test_summary_across_checkpoints_gives_mean_worst_interval_and_ratios():
    runs = [evaluation(0.50, 0.40, 0.55, seed=0), evaluation(0.40, 0.44, 0.44, seed=1),
            evaluation(0.50, 0.30, 0.45, seed=2)]
    summary = summarize_checkpoints(runs)
    policy = summary["methods"]["policy"]
    assert summary["baselines"] == ["flow", "greedy"] and summary["checkpoints"] == ["ckpt0", "ckpt1", "ckpt2"]
    assert policy["R_mean"][0] == pytest.approx((0.55 + 0.44 + 0.45) / 3)
    assert policy["R_worst"][0] == pytest.approx(0.44)
    assert policy["ratio_mean"][0] == pytest.approx((0.55 / 0.50 + 0.44 / 0.44 + 0.45 / 0.50) / 3)
    assert policy["ratio_worst"][0] == pytest.approx(0.9)
    lo, hi = policy["R_mean_ci"][0]
    assert lo < policy["R_mean"][0] < hi and hi - lo < 0.5
    assert summary["methods"]["flow"]["ratio_worst"][0] == pytest.approx(0.40 / 0.44)


def test_mean_interval_narrows_with_agreeing_tiles():
    untreated = [np.full(8, 0.5)] * 3
    assert mean_interval([np.full(8, 0.25)] * 3, untreated) == pytest.approx((0.5, 0.5))
    wide = mean_interval([np.linspace(0.1, 0.4, 8)] * 3, untreated)
    assert wide[0] < 0.5 < wide[1]


@pytest.mark.parametrize("start", ["greedy", "flow"])
def test_local_search_never_burns_more_than_its_start_on_the_planning_fires(setting, start):
    from firebreak_exp.planning.planners import FireFlowPlanner, GreedyPlanner
    from firebreak_exp.planning.evaluation import breaks_map
    start_planner = {"greedy": GreedyPlanner(exclude_ignitions=True, max_candidates=None),
                     "flow": FireFlowPlanner()}[start]
    greedy = plan(start_planner, setting)
    ceiling = LocalSearchPlanner(start_planner, candidates=6, max_passes=2)
    cells = plan(ceiling, setting)
    assert len(set(cells.tolist())) == len(cells) == setting["num_breaks"]
    simulator, ignitions = setting["simulator"], setting["ignitions"]
    burned = int(simulator.burn_maps(ignitions, breaks_map(cells, simulator.shape)).sum())
    assert burned == ceiling.last_search["burned_cells"]
    assert burned <= int(simulator.burn_maps(ignitions, breaks_map(greedy, simulator.shape)).sum())
    assert ceiling.last_search["initial_burned_cells"] >= burned


def test_planners_run_the_environment_of_the_env_group(make_cfg, setting):
    """A user's environment (``env._target_``) is the MDP the policy and the searches plan through, as it is
    the one they trained in; a class that is no FuelBreakEnv is refused naming the key."""
    from custom_env import CountingEnv
    from firebreak_exp.planning.evaluation import build_planners
    cfg = make_cfg("env._target_=custom_env.CountingEnv")
    agent = make_agent((len(CHANNELS), *setting["tile"].shape), channels=4, num_layers=2)
    planners = build_planners(cfg.planners, ["policy", "policy_search", "flow_search"], agent)
    for name, episodes in (("policy", 1), ("policy_search", 4), ("flow_search", 4)):
        before = CountingEnv.episodes
        plan(planners[name], setting)
        assert CountingEnv.episodes - before == episodes, name
    with pytest.raises(ValueError, match="env_class=numpy.ndarray: expected FuelBreakEnv or a subclass"):
        FlowSearchPlanner(rollouts=2, temperature=0.02, swap_candidates=0, swap_passes=0, env_class="numpy.ndarray")


def test_the_hindsight_reference_plans_on_the_scoring_fires(setting):
    """The hindsight planner is shown the fires it is scored on: its local search burns no more of them than
    fire flow planned on those same fires, and other planners still see the planning fires."""
    from firebreak_exp.planning.evaluation import SCORING_STREAM, compare_planners, score_plan
    from firebreak_exp.planning.planners import FireFlowPlanner, NoTreatmentPlanner
    from firebreak_exp.planning.search import HindsightPlanner

    class Recording(FireFlowPlanner):
        def plan(self, tile, simulator, scenario, num_breaks, ignitions, rng):
            self.seen = np.asarray(ignitions).copy()
            return super().plan(tile, simulator, scenario, num_breaks, ignitions, rng)

    tile, simulator, scenario = setting["tile"], setting["simulator"], setting["scenario"]
    shown, hindsight = Recording(), HindsightPlanner(LocalSearchPlanner(Recording(), candidates=6, max_passes=2))
    raw = compare_planners([tile], {"no_treatment": NoTreatmentPlanner(), "flow": shown, "hindsight": hindsight},
                           lambda tile, scenario: simulator, scenario, [10], seed=3, num_scoring_ignitions=8,
                           num_planning_ignitions=6)
    scoring = draw_ignitions(tile, 8, evaluation_rng(3, SCORING_STREAM, 0))
    assert np.array_equal(hindsight.planner.start.seen, scoring)
    assert len(shown.seen) == 6 and not np.array_equal(shown.seen[:6], scoring[:6])
    flow_in_hindsight = FireFlowPlanner().plan(tile, simulator, scenario, int(raw["num_breaks"][0, 0]), scoring, None)
    reference = raw["burned_fraction"]["hindsight"][0, 0]
    assert reference <= score_plan(simulator, scoring, flow_in_hindsight)[0]
    assert reference < raw["untreated"][0]
