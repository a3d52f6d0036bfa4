"""FuelBreakEnv and VectorizedFireEnv on real generated GeoTIFFs and real pyretechnics simulations."""
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from firebreak_exp import make_env, make_vector_env
from firebreak_exp.environment import (BUDGET_CHANNEL, BURN_PROBABILITY_CHANNEL, FUEL_BREAK_CHANNEL,
                                       action_mask_from_observation)


@pytest.mark.parametrize("simulator", ["pyretechnics", "travel_time"])
def test_check_env_passes(make_cfg, simulator):
    env = make_env(make_cfg(f"simulator={simulator}"))
    check_env(env, skip_render_check=True)


def test_next_state_carries_the_new_break(make_cfg):
    env = make_env(make_cfg("simulator=pyretechnics"))
    obs, info = env.reset(seed=3)
    action = int(np.flatnonzero(info["action_mask"])[0])
    next_obs, _, _, _, next_info = env.step(action)
    row, col = divmod(action, obs.shape[2])
    assert obs[FUEL_BREAK_CHANNEL, row, col] == 0
    assert next_obs[FUEL_BREAK_CHANNEL, row, col] == 1
    assert next_obs[FUEL_BREAK_CHANNEL].sum() == obs[FUEL_BREAK_CHANNEL].sum() + 1
    assert next_obs[BUDGET_CHANNEL, 0, 0] < obs[BUDGET_CHANNEL, 0, 0]
    assert not next_info["action_mask"][action]
    assert np.array_equal(action_mask_from_observation(next_obs), next_info["action_mask"])


def test_episode_return_is_total_reduction_and_ends_on_budget(make_cfg):
    env = make_env(make_cfg())
    obs, info = env.reset(seed=5)
    initial = info["burned_fraction"]
    total, steps, terminated = 0.0, 0, False
    while not terminated:
        action = int(np.flatnonzero(info["action_mask"])[steps % info["action_mask"].sum()])
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        steps += 1
        assert not truncated
    assert steps == env.budget
    assert total == pytest.approx(initial - info["burned_fraction"], abs=1e-9)
    assert info["episode"]["return"] == pytest.approx(total)
    # the burn probability channel is the mean of this episode's fires under the breaks
    assert obs[BURN_PROBABILITY_CHANNEL].max() <= 1


def test_masked_action_places_no_break(make_cfg):
    env = make_env(make_cfg())
    obs, info = env.reset(seed=1)
    masked = np.flatnonzero(~info["action_mask"])
    if len(masked) == 0:  # every cell burnable: break one, then step on it again
        first = int(np.flatnonzero(info["action_mask"])[0])
        obs, _, _, _, info = env.step(first)
        masked = np.array([first])
    breaks_before = obs[FUEL_BREAK_CHANNEL].sum()
    obs, reward, _, _, info = env.step(int(masked[0]))
    assert info["invalid_action"]
    assert obs[FUEL_BREAK_CHANNEL].sum() == breaks_before


def _rollout(vec_env, seed: int, steps: int):
    obs, infos = vec_env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    trace = [obs.copy()]
    for _ in range(steps):
        actions = [rng.choice(np.flatnonzero(mask)) for mask in infos["action_mask"]]
        obs, rewards, terminations, truncations, infos = vec_env.step(actions)
        trace += [obs.copy(), rewards.copy(), terminations.copy(), infos["final_obs"].copy()]
    return trace, vec_env.get_episode_stats()


@pytest.mark.slow
def test_backends_give_identical_transitions(make_cfg):
    """Sequential, thread and process backends: same seed and actions, bit-identical transitions."""
    cfg = make_cfg("parallel.num_envs=3", "simulator=pyretechnics")
    traces = {}
    for method in ("sequential", "threading", "process"):
        with make_vector_env(cfg, method=method, max_workers=2) as vec_env:
            traces[method] = _rollout(vec_env, seed=11, steps=12)
    reference, reference_stats = traces["sequential"]
    assert reference_stats["total_episodes"] > 0  # autoreset happened within the rollout
    for method, (trace, stats) in traces.items():
        assert len(trace) == len(reference)
        for a, b in zip(trace, reference):
            np.testing.assert_array_equal(a, b, err_msg=method)
        assert stats == reference_stats


def test_process_workers_burn_each_others_fires(make_cfg):
    """pyretechnics on the process backend: an evaluating environment's fires are spread over all workers
    (FireExchange; test_backends_give_identical_transitions checks the numbers); travel-time fires, which
    their environment's search keeps, stay home, and share_fires=False keeps every fire home."""
    counts = {}
    for simulator, share in (("pyretechnics", True), ("pyretechnics", False), ("travel_time", True)):
        cfg = make_cfg("parallel.num_envs=2", f"simulator={simulator}")
        with make_vector_env(cfg, method="process", max_workers=2, share_fires=share) as vec_env:
            _rollout(vec_env, seed=2, steps=4)
            workers = vec_env.fires_shared()
        assert len(workers) == 2
        counts[simulator, share] = [sum(w[key] for w in workers) for key in ("burned_for_others", "burned_by_others")]
    burned_for_others, burned_by_others = counts["pyretechnics", True]
    assert burned_for_others == burned_by_others > 0
    assert counts["pyretechnics", False] == [0, 0]
    assert counts["travel_time", True] == [0, 0]


def test_fire_exchange_queues_the_longest_fires_first(monkeypatch):
    """A worker asking again for fires it has burned queues them longest first (by their last burn's seconds:
    here a clock that each fire advances by its ignition row), and the arrival times come back in the order
    asked."""
    import multiprocessing as mp
    from firebreak_exp import vectorization

    offset = [0.0]
    clock = vectorization.time.perf_counter
    monkeypatch.setattr(vectorization.time, "perf_counter", lambda: clock() + offset[0])
    burned = []

    class RowSecondsSimulator:
        fires_simulated = 0

        def arrival_times(self, ignitions, fuel_breaks=None):
            row = int(ignitions[0, 0])
            burned.append(row)
            offset[0] += row
            self.fires_simulated += 1
            return np.full((1, 2, 2), float(row))

    context = mp.get_context("spawn")
    exchange = vectorization.FireExchange(0, context.Queue(), [context.Queue()])
    exchange.wrap(lambda tile, scenario: RowSecondsSimulator(), ["tile"], None)
    ignitions = np.array([[1, 0], [3, 0], [2, 0], [5, 0]])
    for _ in range(2):
        arrival, fires = exchange.burn(0, ignitions, None)
        assert fires == 4 and arrival[:, 0, 0].tolist() == [1.0, 3.0, 2.0, 5.0]
    assert burned == [1, 3, 2, 5, 5, 3, 2, 1]


def test_environments_of_one_process_share_their_tiles_simulators(make_cfg):
    """Simulators keep no episode state: a vector env's environments build each tile's once between them and
    step exactly as environments that build their own."""
    from firebreak_exp.environment import FuelBreakEnv
    from firebreak_exp.factory import build_landscapes, env_kwargs
    from firebreak_exp.vectorization import VectorizedFireEnv

    class OwnSimulators(VectorizedFireEnv):
        def create_environment(self, index):
            return FuelBreakEnv(self.landscapes, **self.env_kwargs)

    cfg = make_cfg("parallel.num_envs=3")
    tiles = build_landscapes(cfg).train
    with make_vector_env(cfg) as shared, OwnSimulators(tiles, 3, env_kwargs=env_kwargs(cfg)) as own:
        shared_trace, shared_stats = _rollout(shared, seed=4, steps=14)
        own_trace, own_stats = _rollout(own, seed=4, steps=14)
        visited = {int(t) for t in shared.call("__getattribute__", "tile_index")}
        for tile_index in visited:
            assert len({id(s) for s in shared.call("simulator", tile_index)}) == 1
            assert len({id(s) for s in own.call("simulator", tile_index)}) == 3
    assert shared_stats["total_episodes"] > 0
    for a, b in zip(shared_trace, own_trace, strict=True):
        np.testing.assert_array_equal(a, b)
    assert shared_stats == own_stats


def test_vector_env_validates_arguments(make_cfg):
    cfg = make_cfg()
    with pytest.raises(ValueError, match="num_envs"):
        make_vector_env(cfg, num_envs=0)
    with pytest.raises(ValueError, match="unknown parallel backend 'gpu'"):
        make_vector_env(cfg, method="gpu")


def test_reward_is_measured_on_unseen_fires(make_cfg):
    """With env.reward_ignitions the burn-probability channel shows the scenario's fires and the reward is
    the drop in burned fraction over other fires drawn at reset, which the observation never shows."""
    env = make_env(make_cfg("simulator=travel_time", "env.reward_ignitions=6", "env.percentage_increment=0.5"))
    obs, info = env.reset(seed=11)
    assert env.hidden_ignitions.shape == (6, 2) and env.ignitions.shape == (env.scenario.num_ignitions, 2)
    simulator = env.simulator(env.tile_index)
    burnable = env.landscapes[env.tile_index].burnable.sum()

    def burned(ignitions, breaks):
        breaks = breaks.copy()
        breaks[ignitions[:, 0], ignitions[:, 1]] = False   # a break on an ignition does not stop that fire
        maps = simulator.burn_maps(ignitions, breaks)
        return maps, maps.sum(axis=(1, 2)).mean() / burnable

    shown, _ = burned(env.ignitions, np.zeros(env.grid_shape, bool))
    assert np.allclose(obs[BURN_PROBABILITY_CHANNEL], shown.mean(axis=0))
    assert info["burned_fraction"] == pytest.approx(burned(env.hidden_ignitions, np.zeros(env.grid_shape, bool))[1])
    action = int(np.flatnonzero(info["action_mask"])[0])
    before = info["burned_fraction"]
    obs, reward, _, _, info = env.step(action)
    breaks = obs[FUEL_BREAK_CHANNEL] > 0
    assert reward == pytest.approx(before - burned(env.hidden_ignitions, breaks)[1])
    assert np.allclose(obs[BURN_PROBABILITY_CHANNEL], burned(env.ignitions, breaks)[0].mean(axis=0))
    # given ignitions replace the drawn ones and the hidden fires
    given = env.ignitions[:2]
    obs, info = env.reset(seed=11, options={"tile_index": env.tile_index, "ignitions": given})
    assert env.hidden_ignitions is None and np.array_equal(env.ignitions, given)
    assert np.allclose(obs[BURN_PROBABILITY_CHANNEL], burned(given, np.zeros(env.grid_shape, bool))[0].mean(axis=0))


def test_static_channels_reuse_the_simulators_spread_rates(make_cfg):
    from firebreak_exp.environment import static_channels
    from firebreak_exp.simulation import TravelTimeSimulator, directional_spread_rates

    env = make_env(make_cfg())
    tile, scenario = env.landscapes[0], env.scenario
    simulator = TravelTimeSimulator(tile, scenario)             # computed 32 azimuths for its graph
    assert set(simulator._spread_rates) >= {(90.0, "behave"), (45.0, "behave")}
    np.testing.assert_array_equal(simulator.spread_rates([90.0, 45.0]),
                                  directional_spread_rates(tile, scenario, [90.0, 45.0]))
    np.testing.assert_array_equal(static_channels(tile, scenario, simulator), static_channels(tile, scenario))
    other = TravelTimeSimulator(env.landscapes[1], scenario)    # another tile's rates are never borrowed
    np.testing.assert_array_equal(static_channels(tile, scenario, other), static_channels(tile, scenario))
