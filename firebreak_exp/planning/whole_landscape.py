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
(:meth:`~firebreak_exp.environment.FuelBreakEnv.step_batch`). ``random`` and ``domirank`` do not follow
fires and plan in one go. Plans are scored on fresh ignitions (:func:`score_plan_fires`).

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

from firebreak_exp.landscape import LAYERS, LandscapeError, RasterStack, Tile, read_layers, write_synthetic_landscape

log = logging.getLogger(__name__)

#: Fuel model written into nodata cells of the planning grid (NB9, bare ground: non-burnable).
NODATA_FUEL_MODEL = 99
#: Planners that follow the fires and plan in batches; the others plan in one go.
BATCHED_METHODS = ("flow", "policy", "greedy")
ONE_GO_METHODS = ("random", "domirank")
METHODS = BATCHED_METHODS + ONE_GO_METHODS


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
        return self.tile.cell_size ** 2 / 10_000.0

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


def policy_scorer(agent) -> Callable:
    """The Q-network's value of every cell of the observation (one forward pass over the whole grid)."""
    import torch

    def score(obs):
        batch = torch.as_tensor(obs[None], device=agent.device)
        if agent.device.type == "cpu":
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            return agent.q_network(batch)[0].cpu().numpy().astype(np.float64), None
    return score


def greedy_scorer(env, simulator, ignitions: np.ndarray, max_candidates: Optional[int],
                  exclude_ignitions: bool) -> Callable:
    """The simulated drop in burned cells of a break at each candidate cell alone, on top of the breaks so
    far (:meth:`~firebreak_exp.planners.GreedyPlanner.single_break_reductions`); 0 elsewhere."""
    from firebreak_exp.planning.planners import GreedyPlanner
    greedy = GreedyPlanner(exclude_ignitions, max_candidates)

    def score(obs):
        candidates, reductions, burns = greedy.single_break_reductions(simulator, ignitions, env.fuel_breaks)
        primary, secondary = np.zeros(env.fuel_breaks.size), np.zeros(env.fuel_breaks.size)
        primary[candidates], secondary[candidates] = reductions, burns
        return primary, secondary
    return score


def plan_in_batches(landscape: Landscape, simulator, scenario, num_breaks: int, ignitions: np.ndarray,
                    batch_cells: int, make_scorer: Callable) -> tuple:
    """Breaks placed ``batch_cells`` at a time through the FuelBreakEnv MDP on the whole grid.

    ``make_scorer(env)`` returns ``score(obs) -> (primary, tiebreak or None)`` (flat per-cell scores); each
    batch takes the best unbroken burnable cells (:func:`top_cells`) and the env updates its fires once.
    Returns ``(cells in placement order, number of batches, burned fraction of the planning fires at the end)``.
    """
    from firebreak_exp.environment import FuelBreakEnv
    burnable = landscape.num_burnable
    env = FuelBreakEnv([landscape.tile], lambda tile, scenario: simulator, scenario,
                       budget_percent=100.0 * num_breaks / burnable,
                       percentage_increment=min(100.0, 100.0 * batch_cells / burnable),
                       num_ignitions=max(1, len(ignitions)), reward_ignitions=None)
    obs, info = env.reset(seed=0, options={"tile_index": 0, "ignitions": ignitions})
    if env.budget != num_breaks:
        raise RuntimeError(f"the env's budget {env.budget} differs from the plan's {num_breaks} breaks")
    score = make_scorer(env)
    order, batches, terminated = [], 0, False
    while not terminated:
        primary, tiebreak = score(obs)
        cells = top_cells(primary, info["action_mask"], min(batch_cells, num_breaks - len(order)), tiebreak)
        obs, _, terminated, _, info = env.step_batch(cells)
        order.extend(cells.tolist())
        batches += 1
        log.debug("batch %d: %d of %d breaks, planning fires burn %.4f of the burnable cells",
                  batches, len(order), num_breaks, env.burned_fraction)
    return np.asarray(order, dtype=np.int64), batches, float(env.burned_fraction)


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

    def __call__(self, window: Landscape, scenario):
        whole, rows, cols = self.whole, window.tile.row - self.whole.tile.row, window.tile.col - self.whole.tile.col
        height, width = window.tile.shape

        class Cropped(self.cls):
            def spread_rates(self, azimuths, surface_lw_ratio_model="behave"):
                rates = whole.spread_rates(azimuths, surface_lw_ratio_model)
                return rates[:, rows:rows + height, cols:cols + width]

        return Cropped(window.tile, scenario)


def window_budgets(burnable: np.ndarray, num_breaks: int) -> np.ndarray:
    """``num_breaks`` shared among windows in proportion to their burnable cells (largest remainders), each
    less than its burnable cells."""
    share = num_breaks * burnable / max(int(burnable.sum()), 1)
    budgets = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - budgets), kind="stable")
    budgets[order[:num_breaks - int(budgets.sum())]] += 1
    return np.minimum(budgets, np.maximum(burnable - 1, 0))


def plan_in_windows(landscape: Landscape, simulator, scenario, num_breaks: int, size: int, num_ignitions: int,
                    batch_percent: float, make_scorer: Callable, rng: np.random.Generator) -> tuple:
    """:func:`plan_in_batches` window by window: ``size`` x ``size`` cells from the top-left corner (the last
    row and column of windows take what is left), each with ``num_ignitions`` planning fires of its
    own (burning inside the window, as on a training tile), its share of the budget (:func:`window_budgets`)
    and ``batch_percent`` % of its burnable cells per batch. ``make_scorer(env)`` as for
    :func:`plan_in_batches`. Returns ``(cells of the whole grid, number of batches, number of windows)``."""
    from firebreak_exp.planning.evaluation import draw_ignitions
    rows, cols = landscape.tile.shape
    corners = [(r, c) for r in range(0, rows, size) for c in range(0, cols, size)]
    windows = [window_landscape(landscape, r, c, min(size, rows - r), min(size, cols - c)) for r, c in corners]
    budgets = window_budgets(np.array([w.num_burnable for w in windows]), num_breaks)
    build = CroppedRatesSimulator(simulator, type(simulator))
    order, batches = [], 0
    for (row, col), window, budget in zip(corners, windows, budgets):
        if budget < 1:
            continue
        ignitions = draw_ignitions(window.tile, num_ignitions, rng)
        cells, count, _ = plan_in_batches(window, build(window, scenario), scenario, int(budget), ignitions,
                                          batch_size(window.num_burnable, batch_percent), make_scorer)
        local_rows, local_cols = np.divmod(cells, window.tile.shape[1])
        order.extend(((local_rows + row) * cols + local_cols + col).tolist())
        batches += count
    return np.asarray(order, dtype=np.int64), batches, len(windows)


# ---------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------

def score_plan_fires(simulator, ignitions: np.ndarray, breaks: Optional[np.ndarray], chunk: int = 16,
                     progress: bool = False, label: str = "") -> tuple:
    """Burn ``ignitions`` under ``breaks`` ``chunk`` fires at a time: ``(burned cells per fire (k,) int64,
    burn probability float32 (H, W))`` (a tqdm bar per fire with ``progress``)."""
    burned = np.zeros(len(ignitions), np.int64)
    counts = np.zeros(simulator.shape, np.int64)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(ignitions), unit="fire", desc=f"scoring {label}".strip())
    for start in range(0, len(ignitions), chunk):
        maps = simulator.burn_maps(ignitions[start:start + chunk], breaks)
        burned[start:start + chunk] = maps.reshape(len(maps), -1).sum(axis=1)
        counts += maps.sum(axis=0)
        if bar is not None:
            bar.update(len(maps))
    if bar is not None:
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
