"""The DQN learner: masked actions, the Double-DQN target by hand, n-step returns, compact replay."""
import numpy as np
import pytest
import torch

from firebreak_exp.agent import DQNAgent, NStepReturns, ReplayBuffer, action_mask, masked_argmax
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


def test_terminal_transitions_are_not_bootstrapped_and_their_next_states_not_evaluated():
    agent = DQNAgent((len(CHANNELS), 1, 3), channels=4, num_layers=1, gamma=0.9, seed=0)
    agent.q_network, agent.target_network = _FixedQ([1.0, 5.0, 3.0]), _FixedQ([10.0, 20.0, 30.0])
    agent.optimizer = torch.optim.SGD(agent.q_network.parameters(), lr=0.0)
    seen = []
    agent.target_network.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    batch = {"obs": torch.zeros(3, len(CHANNELS), 1, 3), "actions": torch.tensor([0, 1, 2]),
             "rewards": torch.tensor([0.5, 0.1, 0.2]), "next_obs": torch.zeros(3, len(CHANNELS), 1, 3),
             "dones": torch.tensor([1.0, 0.0, 1.0])}
    # y = (0.5, 0.1 + 0.9 * 20, 0.2): the done rows' valid next states add nothing
    expected = torch.nn.functional.smooth_l1_loss(torch.tensor([1.0, 5.0, 3.0]), torch.tensor([0.5, 18.1, 0.2]))
    assert agent.update(batch) == pytest.approx(expected.item(), rel=1e-6) and seen == [1]
    batch["dones"] = torch.ones(3)                 # all terminal: no next state is evaluated at all
    expected = torch.nn.functional.smooth_l1_loss(torch.tensor([1.0, 5.0, 3.0]), torch.tensor([0.5, 0.1, 0.2]))
    assert agent.update(batch) == pytest.approx(expected.item(), rel=1e-6) and seen == [1]


def test_expert_margin_loss_matches_hand_computation():
    agent = DQNAgent((len(CHANNELS), 1, 3), channels=4, num_layers=1, gamma=0.0, seed=0,
                     expert_loss_weight=0.5, expert_margin=0.8)
    agent.q_network, agent.target_network = _FixedQ([1.0, 5.0, 3.0]), _FixedQ([0.0, 0.0, 0.0])
    agent.optimizer = torch.optim.SGD(agent.q_network.parameters(), lr=0.0)
    obs = torch.zeros(2, len(CHANNELS), 1, 3)
    obs[1, FUEL_BREAK_CHANNEL, 0, 1] = 1            # demonstration 1: cell 1 is already broken
    batch = {"obs": obs, "actions": torch.tensor([0, 2]), "rewards": torch.tensor([1.0, 3.0]),
             "next_obs": torch.zeros(2, len(CHANNELS), 1, 3), "dones": torch.tensor([1.0, 1.0]),
             "expert": torch.tensor([True, True])}
    td = torch.nn.functional.smooth_l1_loss(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 3.0])).item()  # 0
    # demo 0 (a_E = 0): max(1, 5 + 0.8, 3 + 0.8) - 1 = 4.8; demo 1 (a_E = 2, cell 1 masked): max(1.8, 3) - 3 = 0
    assert agent.update(batch) == pytest.approx(td + 0.5 * (4.8 + 0.0) / 2)
    batch["expert"] = torch.tensor([False, False])   # no demonstrations in the batch: TD loss only
    assert agent.update(batch) == pytest.approx(td)


def test_n_step_returns_sum_rewards_and_flush_at_episode_end():
    # two environments, n = 3, gamma = 0.5; env 0 ends after 4 steps, env 1 after 2
    n_step = NStepReturns(num_envs=2, n_step=3, gamma=0.5)
    obs = lambda t: np.full((2, 1, 1, 1), t, np.float32)           # the state's value is its time step
    rewards = [(1.0, 10.0), (2.0, 20.0), (4.0, 1.0), (8.0, 2.0)]
    dones = [(False, False), (False, True), (False, False), (True, False)]
    emitted = []
    for t, (reward, done) in enumerate(zip(rewards, dones)):
        if t == 2:   # checkpoint mid-stream: the open steps survive a round trip
            restored = NStepReturns(num_envs=2, n_step=3, gamma=0.5)
            restored.load_state_dict({k: v for k, v in n_step.state_dict().items()})
            n_step = restored
        o, tiles, actions, returns, next_o, d = n_step.push(obs(t), [7, 8], [t, t], reward, obs(t + 1), done)
        emitted += [(int(a), int(o_[0, 0, 0]), float(r), int(n_[0, 0, 0]), bool(x))
                    for a, o_, r, n_, x in zip(actions, o, returns, next_o, d)]
    # (action, state step, return, next state step, done)
    assert sorted(emitted) == sorted([
        (0, 0, 10.0 + 0.5 * 20.0, 2, True), (1, 1, 20.0, 2, True),          # env 1's episode flushed at t = 1
        (0, 0, 1.0 + 0.5 * 2.0 + 0.25 * 4.0, 3, False),                      # env 0: a full 3-step return
        (1, 1, 2.0 + 0.5 * 4.0 + 0.25 * 8.0, 4, True),                       # env 0's end flushes the rest
        (2, 2, 4.0 + 0.5 * 8.0, 4, True), (3, 3, 8.0, 4, True)])
    # env 1's second episode (steps 2 and 3) is still open: 2 pending steps, nothing emitted for it
    assert [len(p) for p in n_step.pending] == [0, 2]
    # the learner bootstraps non-terminal n-step transitions with gamma ** n
    agent = DQNAgent((len(CHANNELS), 1, 3), channels=4, num_layers=1, gamma=0.5, n_step=3, seed=0)
    agent.q_network, agent.target_network = _FixedQ([0.0, 0.0, 0.0]), _FixedQ([8.0, 8.0, 8.0])
    agent.optimizer = torch.optim.SGD(agent.q_network.parameters(), lr=0.0)
    batch = {"obs": torch.zeros(1, len(CHANNELS), 1, 3), "actions": torch.tensor([0]), "rewards": torch.tensor([0.0]),
             "next_obs": torch.zeros(1, len(CHANNELS), 1, 3), "dones": torch.tensor([0.0])}
    assert agent.update(batch) == pytest.approx(torch.nn.functional.smooth_l1_loss(
        torch.tensor([0.0]), torch.tensor([0.125 * 8.0])).item())


def test_monte_carlo_returns_run_to_the_episode_end_and_are_never_bootstrapped():
    returns = NStepReturns(num_envs=1, n_step=None, gamma=0.5)
    obs = lambda t: np.full((1, 1, 1, 1), t, np.float32)
    for t, reward in enumerate((1.0, 2.0, 4.0)):
        out = returns.push(obs(t), [0], [t], [reward], obs(t + 1), [t == 2])
        assert len(out[2]) == (3 if t == 2 else 0)            # nothing leaves before the episode ends
    actions, rewards, next_obs, dones = out[2], out[3], out[4], out[5]
    assert actions.tolist() == [0, 1, 2] and rewards.tolist() == [1.0 + 1.0 + 1.0, 2.0 + 2.0, 4.0]
    assert dones.all() and (next_obs == 3).all()
    agent = DQNAgent((len(CHANNELS), 1, 3), channels=4, num_layers=1, gamma=0.5, n_step=None, seed=0)
    agent.q_network, agent.target_network = _FixedQ([0.0, 0.0, 0.0]), _FixedQ([8.0, 8.0, 8.0])
    agent.optimizer = torch.optim.SGD(agent.q_network.parameters(), lr=0.0)
    batch = {"obs": torch.zeros(1, len(CHANNELS), 1, 3), "actions": torch.tensor([0]), "rewards": torch.tensor([3.0]),
             "next_obs": torch.zeros(1, len(CHANNELS), 1, 3), "dones": torch.tensor([0.0])}
    # even a transition not marked done (none is, with Monte Carlo returns) adds no next value
    assert agent.update(batch) == pytest.approx(torch.nn.functional.smooth_l1_loss(
        torch.tensor([0.0]), torch.tensor([3.0])).item())


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


def test_replay_samples_next_states_only_when_some_transition_bootstraps():
    rng = np.random.default_rng(2)
    obs, next_obs = _obs(6, rng), _obs(6, rng)
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
