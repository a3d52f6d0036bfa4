"""Fire flow: per cell, how many burned cells each fire reaches through it, counted on spread trees."""
from __future__ import annotations

from typing import Optional

import numpy as np

from firebreak_exp.fire.simulator import SpreadGraph, compiled

#: Minutes within which two paths to a cell count as equally fast in :func:`path_tree_flows`.
PATH_TIE_MINUTES = 1e-6


def fire_flow(arrival: np.ndarray, graph: Optional[SpreadGraph] = None) -> np.ndarray:
    """float32 (H, W): per cell, the mean over fires of :func:`fire_flows`, an estimate of how many burned
    cells a break there keeps each fire from (``arrival``: (k, H, W) minutes, inf where not burned, as from
    :meth:`FireSimulator.arrival_times`; ``graph``: the simulator's :meth:`FireSimulator.spread_graph`)."""
    arrival = np.asarray(arrival)
    if len(arrival) == 0:
        return np.zeros(arrival.shape[1:], np.float32)
    return fire_flows(arrival, graph).mean(axis=0).astype(np.float32)


def fire_flows(arrival: np.ndarray, graph: Optional[SpreadGraph] = None) -> np.ndarray:
    """float64 (k, H, W): per fire and cell, the burned cells that the fire reaches through the cell, counted
    on two spread trees and averaged: the king tree (:func:`king_tree_flows`) and, with the simulator's
    ``graph``, the path tree (:func:`path_tree_flows`); without a graph the king tree alone.

    Either count is what a break there saves if the fire finds no other way round (an upper bound when it
    does); they err in different places (the king tree ignores knight moves, the path tree follows the
    fastest paths only), and a cell both trees rank high carries the fire on most routes, so breaking at
    the averaged count's maximum saves more than either alone.
    """
    flows = _tree_flows(arrival, graph)
    return flows[0] if graph is None else 0.5 * (flows[0] + flows[1])


def king_tree_flows(arrival: np.ndarray) -> np.ndarray:
    """float64 (k, H, W): per fire, how many burned cells it reaches *through* each cell on its king tree.

    Each burned cell's parent is its earliest-burning king neighbour that burned strictly before it (the
    first in row-major neighbour order among equals); a cell's flow counts it and its descendants. Cells
    without a parent (the ignition, and cells a knight move reached before any king neighbour burned) are
    roots and get 0, as a break there does not stop its fire.
    """
    return _tree_flows(arrival, None)[0]


def path_tree_flows(arrival: np.ndarray, graph: SpreadGraph) -> np.ndarray:
    """float64 (k, H, W): per fire, how many burned cells it reaches through each cell on the simulator's
    path tree: a burned cell hangs from the cell its fastest move arrives from (a move of ``graph`` with
    arrival(source) + minutes = arrival(cell), within :data:`PATH_TIE_MINUTES`); a cell that equally fast
    moves reach from several cells hangs from the latest cell all of their paths pass through (its
    immediate dominator). Cells no move explains (the ignition's neighbours, reached from the ignition
    cell's edge) hang from the ignition, which gets 0.
    """
    return _tree_flows(arrival, graph)[1]


def _tree_flows(arrival: np.ndarray, graph: Optional[SpreadGraph]) -> np.ndarray:
    """float64 (trees, k, H, W): the king tree's flows and, with ``graph``, the path tree's."""
    arrival = np.ascontiguousarray(arrival, dtype=np.float64)
    if graph is None:
        graph = SpreadGraph(np.zeros(0, np.int64), np.zeros(0), np.zeros(arrival[0].size + 1, np.int64))
        trees = 1
    else:
        trees = 2
    flows = np.zeros((trees,) + arrival.shape)
    compiled(_tree_counts)(arrival, graph.source, graph.minutes, graph.start, PATH_TIE_MINUTES, flows)
    return flows


def _tree_counts(arrival, source, minutes, start, tie, out):
    """Per fire of (k, H, W) ``arrival``: the king tree's descendant counts into ``out[0]`` and, when ``out``
    holds two trees, the path tree's (moves ``source``/``minutes``/``start``, see :class:`SpreadGraph`) into
    ``out[1]`` (compiled with numba)."""
    fires, height, width = arrival.shape
    trees = out.shape[0]
    for fire in range(fires):
        times = arrival[fire].ravel()
        burned = np.nonzero(np.isfinite(times))[0]
        order = burned[np.argsort(times[burned], kind="mergesort")]    # earliest first
        if len(order) == 0:
            continue
        parent = np.full((trees, height * width), -1, np.int64)
        # king tree: the earliest king neighbour that burned strictly before
        for cell in order:
            row, col = cell // width, cell % width
            best = times[cell]
            for dr in range(-1, 2):
                for dc in range(-1, 2):
                    r, c = row + dr, col + dc
                    if (dr != 0 or dc != 0) and 0 <= r < height and 0 <= c < width and times[r * width + c] < best:
                        best, parent[0, cell] = times[r * width + c], r * width + c
        if trees == 2:
            # path tree: the nearest common ancestor of the cells the fastest moves come from
            depth = np.full(height * width, -1, np.int64)
            root = order[0]
            depth[root] = 0
            for i in range(1, len(order)):
                cell = order[i]
                common = -1
                for move in range(start[cell], start[cell + 1]):
                    before = source[move]
                    if depth[before] < 0 or abs(times[before] + minutes[move] - times[cell]) > tie:
                        continue                       # not burned yet, or not a fastest move into the cell
                    if common < 0:
                        common = before
                        continue
                    a, b = common, before
                    while a != b:
                        if depth[a] > depth[b]:
                            a = parent[1, a]
                        elif depth[b] > depth[a]:
                            b = parent[1, b]
                        else:
                            a, b = parent[1, a], parent[1, b]
                    common = a
                if common < 0:
                    common = root
                parent[1, cell] = common
                depth[cell] = depth[common] + 1
        for tree in range(trees):          # each cell adds itself and its descendants to its parent
            counts = out[tree, fire].ravel()
            for i in range(len(order) - 1, -1, -1):
                cell = order[i]
                counts[cell] += 1.0
                if parent[tree, cell] >= 0:
                    counts[parent[tree, cell]] += counts[cell]
            for cell in order:
                if parent[tree, cell] < 0:
                    counts[cell] = 0.0         # roots


def king_dilation(maps: np.ndarray) -> np.ndarray:
    """bool (k, H, W): the cells of ``maps`` and their 8 neighbours. Of travel-time burn maps, the cells where
    a break can change each fire (a move needs its end cells and the cells it crosses, all within one king
    move of the burned cell it leaves)."""
    maps = np.asarray(maps, dtype=bool)
    padded = np.pad(maps, ((0, 0), (1, 1), (1, 1)))
    rows, cols = maps.shape[-2:]
    out = np.zeros_like(maps)
    for dr in (0, 1, 2):
        for dc in (0, 1, 2):
            out |= padded[:, dr:dr + rows, dc:dc + cols]
    return out
