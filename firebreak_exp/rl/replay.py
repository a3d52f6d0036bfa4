"""Experience replay: transitions stored compactly, and n-step returns."""
from typing import Optional, Sequence

import numpy as np
import torch

from firebreak_exp.observation import (BUDGET_CHANNEL, BURN_PROBABILITY_CHANNEL, FIRE_FLOW_CHANNEL,
                                       FUEL_BREAK_CHANNEL, NUM_STATIC_CHANNELS, split_observation)


class ReplayBuffer:
    """Transitions stored compactly.

    Static landscape channels are kept once per tile (``tile_index``); each
    transition keeps only the burn probability and fire flow (float16), the break
    mask (bool) and the remaining budget (a scalar) of its two states.

    ``sample`` assembles a batch straight into one channels-last float32 array
    (static channels come from a per-tile float32 cache, so nothing is
    converted from float16 per sample but the burn probability), and hands it
    to torch without a copy; the convolutions run channels-last on the CPU.
    """

    #: The per-transition arrays (what checkpoints save up to ``size``); ``expert`` may be absent from
    #: checkpoints written before demonstrations were marked.
    TRANSITION_ARRAYS = ("tile_index", "actions", "rewards", "dones", "expert", "burn_probability", "fire_flow",
                         "fuel_breaks", "budget")

    def __init__(self, capacity: int, obs_shape: tuple, seed: int = 0):
        _, height, width = obs_shape
        self.capacity, self.obs_shape = int(capacity), tuple(obs_shape)
        self.tiles: dict[int, np.ndarray] = {}
        self.tile_index = np.zeros(capacity, np.int32)
        self.actions = np.zeros(capacity, np.int64)
        self.rewards = np.zeros(capacity, np.float32)
        self.dones = np.zeros(capacity, bool)
        self.expert = np.zeros(capacity, bool)          # an expert's demonstration (kept in the margin loss)
        self.burn_probability = np.zeros((capacity, 2, height, width), np.float16)  # [state, next state]
        self.fire_flow = np.zeros((capacity, 2, height, width), np.float16)
        self.fuel_breaks = np.zeros((capacity, 2, height, width), bool)
        self.budget = np.zeros((capacity, 2), np.float32)
        self.position, self.size = 0, 0
        self.rng = np.random.default_rng(seed)
        self._static_cache: Optional[tuple] = None   # (row of each tile key, (T, H, W, S) float32)

    def __len__(self) -> int:
        return self.size

    def add(self, obs, tile_index, actions, rewards, next_obs, dones, expert: bool = False) -> None:
        """Add a batch of transitions; ``obs``/``next_obs`` are (N, C, H, W) observations of tile ``tile_index``;
        ``expert`` marks them as an expert's demonstrations."""
        count = len(actions)
        if count == 0:
            return
        obs, next_obs = np.asarray(obs), np.asarray(next_obs)
        tiles = np.asarray(tile_index).astype(np.int32).reshape(count)
        for i, tile in enumerate(tiles.tolist()):
            if tile not in self.tiles:
                self.tiles[tile] = split_observation(obs[i]).static.astype(np.float16)
                self._static_cache = None
        keep = slice(max(0, count - self.capacity), count)  # more than the capacity: the last ones win
        slots = (self.position + np.arange(count)[keep]) % self.capacity
        self.tile_index[slots], self.actions[slots] = tiles[keep], np.asarray(actions).reshape(count)[keep]
        self.rewards[slots] = np.asarray(rewards).reshape(count)[keep]
        self.dones[slots] = np.asarray(dones).reshape(count)[keep]
        self.expert[slots] = expert
        for j, o in enumerate((obs[keep], next_obs[keep])):
            parts = split_observation(o)
            self.burn_probability[slots, j] = parts.burn_probability
            self.fire_flow[slots, j] = parts.fire_flow
            self.fuel_breaks[slots, j] = parts.fuel_breaks
            self.budget[slots, j] = parts.budget
        self.position = int((self.position + count) % self.capacity)
        self.size = min(self.size + count, self.capacity)

    def _static_channels_last(self) -> tuple:
        """(row of each tile key, float32 (T, H, W, S) static channels): built once per new tile."""
        if self._static_cache is None:
            keys = sorted(self.tiles)
            rows = np.full(max(keys) + 1 if keys else 1, -1, np.int64)
            rows[keys] = np.arange(len(keys))
            stack = np.stack([self.tiles[k] for k in keys]).astype(np.float32) if keys else \
                np.zeros((0, NUM_STATIC_CHANNELS) + self.obs_shape[1:], np.float32)
            self._static_cache = (rows, np.ascontiguousarray(stack.transpose(0, 2, 3, 1)))
        return self._static_cache

    def _batch_channels_last(self, slots: np.ndarray, which: Sequence[int]) -> np.ndarray:
        """float32 (len(which), B, H, W, C): the states (0) and/or next states (1) of ``slots``, channels last."""
        rows, static = self._static_channels_last()
        height, width = self.obs_shape[1:]
        out = np.empty((len(which), len(slots), height, width, self.obs_shape[0]), np.float32)
        out[0, ..., :NUM_STATIC_CHANNELS] = static[rows[self.tile_index[slots]]]
        for k, j in enumerate(which):
            if k:
                out[k, ..., :NUM_STATIC_CHANNELS] = out[0, ..., :NUM_STATIC_CHANNELS]
            out[k, ..., BURN_PROBABILITY_CHANNEL] = self.burn_probability[slots, j]
            out[k, ..., FIRE_FLOW_CHANNEL] = self.fire_flow[slots, j]
            out[k, ..., FUEL_BREAK_CHANNEL] = self.fuel_breaks[slots, j]
            out[k, ..., BUDGET_CHANNEL] = self.budget[slots, j, None, None]
        return out

    def _observations(self, slots: np.ndarray, which: int) -> np.ndarray:
        """float32 (B, C, H, W) observations (``which`` 0 = states, 1 = next states) of ``slots``."""
        return self._batch_channels_last(np.asarray(slots), (which,))[0].transpose(0, 3, 1, 2)

    def sample(self, batch_size: int, device: torch.device) -> dict:
        """A uniform batch of transitions as tensors on ``device`` (observations in channels-last layout).
        ``next_obs`` is None when every sampled transition is terminal (nothing to bootstrap from, as always
        with Monte Carlo returns)."""
        slots = self.rng.integers(0, self.size, batch_size)
        dones = self.dones[slots]
        states = torch.from_numpy(self._batch_channels_last(slots, (0, 1) if not dones.all() else (0,)))
        states = states.permute(0, 1, 4, 2, 3).to(device)
        as_tensor = lambda a: torch.as_tensor(a, device=device)
        return {"obs": states[0], "actions": as_tensor(self.actions[slots]), "rewards": as_tensor(self.rewards[slots]),
                "next_obs": states[1] if len(states) == 2 else None, "dones": as_tensor(dones.astype(np.float32)),
                "expert": as_tensor(self.expert[slots])}

    def state_dict(self) -> dict:
        """Arrays and counters, for checkpoints."""
        tiles = sorted(self.tiles)
        return {"tile_keys": np.array(tiles, np.int64),
                "tile_channels": np.stack([self.tiles[t] for t in tiles]) if tiles else np.zeros(0, np.float16),
                "tile_index": self.tile_index, "actions": self.actions, "rewards": self.rewards,
                "dones": self.dones, "expert": self.expert, "burn_probability": self.burn_probability,
                "fire_flow": self.fire_flow,
                "fuel_breaks": self.fuel_breaks, "budget": self.budget,
                "position": np.array(self.position), "size": np.array(self.size)}

    def load_state_dict(self, state: dict) -> None:
        if state["actions"].shape[0] != self.capacity or state["fuel_breaks"].shape[2:] != self.obs_shape[1:]:
            raise ValueError(f"replay buffer of capacity {state['actions'].shape[0]} and grid "
                             f"{state['fuel_breaks'].shape[2:]} does not fit capacity {self.capacity}, "
                             f"grid {self.obs_shape[1:]}")
        self.tiles = {int(t): c for t, c in zip(state["tile_keys"], state["tile_channels"])}
        for name in self.TRANSITION_ARRAYS:
            if name == "expert" and name not in state:   # a checkpoint from before demonstrations were marked
                self.expert[...] = False
            else:
                getattr(self, name)[...] = state[name]
        self.position, self.size = int(state["position"]), int(state["size"])
        self._static_cache = None


class NStepReturns:
    """Turns each environment's steps into n-step transitions (s_t, a_t, r_t + g r_t+1 + ... + g^(n-1)
    r_t+n-1, s_t+n): a break that only pays once a later one closes the line gets that reward n - 1 steps
    sooner than through bootstrapping. At an episode's end the pending steps are flushed with their
    truncated returns and ``done``; the learner bootstraps the others with gamma^n (``DQNAgent``).
    ``n_step=None`` keeps every step until its episode ends: Monte Carlo returns, nothing bootstrapped."""

    def __init__(self, num_envs: int, n_step: Optional[int], gamma: float):
        if n_step is not None and int(n_step) < 1:
            raise ValueError(f"n_step must be a positive integer or None (Monte Carlo returns), got {n_step}")
        self.n_step, self.gamma = None if n_step is None else int(n_step), float(gamma)
        self.pending = [[] for _ in range(num_envs)]     # per env: (obs, tile_index, action, reward) of open steps

    def push(self, obs, tile_index, actions, rewards, next_obs, dones) -> tuple:
        """One vector step in; the transitions it completes out, as (obs, tile_index, actions, returns,
        next_obs, dones) arrays (possibly empty)."""
        out = []
        for i, steps in enumerate(self.pending):
            steps.append((np.array(obs[i]), int(tile_index[i]), int(actions[i]), float(rewards[i])))
            finished = [0] if self.n_step is not None and len(steps) == self.n_step else []
            if dones[i]:
                finished = range(len(steps))
            for start in finished:
                ret = sum(self.gamma ** k * step[3] for k, step in enumerate(steps[start:]))
                out.append((*steps[start][:3], ret, next_obs[i], bool(dones[i])))
            del steps[:len(finished)]
        if not out:
            empty = np.zeros((0,) + np.shape(obs)[1:], np.float32)
            return empty, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), empty, np.zeros(0, bool)
        columns = list(zip(*out))
        return (np.stack(columns[0]), np.array(columns[1]), np.array(columns[2]), np.array(columns[3], np.float32),
                np.stack(columns[4]), np.array(columns[5]))

    def state_dict(self) -> dict:
        """The open steps of every environment (arrays, for checkpoints)."""
        return {"counts": np.array([len(steps) for steps in self.pending]),
                "obs": [np.stack([s[0] for s in steps]) if steps else np.zeros(0, np.float32) for steps in self.pending],
                "tile_index": [np.array([s[1] for s in steps], np.int64) for steps in self.pending],
                "actions": [np.array([s[2] for s in steps], np.int64) for steps in self.pending],
                "rewards": [np.array([s[3] for s in steps], np.float64) for steps in self.pending]}

    def load_state_dict(self, state: dict) -> None:
        self.pending = [[(np.asarray(state["obs"][i][k]), int(state["tile_index"][i][k]), int(state["actions"][i][k]),
                          float(state["rewards"][i][k])) for k in range(int(count))]
                        for i, count in enumerate(state["counts"])]
