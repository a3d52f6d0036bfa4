"""Tiles in pyretechnics' layout: layers, space-time cubes and directional spread rates.

Grid orientation. Tiles are stored like the GeoTIFFs they come from: row 0 is the northern edge and
aspect/wind directions are degrees clockwise from north. pyretechnics puts ``y = 0`` at the *southern*
edge (its ``y`` axis points north), so every layer is flipped north-south on the way in and every result
flipped back on the way out. This keeps wind, aspect and slope geographically consistent.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from firebreak_exp.fire.scenario import BREAK_FUEL_MODEL, Scenario


def to_pyretechnics(array: np.ndarray) -> np.ndarray:
    """A tile layer (row 0 = north) as a new C-contiguous float32 grid in pyretechnics' layout (y = 0 south)."""
    return np.ascontiguousarray(np.flipud(np.asarray(array)), dtype=np.float32).copy()


def from_pyretechnics(array: np.ndarray) -> np.ndarray:
    """A pyretechnics grid (y = 0 south) back in tile layout (row 0 = north)."""
    return np.ascontiguousarray(np.flipud(np.asarray(array)))


def tile_layers(tile) -> Dict[str, np.ndarray]:
    """Tile layers in pyretechnics units and layout (new arrays; the tile is only read)."""
    slope = np.asarray(tile.slope, dtype=np.float32)
    aspect = np.asarray(tile.aspect, dtype=np.float32)
    flat = (aspect < 0.0) | ~np.isfinite(aspect)      # LANDFIRE writes -1 where the ground is flat
    layers = {
        "slope": np.where(flat, np.float32(0.0), slope),
        "aspect": np.where(flat, np.float32(0.0), aspect),
        "fuel_model": np.asarray(tile.fuel_model),
        "canopy_cover": np.asarray(tile.canopy_cover),
        "canopy_height": np.asarray(tile.canopy_height),
        "canopy_base_height": np.asarray(tile.canopy_base_height),
        "canopy_bulk_density": np.asarray(tile.canopy_bulk_density),
    }
    shape = tuple(np.shape(tile.fuel_model))
    for name, array in layers.items():
        if array.shape != shape:
            raise ValueError(f"tile layer {name!r} has shape {array.shape}, expected {shape}")
        if name != "fuel_model" and not np.all(np.isfinite(array)):
            raise ValueError(f"tile layer {name!r} contains non-finite values (nodata?)")
    return {name: to_pyretechnics(array) for name, array in layers.items()}


def cube_layers(tile, east_pad: int = 0) -> Dict[str, np.ndarray]:
    """Topography/fuel layers in pyretechnics' layout, with ``east_pad`` non-burnable (NB9) columns appended
    on the east edge (see :class:`PyretechnicsSimulator` for why)."""
    layers = tile_layers(tile)
    if east_pad:
        cols = layers["fuel_model"].shape[1]
        for name in layers:
            layers[name] = np.ascontiguousarray(np.pad(layers[name], ((0, 0), (0, int(east_pad))), mode="edge"))
        layers["fuel_model"][:, cols:] = BREAK_FUEL_MODEL
    return layers


def build_space_time_cubes(tile, scenario: Scenario, band_duration: float, east_pad: int = 0,
                           layers: Optional[Dict[str, np.ndarray]] = None) -> tuple:
    """pyretechnics SpaceTimeCubes for ``tile`` under ``scenario``: one time band, cube shape (1, H, W + east_pad).

    Returns ``(cubes, cube_shape, cube_resolution)`` with ``cube_resolution = (band_duration, cell_size,
    cell_size)``. The cubes own copies of the tile's arrays in pyretechnics' layout (see module docstring);
    ``layers`` (from ``cube_layers(tile, east_pad)``) may be passed to reuse arrays already built.
    """
    from pyretechnics.space_time_cube import SpaceTimeCube

    cell_size = float(tile.cell_size)
    if not cell_size > 0.0:
        raise ValueError(f"tile.cell_size must be > 0 m, got {tile.cell_size!r}")
    if layers is None:
        layers = cube_layers(tile, east_pad)
    cube_shape = (1,) + tuple(int(n) for n in layers["fuel_model"].shape)
    cubes = {name: SpaceTimeCube(cube_shape, array) for name, array in layers.items()}
    for name, value in scenario.pyretechnics_weather().items():
        cubes[name] = SpaceTimeCube(cube_shape, value)
    return cubes, cube_shape, (float(band_duration), cell_size, cell_size)


def directional_spread_rates(tile, scenario: Scenario, azimuths: Sequence[float],
                             surface_lw_ratio_model: str = "behave", cubes: Optional[dict] = None) -> np.ndarray:
    """pyretechnics' spread rate (m/min, on the slope plane) of a fire front facing each azimuth.

    Calls ``pyretechnics.burn_cells.burn_all_cells_toward_azimuth`` once per azimuth (degrees clockwise
    from north) and returns float64 (len(azimuths), H, W) in tile layout. Crown fire is included where the
    surface fire's intensity in that direction initiates it, as pyretechnics does.
    """
    from pyretechnics.burn_cells import burn_all_cells_toward_azimuth

    if cubes is None:
        cubes, _, _ = build_space_time_cubes(tile, scenario, scenario.burn_duration + 60.0)
    rates = []
    for azimuth in azimuths:
        behaviour = burn_all_cells_toward_azimuth(cubes, float(azimuth), 0,
                                                  surface_lw_ratio_model=surface_lw_ratio_model)
        rates.append(from_pyretechnics(behaviour["spread_rate"]).astype(np.float64))
    return np.stack(rates)
