"""Planning fuel breaks on a whole landscape extract (``python -m firebreak_exp.plan``; its files for GIS:
:mod:`firebreak_exp.commands.plan_outputs`).

The whole raster stack (or a window of it) becomes ONE grid (:func:`whole_landscape`): nodata cells turn
into non-burnable fuel (NB9) on neutral terrain, so no fire crosses them and no break lands on them. One
fire simulator is built over that grid and serves every planner.

Planners that follow the fires (``flow``, ``policy``, ``greedy``) place breaks in batches between fire
updates (:func:`plan_in_batches`): the :class:`~firebreak_exp.environment.FuelBreakEnv` MDP runs on the
whole grid with the planning ignitions, and each batch takes the ``batch_cells`` unbroken burnable cells
that score highest under the current fires (fire flow; the Q-network's values over the whole grid; the
simulated single-break reduction), then the env brings its fires to the new breaks
(:meth:`~firebreak_exp.environment.FuelBreakEnv.step_batch`), or do so window by window
(:func:`plan_in_windows`, the command's default), the windows sharing the budget by fire risk
(:func:`burn_probability`, :func:`window_budgets`). The decision-time searches (``policy_search``,
``flow_search``) plan window by window only, each window as a tile of the evaluation
(:func:`search_in_windows`). ``random`` and ``domirank`` do not follow fires and plan in one go. Plans
are scored on fresh ignitions (:func:`score_plan_fires`).

Units: cells, hectares (ha), fractions of the burnable cells, minutes, seconds.
"""
from __future__ import annotations

import logging
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import rasterio
from rasterio.windows import Window
from tqdm.auto import tqdm

from firebreak_exp.landscape import LAYERS, LandscapeError, RasterStack, Tile, read_layers, write_synthetic_landscape

log = logging.getLogger(__name__)

#: Fuel model written into nodata cells of the planning grid (NB9, bare ground: non-burnable).
NODATA_FUEL_MODEL = 99
#: Planners that follow the fires and plan in batches; the others plan in one go.
BATCHED_METHODS = ("flow", "policy", "greedy")
#: The decision-time searches (planning/search.py): window by window only, each window planned as a tile.
SEARCH_METHODS = ("policy_search", "flow_search")
ONE_GO_METHODS = ("random", "domirank")
METHODS = BATCHED_METHODS + SEARCH_METHODS + ONE_GO_METHODS
#: The methods that need a trained agent (a checkpoint).
LEARNED_METHODS = ("policy", "policy_search")


@dataclass
class Landscape:
    """The planning grid (a :class:`Tile` over the whole extract or window) and where it lies on the ground."""

    tile: Tile
    valid: np.ndarray            # bool (H, W): False where the input rasters hold nodata
    transform: rasterio.Affine   # of the grid's top-left cell (the window's when planning a window)
    crs: object                  # rasterio CRS of the input rasters
    source: str                  # raster folder

    @property
    def cell_hectares(self) -> float:
        return self.tile.cell_hectares

    @property
    def num_burnable(self) -> int:
        return int(self.tile.burnable.sum())


# ---------------------------------------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------------------------------------

def raster_folder(landscape_cfg) -> Path:
    """The folder of the ``landscape`` group's rasters: ``raster_dir`` (landfire) or the generated synthetic
    landscape (written once under ``cache_dir``, as training reads it)."""
    if landscape_cfg.source == "landfire":
        if not landscape_cfg.get("raster_dir"):
            raise LandscapeError("landscape.raster_dir: the folder holding the LANDFIRE GeoTIFFs is required")
        return Path(str(landscape_cfg.raster_dir)).expanduser()
    if landscape_cfg.source != "synthetic":
        raise LandscapeError(f"landscape.source={landscape_cfg.source}: expected 'landfire' or 'synthetic'")
    rows, cols, seed = landscape_cfg.synthetic_rows, landscape_cfg.synthetic_cols, landscape_cfg.seed
    cache = Path(str(landscape_cfg.cache_dir or "outputs/landscapes")).expanduser()
    return write_synthetic_landscape(cache / f"synthetic_{rows}x{cols}_seed{seed}", rows, cols, seed)


def whole_landscape(stack: RasterStack, window: Optional[Sequence[int]] = None) -> Landscape:
    """One grid over ``stack`` (or its ``window`` = [row, col, height, width] in cells).

    Nodata cells become non-burnable (fuel NB9) on flat ground at the mean valid elevation with no canopy, so
    the static channels' elevation scaling ignores them and fires stop at them.
    """
    rows, cols = stack.shape
    if window is None:
        row, col, height, width = 0, 0, rows, cols
    else:
        if len(window) != 4:
            raise ValueError(f"window={list(window)}: expected [row, col, height, width] in cells")
        row, col, height, width = (int(v) for v in window)
        if row < 0 or col < 0 or height < 2 or width < 2 or row + height > rows or col + width > cols:
            raise ValueError(f"window={list(window)}: expected [row, col, height, width] with height, width >= 2 "
                             f"inside the {rows} x {cols} raster")
    part = (slice(row, row + height), slice(col, col + width))
    valid = stack.valid[part].copy()
    if not valid.any():
        raise LandscapeError(f"window={list(window)} of {stack.name} holds only nodata cells")
    layers = {name: np.array(stack.layers[name][part]) for name in LAYERS}
    layers["elevation"][~valid] = float(layers["elevation"][valid].mean())
    layers["aspect"][~valid] = -1.0                         # flat
    layers["fuel_model"][~valid] = NODATA_FUEL_MODEL
    for name in layers:
        layers[name].setflags(write=False)
    tile = Tile(name=stack.name, row=row, col=col, cell_size=stack.cell_size, **layers)
    transform = rasterio.windows.transform(Window(col, row, width, height), stack.transform)
    return Landscape(tile=tile, valid=valid, transform=transform, crs=stack.crs, source=stack.name)


def load_landscape(landscape_cfg, window: Optional[Sequence[int]] = None) -> Landscape:
    """The planning grid of a ``landscape`` config group (see :func:`whole_landscape`)."""
    folder = raster_folder(landscape_cfg)
    stack = read_layers(folder, landscape_cfg.get("layer_patterns"))
    landscape = whole_landscape(stack, window)
    landscape.source = str(folder)
    return landscape


def budget_cells(landscape: Landscape, budget_percent: float, budget_hectares: Optional[float] = None) -> int:
    """Break cells of the budget: ``budget_hectares`` when given, else ``budget_percent`` % of the burnable
    cells (rounded, at least 1). ValueError names the key for a budget outside (0, 100) % of them."""
    burnable = landscape.num_burnable
    if budget_hectares is not None:
        cells = int(round(float(budget_hectares) / landscape.cell_hectares))
        burnable_ha = burnable * landscape.cell_hectares
        if not 0 < cells < burnable:
            raise ValueError(f"budget_hectares={budget_hectares}: expected more than 0 and less than the "
                             f"{burnable_ha:.1f} ha of burnable cells ({landscape.cell_hectares:g} ha per cell)")
        return cells
    if not 0 < float(budget_percent) < 100:
        raise ValueError(f"budget_percent={budget_percent}: expected a percentage of burnable cells in (0, 100)")
    return min(burnable - 1, max(1, int(round(float(budget_percent) / 100.0 * burnable))))


# ---------------------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------------------

def batch_size(num_burnable: int, batch_percent: float) -> int:
    """Breaks placed between two fire updates: ``batch_percent`` % of the burnable cells, at least 1."""
    return max(1, int(round(batch_percent / 100.0 * num_burnable)))


def top_cells(score: np.ndarray, mask: np.ndarray, count: int, tiebreak: Optional[np.ndarray] = None) -> np.ndarray:
    """The ``count`` cells of ``mask`` with the highest ``score`` (flat arrays), then the highest ``tiebreak``,
    then the lowest index; best first."""
    cells = np.flatnonzero(mask)
    keys = (cells,) if tiebreak is None else (cells, -tiebreak[cells])
    order = np.lexsort(keys + (-score[cells],))
    return cells[order[:count]]


def flow_scorer(env) -> Callable:
    """Fire flow under the current breaks, ties (no flow left) broken by the untreated burn probability, as
    :class:`~firebreak_exp.planners.FireFlowPlanner` fills up."""
    untreated = env.burn_probability.ravel().copy()
    return lambda obs: (env.fire_flow.ravel(), untreated)


class PolicyScorer:
    """``make_scorer`` of the policy: the Q-network's value of every cell of the observation (one forward pass
    over the grid); :meth:`many` scores the observations of several grids, those of one shape in one pass."""

    def __init__(self, agent):
        self.agent = agent

    def __call__(self, env) -> Callable:
        return lambda obs: self.many([obs])[0]

    def many(self, observations: list) -> list:
        """``[(Q-values float64 (H * W,), None)]`` of each observation (C, H, W)."""
        out = [None] * len(observations)
        shapes = {}
        for index, obs in enumerate(observations):
            shapes.setdefault(obs.shape, []).append(index)
        for indices in shapes.values():
            values = self.agent.q_values(np.stack([observations[i] for i in indices]))
            for row, index in enumerate(indices):
                out[index] = (values[row], None)
        return out


def greedy_scorer(env, max_candidates: Optional[int], exclude_ignitions: bool) -> Callable:
    """The simulated drop in burned cells of the env's planning fires of a break at each candidate cell alone,
    on top of the breaks so far (:meth:`~firebreak_exp.planners.GreedyPlanner.single_break_reductions`, on the
    env's simulator: the whole grid's or a window's); 0 elsewhere."""
    from firebreak_exp.planning.planners import GreedyPlanner
    greedy = GreedyPlanner(exclude_ignitions, max_candidates)
    simulator, ignitions = env.simulator(env.tile_index), env.ignitions

    def score(obs):
        candidates, reductions, burns = greedy.single_break_reductions(simulator, ignitions, env.fuel_breaks)
        primary, secondary = np.zeros(env.fuel_breaks.size), np.zeros(env.fuel_breaks.size)
        primary[candidates], secondary[candidates] = reductions, burns
        return primary, secondary
    return score


class GridPlan:
    """One grid's episode of ``env_class`` (FuelBreakEnv or the ``env`` group's subclass) on its planning
    ignitions, placing breaks ``batch_cells`` at a time (:meth:`place`) until ``num_breaks`` are placed
    (``done``)."""

    def __init__(self, landscape: Landscape, simulator, scenario, num_breaks: int, ignitions: np.ndarray,
                 batch_cells: int, *, env_class: type):
        self.env, self.obs, self.info = env_class.planning_episode(
            landscape.tile, simulator, scenario, num_breaks, ignitions, batch_cells)
        if self.env.budget != num_breaks:
            raise RuntimeError(f"the env's budget {self.env.budget} differs from the plan's {num_breaks} breaks")
        self.num_breaks, self.batch_cells = num_breaks, batch_cells
        self.order, self.batches, self.done = [], 0, False

    def place(self, primary: np.ndarray, tiebreak: Optional[np.ndarray]) -> None:
        """Break the best unbroken burnable cells by these scores (:func:`top_cells`) and update the fires once."""
        cells = top_cells(primary, self.info["action_mask"], min(self.batch_cells, self.num_breaks - len(self.order)),
                          tiebreak)
        self.obs, _, self.done, _, self.info = self.env.step_batch(cells)
        self.order.extend(cells.tolist())
        self.batches += 1
        log.debug("batch %d: %d of %d breaks, planning fires burn %.4f of the burnable cells",
                  self.batches, len(self.order), self.num_breaks, self.env.burned_fraction)


def plan_in_batches(landscape: Landscape, simulator, scenario, num_breaks: int, ignitions: np.ndarray,
                    batch_cells: int, make_scorer: Callable, *, env_class: type) -> tuple:
    """Breaks placed ``batch_cells`` at a time through the MDP of ``env_class`` on the whole grid.

    ``make_scorer(env)`` returns ``score(obs) -> (primary, tiebreak or None)`` (flat per-cell scores); each
    batch takes the best unbroken burnable cells (:func:`top_cells`) and the env updates its fires once.
    Returns ``(cells in placement order, number of batches, burned fraction of the planning fires at the end)``.
    """
    plan = GridPlan(landscape, simulator, scenario, num_breaks, ignitions, batch_cells, env_class=env_class)
    score = make_scorer(plan.env)
    while not plan.done:
        plan.place(*score(plan.obs))
    return np.asarray(plan.order, dtype=np.int64), plan.batches, float(plan.env.burned_fraction)


def plan_together(plans: list, make_scorer: Callable) -> None:
    """Run several :class:`GridPlan` to their end in lockstep: each round scores every unfinished plan's
    observation, all at once when ``make_scorer`` has ``many`` (:class:`PolicyScorer`: one forward pass per
    shape), and places each one's batch."""
    many = getattr(make_scorer, "many", None)
    scorers = [None if many else make_scorer(plan.env) for plan in plans]
    while True:
        active = [i for i, plan in enumerate(plans) if not plan.done]
        if not active:
            return
        scores = (many([plans[i].obs for i in active]) if many
                  else [scorers[i](plans[i].obs) for i in active])
        for i, (primary, tiebreak) in zip(active, scores):
            plans[i].place(primary, tiebreak)


def window_landscape(landscape: Landscape, row: int, col: int, height: int, width: int) -> Landscape:
    """The part of ``landscape`` of ``height`` x ``width`` cells from (row, col), as its own grid."""
    from firebreak_exp.landscape import LAYERS
    part = (slice(row, row + height), slice(col, col + width))
    tile = landscape.tile
    layers = {name: getattr(tile, name)[part] for name in LAYERS}
    window = Tile(name=f"{tile.name}/r{tile.row + row:04d}_c{tile.col + col:04d}", row=tile.row + row,
                  col=tile.col + col, cell_size=tile.cell_size, **layers)
    transform = rasterio.windows.transform(Window(col, row, width, height), landscape.transform)
    return Landscape(tile=window, valid=landscape.valid[part], transform=transform, crs=landscape.crs,
                     source=landscape.source)


class CroppedRatesSimulator:
    """Builds a window's simulator from the spread rates of the whole grid's (pyretechnics' rates of a cell
    depend on that cell alone, so a crop of them is what the window's own sweeps would give, without them)."""

    def __init__(self, whole, cls):
        self.whole, self.cls = whole, cls
        self._rates: dict = {}     # (azimuths, surface_lw_ratio_model) -> the whole grid's rates, stacked once

    def whole_rates(self, azimuths, surface_lw_ratio_model: str) -> np.ndarray:
        """float64 (len(azimuths), H, W) m/min of the whole grid, stacked once per set of azimuths."""
        key = (tuple(float(a) for a in azimuths), surface_lw_ratio_model)
        if key not in self._rates:
            self._rates[key] = self.whole.spread_rates(azimuths, surface_lw_ratio_model)
        return self._rates[key]

    def __call__(self, window: Landscape, scenario):
        rows, cols = window.tile.row - self.whole.tile.row, window.tile.col - self.whole.tile.col
        height, width = window.tile.shape
        whole_rates = self.whole_rates

        class Cropped(self.cls):
            def spread_rates(self, azimuths, surface_lw_ratio_model="behave"):
                rates = whole_rates(azimuths, surface_lw_ratio_model)
                return rates[:, rows:rows + height, cols:cols + width]

        return Cropped(window.tile, scenario)


def window_budgets(burnable: np.ndarray, num_breaks: int, weights: Optional[np.ndarray] = None) -> np.ndarray:
    """``num_breaks`` shared among windows in proportion to ``weights`` (default: their ``burnable`` cells) by
    largest remainders, each window less than its burnable cells: a window whose share reaches that takes it
    and the rest is shared again among the others. Windows of weight 0 get none, unless the others cannot
    hold ``num_breaks``: then what is left is shared by the room left in every window."""
    capacity = np.maximum(np.asarray(burnable, np.int64) - 1, 0)
    weighted = weights is not None
    weights = np.asarray(burnable if weights is None else weights, np.float64)
    budgets = np.zeros(len(capacity), np.int64)
    open_ = (weights > 0) & (capacity > 0)
    total = min(int(num_breaks), int(capacity[open_].sum()))
    while budgets.sum() < total:
        left = total - int(budgets.sum())
        share = np.where(open_, left * weights / weights[open_].sum(), 0.0)
        full = open_ & (budgets + share >= capacity)
        if full.any():
            budgets[full] = capacity[full]
            open_ &= ~full
            continue
        floor = np.floor(share).astype(np.int64)
        floor[np.argsort(-(share - floor), kind="stable")[:left - int(floor.sum())]] += 1
        budgets += floor
    if weighted and budgets.sum() < min(num_breaks, capacity.sum()):
        budgets += window_budgets(capacity - budgets + 1, int(num_breaks - budgets.sum()))
    return budgets


def burn_probability(simulator, tile: Tile, num_fires: int, rng: np.random.Generator) -> np.ndarray:
    """float32 (H, W): the share of ``num_fires`` untreated fires, ignited uniformly over the burnable cells of
    the whole grid, that burn each cell (the fire risk that :func:`plan_in_windows` shares the budget by)."""
    from firebreak_exp.planning.evaluation import draw_ignitions
    return score_plan_fires(simulator, draw_ignitions(tile, num_fires, rng), None)[1]


#: Windows planned together in lockstep (:func:`plan_together`): their policy values come from one forward pass.
WINDOWS_TOGETHER = 32


def grid_cells(cells, width: int, row: int, col: int, grid_width: int) -> list:
    """Flat cells of a window ``width`` cells wide whose top-left cell is (``row``, ``col``) as flat cells of
    the grid ``grid_width`` cells wide."""
    local_rows, local_cols = np.divmod(np.asarray(cells, np.int64), width)
    return ((local_rows + row) * grid_width + local_cols + col).tolist()


def split_windows(landscape: Landscape, size: int, num_breaks: int, risk: Optional[np.ndarray] = None) -> tuple:
    """``size`` x ``size`` windows of ``landscape`` from the top-left corner (the last row and column of windows
    take what is left) and each one's share of ``num_breaks`` (:func:`window_budgets`: in proportion to the
    window's sum of ``risk``, the burn probability (H, W) of fires over the whole grid, or to its burnable cells
    without ``risk``). Returns ``(corners [(row, col)], windows [Landscape], budgets int (n,))``."""
    rows, cols = landscape.tile.shape
    corners = [(r, c) for r in range(0, rows, size) for c in range(0, cols, size)]
    windows = [window_landscape(landscape, r, c, min(size, rows - r), min(size, cols - c)) for r, c in corners]
    weights = None
    if risk is not None and float(np.sum(risk)) > 0:
        weights = np.array([float(risk[r:r + size, c:c + size].sum()) for r, c in corners])
    return corners, windows, window_budgets(np.array([w.num_burnable for w in windows]), num_breaks, weights)


def plan_in_windows(landscape: Landscape, simulator, scenario, num_breaks: int, size: int, num_ignitions: int,
                    batch_percent: float, make_scorer: Callable, rng: np.random.Generator,
                    risk: Optional[np.ndarray] = None, *, env_class: type) -> tuple:
    """:func:`plan_in_batches` window by window (:func:`split_windows`), each window with ``num_ignitions``
    planning fires of its own drawn from ``rng`` (burning inside the window, as on a training tile), its share
    of the budget and ``batch_percent`` % of its burnable cells per batch. ``make_scorer(env)`` as for
    :func:`plan_in_batches`. :data:`WINDOWS_TOGETHER` windows at a time are planned in lockstep
    (:func:`plan_together`); each window's plan is what planning it alone gives. Returns
    ``(cells of the whole grid, number of batches, number of windows)``."""
    from firebreak_exp.planning.evaluation import draw_ignitions
    cols = landscape.tile.shape[1]
    corners, windows, budgets = split_windows(landscape, size, num_breaks, risk)
    build = CroppedRatesSimulator(simulator, type(simulator))
    order, batches, group = [], 0, []
    for index, ((row, col), window, budget) in enumerate(zip(corners, windows, budgets)):
        if budget >= 1:
            ignitions = draw_ignitions(window.tile, num_ignitions, rng)
            group.append((row, col, GridPlan(window, build(window, scenario), scenario, int(budget), ignitions,
                                             batch_size(window.num_burnable, batch_percent), env_class=env_class)))
        if len(group) == WINDOWS_TOGETHER or (index == len(windows) - 1 and group):
            plan_together([plan for _, _, plan in group], make_scorer)
            for row0, col0, plan in group:
                order.extend(grid_cells(plan.order, plan.env.grid_shape[1], row0, col0, cols))
                batches += plan.batches
            group = []
    return np.asarray(order, dtype=np.int64), batches, len(windows)


def search_in_windows(landscape: Landscape, simulator, scenario, num_breaks: int, size: int, num_ignitions: int,
                      planner, rng: np.random.Generator, window_rng: Callable[[int], np.random.Generator],
                      risk: Optional[np.ndarray] = None, progress: bool = False) -> tuple:
    """A search planner (``policy_search``, ``flow_search``: :class:`~firebreak_exp.planning.search.SearchPlanner`)
    window by window, on the windows, budgets and planning fires of :func:`plan_in_windows` with the same
    ``rng`` (so every method sees the same fires in a window); ``window_rng(index)`` draws the sampled rollouts
    of window ``index``. Each window is planned as a tile of the evaluation: rollouts placing one break per fire
    update, then swaps; ``progress`` shows a progress bar over the windows. Returns ``(cells of the whole grid,
    breaks placed (one per fire update), number of windows)``."""
    from firebreak_exp.planning.evaluation import draw_ignitions
    cols = landscape.tile.shape[1]
    corners, windows, budgets = split_windows(landscape, size, num_breaks, risk)
    build = CroppedRatesSimulator(simulator, type(simulator))
    order = []
    bar = tqdm(total=int((budgets >= 1).sum()), unit="window", desc=f"planning {planner.name}", disable=not progress)
    for index, ((row, col), window, budget) in enumerate(zip(corners, windows, budgets)):
        if budget < 1:
            continue
        ignitions = draw_ignitions(window.tile, num_ignitions, rng)
        cells = planner.plan(window.tile, build(window, scenario), scenario, int(budget), ignitions, window_rng(index))
        order.extend(grid_cells(cells, window.tile.shape[1], row, col, cols))
        bar.update(1)
    bar.close()
    return np.asarray(order, dtype=np.int64), len(order), len(windows)


# ---------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------

def score_plan_fires(simulator, ignitions: np.ndarray, breaks: Optional[np.ndarray], chunk: int = 16,
                     progress: bool = False, label: str = "") -> tuple:
    """Burn ``ignitions`` under ``breaks`` ``chunk`` fires at a time: ``(burned cells per fire (k,) int64,
    burn probability float32 (H, W))`` (a tqdm bar per fire with ``progress``)."""
    burned = np.zeros(len(ignitions), np.int64)
    counts = np.zeros(simulator.shape, np.int64)
    bar = tqdm(total=len(ignitions), unit="fire", desc=f"scoring {label}".strip(), disable=not progress)
    for start in range(0, len(ignitions), chunk):
        maps = simulator.burn_maps(ignitions[start:start + chunk], breaks)
        burned[start:start + chunk] = maps.reshape(len(maps), -1).sum(axis=1)
        counts += maps.sum(axis=0)
        bar.update(len(maps))
    bar.close()
    return burned, (counts / max(len(ignitions), 1)).astype(np.float32)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def plan_record(method: str, landscape: Landscape, cells: np.ndarray, burned_untreated: np.ndarray,
                burned_treated: np.ndarray, confidence: float = 0.95) -> dict:
    """plan.json's figures of a plan: budget, break cells and hectares, burned area untreated and treated
    (mean over the scoring fires, ha and fraction of the burnable cells), R = 1 - BA/BA0 and its bootstrap
    interval over the scoring fires."""
    from firebreak_exp.planning.evaluation import bootstrap_ci, ratio_r
    burnable, ha = landscape.num_burnable, landscape.cell_hectares
    untreated, treated = burned_untreated / burnable, burned_treated / burnable
    low, high = bootstrap_ci(treated, untreated, confidence)
    return {
        "method": method,
        "break_cells": int(len(cells)),
        "break_hectares": float(len(cells) * ha),
        "break_percent_of_burnable": float(100.0 * len(cells) / burnable),
        "burned_area_untreated": {"hectares": float(burned_untreated.mean() * ha), "fraction": float(untreated.mean())},
        "burned_area_treated": {"hectares": float(burned_treated.mean() * ha), "fraction": float(treated.mean())},
        "R": ratio_r(treated, untreated),
        "R_ci": [low, high],
        "R_confidence": confidence,
    }
