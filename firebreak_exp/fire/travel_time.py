"""The fast simulator: minimum travel time (Finney 2002) over a 16-neighbour cell graph whose edge times
come from pyretechnics' own directional spread rates (:func:`~firebreak_exp.fire.fidelity.compare_simulators`
measures how closely it follows the reference)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from firebreak_exp.fire.cubes import from_pyretechnics, tile_layers
from firebreak_exp.fire.scenario import Scenario
from firebreak_exp.fire.simulator import IncrementalFireSimulator, SpreadGraph, as_breaks, as_ignitions, compiled

#: Neighbour offsets (d_row, d_col): the 8 king moves, then the 8 knight moves used with ``neighbours=16``.
KING_OFFSETS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))
KNIGHT_OFFSETS = ((-2, 1), (-1, 2), (1, 2), (2, 1), (2, -1), (1, -2), (-1, -2), (-2, -1))

#: Default rate factor of :class:`TravelTimeSimulator`, fitted with :func:`fit_rate_factor` (see its docstring):
#: 1.00 (mean |burned fraction error| 0.012 over 208 fires on 26 western Worcester tiles).
TRAVEL_TIME_RATE_FACTOR = 1.0


def offset_azimuth(d_row: int, d_col: int) -> float:
    """Degrees clockwise from north of a move by (d_row, d_col) on a tile whose row 0 is north."""
    return math.degrees(math.atan2(d_col, -d_row)) % 360.0


def _knight_crossed_cells(d_row: int, d_col: int) -> tuple:
    """The two cells (offsets from the start) a straight knight move passes through between its ends.

    The segment from (0, 0) to (d_row, d_col) with |d_row|, |d_col| = {1, 2} passes through exactly two
    intermediate cells, a quarter of its length in each (and a quarter in each end cell).
    """
    if abs(d_col) == 2:
        step = int(np.sign(d_col))
        return (0, step), (d_row, step)
    step = int(np.sign(d_row))
    return (step, 0), (step, d_col)


def ray_spread_rates(normal_rates: np.ndarray, azimuths: np.ndarray, slope: np.ndarray, aspect: np.ndarray,
                     ray_azimuths: Sequence[float]) -> np.ndarray:
    """Horizontal ray (Huygens wavelet) spread rates from pyretechnics' front-normal rates.

    pyretechnics' ``burn_cell_toward_azimuth`` gives the spread rate of a front whose normal faces the
    azimuth, measured on the slope plane: for its elliptical wavelets this is the ellipse's support
    function, i.e. exactly what the level-set model advances a front with. A travel-time path instead needs
    the distance a fire runs *along* a direction per minute, the radius of the wavelet itself (Wulff shape):

        r(u) = min over sampled normals n_j with n_j . u > 0 of  s_j / (n_j . u)

    where ``s_j`` is the horizontal normal speed. Both are horizontal: with elevation gradient ``g``, the
    slope-plane direction pyretechnics uses for azimuth unit vector ``a`` is the normal of horizontal fronts
    with normal ``n = unit(a + (a.g) g)``, and such a front moves horizontally at
    ``s = R * sqrt(1 - (n.g)^2 / (1 + |g|^2))`` (the same projection as pyretechnics' level set).

    Returns float64 (len(ray_azimuths), H, W), 0 where the cell does not burn.
    """
    az = np.radians(np.asarray(azimuths, dtype=np.float64))[:, None, None]
    up = np.radians(np.asarray(aspect, dtype=np.float64) + 180.0)
    slope = np.asarray(slope, dtype=np.float64)
    gx, gy = slope * np.sin(up), slope * np.cos(up)            # elevation gradient, east/north components
    ax, ay = np.sin(az), np.cos(az)                            # azimuth unit vectors
    a_dot_g = ax * gx + ay * gy
    nx, ny = ax + a_dot_g * gx, ay + a_dot_g * gy
    norm = np.hypot(nx, ny)
    nx, ny = nx / norm, ny / norm
    n_dot_g = nx * gx + ny * gy
    speed = np.asarray(normal_rates, dtype=np.float64) * np.sqrt(
        np.clip(1.0 - n_dot_g ** 2 / (1.0 + gx ** 2 + gy ** 2), 0.0, 1.0))
    out = np.empty((len(ray_azimuths),) + speed.shape[1:], dtype=np.float64)
    for k, ray in enumerate(ray_azimuths):
        ux, uy = math.sin(math.radians(ray)), math.cos(math.radians(ray))
        cos = nx * ux + ny * uy
        with np.errstate(divide="ignore", invalid="ignore"):
            candidate = np.where(cos > 1e-9, speed / cos, np.inf)
        out[k] = candidate.min(axis=0)
    out[~np.isfinite(out)] = 0.0
    return out


class TravelTimeSimulator(IncrementalFireSimulator):
    """Fast backend: minimum travel time (Finney 2002) on a cell graph built from pyretechnics' rates.

    ``__init__`` (once per tile) asks pyretechnics for the front-normal spread rate of every cell toward
    ``num_azimuths`` evenly spaced azimuths (``burn_all_cells_toward_azimuth`` on the same cubes and weather
    as the reference, crown fire included), converts them to horizontal ray spread rates ``R_a(theta)``
    along each neighbour direction (:func:`ray_spread_rates`; feeding the front-normal rates to the graph
    directly would make flanks and backs several times too fast), and builds a directed graph over cells:

    * king moves (8 neighbours): ``t = d/2 * (1/R_a(theta) + 1/R_b(theta))``; a diagonal move squeezes
      between the two cells sharing the corner, so it needs both to be burnable and unbroken (pyretechnics'
      level set cannot pass a corner either, and a staircase of breaks must hold);
    * with ``neighbours=16`` (default) also knight moves (1, 2): the straight segment spends a quarter of its
      length in each end cell and in each of the two cells it crosses, so ``t = d/4 * sum of 1/R(theta)``
      over the four cells, and both crossed cells must burn (a one-cell break line cannot be jumped).
      16 neighbours bound the direction error of travel distances by 2.7% instead of 8.2% with 8 (Finney
      2002); with 8 the fit needs a larger fudge factor and agrees slightly worse.

    Edges are absent where either end does not burn. Ignition: pyretechnics' ``ignite_cell`` burns the whole
    cell at once (phi = -1 there, +1 around, so the front starts on the cell's edge); each cell therefore
    has a second, source-only graph node whose out-edges skip the ignition cell's own share of the edge
    time (``ignite_whole_cell=False`` starts fires at the cell centre instead). ``burn_maps`` skips the edges
    that need a broken cell and runs Dijkstra from each ignition, stopping at ``burn_duration``
    (:func:`_shortest_paths`, compiled; the numbers of ``scipy.sparse.csgraph.dijkstra`` with ``limit``);
    a cell is burned when its arrival time is within ``burn_duration``, every travel time being divided by
    ``rate_factor``.

    ``rate_factor`` is the one calibration constant; its default :data:`TRAVEL_TIME_RATE_FACTOR` (1.0) was
    fitted with :func:`fit_rate_factor` against :class:`PyretechnicsSimulator` (see there for the tiles).
    Building the graph costs about 0.1-0.2 s per 25 x 25 tile and 0.5-0.9 s per 50 x 50 tile (the
    ``num_azimuths`` pyretechnics calls); each fire then costs well under a millisecond.
    """

    name = "travel_time"

    def __init__(self, tile, scenario: Scenario, rate_factor: Optional[float] = None,
                 neighbours: int = 16, num_azimuths: int = 32, surface_lw_ratio_model: str = "behave",
                 ignite_whole_cell: bool = True):
        super().__init__(tile, scenario)
        self.ignite_whole_cell = bool(ignite_whole_cell)
        if neighbours not in (8, 16):
            raise ValueError("neighbours must be 8 or 16")
        if num_azimuths < 8:
            raise ValueError("num_azimuths must be >= 8")
        self.rate_factor = float(TRAVEL_TIME_RATE_FACTOR if rate_factor is None else rate_factor)
        if not self.rate_factor > 0.0:
            raise ValueError("rate_factor must be > 0")
        self.neighbours = int(neighbours)
        self.num_azimuths = int(num_azimuths)
        self.surface_lw_ratio_model = surface_lw_ratio_model

        rows, cols = self.shape
        offsets = KING_OFFSETS + (KNIGHT_OFFSETS if neighbours == 16 else ())
        edge_azimuths = [offset_azimuth(dr, dc) for dr, dc in offsets]
        sample_azimuths = np.arange(self.num_azimuths) * (360.0 / self.num_azimuths)
        normal = self.spread_rates(sample_azimuths, surface_lw_ratio_model)
        layers = tile_layers(tile)                            # flat-aspect cleaned slope/aspect
        ray = ray_spread_rates(normal, sample_azimuths, from_pyretechnics(layers["slope"]),
                               from_pyretechnics(layers["aspect"]), edge_azimuths)
        ray[:, ~self.burnable] = 0.0
        with np.errstate(divide="ignore"):
            slowness = np.where(ray > 0.0, 1.0 / ray, np.inf)  # min/m, (num_offsets, H, W)

        cell_size = float(tile.cell_size)
        n_cells = rows * cols
        index = np.arange(n_cells).reshape(rows, cols)
        live = self.burnable.ravel()
        keys = ("src", "dst", "weight", "start_weight", "via1", "via2")
        parts = {key: [] for key in keys}
        for k, (dr, dc) in enumerate(offsets):
            r0, r1 = max(0, -dr), min(rows, rows - dr)
            c0, c1 = max(0, -dc), min(cols, cols - dc)
            if r0 >= r1 or c0 >= c1:
                continue
            cells = lambda o_r, o_c: index[r0 + o_r:r1 + o_r, c0 + o_c:c1 + o_c]      # noqa: E731
            near = lambda o_r, o_c: slowness[k, r0 + o_r:r1 + o_r, c0 + o_c:c1 + o_c]  # noqa: E731
            src, dst = cells(0, 0), cells(dr, dc)
            via1 = via2 = src                                   # cells besides the ends the move needs
            length = cell_size * math.hypot(dr, dc)
            if abs(dr) + abs(dc) == 3:                          # knight move through two crossed cells
                (ar, ac), (br, bc) = _knight_crossed_cells(dr, dc)
                via1, via2 = cells(ar, ac), cells(br, bc)
                start_weight = length / 4.0 * (near(dr, dc) + near(ar, ac) + near(br, bc))
                weight = start_weight + length / 4.0 * near(0, 0)
            else:
                start_weight = length / 2.0 * near(dr, dc)
                weight = start_weight + length / 2.0 * near(0, 0)
                if dr != 0 and dc != 0:                         # diagonal: squeezes between two cells
                    via1, via2 = cells(dr, 0), cells(0, dc)
            keep = np.isfinite(weight) & live[via1] & live[via2]
            for key, value in zip(keys, (src, dst, weight, start_weight, via1, via2)):
                parts[key].append(value[keep].ravel())
        edges = {key: np.concatenate(value) for key, value in parts.items()}
        # Graph nodes: cells 0..n-1, then one ignition node per cell (n..2n-1) whose out-edges skip the
        # source cell's share: pyretechnics ignites a whole cell (phi = -1 at its centre, +1 around), so its
        # front starts on the cell's boundary, not at its centre.
        if not self.ignite_whole_cell:
            edges["start_weight"] = edges["weight"]
        node_src = np.concatenate([edges["src"], edges["src"] + n_cells])
        order = np.argsort(node_src, kind="stable")
        self._node_src = node_src[order].astype(np.int32)
        self._weight = np.concatenate([edges["weight"], edges["start_weight"]])[order].astype(np.float64)
        for key in ("src", "dst", "via1", "via2"):
            setattr(self, "_" + key, np.concatenate([edges[key], edges[key]])[order].astype(np.int32))
        self._first_edge = np.concatenate(([0], np.cumsum(np.bincount(self._node_src, minlength=2 * n_cells))))
        self._in_edge = np.argsort(self._dst, kind="stable")          # edge ids by the node they reach
        self._in_first = np.concatenate(([0], np.cumsum(np.bincount(self._dst, minlength=2 * n_cells))))
        # the moves each cell blocks when broken (it starts, ends or is crossed by them): cell c's are
        # _blocked_edge[_blocked_first[c]:_blocked_first[c + 1]]
        # (cell, edge) pairs without repeats, sorted by cell then edge: one int64 key per pair
        num_moves = len(self._dst)
        cell_edge = np.unique(np.concatenate([self._src, self._dst, self._via1, self._via2]).astype(np.int64)
                              * num_moves + np.tile(np.arange(num_moves), 4))
        self._blocked_edge = cell_edge % num_moves
        self._blocked_first = np.concatenate(([0], np.cumsum(np.bincount(cell_edge // num_moves,
                                                                          minlength=n_cells))))
        self.num_edges = len(edges["src"])
        self._arrival(np.zeros((0, 2), np.int64), None)   # compiles the kernel here, not in the first fire
        self._spread_graph: Optional[SpreadGraph] = None

    def spread_graph(self) -> "SpreadGraph":
        """The graph's cell-to-cell moves (not the ignition nodes' shortened ones), in calibrated minutes."""
        if self._spread_graph is None:
            cell_moves = self._node_src < self.shape[0] * self.shape[1]
            self._spread_graph = SpreadGraph.from_moves(self._src[cell_moves], self._dst[cell_moves],
                                                        self._weight[cell_moves] / self.rate_factor,
                                                        self.shape[0] * self.shape[1])
        return self._spread_graph

    def _arrival(self, ignitions: np.ndarray, breaks: Optional[np.ndarray]) -> np.ndarray:
        """Calibrated minutes: graph distances / ``rate_factor``, inf beyond ``burn_duration``."""
        cells = ignitions[:, 0] * self.shape[1] + ignitions[:, 1]
        distance = np.empty((len(cells), len(self._first_edge) - 1))
        self._search(cells + self.burnable.size, self._keep(breaks), distance, np.empty((len(cells), 0), np.int64))
        return self._minutes(distance, cells)

    def search(self, ignitions: np.ndarray, fuel_breaks: Optional[np.ndarray] = None) -> "FireSearch":
        """:meth:`arrival_times` of ``ignitions`` under ``fuel_breaks`` (in ``.arrival``), with each fire's
        shortest-path tree kept, so that :meth:`add_breaks` brings them to more breaks cheaply."""
        ign = as_ignitions(ignitions, self.shape)
        breaks = as_breaks(fuel_breaks, self.shape)
        breaks = np.zeros(self.shape, bool) if breaks is None else breaks.copy()
        nodes = len(self._first_edge) - 1
        fires = FireSearch(ign, breaks, self._keep(breaks), np.empty((len(ign),) + self.shape),
                           np.empty((len(ign), nodes)), np.empty((len(ign), nodes), np.int64))
        cells = ign[:, 0] * self.shape[1] + ign[:, 1]
        searched, _ = self._search(cells + self.burnable.size, fires.keep, fires.distance, fires.parent)
        self.fires_simulated += int(searched.sum())
        self._update_arrival(fires, np.arange(len(ign)))
        return fires

    def add_breaks(self, fires: "FireSearch", fuel_breaks: np.ndarray) -> np.ndarray:
        """Bring ``fires`` (from :meth:`search`) to ``fuel_breaks``, its breaks and more; returns the indices
        of the fires whose arrival changed. A fire is searched again only where its shortest paths used a
        move the new breaks block; the arrival times are those :meth:`arrival_times` gives."""
        breaks = as_breaks(fuel_breaks, self.shape)
        breaks = np.zeros(self.shape, bool) if breaks is None else breaks
        if (fires.breaks & ~breaks).any():
            raise ValueError("add_breaks cannot take breaks away; search again")
        blocked = [self._blocked_edge[self._blocked_first[c]:self._blocked_first[c + 1]]
                   for c in np.flatnonzero(breaks & ~fires.breaks)]
        removed = np.unique(np.concatenate(blocked, dtype=np.int64)) if blocked else np.zeros(0, np.int64)
        removed = removed[fires.keep[removed]]
        fires.keep[removed] = False
        searched, changed = self._search(np.full(len(fires.ignitions), -1), fires.keep, fires.distance,
                                         fires.parent, removed)
        self.fires_simulated += int(searched.sum())
        fires.breaks = breaks.copy()
        changed = np.flatnonzero(changed)
        self._update_arrival(fires, changed)
        return changed

    def select(self, fires: "FireSearch", which: np.ndarray) -> "FireSearch":
        """A copy of the fires ``which`` of ``fires``, to bring to more breaks without changing ``fires``."""
        return FireSearch(fires.ignitions[which], fires.breaks.copy(), fires.keep.copy(), fires.arrival[which],
                          fires.distance[which], fires.parent[which])

    def _keep(self, breaks: Optional[np.ndarray]) -> np.ndarray:
        """bool per edge: the moves no break blocks (a break blocks every move that starts, ends or squeezes
        through it)."""
        if breaks is None:
            return np.ones(len(self._weight), dtype=bool)
        flat = breaks.ravel()
        return ~(flat[self._src] | flat[self._dst] | flat[self._via1] | flat[self._via2])

    def _search(self, starts, keep, distance, parent, removed=np.zeros(0, np.int64)) -> tuple:
        """:func:`_shortest_paths` on this graph (uncalibrated distances); returns ``(searched, changed)``."""
        searched, changed = np.zeros(len(starts), bool), np.zeros(len(starts), bool)
        compiled(_shortest_paths)(self._first_edge, self._node_src, self._dst, self._weight, keep, self._in_first,
                                   self._in_edge, removed, float(self.scenario.burn_duration) * self.rate_factor,
                                   np.asarray(starts, np.int64), distance, parent, searched, changed)
        return searched, changed

    def _minutes(self, distance: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """float64 (k, H, W) calibrated arrival minutes from graph ``distance`` (k, nodes), 0 at each fire's
        ignition ``cells``."""
        arrival = distance[:, :self.burnable.size].copy()
        arrival[np.arange(len(cells)), cells] = 0.0
        return arrival.reshape((len(cells),) + self.shape) / self.rate_factor

    def _update_arrival(self, fires: "FireSearch", which: np.ndarray) -> None:
        """``fires.arrival`` of fires ``which`` from their distances (inf: lit on a broken or non-burnable cell)."""
        ign = fires.ignitions[which]
        fires.arrival[which] = self._minutes(fires.distance[which], ign[:, 0] * self.shape[1] + ign[:, 1])
        lit = (self.burnable & ~fires.breaks)[ign[:, 0], ign[:, 1]]
        fires.arrival[which[~lit]] = np.inf


@dataclass
class FireSearch:
    """Fires on a :class:`TravelTimeSimulator` with their shortest-path trees, for adding breaks
    (:meth:`TravelTimeSimulator.search`, :meth:`TravelTimeSimulator.add_breaks`)."""

    ignitions: np.ndarray   # int64 (k, 2) rows and columns
    breaks: np.ndarray      # bool (H, W) the breaks the fires burned under
    keep: np.ndarray        # bool (edges) the moves they leave open
    arrival: np.ndarray     # float64 (k, H, W) minutes, as FireSimulator.arrival_times
    distance: np.ndarray    # float64 (k, nodes) graph distances (before the rate factor)
    parent: np.ndarray      # int64 (k, nodes) the edge each node was reached by (-1: none)


def _shortest_paths(first_edge, source, target, weight, keep, in_first, in_edge, removed, limit, starts,
                    dist, parent, searched, changed):
    """Dijkstra's shortest distances over a graph whose edge e runs from ``source[e]`` to ``target[e]``,
    node u's edges being ``first_edge[u]:first_edge[u + 1]`` (``in_first``/``in_edge``: the edge ids into
    each node), skipping the edges where ``keep`` is false; inf beyond ``limit`` (scipy's
    ``dijkstra(..., limit=)``, the same numbers; compiled with numba: a binary heap whose stale entries are
    skipped when popped). Row i of ``dist`` (nodes) receives fire i's distances, and of ``parent``, when it
    has columns, its shortest-path tree: the edge that reached each node (-1: none).

    ``starts[i]`` >= 0 searches from that node. ``starts[i]`` < 0 continues a search whose tree is in
    ``dist[i]`` and ``parent[i]`` on a graph that also had the ``removed`` edges (ids): only the nodes whose
    tree path used one of them can be reached later now, so just they are reset and reached again, from
    their other neighbours (the distances of all the others stand, and the numbers are a new search's).
    ``searched[i]`` tells whether fire i was searched (anew, or again below a removed edge), ``changed[i]``
    whether any of its distances changed."""
    nodes = len(first_edge) - 1
    track = parent.shape[1] > 0
    heap_key = np.empty(len(target) + 1)            # a node enters the heap once per shortening edge
    heap_node = np.empty(len(target) + 1, np.int64)
    stack = np.empty(nodes, np.int64)               # the nodes a continued search reaches again
    previous = np.empty(nodes)
    affected = np.zeros(nodes, np.bool_)
    for i in range(len(starts)):
        size, count = 0, 0
        if starts[i] >= 0:
            dist[i] = np.inf
            if track:
                parent[i] = -1
            dist[i, starts[i]] = 0.0
            heap_key[0], heap_node[0], size = 0.0, starts[i], 1
        else:
            for edge in removed:                     # the tree below a removed edge is cut off
                node = target[edge]
                if parent[i, node] == edge and not affected[node]:
                    affected[node], stack[count], count = True, node, count + 1
            done = 0
            while done < count:
                node, done = stack[done], done + 1
                for edge in range(first_edge[node], first_edge[node + 1]):
                    child = target[edge]
                    if parent[i, child] == edge and not affected[child]:
                        affected[child], stack[count], count = True, child, count + 1
            for j in range(count):
                previous[j], dist[i, stack[j]], parent[i, stack[j]] = dist[i, stack[j]], np.inf, -1
            for j in range(count):                   # reached again from the nodes whose distance stands
                node = stack[j]
                for k in range(in_first[node], in_first[node + 1]):
                    edge = in_edge[k]
                    reach = dist[i, source[edge]] + weight[edge]
                    if keep[edge] and not affected[source[edge]] and reach < dist[i, node] and reach <= limit:
                        dist[i, node], parent[i, node] = reach, edge
                if dist[i, node] < np.inf:
                    heap_key[size], heap_node[size], size = dist[i, node], node, size + 1
            order = np.argsort(heap_key[:size])      # sorted keys are a heap
            heap_key[:size], heap_node[:size] = heap_key[:size][order], heap_node[:size][order]
        while size > 0:
            d, node = heap_key[0], heap_node[0]
            size -= 1
            if size > 0:                                # pop: the last entry sifts down from the root
                key, item, pos = heap_key[size], heap_node[size], 0
                while 2 * pos + 1 < size:
                    child = 2 * pos + 1
                    if child + 1 < size and heap_key[child + 1] < heap_key[child]:
                        child += 1
                    if heap_key[child] >= key:
                        break
                    heap_key[pos], heap_node[pos] = heap_key[child], heap_node[child]
                    pos = child
                heap_key[pos], heap_node[pos] = key, item
            if d > dist[i, node]:
                continue                                # stale: the node was reached sooner since
            for edge in range(first_edge[node], first_edge[node + 1]):
                to, reach = target[edge], d + weight[edge]
                if keep[edge] and reach < dist[i, to] and reach <= limit:
                    dist[i, to] = reach
                    if track:
                        parent[i, to] = edge
                    pos = size                          # push: sift up from the end
                    size += 1
                    while pos > 0 and heap_key[(pos - 1) // 2] > reach:
                        heap_key[pos], heap_node[pos] = heap_key[(pos - 1) // 2], heap_node[(pos - 1) // 2]
                        pos = (pos - 1) // 2
                    heap_key[pos], heap_node[pos] = reach, to
        searched[i] = starts[i] >= 0 or count > 0
        changed[i] = starts[i] >= 0
        for j in range(count):
            changed[i] |= dist[i, stack[j]] != previous[j]
            affected[stack[j]] = False
