"""Double DQN for fuel-break placement: a fully-convolutional Q-network with one
value per cell, masked action selection, and a compact replay buffer.

The learning step (``DQNAgent.update``) is written top to bottom in one place.
"""
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from firebreak_exp.environment import (BUDGET_CHANNEL, BURN_PROBABILITY_CHANNEL, FUEL_BREAK_CHANNEL,
                                       NON_BURNABLE_CHANNEL, NUM_STATIC_CHANNELS)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks a GPU when one is present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class QNetwork(nn.Module):
    """Fully-convolutional Q-network: (B, C, H, W) observations -> (B, H*W) Q-values.

    Dilations 1, 2, 4, ... let each cell's value see the whole tile, so a break
    is valued by where fire comes from and where it goes.
    """

    def __init__(self, in_channels: int, channels: int = 32, num_layers: int = 5):
        super().__init__()
        self.in_channels, self.channels, self.num_layers = in_channels, channels, num_layers
        layers, width = [], in_channels
        for i in range(num_layers):
            dilation = 2 ** i
            layers += [nn.Conv2d(width, channels, 3, padding=dilation, dilation=dilation), nn.ReLU()]
            width = channels
        layers.append(nn.Conv2d(width, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).flatten(1)


def action_mask(obs: torch.Tensor) -> torch.Tensor:
    """Valid actions of a batch of observations: burnable, not yet broken. (B, H*W) bool."""
    valid = (obs[:, NON_BURNABLE_CHANNEL] == 0) & (obs[:, FUEL_BREAK_CHANNEL] == 0)
    return valid.flatten(1)


def masked_argmax(q_values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Index of the largest Q-value among valid actions (0 when none is valid)."""
    return q_values.masked_fill(~mask, -torch.inf).argmax(dim=1)


class ReplayBuffer:
    """Transitions stored compactly.

    Static landscape channels are kept once per tile (``tile_index``); each
    transition keeps only the burn probability (float16), the break mask (bool)
    and the remaining budget (a scalar) of its two states.
    """

    def __init__(self, capacity: int, obs_shape: tuple, seed: int = 0):
        _, height, width = obs_shape
        self.capacity, self.obs_shape = int(capacity), tuple(obs_shape)
        self.tiles: dict[int, np.ndarray] = {}
        self.tile_index = np.zeros(capacity, np.int32)
        self.actions = np.zeros(capacity, np.int64)
        self.rewards = np.zeros(capacity, np.float32)
        self.dones = np.zeros(capacity, bool)
        self.burn_probability = np.zeros((capacity, 2, height, width), np.float16)  # [state, next state]
        self.fuel_breaks = np.zeros((capacity, 2, height, width), bool)
        self.budget = np.zeros((capacity, 2), np.float32)
        self.position, self.size = 0, 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.size

    def add(self, obs, tile_index, actions, rewards, next_obs, dones) -> None:
        """Add a batch of transitions; ``obs``/``next_obs`` are (N, C, H, W) observations of tile ``tile_index``."""
        for i in range(len(actions)):
            tile = int(tile_index[i])
            if tile not in self.tiles:
                self.tiles[tile] = obs[i, :NUM_STATIC_CHANNELS].astype(np.float16)
            slot = self.position
            self.tile_index[slot], self.actions[slot] = tile, actions[i]
            self.rewards[slot], self.dones[slot] = rewards[i], dones[i]
            for j, o in enumerate((obs[i], next_obs[i])):
                self.burn_probability[slot, j] = o[BURN_PROBABILITY_CHANNEL]
                self.fuel_breaks[slot, j] = o[FUEL_BREAK_CHANNEL] > 0
                self.budget[slot, j] = o[BUDGET_CHANNEL, 0, 0]
            self.position = (self.position + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def _observations(self, slots: np.ndarray, which: int) -> np.ndarray:
        static = np.stack([self.tiles[t] for t in self.tile_index[slots]]).astype(np.float32)
        height, width = self.obs_shape[1:]
        budget = np.broadcast_to(self.budget[slots, which, None, None], (len(slots), height, width))
        dynamic = np.stack([self.burn_probability[slots, which].astype(np.float32),
                            self.fuel_breaks[slots, which].astype(np.float32), budget], axis=1)
        return np.concatenate([static, dynamic], axis=1)

    def sample(self, batch_size: int, device: torch.device) -> dict:
        """A uniform batch of transitions as tensors on ``device``."""
        slots = self.rng.integers(0, self.size, batch_size)
        as_tensor = lambda a: torch.as_tensor(a, device=device)
        return {"obs": as_tensor(self._observations(slots, 0)), "actions": as_tensor(self.actions[slots]),
                "rewards": as_tensor(self.rewards[slots]), "next_obs": as_tensor(self._observations(slots, 1)),
                "dones": as_tensor(self.dones[slots].astype(np.float32))}

    def state_dict(self) -> dict:
        """Arrays and counters, for checkpoints."""
        tiles = sorted(self.tiles)
        return {"tile_keys": np.array(tiles, np.int64),
                "tile_channels": np.stack([self.tiles[t] for t in tiles]) if tiles else np.zeros(0, np.float16),
                "tile_index": self.tile_index, "actions": self.actions, "rewards": self.rewards,
                "dones": self.dones, "burn_probability": self.burn_probability,
                "fuel_breaks": self.fuel_breaks, "budget": self.budget,
                "position": np.array(self.position), "size": np.array(self.size)}

    def load_state_dict(self, state: dict) -> None:
        if state["actions"].shape[0] != self.capacity or state["fuel_breaks"].shape[2:] != self.obs_shape[1:]:
            raise ValueError(f"replay buffer of capacity {state['actions'].shape[0]} and grid "
                             f"{state['fuel_breaks'].shape[2:]} does not fit capacity {self.capacity}, "
                             f"grid {self.obs_shape[1:]}")
        self.tiles = {int(t): c for t, c in zip(state["tile_keys"], state["tile_channels"])}
        for name in ("tile_index", "actions", "rewards", "dones", "burn_probability", "fuel_breaks", "budget"):
            getattr(self, name)[...] = state[name]
        self.position, self.size = int(state["position"]), int(state["size"])


class DQNAgent:
    """Double DQN with a target network, Huber loss, Adam and a linear epsilon schedule."""

    def __init__(self, obs_shape: tuple, channels: int = 32, num_layers: int = 5, lr: float = 1e-3,
                 gamma: float = 0.99, epsilon_start: float = 1.0, epsilon_end: float = 0.05,
                 epsilon_decay_steps: int = 2000, double_q: bool = True, target_update_interval: int = 200,
                 max_grad_norm: float = 10.0, device: str = "cpu", seed: int = 0, **_unused):
        torch.manual_seed(seed)
        self.device = resolve_device(device)
        self.q_network = QNetwork(obs_shape[0], channels, num_layers).to(self.device)
        self.target_network = QNetwork(obs_shape[0], channels, num_layers).to(self.device)
        self.target_network.load_state_dict(self.q_network.state_dict())
        self.optimizer = torch.optim.Adam(self.q_network.parameters(), lr=lr)
        self.gamma, self.double_q = gamma, double_q
        self.epsilon_start, self.epsilon_end, self.epsilon_decay_steps = epsilon_start, epsilon_end, epsilon_decay_steps
        self.target_update_interval, self.max_grad_norm = target_update_interval, max_grad_norm
        self.rng = np.random.default_rng(seed)
        self.updates = 0

    def epsilon(self, step: int) -> float:
        """Exploration rate after ``step`` environment steps (linear decay, then constant)."""
        fraction = min(1.0, step / max(1, self.epsilon_decay_steps))
        return self.epsilon_start + fraction * (self.epsilon_end - self.epsilon_start)

    @torch.no_grad()
    def act(self, obs: np.ndarray, masks: np.ndarray, epsilon: float) -> np.ndarray:
        """Epsilon-greedy actions for a batch of observations, one forward pass for all environments."""
        q_values = self.q_network(torch.as_tensor(obs, device=self.device))
        greedy = masked_argmax(q_values, torch.as_tensor(masks, device=self.device)).cpu().numpy()
        actions = greedy.copy()
        for i in np.flatnonzero(self.rng.random(len(obs)) < epsilon):
            valid = np.flatnonzero(masks[i])
            if len(valid):
                actions[i] = self.rng.choice(valid)
        return actions

    def update(self, batch: dict) -> float:
        """One gradient step on a batch; returns the Huber loss."""
        obs, actions, rewards = batch["obs"], batch["actions"], batch["rewards"]
        next_obs, dones = batch["next_obs"], batch["dones"]

        # Q(s, a) of the actions taken.
        q_taken = self.q_network(obs).gather(1, actions[:, None]).squeeze(1)

        # Target: r + gamma * Q_target(s', a*), a* = masked argmax of the online (double) or target network.
        with torch.no_grad():
            next_mask = action_mask(next_obs)
            next_q_target = self.target_network(next_obs)
            chooser = self.q_network(next_obs) if self.double_q else next_q_target
            best_next = masked_argmax(chooser, next_mask)
            next_value = next_q_target.gather(1, best_next[:, None]).squeeze(1)
            next_value = torch.where(next_mask.any(dim=1), next_value, torch.zeros_like(next_value))
            target = rewards + self.gamma * (1.0 - dones) * next_value

        loss = F.smooth_l1_loss(q_taken, target)
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
