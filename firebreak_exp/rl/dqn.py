"""Deep Q-learning for fuel-break placement: masked epsilon-greedy acting and the learning step. Targets are
Monte Carlo returns (``n_step=None``) or n-step Double DQN targets.

The learning step (``DQNAgent.update``) is written top to bottom in one place.
"""
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from firebreak_exp.rl.network import QNetwork, action_mask, masked_argmax, q_of


def set_cpu_threads(num_threads: Optional[int]) -> None:
    """torch's intra-op CPU threads (for the whole process); None leaves torch's default (all cores).

    The Q-network's convolutions are small: a second thread gains little, and when the cores are busy
    (environment worker processes, other jobs) OpenMP threads that wait for each other make every update
    several times slower. One thread is the robust choice beside worker processes; the benchmark measures
    1 thread against all cores (``learner_threads`` in its recommendation).
    """
    if num_threads is not None and int(num_threads) != torch.get_num_threads():
        if int(num_threads) <= 0:
            raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}")
        torch.set_num_threads(int(num_threads))


def resolve_device(name: str) -> torch.device:
    """``auto`` picks a GPU when one is present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class DQNAgent:
    """Q-learning on Monte Carlo returns or n-step Double DQN targets (with a target network), Huber loss,
    Adam, DQfD's margin loss on expert demonstrations and a linear epsilon schedule.

    ``obs_shape`` (channels, rows, cols) and ``seed`` come from the environment and the run; every other
    setting from ``conf/agent/`` (see it for units and meaning)."""

    def __init__(self, obs_shape: tuple, *, channels: int, num_layers: int, lr: float, gamma: float,
                 epsilon_start: float, epsilon_end: float, epsilon_decay_steps: int, batch_size: int,
                 double_q: bool, target_update_interval: int, max_grad_norm: float, reward_scale: float,
                 n_step: Optional[int], expert_loss_weight: float, expert_margin: float, device: str,
                 num_threads: Optional[int], seed: int = 0):
        torch.manual_seed(seed)
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            set_cpu_threads(num_threads)
        self.q_network = QNetwork(obs_shape[0], channels, num_layers).to(self.device)
        self.target_network = QNetwork(obs_shape[0], channels, num_layers).to(self.device)
        self.target_network.load_state_dict(self.q_network.state_dict())
        if self.device.type == "cpu":  # oneDNN's channels-last convolutions are the fast ones on CPUs
            self.q_network.to(memory_format=torch.channels_last)
            self.target_network.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.q_network.parameters(), lr=lr, fused=True)   # one kernel per step
        self.batch_size = int(batch_size)   # transitions per update (the collector and pre-training sample these)
        self.gamma, self.double_q, self.reward_scale = gamma, double_q, reward_scale
        self.n_step = None if n_step is None else int(n_step)   # None: Monte Carlo returns (NStepReturns)
        self.expert_loss_weight, self.expert_margin = float(expert_loss_weight), float(expert_margin)
        self.epsilon_start, self.epsilon_end, self.epsilon_decay_steps = epsilon_start, epsilon_end, epsilon_decay_steps
        self.target_update_interval, self.max_grad_norm = target_update_interval, max_grad_norm
        self.rng = np.random.default_rng(seed)
        self.updates = 0

    def epsilon(self, step: int) -> float:
        """Exploration rate after ``step`` environment steps (linear decay, then constant)."""
        fraction = min(1.0, step / max(1, self.epsilon_decay_steps))
        return self.epsilon_start + fraction * (self.epsilon_end - self.epsilon_start)

    def _batch(self, obs) -> torch.Tensor:
        batch = torch.as_tensor(np.ascontiguousarray(obs), device=self.device)
        if self.device.type == "cpu":   # the network's layout: no conversion inside every convolution
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    @torch.no_grad()
    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """float64 (N, H*W) Q-values of (N, C, H, W) observations, one forward pass without gradients."""
        return self.q_network(self._batch(obs)).double().cpu().numpy()

    @torch.no_grad()
    def act(self, obs: np.ndarray, masks: np.ndarray, epsilon: float) -> np.ndarray:
        """Epsilon-greedy actions for a batch of observations: one forward pass for all the environments
        that act greedily (none when all explore); an exploring environment without a valid cell gets the
        greedy choice, cell 0."""
        masks = np.asarray(masks)
        explore = self.rng.random(len(obs)) < epsilon
        actions = np.zeros(len(obs), np.int64)
        greedy = np.flatnonzero(~explore)
        if len(greedy):
            q_values = self.q_network(self._batch(np.asarray(obs)[greedy]))
            valid = torch.as_tensor(masks[greedy], device=self.device)
            actions[greedy] = masked_argmax(q_values, valid).cpu().numpy()
        for i in np.flatnonzero(explore):
            valid = np.flatnonzero(masks[i])
            if len(valid):
                actions[i] = self.rng.choice(valid)
        return actions

    def update(self, batch: dict) -> float:
        """One gradient step on a batch; returns the Huber loss."""
        obs, actions, rewards = batch["obs"], batch["actions"], batch["rewards"]
        next_obs, dones = batch["next_obs"], batch["dones"]

        # Q(s, a) of the actions taken (on the actions' receptive cones only, see QNetwork.q_at).
        q_taken = q_of(self.q_network, obs, actions)

        # Target: c * r + gamma^n * Q_target(s', a*), a* = masked argmax of the online (double) or target
        # network; c = reward_scale brings Q-values to O(1), the scale Adam's step and the Huber loss suit.
        # With n-step returns (NStepReturns) r sums n discounted rewards and s' is n steps on; with Monte
        # Carlo returns (n_step None) r is the whole rest of the episode and every transition is terminal.
        # Terminal transitions (done) have no next value: only the others' next states are evaluated.
        with torch.no_grad():
            discounted_next = torch.zeros_like(rewards)       # gamma^n Q_target(s', a*); 0 where not bootstrapped
            bootstrap = (dones == 0) & (self.n_step is not None)
            if bool(bootstrap.any()):
                if not bool(bootstrap.all()):
                    next_obs = next_obs[bootstrap]
                    if next_obs.device.type == "cpu":   # the networks' channels-last layout
                        next_obs = next_obs.contiguous(memory_format=torch.channels_last)
                next_mask = action_mask(next_obs)
                if self.double_q:
                    best_next = masked_argmax(self.q_network(next_obs), next_mask)
                    value = q_of(self.target_network, next_obs, best_next)
                else:
                    next_q_target = self.target_network(next_obs)
                    best_next = masked_argmax(next_q_target, next_mask)
                    value = next_q_target.gather(1, best_next[:, None]).squeeze(1)
                value = torch.where(next_mask.any(dim=1), value, torch.zeros_like(value))
                discounted_next[bootstrap] = self.gamma ** self.n_step * value
            target = self.reward_scale * rewards + discounted_next

        loss = F.smooth_l1_loss(q_taken, target)

        # DQfD's large-margin loss (Hester et al., AAAI 2018) on the batch's expert demonstrations: every
        # other valid cell must value at least `expert_margin` below the expert's, max_a [Q(s, a) + margin
        # (a != a_E)] - Q(s, a_E) >= 0, so the greedy policy imitates the expert where TD alone is unsure.
        # The max's gradient flows through its arg max alone: that cell (the rival) is found on the dense map
        # without autograd, and only its Q-value is computed with gradients, on its cone.
        expert = batch.get("expert")
        if self.expert_loss_weight > 0 and expert is not None and bool(expert.any()):
            expert_obs, expert_actions = obs[expert], actions[expert]
            with torch.no_grad():
                q_all = self.q_network(expert_obs)
                margins = torch.full_like(q_all, self.expert_margin).scatter_(1, expert_actions[:, None], 0.0)
                rival = masked_argmax(q_all + margins, action_mask(expert_obs))
            best = q_of(self.q_network, expert_obs, rival) + self.expert_margin * (rival != expert_actions)
            loss = loss + self.expert_loss_weight * (best - q_taken[expert]).mean()
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.q_network.parameters(), self.max_grad_norm)
        self.optimizer.step()

        self.updates += 1
        if self.updates % self.target_update_interval == 0:
            self.target_network.load_state_dict(self.q_network.state_dict())
        return loss.item()

    def state_dict(self) -> dict:
        return {"q_network": self.q_network.state_dict(), "target_network": self.target_network.state_dict(),
                "optimizer": self.optimizer.state_dict(), "updates": self.updates,
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.q_network.load_state_dict(state["q_network"])
        self.target_network.load_state_dict(state["target_network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])
        self.rng.bit_generator.state = state["rng"]
