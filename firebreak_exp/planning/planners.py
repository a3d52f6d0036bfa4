"""Fuel-break planners sharing one interface with the trained policy.

Every planner answers ``plan(tile, simulator, scenario, num_breaks, ignitions, rng)`` with an ordered
int64 array of flat cell indices (row * W + col): distinct burnable cells, at most ``num_breaks`` of them,
the first ones placed first. ``ignitions`` (int (k, 2) of (row, col)) are the planning ignitions the
environment would show; ``simulator`` is the tile's :class:`~firebreak_exp.fire.simulator.FireSimulator`.

* :class:`NoTreatmentPlanner` - no breaks (the baseline of R = 1 - BA / BA0).
* :class:`RandomPlanner` - uniformly random burnable cells (average it over several ``rng`` seeds).
* :class:`DomiRankPlanner` - the top cells of DomiRank centrality (Engsig et al., Nature Communications
  15, 56, 2024) on the fire-spread network of the tile (:func:`spread_network`, :func:`domirank`).
* :class:`GreedyPlanner` - adds, one at a time, the cell whose break most reduces the simulated expected
  burned area over the planning ignitions: the quality reference (expensive: a simulation per candidate).
* :class:`FireFlowPlanner` - adds, one at a time, the cell with the most fire flow (the burned cells the
  planning fires reach through it on their spread trees, :func:`~firebreak_exp.fire.flows.fire_flow`): a cheap stand-in for
  greedy (one simulation of the planning fires per break), in the spirit of Finney's major fire paths.
* :class:`PolicyPlanner` - a trained agent run greedily (masked argmax) through the FuelBreakEnv MDP.

``nested = True`` marks planners whose plan for ``n`` breaks is the first ``n`` cells of their plan for
any larger budget (all but the policy, whose observation holds the remaining budget), so an evaluation
can plan once at the largest budget and score prefixes. Planners that time their own steps leave the
cumulative seconds after each break in ``cumulative_seconds``.
"""
from __future__ import annotations

import math
import time
from typing import Optional

import numpy as np
from hydra.utils import get_class

from firebreak_exp.environment import FuelBreakEnv
from firebreak_exp.fire.cubes import directional_spread_rates
from firebreak_exp.fire.flows import fire_flow, king_dilation
from firebreak_exp.fire.travel_time import KING_OFFSETS, offset_azimuth

__all__ = ["Planner", "NoTreatmentPlanner", "RandomPlanner", "DomiRankPlanner", "GreedyPlanner",
           "FireFlowPlanner", "PolicyPlanner", "spread_network", "smallest_eigenvalue", "domirank", "domirank_scores"]


def _burnable(tile) -> np.ndarray:
    return np.asarray(tile.burnable, dtype=bool)


def environment_class(env_class: str) -> type:
    """The class named ``env_class`` (the ``env`` group's ``_target_``): FuelBreakEnv or a subclass, whose
    :meth:`~firebreak_exp.environment.FuelBreakEnv.planning_episode` the planners that run the MDP use."""
    cls = get_class(str(env_class))
    if not (isinstance(cls, type) and issubclass(cls, FuelBreakEnv)):
        raise ValueError(f"env_class={env_class}: expected FuelBreakEnv or a subclass of it")
    return cls


def _validated(cells, tile, num_breaks: int) -> np.ndarray:
    """Check a plan: distinct burnable flat indices, at most num_breaks."""
    cells = np.asarray(cells, dtype=np.int64).ravel()
    burnable = _burnable(tile).ravel()
    if len(cells) > num_breaks:
        raise ValueError(f"plan of {len(cells)} cells exceeds the budget of {num_breaks}")
    if len(np.unique(cells)) != len(cells) or not burnable[cells].all():
        raise ValueError("a plan must hold distinct burnable cells")
    return cells


class Planner:
    """Base class: ``plan(...) -> ordered int64 flat cell indices`` (see the module docstring)."""

    name = "planner"
    nested = True          # the plan for n breaks is a prefix of the plan for more
    stochastic = False     # depends on ``rng`` (evaluate over several seeds)
    sees_scoring_fires = False   # the evaluation shows it the scoring fires (a hindsight reference, not a planner)

    def __init__(self):
        self.cumulative_seconds: Optional[np.ndarray] = None

    def plan(self, tile, simulator, scenario, num_breaks: int, ignitions: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NoTreatmentPlanner(Planner):
    """No fuel breaks."""

    name = "no_treatment"

    def plan(self, tile, simulator, scenario, num_breaks, ignitions, rng):
        self.cumulative_seconds = None
        return np.zeros(0, dtype=np.int64)


class RandomPlanner(Planner):
    """``num_breaks`` burnable cells drawn uniformly without replacement with ``rng``."""

    name = "random"
    stochastic = True

    def plan(self, tile, simulator, scenario, num_breaks, ignitions, rng):
        self.cumulative_seconds = None
        cells = np.flatnonzero(_burnable(tile))
        return rng.permutation(cells)[:num_breaks].astype(np.int64)


# ---------------------------------------------------------------------------------------------------------
# DomiRank
# ---------------------------------------------------------------------------------------------------------

def spread_network(tile, scenario, symmetric: bool = True, rates: Optional[np.ndarray] = None):
    """The tile's fire-spread network: ``(A, nodes)``.

    ``nodes`` are the flat indices of the burnable cells; ``A`` (scipy CSR, len(nodes) square) links each
    burnable cell ``a`` to its burnable king-move neighbours ``b`` (8-neighbourhood). The weight of a -> b
    is the conductance of the edge, the inverse of the time a fire takes from a's centre to b's centre
    (half the distance at a's spread rate toward b, half at b's; ``d / 2 * (1/R_a + 1/R_b)``, the
    travel-time rule of Finney 2002), with pyretechnics' directional spread rates
    (:func:`firebreak_exp.fire.cubes.directional_spread_rates`, crown fire included, under ``scenario``'s
    wind and moistures), scaled so that the fastest edge weighs 1. So a cell weighs by how fast fire
    runs through it, diagonal moves count their sqrt(2) longer distance, and edges into slow fuel are weak.

    ``symmetric=True`` (default) uses ``(W + W^T) / 2``: DomiRank's convergence range
    ``sigma in (0, -1/lambda_min)`` is stated for a real spectrum, which a symmetric matrix guarantees, and
    the evaluation draws ignitions anywhere on the tile, so a break matters for fire crossing it in either
    direction (the mean of the head-fire and back-fire conductances). ``symmetric=False`` keeps the directed
    weights (row a = fire leaving a); ``lambda_min`` is then the smallest real part of the spectrum.
    ``rates`` (8, H, W) replaces the pyretechnics rates toward the 8 king-move azimuths (tests).
    """
    from scipy.sparse import csr_matrix

    burnable = _burnable(tile)
    rows, cols = burnable.shape
    if rates is None:
        azimuths = [offset_azimuth(dr, dc) for dr, dc in KING_OFFSETS]
        rates = directional_spread_rates(tile, scenario, azimuths)
    rates = np.where(burnable[None], np.asarray(rates, dtype=np.float64), 0.0)
    nodes = np.flatnonzero(burnable)
    node_of = np.full(rows * cols, -1, dtype=np.int64)
    node_of[nodes] = np.arange(len(nodes))
    index = np.arange(rows * cols).reshape(rows, cols)
    cell_size = float(getattr(tile, "cell_size", 1.0)) or 1.0
    src_l, dst_l, w_l = [], [], []
    for k, (dr, dc) in enumerate(KING_OFFSETS):
        r0, r1 = max(0, -dr), min(rows, rows - dr)
        c0, c1 = max(0, -dc), min(cols, cols - dc)
        src = index[r0:r1, c0:c1].ravel()
        dst = index[r0 + dr:r1 + dr, c0 + dc:c1 + dc].ravel()
        ra, rb = rates[k].ravel()[src], rates[k].ravel()[dst]
        keep = (ra > 0) & (rb > 0)
        distance = cell_size * math.hypot(dr, dc)
        travel = distance / 2.0 * (1.0 / ra[keep] + 1.0 / rb[keep])
        src_l.append(node_of[src[keep]]); dst_l.append(node_of[dst[keep]]); w_l.append(1.0 / travel)
    src, dst, weight = (np.concatenate(x) for x in (src_l, dst_l, w_l))
    if len(weight):
        weight = weight / weight.max()
    n = len(nodes)
    A = csr_matrix((weight, (src, dst)), shape=(n, n))
    if symmetric:
        A = ((A + A.T) * 0.5).tocsr()
    return A, nodes


def smallest_eigenvalue(A) -> float:
    """The smallest eigenvalue of ``A`` (its smallest real part when ``A`` is not symmetric)."""
    n = A.shape[0]
    if n == 0 or A.nnz == 0:
        return 0.0
    symmetric = abs(A - A.T).max() <= 1e-12 * max(abs(A).max(), 1.0)
    if n <= 3000:
        dense = A.toarray()
        values = np.linalg.eigvalsh(dense) if symmetric else np.linalg.eigvals(dense).real
        return float(values.min())
    from scipy.sparse.linalg import eigs, eigsh
    if symmetric:
        return float(eigsh(A.astype(np.float64), k=1, which="SA", return_eigenvectors=False)[0])
    return float(eigs(A.astype(np.float64), k=1, which="SR", return_eigenvectors=False)[0].real)


def domirank(A, sigma: Optional[float] = None, sigma_fraction: float = 0.5) -> tuple:
    """DomiRank centrality ``Gamma = sigma (sigma A + I)^-1 A 1`` of the network ``A`` (scipy sparse).

    ``sigma`` is the competition parameter; by default ``sigma_fraction * (-1 / lambda_min)`` with
    ``lambda_min`` the smallest (most negative) eigenvalue of ``A``: Engsig et al. show the DomiRank
    dynamics converge for ``sigma in (0, -1/lambda_min)``; 0.5 sits mid-range, between the degree-like
    ranking of small sigma and the strongly competitive one near the bound. The linear system
    ``(sigma A + I) Gamma = sigma A 1`` is solved with ``scipy.sparse.linalg.spsolve``.
    Returns ``(Gamma, sigma)``.
    """
    from scipy.sparse import csc_matrix, identity
    from scipy.sparse.linalg import spsolve

    A = csc_matrix(A, dtype=np.float64)
    n = A.shape[0]
    if n == 0:
        return np.zeros(0), 0.0
    if sigma is None:
        if not 0.0 < sigma_fraction < 1.0:
            raise ValueError(f"sigma_fraction must be in (0, 1), got {sigma_fraction}")
        lam = smallest_eigenvalue(A)
        sigma = sigma_fraction * (-1.0 / lam) if lam < 0 else 1.0   # no negative eigenvalue: no edges
    strength = np.asarray(A @ np.ones(n)).ravel()
    if A.nnz == 0:
        return np.zeros(n), float(sigma)
    gamma = spsolve((sigma * A + identity(n, format="csc")).tocsc(), sigma * strength)
    return np.asarray(gamma, dtype=np.float64).ravel(), float(sigma)


def domirank_scores(tile, scenario, sigma_fraction: float = 0.5, symmetric: bool = True) -> np.ndarray:
    """float64 (H, W): DomiRank of every burnable cell on the tile's spread network, -inf elsewhere."""
    A, nodes = spread_network(tile, scenario, symmetric=symmetric)
    gamma, _ = domirank(A, sigma_fraction=sigma_fraction)
    scores = np.full(_burnable(tile).size, -np.inf)
    scores[nodes] = gamma
    return scores.reshape(_burnable(tile).shape)


class DomiRankPlanner(Planner):
    """The ``num_breaks`` burnable cells of highest DomiRank (ties: lower flat index first).

    The ranking depends on the tile and the fire weather only (not on ignitions); it is cached per tile.
    """

    name = "domirank"

    def __init__(self, sigma_fraction: float, symmetric: bool):
        super().__init__()
        self.sigma_fraction, self.symmetric = float(sigma_fraction), bool(symmetric)
        self._orders: dict = {}

    def order(self, tile, scenario) -> np.ndarray:
        """All burnable cells, highest DomiRank first."""
        key = (getattr(tile, "name", id(tile)), id(tile), repr(scenario))
        if key not in self._orders:
            scores = domirank_scores(tile, scenario, self.sigma_fraction, self.symmetric).ravel()
            burnable = np.flatnonzero(np.isfinite(scores))
            order = burnable[np.lexsort((burnable, -scores[burnable]))]
            self._orders[key] = order.astype(np.int64)
        return self._orders[key]

    def plan(self, tile, simulator, scenario, num_breaks, ignitions, rng):
        self.cumulative_seconds = None
        return self.order(tile, scenario)[:num_breaks].copy()

    def __repr__(self) -> str:
        return f"DomiRankPlanner(sigma_fraction={self.sigma_fraction}, symmetric={self.symmetric})"


# ---------------------------------------------------------------------------------------------------------
# Greedy
# ---------------------------------------------------------------------------------------------------------

class GreedyPlanner(Planner):
    """Adds, at each step, the cell whose break most reduces the simulated burned area over ``ignitions``.

    Candidates are the burnable, unbroken cells that the current fires burn, and their 8 neighbours: a
    break elsewhere changes nothing, and a neighbour a fire did not burn can still matter (the travel-time
    simulator's knight moves are cut by a break in a cell they cross). A break at ``c`` only changes the
    fires that burned ``c`` or a neighbour of it, so only those are simulated again: a step costs one
    simulation per (candidate, fire near it), and after a break only the fires near it are re-simulated
    (the other fires' reductions are reused), which keeps the search exact. Ties go to the cell burned by
    more fires, then to the lower flat index. With ``exclude_ignitions`` the planning ignition
    cells are not candidates: breaking an ignition point "extinguishes" a sampled fire outright, which
    says nothing about fires that start elsewhere. When no candidate is left (every fire is stopped) the
    remaining breaks follow the untreated burn counts, then ``rng``.
    """

    name = "greedy"

    def __init__(self, exclude_ignitions: bool, max_candidates: Optional[int]):
        super().__init__()
        self.exclude_ignitions = bool(exclude_ignitions)
        self.max_candidates = None if max_candidates is None else int(max_candidates)

    def _candidates(self, reach: np.ndarray, counts: np.ndarray, live: np.ndarray,
                    ignitions: np.ndarray, width: int) -> np.ndarray:
        candidates = np.flatnonzero(reach.any(axis=0) & live)
        if self.exclude_ignitions and len(ignitions):
            candidates = np.setdiff1d(candidates, ignitions[:, 0] * width + ignitions[:, 1])
        if self.max_candidates is not None and len(candidates) > self.max_candidates:
            keep = np.argsort(-counts[candidates], kind="stable")[:self.max_candidates]
            candidates = np.sort(candidates[keep])
        return candidates

    @staticmethod
    def _fire_deltas(simulator, ignitions, breaks, sizes, reach, fires, cells, deltas) -> None:
        """deltas[f, c] = cells fire f no longer burns when c is broken too, for f in ``fires`` near c."""
        trial = breaks.copy()
        for cell in cells:
            near = fires[reach[fires, cell]]
            if len(near) == 0:
                continue
            trial.flat[cell] = True
            after = simulator.burn_maps(ignitions[near], trial).reshape(len(near), -1).sum(axis=1)
            trial.flat[cell] = False
            deltas[near, cell] = sizes[near] - after

    def _state(self, simulator, ignitions, breaks):
        maps = simulator.burn_maps(ignitions, breaks)
        flat = maps.reshape(len(ignitions), -1)
        return flat.sum(axis=1), king_dilation(maps).reshape(len(ignitions), -1), flat

    def single_break_reductions(self, simulator, ignitions: np.ndarray, breaks: np.ndarray) -> tuple:
        """Every candidate cell with the drop in burned cells (summed over fires) its break alone would give
        on top of ``breaks``, and how many fires burn it: ``(candidates, reductions, fires_through)``."""
        ignitions = np.asarray(ignitions, dtype=np.int64).reshape(-1, 2)
        sizes, reach, flat = self._state(simulator, ignitions, breaks)
        counts = flat.sum(axis=0)
        live = np.asarray(simulator.burnable).ravel() & ~breaks.ravel()
        candidates = self._candidates(reach, counts, live, ignitions, breaks.shape[1])
        deltas = np.zeros(flat.shape)
        self._fire_deltas(simulator, ignitions, breaks, sizes, reach, np.arange(len(ignitions)), candidates, deltas)
        return candidates, deltas[:, candidates].sum(axis=0), counts[candidates]

    def plan(self, tile, simulator, scenario, num_breaks, ignitions, rng):
        start = time.perf_counter()
        ignitions = np.asarray(ignitions, dtype=np.int64).reshape(-1, 2)
        burnable = _burnable(tile)
        breaks = np.zeros(burnable.shape, dtype=bool)
        sizes, reach, flat = self._state(simulator, ignitions, breaks)
        untreated = flat.sum(axis=0)
        deltas = np.zeros(flat.shape)
        changed = np.arange(len(ignitions))
        order, stamps = [], []
        while len(order) < num_breaks:
            counts = flat.sum(axis=0)
            live = burnable.ravel() & ~breaks.ravel()
            candidates = self._candidates(reach, counts, live, ignitions, breaks.shape[1])
            if len(candidates) == 0:
                break
            deltas[changed] = 0.0
            self._fire_deltas(simulator, ignitions, breaks, sizes, reach, changed, candidates, deltas)
            reductions = deltas[:, candidates].sum(axis=0)
            best = np.lexsort((candidates, -counts[candidates], -reductions))[0]
            cell = int(candidates[best])
            changed = np.flatnonzero(reach[:, cell])
            breaks.flat[cell] = True
            order.append(cell)
            stamps.append(time.perf_counter() - start)
            if len(changed):
                s, r, f = self._state(simulator, ignitions[changed], breaks)
                sizes[changed], reach[changed], flat[changed] = s, r, f
        if len(order) < num_breaks:                                    # every fire stopped: fill up
            rest = np.flatnonzero(burnable.ravel() & ~breaks.ravel())
            rest = rest[np.lexsort((rng.random(len(rest)), -untreated[rest]))]
            order.extend(int(c) for c in rest[:num_breaks - len(order)])
            stamps.extend([time.perf_counter() - start] * (len(order) - len(stamps)))
        self.cumulative_seconds = np.asarray(stamps)
        return np.asarray(order, dtype=np.int64)

    def __repr__(self) -> str:
        return f"GreedyPlanner(exclude_ignitions={self.exclude_ignitions}, max_candidates={self.max_candidates})"


class FireFlowPlanner(Planner):
    """Adds, at each step, the unbroken burnable cell with the most fire flow under the current breaks: the
    mean over the planning fires of the burned cells each fire reaches through it on its spread trees
    (:func:`~firebreak_exp.fire.flows.fire_flows`; an upper bound on what a break there saves; greedy
    measures the exact saving at a simulation per candidate). Ties go to the
    lower flat index; when no fire reaches an unbroken cell the rest follow the untreated burn counts.
    """

    name = "flow"

    def plan(self, tile, simulator, scenario, num_breaks, ignitions, rng):
        start = time.perf_counter()
        ignitions = np.asarray(ignitions, dtype=np.int64).reshape(-1, 2)
        live = _burnable(tile).ravel().copy()
        breaks = np.zeros(_burnable(tile).shape, dtype=bool)
        arrival = simulator.arrival_times(ignitions, breaks)
        untreated = np.isfinite(arrival).sum(axis=0).ravel()
        order, stamps = [], []
        while len(order) < num_breaks and live.any():
            if order:                 # the fires under the breaks so far (the first step reuses the untreated ones)
                arrival = simulator.arrival_times(ignitions, breaks)
            score = np.where(live, fire_flow(arrival, simulator.spread_graph()).ravel(), -1.0)
            if score.max() <= 0:      # nothing reaches an unbroken cell any more: fill up
                rest = np.flatnonzero(live)
                rest = rest[np.lexsort((rest, -untreated[rest]))][:num_breaks - len(order)]
                order.extend(int(c) for c in rest)
                stamps.extend([time.perf_counter() - start] * len(rest))
                break
            cell = int(np.argmax(score))
            breaks.flat[cell], live[cell] = True, False
            order.append(cell)
            stamps.append(time.perf_counter() - start)
        self.cumulative_seconds = np.asarray(stamps)
        return np.asarray(order, dtype=np.int64)


# ---------------------------------------------------------------------------------------------------------
# The trained policy
# ---------------------------------------------------------------------------------------------------------

class PolicyPlanner(Planner):
    """A trained agent placing breaks through the MDP of ``env_class`` (the ``env`` group's ``_target_``: the
    environment it trained in), greedily (masked argmax, epsilon 0).

    The episode runs on the tile with the given planning ignitions (the burn-probability channel and the
    rewards use them), the fires updated after every break, and a budget of exactly ``num_breaks``.
    """

    name = "policy"
    nested = False

    def __init__(self, agent, env_class: str):
        super().__init__()
        self.agent = agent
        self.env_class = environment_class(env_class)
        self.last_episode: Optional[dict] = None

    def plan(self, tile, simulator, scenario, num_breaks, ignitions, rng):
        self.cumulative_seconds = None
        if num_breaks <= 0 or not _burnable(tile).any():
            return np.zeros(0, dtype=np.int64)
        env, obs, info = self.env_class.planning_episode(tile, simulator, scenario, num_breaks, ignitions)
        order, terminated = [], False
        while not terminated:
            action = int(self.agent.act(obs[None], info["action_mask"][None], epsilon=0.0)[0])
            obs, _, terminated, _, info = env.step(action)
            if not info.get("invalid_action", False):
                order.append(action)
        self.last_episode = env.episode_stats()
        return _validated(order, tile, num_breaks)

    def __repr__(self) -> str:
        return f"PolicyPlanner(env_class={self.env_class.__name__})"
