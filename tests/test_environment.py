"""FuelBreakEnv on real generated GeoTIFFs and real pyretechnics simulations."""
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from firebreak_exp import make_env
from firebreak_exp.observation import (action_mask_from_observation, BUDGET_CHANNEL, BURN_PROBABILITY_CHANNEL,
                                       FUEL_BREAK_CHANNEL)


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


def test_reward_is_measured_on_unseen_fires(make_cfg):
    """With env.reward_ignitions the burn-probability channel shows the scenario's fires and the reward is
    the drop in burned fraction over other fires drawn at reset, which the observation never shows."""
    env = make_env(make_cfg("simulator=travel_time", "env.reward_ignitions=6", "env.percentage_increment=0.5"))
    obs, info = env.reset(seed=11)
    assert env.hidden_ignitions.shape == (6, 2) and env.ignitions.shape == (env.num_ignitions, 2)
    simulator = env.simulator(env.tile_index)
    burnable = env.landscapes[env.tile_index].burnable.sum()

    def burned(ignitions, breaks, own_ignition_burns=False):
        maps = []
        for row, col in ignitions:
            mine = breaks.copy()
            if own_ignition_burns:
                mine[row, col] = False   # a break on a shown fire's ignition does not stop that fire
            maps.append(simulator.burn_maps(np.array([[row, col]]), mine)[0])
        maps = np.array(maps)
        return maps, maps.sum(axis=(1, 2)).mean() / burnable

    shown, _ = burned(env.ignitions, np.zeros(env.grid_shape, bool), True)
    assert np.allclose(obs[BURN_PROBABILITY_CHANNEL], shown.mean(axis=0))
    assert info["burned_fraction"] == pytest.approx(burned(env.hidden_ignitions, np.zeros(env.grid_shape, bool))[1])
    # first a shown fire's ignition point, then a hidden fire's: the shown fire burns on, the hidden one not
    width = env.grid_shape[1]
    for row, col in (env.ignitions[0], env.hidden_ignitions[0]):
        before = info["burned_fraction"]
        obs, reward, _, _, info = env.step(int(row * width + col))
        breaks = obs[FUEL_BREAK_CHANNEL] > 0
        assert reward == pytest.approx(before - burned(env.hidden_ignitions, breaks)[1])
        assert np.allclose(obs[BURN_PROBABILITY_CHANNEL], burned(env.ignitions, breaks, True)[0].mean(axis=0))
    assert obs[BURN_PROBABILITY_CHANNEL][tuple(env.ignitions[0])] > 0
    assert not burned(env.hidden_ignitions[:1], breaks)[0].any()
    # given ignitions replace the drawn ones and the hidden fires
    given = env.ignitions[:2]
    obs, info = env.reset(seed=11, options={"tile_index": env.tile_index, "ignitions": given})
    assert env.hidden_ignitions is None and np.array_equal(env.ignitions, given)
    assert np.allclose(obs[BURN_PROBABILITY_CHANNEL], burned(given, np.zeros(env.grid_shape, bool))[0].mean(axis=0))


def test_fire_flow_channel_is_in_hectares_on_any_tile_size(make_cfg):
    """The fire-flow channel is the shown fires' mean flow (burned cells reached through each cell) times the
    cell's area: its scale does not depend on the tile's size, so a network trained on small tiles reads
    large ones as it read its training tiles."""
    from firebreak_exp.fire.flows import fire_flows
    from firebreak_exp.observation import FIRE_FLOW_CHANNEL
    for grid_size in (25, 50):
        env = make_env(make_cfg("simulator=travel_time", f"landscape.grid_size={grid_size}"))
        obs, _ = env.reset(seed=2)
        tile = env.landscapes[env.tile_index]
        simulator = env.simulator(env.tile_index)
        flows = []
        for row, col in env.ignitions:
            breaks = np.zeros(env.grid_shape, bool)
            flows.append(fire_flows(simulator.arrival_times(np.array([[row, col]]), breaks),
                                    simulator.spread_graph())[0])
        assert tile.cell_hectares == pytest.approx(0.09)   # 30 m cells
        np.testing.assert_allclose(obs[FIRE_FLOW_CHANNEL], np.mean(flows, axis=0) * 0.09, rtol=1e-5, atol=1e-6)


def test_a_planning_episode_updates_the_fires_after_every_break(make_cfg):
    """Planners read the fires under all their breaks on any tile size, whatever the training increment
    (here several breaks between updates) would give there."""
    from firebreak_exp.environment import FuelBreakEnv
    env = make_env(make_cfg("simulator=travel_time", "landscape.grid_size=50"))
    env.reset(seed=0)
    tile, simulator = env.landscapes[env.tile_index], env.simulator(env.tile_index)
    assert env.evaluation_interval > 1
    ignitions = env.ignitions[:4]
    planning, obs, info = FuelBreakEnv.planning_episode(tile, simulator, env.scenario, 6, ignitions)
    assert planning.evaluation_interval == 1 and planning.budget == 6
    batched, _, _ = FuelBreakEnv.planning_episode(tile, simulator, env.scenario, 6, ignitions, breaks_per_evaluation=3)
    assert batched.evaluation_interval == 3
    breaks = np.zeros(tile.shape, bool)
    cell = int(np.argmax(np.where(info["action_mask"], obs[BURN_PROBABILITY_CHANNEL].ravel(), -1)))
    obs, reward, _, _, info = planning.step(cell)
    breaks.flat[cell] = True
    expected = simulator.burn_maps(ignitions, breaks).mean(axis=0)
    assert np.allclose(obs[BURN_PROBABILITY_CHANNEL], expected)
    assert reward > 0
