"""The DQN learner: masked actions, the Double-DQN target by hand, compact replay."""
import numpy as np
import pytest
import torch

from firebreak_exp.agent import DQNAgent, ReplayBuffer, action_mask, masked_argmax
from firebreak_exp.environment import (BUDGET_CHANNEL, BURN_PROBABILITY_CHANNEL, CHANNELS, FIRE_FLOW_CHANNEL,
                                       FUEL_BREAK_CHANNEL, NON_BURNABLE_CHANNEL, NUM_STATIC_CHANNELS)

H = W = 4


def _obs(batch: int, rng) -> np.ndarray:
    obs = rng.normal(size=(batch, len(CHANNELS), H, W)).astype(np.float32)
    obs[:, NON_BURNABLE_CHANNEL] = rng.random((batch, H, W)) < 0.3
    obs[:, FUEL_BREAK_CHANNEL] = rng.random((batch, H, W)) < 0.3
    obs[:, BURN_PROBABILITY_CHANNEL] = rng.random((batch, H, W)).astype(np.float16)
    obs[:, FIRE_FLOW_CHANNEL] = rng.random((batch, H, W)).astype(np.float16)
    obs[:, BUDGET_CHANNEL] = rng.random((batch, 1, 1))
    return obs


def test_masked_cells_are_never_chosen():
    rng = np.random.default_rng(0)
    agent = DQNAgent((len(CHANNELS), H, W), channels=8, num_layers=2, seed=0)
    obs = _obs(64, rng)
    masks = action_mask(torch.as_tensor(obs)).numpy()
    for epsilon in (0.0, 0.5, 1.0):
        actions = agent.act(obs, masks, epsilon)
        assert masks[np.arange(64), actions].all()
    # even when the network prefers a masked cell
    q = torch.zeros(1, H * W)
    q[0, 0] = 100.0
    mask = torch.ones(1, H * W, dtype=torch.bool)
    mask[0, 0] = False
    assert masked_argmax(q, mask).item() != 0


class _FixedQ(torch.nn.Module):
    """A Q-network returning given values, to check the target arithmetic."""

    def __init__(self, values):
        super().__init__()
        self.values = torch.nn.Parameter(torch.as_tensor(values, dtype=torch.float32))

    def forward(self, obs):
        return self.values.expand(obs.shape[0], -1) * 1.0


def test_double_dqn_target_matches_hand_computation():
    agent = DQNAgent((len(CHANNELS), 1, 3), channels=4, num_layers=1, gamma=0.9, seed=0)
    online = [1.0, 5.0, 3.0]   # online argmax over valid next actions
    target = [10.0, 20.0, 30.0]
    agent.q_network, agent.target_network = _FixedQ(online), _FixedQ(target)
    agent.optimizer = torch.optim.SGD(agent.q_network.parameters(), lr=0.0)
    next_obs = torch.zeros(3, len(CHANNELS), 1, 3)
    next_obs[0, FUEL_BREAK_CHANNEL, 0, 1] = 1      # transition 0: action 1 masked -> a* = 2 -> 30
    next_obs[2, NON_BURNABLE_CHANNEL] = 1          # transition 2: no valid action -> next value 0
    batch = {"obs": torch.zeros(3, len(CHANNELS), 1, 3), "actions": torch.tensor([0, 1, 2]),
             "rewards": torch.tensor([0.5, 0.1, 0.2]), "next_obs": next_obs,
             "dones": torch.tensor([0.0, 0.0, 1.0])}
    # by hand: y0 = 0.5 + 0.9*30 = 27.5 (Q=1); y1 = 0.1 + 0.9*Q_target[a*=1]=20 -> 18.1 (Q=5); y2 = 0.2 (Q=3)
    expected_targets = torch.tensor([27.5, 18.1, 0.2])
    q_taken = torch.tensor([1.0, 5.0, 3.0])
    expected = torch.nn.functional.smooth_l1_loss(q_taken, expected_targets).item()
    assert agent.update(batch) == pytest.approx(expected, rel=1e-6)
    # plain DQN would take the target network's own masked max: 30 for transition 1 -> different loss
    agent.double_q = False
    plain = torch.nn.functional.smooth_l1_loss(q_taken, torch.tensor([27.5, 0.1 + 0.9 * 30, 0.2])).item()
    assert agent.update(batch) == pytest.approx(plain, rel=1e-6)


def test_replay_buffer_round_trips_observations_compactly():
    rng = np.random.default_rng(1)
    obs, next_obs = _obs(5, rng), _obs(5, rng)
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
