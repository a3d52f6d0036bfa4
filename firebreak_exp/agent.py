"""Deep Q-learning for fuel-break placement: a fully-convolutional Q-network with one
value per cell, masked action selection, and a compact replay buffer. Targets are Monte
Carlo returns by default (``n_step=None``) or n-step Double DQN targets.

The learning step (``DQNAgent.update``) is written top to bottom in one place.
"""
import functools
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from firebreak_exp.environment import (BUDGET_CHANNEL, BURN_PROBABILITY_CHANNEL, FIRE_FLOW_CHANNEL,
                                       FUEL_BREAK_CHANNEL, NON_BURNABLE_CHANNEL, NUM_STATIC_CHANNELS)


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


class QNetwork(nn.Module):
    """Fully-convolutional Q-network: (B, C, H, W) observations -> (B, H*W) Q-values.

    Dilations 1, 2, 4, ... let each cell's value see the whole tile, so a break
    is valued by where fire comes from and where it goes. The 1 x 1 head also reads
    the observation at the cell itself (a skip connection), so a value carried by a
    cell's own channels (fire flow, burn probability) is learned in a few updates.
    """

    def __init__(self, in_channels: int, channels: int = 16, num_layers: int = 5):
        super().__init__()
        self.in_channels, self.channels, self.num_layers = in_channels, channels, num_layers
        layers, width = [], in_channels
        for i in range(num_layers):
            dilation = 2 ** i
            layers += [nn.Conv2d(width, channels, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)]
            width = channels
        self.net = nn.Sequential(*layers)
        self.head = nn.Conv2d(width + in_channels, 1, 1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.net(obs), obs], dim=1)).flatten(1)

    def q_at(self, obs: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Q-values of one cell per observation, ``forward(obs).gather(1, cells[:, None]).squeeze(1)`` up to
        float rounding, computed on each cell's receptive cone only.

        A learner update needs Q(s, a) of the taken actions and the target network's Q(s', a*) of one cell
        each. Through dilations 1, 2, 4, ... only every 2nd, 4th, 8th ... cell of the lower layers reaches a
        given output cell (the cone), so the last layers are evaluated at a few cells and the first at about
        a quarter of the tile: on 25 x 25 tiles with 5 layers about a tenth of the dense work, forward and
        backward. Each 3 x 3 layer gathers its 9 taps from the layer below's cells (zero outside the tile,
        as the dense convolution's padding) and multiplies them by the same weights.
        """
        batch, _, height, width = obs.shape
        convs = [m for m in self.net if isinstance(m, nn.Conv2d)]
        first, layers = convs[0], convs[1:]
        head_features, head_obs = self.head.weight.view(-1).split([self.channels, self.in_channels])
        at_cells = torch.arange(batch, device=obs.device), cells
        # (B, H*W, C): a view of channels-last observations, in which each cell's channels are contiguous
        own = (obs.permute(0, 2, 3, 1).reshape(batch, height * width, -1)[at_cells] * head_obs).sum(dim=1)
        if not layers:
            table = torch.relu_(first(obs)).permute(0, 2, 3, 1).reshape(batch, height * width, -1)[at_cells]
            return (table * head_features).sum(dim=1) + own + self.head.bias
        cells_np = cells.detach().cpu().numpy()
        plan = cone_plan(cells_np, height, width, [conv.dilation[0] for conv in layers])
        table, lattice_rows = first_layer_on_parity_lattices(first, obs, cells_np)
        for index, (conv, (taps, inside)) in enumerate(zip(layers, plan)):
            rows = taps.shape[1]
            if index == 0:   # the plan's taps number every cell of the tile; the table holds the lattices
                taps = lattice_rows[taps]
            # taps outside the tile read the convolution's zero padding: a zero row after the table's rows
            table = torch.cat([table.reshape(-1, conv.in_channels), table.new_zeros(1, conv.in_channels)])
            taps = np.where(inside, taps, len(table) - 1)
            gathered = table.index_select(0, torch.as_tensor(taps, device=obs.device).view(-1))
            weight = conv.weight.permute(2, 3, 1, 0).reshape(-1, conv.out_channels)  # taps-major, like gathered
            table = torch.relu_(torch.addmm(conv.bias, gathered.view(batch * rows, -1), weight))
        return (table * head_features).sum(dim=1) + own + self.head.bias


def first_layer_on_parity_lattices(first: nn.Conv2d, obs: torch.Tensor, cells: np.ndarray) -> tuple:
    """ReLU(first(obs)) where the layers above read it, and where each row of the table went.

    The layers above have even dilations (2, 4, ...), so the cone of ``cells[b]`` reads the first layer only
    at the cells whose row and column have the parity of its own: a quarter of the tile. One stride-2
    convolution per parity class (over the observations whose cell has it) computes exactly those, a
    quarter of the dense convolution's work, forward and backward.

    Returns the (N, C) table of those outputs and int64 ``lattice_rows`` (B * H * W): the table row of
    (observation b, cell) for the cells on b's lattice (0 elsewhere; never read).
    """
    batch, _, height, width = obs.shape
    row, col = np.divmod(np.arange(height * width), width)
    parity = cells // width % 2 * 2 + cells % width % 2
    lattice_rows = np.zeros((batch, height * width), np.int64)
    pieces, start = [], 0
    for row_parity, col_parity in ((0, 0), (0, 1), (1, 0), (1, 1)):
        members = np.flatnonzero(parity == 2 * row_parity + col_parity)
        if not len(members):
            continue
        lattice_width = (width - col_parity + 1) // 2
        on = np.flatnonzero((row % 2 == row_parity) & (col % 2 == col_parity))
        lattice_size = len(on)
        lattice_rows[np.ix_(members, on)] = start + np.arange(len(members))[:, None] * lattice_size \
            + (row[on] // 2) * lattice_width + col[on] // 2
        # pad so that the stride-2 windows centre on the lattice: (left, right, top, bottom)
        padded = F.pad(obs[torch.as_tensor(members, device=obs.device)], (1 - col_parity, 1, 1 - row_parity, 1))
        lattice = torch.relu_(F.conv2d(padded, first.weight, first.bias, stride=2))
        pieces.append(lattice.permute(0, 2, 3, 1).reshape(-1, first.out_channels))
        start += len(members) * lattice_size
    return torch.cat(pieces), lattice_rows.reshape(-1)


def cone_plan(cells: np.ndarray, height: int, width: int, dilations: Sequence[int]) -> list:
    """The gathers of :meth:`QNetwork.q_at`: per 3 x 3 layer, ``(taps, inside)``: int64 (B, K, 9) rows of
    the layer below's table flattened over the batch (the table holds all H*W cells, in order, for the first
    layer given, else the K cells the layer below computed), and bool (B, K, 9), false for taps outside the
    tile (the convolution's zero padding) and for the padding rows that even out K over cells. A layer
    computes the cells its layer above reads; the last one only ``cells`` (K = 1).

    The cones depend only on the cell, so on grids up to 64 x 64 they are worked out once for every cell
    (:func:`_cones_of_every_cell`) and a batch's plan is a selection of their rows.
    """
    cells = np.asarray(cells, dtype=np.int64)
    dilations = tuple(int(d) for d in dilations)
    if height * width > CACHED_CONES_MAX_CELLS:
        return [(taps, inside) for taps, inside, _ in _cones(cells, height, width, dilations)]
    plan, below_rows = [], height * width
    for taps, inside, rows in _cones_of_every_cell(height, width, dilations):
        offsets = ((np.arange(len(cells)) - cells) * below_rows)[:, None, None]   # rebase cell -> batch row
        plan.append((taps[cells] + offsets, inside[cells]))
        below_rows = rows
    return plan


CACHED_CONES_MAX_CELLS = 64 * 64   # the every-cell table takes O((H*W)^2) bytes while it is built


@functools.lru_cache(maxsize=4)
def _cones_of_every_cell(height: int, width: int, dilations: tuple) -> list:
    """:func:`_cones` of all H*W cells, cell c being batch row c."""
    return _cones(np.arange(height * width, dtype=np.int64), height, width, dilations)


def _cones(cells: np.ndarray, height: int, width: int, dilations: tuple) -> list:
    """Per 3 x 3 layer, ``(taps, inside, K)`` for a batch of ``cells`` (see :func:`cone_plan`)."""
    batch, size = len(cells), height * width
    need = np.zeros((len(dilations), batch, height, width), bool)
    need[-1, np.arange(batch), cells // width, cells % width] = True
    for layer in range(len(dilations) - 1, 0, -1):             # a layer's inputs are the outputs below it
        d, above, below = dilations[layer], need[layer], need[layer - 1]
        for dr in (-d, 0, d):
            for dc in (-d, 0, d):
                nr, nc = height - abs(dr), width - abs(dc)            # overlap of the tile and its shift
                if nr <= 0 or nc <= 0:
                    continue
                below[:, max(0, dr):max(0, dr) + nr, max(0, dc):max(0, dc) + nc] |= \
                    above[:, max(0, -dr):max(0, -dr) + nr, max(0, -dc):max(0, -dc) + nc]
    plan, below_rank, below_rows = [], None, size              # below the first: every cell, in order
    for layer, d in enumerate(dilations):
        flat = need[layer].reshape(batch, size)
        counts = flat.sum(axis=1)
        rows = int(counts.max())
        b, j = np.nonzero(flat)
        rank = np.arange(len(b)) - np.repeat(np.cumsum(counts) - counts, counts)
        positions = np.full((batch, rows), -1, np.int64)
        positions[b, rank] = j
        row, col = positions // width, positions % width
        taps = np.zeros((batch, rows, 9), np.int64)
        inside = np.zeros((batch, rows, 9), bool)
        for k, (dr, dc) in enumerate((dr, dc) for dr in (-d, 0, d) for dc in (-d, 0, d)):
            r, c = row + dr, col + dc
            inside[:, :, k] = (r >= 0) & (r < height) & (c >= 0) & (c < width) & (positions >= 0)
            tap = np.where(inside[:, :, k], r * width + c, 0)
            if below_rank is not None:
                tap = np.take_along_axis(below_rank, tap, axis=1)
            taps[:, :, k] = np.where(inside[:, :, k], tap, 0)
        taps += (np.arange(batch) * below_rows)[:, None, None]
        plan.append((taps, inside, rows))
        below_rank = np.zeros((batch, size), np.int64)
        below_rank[b, j] = rank
        below_rows = rows
    return plan


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
                self.tiles[tile] = obs[i, :NUM_STATIC_CHANNELS].astype(np.float16)
                self._static_cache = None
        keep = slice(max(0, count - self.capacity), count)  # more than the capacity: the last ones win
        slots = (self.position + np.arange(count)[keep]) % self.capacity
        self.tile_index[slots], self.actions[slots] = tiles[keep], np.asarray(actions).reshape(count)[keep]
        self.rewards[slots] = np.asarray(rewards).reshape(count)[keep]
        self.dones[slots] = np.asarray(dones).reshape(count)[keep]
        self.expert[slots] = expert
        for j, o in enumerate((obs[keep], next_obs[keep])):
            self.burn_probability[slots, j] = o[:, BURN_PROBABILITY_CHANNEL]
            self.fire_flow[slots, j] = o[:, FIRE_FLOW_CHANNEL]
            self.fuel_breaks[slots, j] = o[:, FUEL_BREAK_CHANNEL] > 0
            self.budget[slots, j] = o[:, BUDGET_CHANNEL, 0, 0]
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


def _q_of(network: nn.Module, obs: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Q-values of one cell per observation: on receptive cones for a QNetwork, else from the dense map."""
    if isinstance(network, QNetwork):
        return network.q_at(obs, cells)
    return network(obs).gather(1, cells[:, None]).squeeze(1)


class DQNAgent:
    """Q-learning on Monte Carlo returns or n-step Double DQN targets (with a target network), Huber loss,
    Adam, DQfD's margin loss on expert demonstrations and a linear epsilon schedule."""

    def __init__(self, obs_shape: tuple, channels: int = 16, num_layers: int = 5, lr: float = 1e-3,
                 gamma: float = 0.99, epsilon_start: float = 1.0, epsilon_end: float = 0.05,
                 epsilon_decay_steps: int = 2000, double_q: bool = True, target_update_interval: int = 200,
                 max_grad_norm: float = 10.0, reward_scale: float = 1.0, n_step: Optional[int] = 1,
                 expert_loss_weight: float = 0.0, expert_margin: float = 0.8, device: str = "cpu", seed: int = 0,
                 num_threads: Optional[int] = None, **_unused):
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
            batch = torch.as_tensor(np.asarray(obs)[greedy], device=self.device)
            if self.device.type == "cpu":   # the network's layout: no conversion inside every convolution
                batch = batch.contiguous(memory_format=torch.channels_last)
            q_values = self.q_network(batch)
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
        q_taken = _q_of(self.q_network, obs, actions)

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
                    value = _q_of(self.target_network, next_obs, best_next)
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
            best = _q_of(self.q_network, expert_obs, rival) + self.expert_margin * (rival != expert_actions)
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
