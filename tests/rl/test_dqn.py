"""The DQN learner: masked actions, the Double-DQN target by hand, n-step returns, the update on receptive cones."""
import numpy as np
import pytest
import torch
from conftest import make_agent, random_observations

from firebreak_exp.observation import CHANNELS, FUEL_BREAK_CHANNEL, NON_BURNABLE_CHANNEL
from firebreak_exp.rl.network import action_mask, masked_argmax
from firebreak_exp.rl.replay import NStepReturns

H = W = 4


def test_masked_cells_are_never_chosen():
    rng = np.random.default_rng(0)
    agent = make_agent((len(CHANNELS), H, W), channels=8, num_layers=2, reward_scale=1.0, n_step=1,
                       expert_loss_weight=0.0)
    obs = random_observations(64, rng)
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
    agent = make_agent((len(CHANNELS), 1, 3), channels=4, num_layers=1, gamma=0.9, reward_scale=1.0, n_step=1,
                       expert_loss_weight=0.0)
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
    agent = make_agent((len(CHANNELS), 1, 3), channels=4, num_layers=1, gamma=0.9, reward_scale=1.0, n_step=1,
                       expert_loss_weight=0.0)
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
    agent = make_agent((len(CHANNELS), 1, 3), channels=4, num_layers=1, gamma=0.0, reward_scale=1.0, n_step=1,
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


def _frozen_agent_and_batch(n_step, reward: float) -> tuple:
    """An agent whose Q is 0 everywhere and target Q 8 (gamma 0.5, no learning), and one non-terminal
    transition with ``reward`` from cell 0."""
    agent = make_agent((len(CHANNELS), 1, 3), channels=4, num_layers=1, gamma=0.5, n_step=n_step, reward_scale=1.0,
                       expert_loss_weight=0.0)
    agent.q_network, agent.target_network = _FixedQ([0.0, 0.0, 0.0]), _FixedQ([8.0, 8.0, 8.0])
    agent.optimizer = torch.optim.SGD(agent.q_network.parameters(), lr=0.0)
    batch = {"obs": torch.zeros(1, len(CHANNELS), 1, 3), "actions": torch.tensor([0]), "rewards": torch.tensor([reward]),
             "next_obs": torch.zeros(1, len(CHANNELS), 1, 3), "dones": torch.tensor([0.0])}
    return agent, batch


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
    agent, batch = _frozen_agent_and_batch(n_step=3, reward=0.0)
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
    agent, batch = _frozen_agent_and_batch(n_step=None, reward=3.0)
    # even a transition not marked done (none is, with Monte Carlo returns) adds no next value
    assert agent.update(batch) == pytest.approx(torch.nn.functional.smooth_l1_loss(
        torch.tensor([0.0]), torch.tensor([3.0])).item())


def test_update_loss_matches_the_dense_double_dqn_computation():
    import numpy as np
    import torch
    import torch.nn.functional as F
    from firebreak_exp.rl.network import action_mask, masked_argmax
    from firebreak_exp.rl.replay import ReplayBuffer
    from firebreak_exp.observation import CHANNELS, FUEL_BREAK_CHANNEL, NON_BURNABLE_CHANNEL

    rng = np.random.default_rng(0)
    shape = (len(CHANNELS), 10, 10)
    obs = rng.normal(size=(40, *shape)).astype(np.float32)
    obs[:, NON_BURNABLE_CHANNEL] = rng.random((40, 10, 10)) < 0.2
    obs[:, FUEL_BREAK_CHANNEL] = rng.random((40, 10, 10)) < 0.2
    replay = ReplayBuffer(64, shape, seed=0)
    replay.add(obs[:20], np.arange(20) % 3, rng.integers(0, 100, 20), rng.normal(size=20), obs[20:],
               rng.random(20) < 0.3)
    agent = make_agent(shape, channels=8, num_layers=4, gamma=0.9, num_threads=1, reward_scale=1.0, n_step=1,
                       expert_loss_weight=0.0)
    agent.target_network.net[0].weight.data.mul_(1.5)               # online and target differ
    batch = replay.sample(16, agent.device)
    with torch.no_grad():
        q_taken = agent.q_network(batch["obs"]).gather(1, batch["actions"][:, None]).squeeze(1)
        mask = action_mask(batch["next_obs"])
        best = masked_argmax(agent.q_network(batch["next_obs"]), mask)
        value = agent.target_network(batch["next_obs"]).gather(1, best[:, None]).squeeze(1)
        value = torch.where(mask.any(dim=1), value, torch.zeros_like(value))
        expected = F.smooth_l1_loss(q_taken, batch["rewards"] + 0.9 * (1 - batch["dones"]) * value).item()
    assert agent.update(batch) == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_margin_loss_on_cones_has_the_dense_loss_and_gradients():
    """The update finds each demonstration's rival cell without autograd and differentiates Q only at the
    rival and the expert's cell: the loss and every parameter's gradient equal the dense computation's."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from firebreak_exp.rl.network import action_mask
    from firebreak_exp.observation import CHANNELS, FUEL_BREAK_CHANNEL, NON_BURNABLE_CHANNEL

    rng = np.random.default_rng(1)
    shape = (len(CHANNELS), 12, 12)
    obs = rng.normal(size=(16, *shape)).astype(np.float32)
    obs[:, NON_BURNABLE_CHANNEL] = rng.random((16, 12, 12)) < 0.2
    obs[:, FUEL_BREAK_CHANNEL] = rng.random((16, 12, 12)) < 0.2
    obs = torch.as_tensor(obs).contiguous(memory_format=torch.channels_last)
    actions = torch.as_tensor([int(rng.choice(np.flatnonzero(m))) for m in action_mask(obs).numpy()])
    batch = {"obs": obs, "actions": actions, "rewards": torch.as_tensor(rng.normal(size=16), dtype=torch.float32),
             "next_obs": obs, "dones": torch.ones(16), "expert": torch.as_tensor(rng.random(16) < 0.5)}
    agent = make_agent(shape, channels=8, num_layers=4, n_step=None, reward_scale=10.0, expert_loss_weight=0.7,
                       expert_margin=0.8, num_threads=1)
    agent.optimizer = torch.optim.SGD(agent.q_network.parameters(), lr=0.0)   # keep the weights, read the grads

    q_all = agent.q_network(obs)                                            # the dense computation
    q_taken = q_all.gather(1, actions[:, None]).squeeze(1)
    expert = batch["expert"]
    margins = torch.full_like(q_all, 0.8).scatter_(1, actions[:, None], 0.0)[expert]
    best = (q_all[expert] + margins).masked_fill(~action_mask(obs[expert]), -torch.inf).max(dim=1).values
    loss = F.smooth_l1_loss(q_taken, 10.0 * batch["rewards"]) + 0.7 * (best - q_taken[expert]).mean()
    dense_grads = torch.autograd.grad(loss, list(agent.q_network.parameters()))
    assert int(expert.sum()) >= 4 and float((best - q_taken[expert]).mean().detach()) > 0   # the margin loss is active

    assert agent.update(batch) == pytest.approx(loss.item(), rel=1e-5)
    for parameter, dense_grad in zip(agent.q_network.parameters(), dense_grads):
        torch.testing.assert_close(parameter.grad, dense_grad, atol=1e-5, rtol=1e-4)
