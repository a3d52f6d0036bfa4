"""The replay buffer: observations stored compactly and rebuilt exactly."""
import numpy as np
from conftest import random_observations

from firebreak_exp.observation import BURN_PROBABILITY_CHANNEL, NUM_STATIC_CHANNELS
from firebreak_exp.rl.replay import ReplayBuffer

def test_replay_buffer_round_trips_observations_compactly():
    rng = np.random.default_rng(1)
    obs, next_obs = random_observations(5, rng), random_observations(5, rng)
    for o in (obs, next_obs):
        o[:, :NUM_STATIC_CHANNELS] = obs[:, :NUM_STATIC_CHANNELS]  # same tile in both states
        o[:, BURN_PROBABILITY_CHANNEL] = o[:, BURN_PROBABILITY_CHANNEL].astype(np.float16)
        o[:, :BURN_PROBABILITY_CHANNEL] = o[:, :BURN_PROBABILITY_CHANNEL].astype(np.float16)
    replay = ReplayBuffer(8, obs.shape[1:], seed=0)
    replay.add(obs, np.arange(5), np.arange(5), np.ones(5), next_obs, np.zeros(5, bool))
    assert len(replay) == 5
    assert replay.burn_probability.dtype == np.float16 and replay.fuel_breaks.dtype == bool
    np.testing.assert_array_equal(replay._observations(np.arange(5), 0), obs)
    np.testing.assert_array_equal(replay._observations(np.arange(5), 1), next_obs)
    # wraps around at capacity
    replay.add(obs, np.arange(5), np.arange(5), np.ones(5), next_obs, np.zeros(5, bool))
    assert len(replay) == 8 and replay.position == 2


def test_replay_samples_next_states_only_when_some_transition_bootstraps():
    rng = np.random.default_rng(2)
    obs, next_obs = random_observations(6, rng), random_observations(6, rng)
    next_obs[:, :NUM_STATIC_CHANNELS] = obs[:, :NUM_STATIC_CHANNELS]
    replay = ReplayBuffer(8, obs.shape[1:], seed=0)
    replay.add(obs, np.zeros(6), np.arange(6), np.ones(6), next_obs, np.ones(6, bool))
    batch = replay.sample(6, "cpu")                     # all terminal (Monte Carlo returns): no next states
    assert batch["next_obs"] is None and batch["dones"].tolist() == [1.0] * 6
    expected = replay._observations(batch["actions"].numpy(), 0)      # action i was stored in slot i
    np.testing.assert_allclose(batch["obs"].numpy(), expected)
    replay.dones[3] = False                              # one bootstrapping transition: next states come along
    batch = next(b for b in iter(lambda: replay.sample(6, "cpu"), None) if 3 in b["actions"].tolist())
    np.testing.assert_allclose(batch["next_obs"].numpy(), replay._observations(batch["actions"].numpy(), 1))
