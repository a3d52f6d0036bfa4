"""The Q-network: a fully-convolutional network with one value per cell, and masked action selection."""
import functools
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from firebreak_exp.observation import FUEL_BREAK_CHANNEL, NON_BURNABLE_CHANNEL


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


def q_of(network: nn.Module, obs: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Q-values of one cell per observation: on receptive cones for a QNetwork, else from the dense map."""
    if isinstance(network, QNetwork):
        return network.q_at(obs, cells)
    return network(obs).gather(1, cells[:, None]).squeeze(1)
