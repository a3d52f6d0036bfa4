"""Landscapes: read LANDFIRE-style rasters, convert them to physical units and cut them into tiles.

A *landscape* is a stack of eight co-registered rasters (see ``LAYERS``) as LANDFIRE distributes
them: int16 GeoTIFFs with nodata 32767 and integer-coded units (slope in percent, canopy height in
m × 10, ...). This module

* reads such a stack with rasterio and converts every layer to physical units in ONE place
  (:func:`read_layers`), keeping a ``valid`` mask where any layer is nodata;
* cuts it into square :class:`Tile` objects that never touch a nodata cell (:func:`cut_tiles`);
* splits tiles into train / held-out sets by location, so they never overlap (:func:`split_tiles`);
* writes a deterministic synthetic landscape in the same file layout (:func:`write_synthetic_landscape`);
* ties it all together, memoised per process (:func:`load_landscapes`).

Units used everywhere after :func:`read_layers`: metres, rise/run, degrees clockwise from north,
fractions 0–1 and kg/m³ (see :class:`Tile`).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from pyretechnics.fuel_models import list_fuel_models

log = logging.getLogger(__name__)

__all__ = [
    "LAYERS",
    "DEFAULT_LAYER_PATTERNS",
    "NON_BURNABLE_CODES",
    "FBFM40_CODES",
    "FUEL_GROUPS",
    "fuel_group_index",
    "LandscapeError",
    "Tile",
    "RasterStack",
    "LandscapeSet",
    "read_layers",
    "cut_tiles",
    "split_tiles",
    "write_synthetic_landscape",
    "load_landscapes",
]

# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

LAYERS = (
    "elevation",
    "slope",
    "aspect",
    "fuel_model",
    "canopy_cover",
    "canopy_height",
    "canopy_base_height",
    "canopy_bulk_density",
)

# Glob patterns (relative to the raster folder) matching LANDFIRE's own file names,
# e.g. "LF2020_SlpP_220_CONUS/LC20_SlpP_220.tif".
DEFAULT_LAYER_PATTERNS: dict[str, str] = {
    "elevation": "**/*_Elev_*.tif",
    "slope": "**/*_SlpP_*.tif",
    "aspect": "**/*_Asp_*.tif",
    "fuel_model": "**/*_F40_*.tif",
    "canopy_cover": "**/*_CC_*.tif",
    "canopy_height": "**/*_CH_*.tif",
    "canopy_base_height": "**/*_CBH_*.tif",
    "canopy_bulk_density": "**/*_CBD_*.tif",
}

# LANDFIRE stores every layer as int16 with this nodata value.
LANDFIRE_NODATA = 32767

# Physical value = LANDFIRE integer / divisor. The fuel model is a code and is not scaled.
#   slope: percent -> rise/run; canopy_cover: percent -> fraction; heights: m×10 -> m;
#   bulk density: kg/m³×100 -> kg/m³. Elevation (m) and aspect (degrees, -1 = flat) are unchanged.
_LANDFIRE_DIVISOR: dict[str, float] = {
    "elevation": 1.0,
    "slope": 100.0,
    "aspect": 1.0,
    "canopy_cover": 100.0,
    "canopy_height": 10.0,
    "canopy_base_height": 10.0,
    "canopy_bulk_density": 100.0,
}

# Scott & Burgan non-burnable models: NB1 urban, NB2 snow/ice, NB3 agriculture, NB8 water, NB9 bare.
NON_BURNABLE_CODES = frozenset({91, 92, 93, 98, 99})

# Every Scott & Burgan (2005) 40 fuel model code that pyretechnics knows. Its list also holds the
# 13 Anderson models (numbers 1-13), which are not FBFM40 codes.
FBFM40_CODES: frozenset[int] = frozenset(
    int(model["number"]) for model in list_fuel_models() if model["number"] >= 91
)

FUEL_GROUPS = ("NB", "GR", "GS", "SH", "TU", "TL", "SB")
# Inclusive code range of each group in FUEL_GROUPS, same order.
_FUEL_GROUP_RANGES = ((91, 99), (101, 109), (121, 124), (141, 149), (161, 165), (181, 189), (201, 204))


class LandscapeError(ValueError):
    """Bad landscape input; the message names the offending file, key or value and what was expected."""


def fuel_group_index(fuel_model: np.ndarray) -> np.ndarray:
    """Index into ``FUEL_GROUPS`` (int8, same shape) of each FBFM40 code in ``fuel_model``.

    Groups by code range: 91-99 NB, 101-109 GR, 121-124 GS, 141-149 SH, 161-165 TU,
    181-189 TL, 201-204 SB. Raises LandscapeError for a code outside every range.
    """
    codes = np.asarray(fuel_model)
    index = np.full(codes.shape, -1, dtype=np.int8)
    for group, (low, high) in enumerate(_FUEL_GROUP_RANGES):
        index[(codes >= low) & (codes <= high)] = group
    if (index < 0).any():
        bad = np.unique(codes[index < 0])[:5].tolist()
        raise LandscapeError(f"fuel codes {bad} are not in any FBFM40 group range {dict(zip(FUEL_GROUPS, _FUEL_GROUP_RANGES))}")
    return index


# --------------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Tile:
    """One grid_size × grid_size piece of a landscape, in physical units (converted in ONE place: read_layers).

    Arrays made by :func:`cut_tiles` are read-only copies: tiles are shared (memoised), so copy an
    array before changing it.
    """

    name: str  # "<source name>/r<row>_c<col>", e.g. "worcester_vt/r0150_c0200"
    row: int  # offset of the tile's top-left cell in its raster (cells)
    col: int
    cell_size: float  # m (30 for LANDFIRE)
    elevation: np.ndarray = field(repr=False)  # float32 (H, W), m
    slope: np.ndarray = field(repr=False)  # float32, rise/run (LANDFIRE percent / 100)
    aspect: np.ndarray = field(repr=False)  # float32, degrees clockwise from north of the downslope direction; -1 = flat
    fuel_model: np.ndarray = field(repr=False)  # int16, FBFM40 code
    canopy_cover: np.ndarray = field(repr=False)  # float32, fraction 0–1 (LANDFIRE percent / 100)
    canopy_height: np.ndarray = field(repr=False)  # float32, m (LANDFIRE m×10 / 10)
    canopy_base_height: np.ndarray = field(repr=False)  # float32, m (LANDFIRE m×10 / 10)
    canopy_bulk_density: np.ndarray = field(repr=False)  # float32, kg/m³ (LANDFIRE kg/m³×100 / 100)

    def __post_init__(self) -> None:
        shapes = {layer: np.shape(getattr(self, layer)) for layer in LAYERS}
        if len(set(shapes.values())) != 1 or len(shapes["elevation"]) != 2:
            raise LandscapeError(f"tile {self.name!r}: all layers must be 2-D arrays of one shape, got {shapes}")

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) in cells."""
        return tuple(self.elevation.shape)

    @property
    def cell_hectares(self) -> float:
        """The area of one cell, ha."""
        return self.cell_size ** 2 / 10_000.0

    @functools.cached_property
    def burnable(self) -> np.ndarray:
        """bool (H, W), read-only: True where the fuel model is not a non-burnable (NB) code (computed once:
        the environment asks at every step)."""
        burnable = ~np.isin(self.fuel_model, list(NON_BURNABLE_CODES))
        burnable.setflags(write=False)
        return burnable


@dataclass
class RasterStack:
    """The 8 layers of one landscape, converted to physical units, plus the nodata mask.

    ``layers[name]`` is float32 (int16 for ``fuel_model``) in the units documented on :class:`Tile`;
    cells where ``valid`` is False (nodata in ANY layer) hold 0 in every layer.
    """

    name: str
    layers: dict[str, np.ndarray]
    valid: np.ndarray  # bool (H, W)
    transform: rasterio.Affine
    crs: CRS | None
    cell_size: float  # m
    paths: dict[str, Path]  # layer -> file it was read from

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) in cells."""
        return tuple(self.valid.shape)


@dataclass
class LandscapeSet:
    """Train and held-out tiles of one landscape source (a raster folder path, or "synthetic")."""

    train: list[Tile]
    heldout: list[Tile]
    source: str

    @property
    def tiles(self) -> list[Tile]:
        """All tiles, train first: the order used by :meth:`tile`."""
        return self.train + self.heldout

    def __len__(self) -> int:
        return len(self.train) + len(self.heldout)

    def tile(self, index: int) -> Tile:
        """Tile number ``index`` counted over train + heldout (train first), 0 <= index < len(self)."""
        if not 0 <= index < len(self):
            raise IndexError(f"tile index {index} out of range 0..{len(self) - 1} ({len(self.train)} train + {len(self.heldout)} held-out)")
        if index < len(self.train):
            return self.train[index]
        return self.heldout[index - len(self.train)]


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _find_layer_file(raster_dir: Path, layer: str, pattern: str) -> Path:
    """The single file under raster_dir matching pattern, else LandscapeError."""
    matches = sorted(p for p in raster_dir.glob(pattern) if p.is_file())
    if not matches:
        raise LandscapeError(f"no file for layer {layer!r} matches {pattern!r} under {raster_dir}")
    if len(matches) > 1:
        names = ", ".join(str(p) for p in matches)
        raise LandscapeError(
            f"{len(matches)} files for layer {layer!r} match {pattern!r} under {raster_dir}: {names}; "
            f"give a more specific pattern in layer_patterns"
        )
    return matches[0]


def _read_band(path: Path, layer: str):
    """(array, nodata, shape, transform, crs) of band 1 of path; LandscapeError if unreadable."""
    try:
        with rasterio.open(path) as src:
            raw = src.read(1)
            return raw, src.nodata, (src.height, src.width), src.transform, src.crs
    except (RasterioError, OSError) as error:
        detail = str(error)
        if error.__cause__ is not None:  # rasterio wraps GDAL's message ("Read failed. See previous exception")
            detail += f" ({error.__cause__})"
        raise LandscapeError(f"cannot read {layer} raster {path} (corrupt or truncated GeoTIFF?): {detail}") from error


def read_layers(
    raster_dir: str | os.PathLike,
    layer_patterns: Mapping[str, str] | None = None,
    name: str | None = None,
) -> RasterStack:
    """Read the 8 LANDFIRE layers under ``raster_dir`` and convert them to physical units.

    ``layer_patterns`` overrides entries of ``DEFAULT_LAYER_PATTERNS`` (glob patterns relative to
    ``raster_dir``, each must match exactly one file). ``name`` defaults to the folder name.
    Nodata (the file's nodata value, or LANDFIRE's 32767) in any layer makes a cell invalid; invalid
    cells hold 0. Raises LandscapeError naming the path, pattern or key for any bad input.
    """
    raster_dir = Path(raster_dir).expanduser()
    if not raster_dir.is_dir():
        raise LandscapeError(f"raster folder {raster_dir} does not exist or is not a folder")
    patterns = dict(DEFAULT_LAYER_PATTERNS)
    for key, pattern in (layer_patterns or {}).items():
        if key not in DEFAULT_LAYER_PATTERNS:
            raise LandscapeError(f"unknown layer {key!r} in layer_patterns; expected one of {LAYERS}")
        patterns[key] = pattern

    paths = {layer: _find_layer_file(raster_dir, layer, patterns[layer]) for layer in LAYERS}

    raw_layers: dict[str, np.ndarray] = {}
    nodata_masks: dict[str, np.ndarray] = {}
    reference = None  # (layer, shape, transform, crs) of the first layer, which all others must match
    for layer in LAYERS:
        path = paths[layer]
        raw, nodata, shape, transform, crs = _read_band(path, layer)
        if reference is None:
            reference = (layer, shape, transform, crs)
        else:
            ref_layer, ref_shape, ref_transform, ref_crs = reference
            ref_path = paths[ref_layer]
            if shape != ref_shape:
                raise LandscapeError(f"shape differs: {path} is {shape[0]}×{shape[1]} but {ref_path} is {ref_shape[0]}×{ref_shape[1]}")
            if not transform.almost_equals(ref_transform):
                raise LandscapeError(f"transform differs: {path} has {tuple(transform)[:6]} but {ref_path} has {tuple(ref_transform)[:6]}")
            if crs != ref_crs:
                raise LandscapeError(f"CRS differs: {path} has {crs} but {ref_path} has {ref_crs}")

        nodata_mask = raw == LANDFIRE_NODATA
        if nodata is not None:
            nodata_mask |= np.isnan(raw) if math.isnan(nodata) else raw == nodata
        if np.issubdtype(raw.dtype, np.floating):
            nodata_mask |= ~np.isfinite(raw)
        if nodata_mask.all():
            raise LandscapeError(f"every cell of {layer} raster {path} is nodata")
        raw_layers[layer] = raw
        nodata_masks[layer] = nodata_mask

    fuel_path, fuel_raw = paths["fuel_model"], raw_layers["fuel_model"]
    if not np.issubdtype(fuel_raw.dtype, np.integer):
        raise LandscapeError(f"fuel model raster {fuel_path} has dtype {fuel_raw.dtype}; expected integer FBFM40 codes")
    present = np.unique(fuel_raw[~nodata_masks["fuel_model"]])
    bad_codes = [int(code) for code in present if int(code) not in FBFM40_CODES]
    if bad_codes:
        raise LandscapeError(
            f"fuel model raster {fuel_path} holds codes that are not FBFM40 codes: {bad_codes[:8]}"
            f"{' ...' if len(bad_codes) > 8 else ''} (expected Scott & Burgan 40 codes such as 91-99, 101-109, ..., 201-204)"
        )

    valid = ~np.logical_or.reduce([nodata_masks[layer] for layer in LAYERS])
    layers: dict[str, np.ndarray] = {}
    for layer in LAYERS:
        raw = raw_layers[layer]
        if layer == "fuel_model":
            converted = raw.astype(np.int16)
        else:  # divide in float64, then round once to float32
            converted = (raw.astype(np.float64) / _LANDFIRE_DIVISOR[layer]).astype(np.float32)
        converted[~valid] = 0
        layers[layer] = converted

    _, _, transform, crs = reference
    if not math.isclose(abs(transform.a), abs(transform.e)) or transform.b != 0 or transform.d != 0:
        raise LandscapeError(f"{paths['elevation']} does not have square, north-up cells (transform {tuple(transform)[:6]})")
    return RasterStack(
        name=name if name is not None else raster_dir.name,
        layers=layers,
        valid=valid,
        transform=transform,
        crs=crs,
        cell_size=float(abs(transform.a)),
        paths=paths,
    )


# --------------------------------------------------------------------------------------------
# Tiling and splitting
# --------------------------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def cut_tiles(stack: RasterStack, grid_size: int, stride: int | None = None) -> list[Tile]:
    """Cut ``stack`` into grid_size × grid_size tiles (cells), row-major order.

    Tiles start every ``stride`` cells (default ``grid_size``: non-overlapping) from the top-left
    corner; any tile touching an invalid (nodata) cell is skipped. Tile arrays are read-only copies.
    """
    rows, cols = stack.shape
    if not _is_int(grid_size) or grid_size < 2:
        raise LandscapeError(f"grid_size must be an integer >= 2, got {grid_size!r}")
    stride = grid_size if stride is None else stride
    if not _is_int(stride) or stride < 1:
        raise LandscapeError(f"stride must be an integer >= 1, got {stride!r}")
    if grid_size > rows or grid_size > cols:
        where = os.path.commonpath([str(p) for p in stack.paths.values()]) if stack.paths else stack.name
        raise LandscapeError(f"landscape.grid_size={grid_size}: expected at most {min(rows, cols)} cells, the shorter "
                             f"side of the raster {rows}×{cols} of {where}")

    # Summed-area table of invalid cells: the count inside any rectangle costs four lookups.
    invalid_sum = np.zeros((rows + 1, cols + 1), dtype=np.int64)
    invalid_sum[1:, 1:] = (~stack.valid).cumsum(axis=0).cumsum(axis=1)

    tiles = []
    g = grid_size
    for row in range(0, rows - g + 1, stride):
        for col in range(0, cols - g + 1, stride):
            n_invalid = (
                invalid_sum[row + g, col + g] - invalid_sum[row, col + g] - invalid_sum[row + g, col] + invalid_sum[row, col]
            )
            if n_invalid:
                continue
            arrays = {}
            for layer in LAYERS:
                piece = stack.layers[layer][row : row + g, col : col + g].copy()
                piece.flags.writeable = False
                arrays[layer] = piece
            tiles.append(
                Tile(name=f"{stack.name}/r{row:04d}_c{col:04d}", row=row, col=col, cell_size=stack.cell_size, **arrays)
            )
    return tiles


def _partition_at(tiles: Sequence[Tile], axis: int, cut: int) -> tuple[list[Tile], list[Tile]]:
    """Held-out = tiles starting at or past ``cut`` along axis (0 rows, 1 cols); train = tiles ending before it."""
    train, heldout = [], []
    for tile in tiles:
        start = (tile.row, tile.col)[axis]
        if start >= cut:
            heldout.append(tile)
        elif start + tile.shape[axis] <= cut:
            train.append(tile)
        # else: the tile straddles the boundary (only with overlapping tiles) and is dropped.
    return train, heldout


def _split_along(tiles: Sequence[Tile], axis: int, heldout_fraction: float):
    """Split at the boundary nearest the far heldout_fraction of the extent along axis; None if impossible."""
    starts = [(t.row, t.col)[axis] for t in tiles]
    low = min(starts)
    high = max(s + t.shape[axis] for s, t in zip(starts, tiles))
    target = high - heldout_fraction * (high - low)
    # Candidate boundaries are tile starts; keep those leaving both sides non-empty.
    usable = []
    for cut in sorted(set(starts)):
        train, heldout = _partition_at(tiles, axis, cut)
        if train and heldout:
            usable.append((cut, train, heldout))
    if not usable:
        return None
    at_or_past_target = [u for u in usable if u[0] >= target]
    _, train, heldout = at_or_past_target[0] if at_or_past_target else usable[-1]
    return train, heldout


def split_tiles(tiles: Sequence[Tile], heldout_fraction: float) -> tuple[list[Tile], list[Tile]]:
    """Split tiles of ONE raster into (train, heldout) by location.

    Held-out tiles are those whose column offset lies in the eastern (right-most) ``heldout_fraction``
    of the columns the tiles cover; the boundary moves to the nearest tile edge so that both lists are
    non-empty whenever there are >= 2 tiles and 0 < heldout_fraction < 1. If all tiles share one
    column offset the split is north/south instead (held-out = southern rows). Tiles straddling the
    boundary (possible only with overlapping tiles) are dropped, so train and held-out never overlap.
    Deterministic; input order is kept. ``heldout_fraction`` must be in [0, 1).
    """
    if not isinstance(heldout_fraction, (int, float, np.floating, np.integer)) or not 0 <= heldout_fraction < 1:
        raise LandscapeError(f"heldout_fraction must be in [0, 1), got {heldout_fraction!r}")
    tiles = list(tiles)
    if heldout_fraction == 0 or len(tiles) < 2:
        return tiles, []
    for axis in (1, 0):  # east/west first, north/south if every tile is in one column
        if len({(t.row, t.col)[axis] for t in tiles}) < 2:
            continue
        result = _split_along(tiles, axis, float(heldout_fraction))
        if result is not None:
            return result
    raise LandscapeError(
        f"cannot split {len(tiles)} tiles into spatially disjoint train and held-out sets: they all overlap; "
        f"use a stride >= grid_size"
    )


# --------------------------------------------------------------------------------------------
# Synthetic landscape
# --------------------------------------------------------------------------------------------

# Sub-folder and file stem of each layer, like LANDFIRE's ("LF2020_SlpP_220_CONUS/LC20_SlpP_220.tif"),
# so DEFAULT_LAYER_PATTERNS ("**/*_SlpP_*.tif") match them.
_SYNTHETIC_CODES = {
    "elevation": "Elev",
    "slope": "SlpP",
    "aspect": "Asp",
    "fuel_model": "F40",
    "canopy_cover": "CC",
    "canopy_height": "CH",
    "canopy_base_height": "CBH",
    "canopy_bulk_density": "CBD",
}
_SYNTHETIC_MANIFEST = "synthetic.json"
_SYNTHETIC_VERSION = 1
_SYNTHETIC_CRS = "EPSG:5070"  # CONUS Albers, as LANDFIRE
_SYNTHETIC_ORIGIN = (1_800_000.0, 2_600_000.0)  # top-left corner (m), somewhere in New England

# Burnable fuels where fire spreads well, with their share of the burnable area.
_SYNTHETIC_BURNABLE = {
    102: 0.14,  # GR2 low load dry climate grass
    104: 0.08,  # GR4 moderate load dry climate grass
    122: 0.10,  # GS2 moderate load dry climate grass-shrub
    145: 0.10,  # SH5 high load dry climate shrub
    147: 0.08,  # SH7 very high load dry climate shrub
    165: 0.14,  # TU5 very high load dry climate timber-shrub
    183: 0.18,  # TL3 moderate load conifer litter
    188: 0.18,  # TL8 long-needle litter
}


def _synthetic_file(layer: str) -> str:
    code = _SYNTHETIC_CODES[layer]
    return f"SYN_{code}/SYN_{code}_000.tif"


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Gaussian-smoothed white noise (sigma = scale cells), zero mean and unit variance.

    Smoothing is a product in Fourier space; the field is computed on a padded grid and cropped so
    the FFT's wrap-around does not join opposite edges.
    """
    pad = int(math.ceil(3 * scale))
    rows, cols = shape[0] + 2 * pad, shape[1] + 2 * pad
    white = rng.standard_normal((rows, cols))
    fy = np.fft.fftfreq(rows)[:, None]
    fx = np.fft.rfftfreq(cols)[None, :]
    gaussian = np.exp(-2.0 * (math.pi * scale) ** 2 * (fx**2 + fy**2))  # Fourier transform of a Gaussian
    field = np.fft.irfft2(np.fft.rfft2(white) * gaussian, s=(rows, cols))[pad : pad + shape[0], pad : pad + shape[1]]
    return (field - field.mean()) / field.std()


def _fractal_surface(rng: np.random.Generator, shape: tuple[int, int], hurst: float = 0.8) -> np.ndarray:
    """Fractal (fractional Brownian) surface by spectral synthesis, scaled to 0–1.

    White noise is filtered with amplitude ∝ frequency^-(hurst + 1) on a grid twice the size, then
    cropped (removes the FFT's periodicity).
    """
    rows, cols = 2 * shape[0], 2 * shape[1]
    white = rng.standard_normal((rows, cols))
    fy = np.fft.fftfreq(rows)[:, None]
    fx = np.fft.rfftfreq(cols)[None, :]
    frequency = np.hypot(fx, fy)
    frequency[0, 0] = np.inf  # drop the mean
    surface = np.fft.irfft2(np.fft.rfft2(white) * frequency ** -(hurst + 1.0), s=(rows, cols))[: shape[0], : shape[1]]
    return (surface - surface.min()) / (surface.max() - surface.min())


def _slope_aspect(elevation: np.ndarray, cell_size: float) -> tuple[np.ndarray, np.ndarray]:
    """LANDFIRE-style (slope percent, aspect degrees) of an elevation grid (m), both int16.

    Row index grows southward, so the northward gradient is minus the row gradient. Aspect is the
    downslope direction in degrees clockwise from north (0–359), -1 where the slope rounds to 0 %.
    """
    d_row, d_col = np.gradient(elevation.astype(np.float64), cell_size)
    d_east, d_north = d_col, -d_row
    slope_pct = np.rint(100.0 * np.hypot(d_east, d_north))
    aspect = np.rint(np.degrees(np.arctan2(-d_east, -d_north))) % 360  # direction of steepest descent
    aspect[slope_pct == 0] = -1
    return slope_pct.astype(np.int16), aspect.astype(np.int16)


def _rescale(field: np.ndarray, low: float, high: float) -> np.ndarray:
    """field linearly mapped so its minimum is low and maximum is high."""
    span = field.max() - field.min()
    unit = (field - field.min()) / span if span > 0 else np.zeros_like(field)
    return low + unit * (high - low)


def _synthetic_layers(rows: int, cols: int, seed: int, cell_size: float) -> dict[str, np.ndarray]:
    """The 8 synthetic layers as LANDFIRE int16 arrays (LANDFIRE units)."""
    rng = np.random.default_rng(seed)
    shape = (rows, cols)

    # Terrain: fractal surface scaled so the median slope is about 20 %.
    surface = _fractal_surface(rng, shape)
    d_row, d_col = np.gradient(surface, cell_size)
    median_gradient = float(np.median(np.hypot(d_row, d_col)))
    relief = 0.20 / median_gradient if median_gradient > 0 else 0.0  # m per unit of surface
    elevation = 300.0 + relief * surface

    # Non-burnable patches: water in the lowest 4 % of the terrain (a flat lake surface), bare
    # ground on the highest 2 %, and towns where a smooth noise field is in its top 3 %.
    water = elevation <= np.quantile(elevation, 0.04)
    elevation[water] = elevation[water].max()
    elevation = np.rint(elevation)
    bare = elevation >= np.quantile(elevation, 0.98)
    town_field = _smooth_noise(rng, shape, scale=max(2.0, min(rows, cols) / 20))
    urban = town_field >= np.quantile(town_field, 0.97)

    slope_pct, aspect = _slope_aspect(elevation, cell_size)

    # Burnable fuel patches: each code gets a smooth noise field plus a bias from its area share;
    # each cell takes the code with the largest value, giving coherent blobs of stand size.
    codes = list(_SYNTHETIC_BURNABLE)
    patch_scale = max(2.0, min(rows, cols) / 30)
    scores = np.stack(
        [_smooth_noise(rng, shape, patch_scale) + 1.5 * math.log(_SYNTHETIC_BURNABLE[c]) for c in codes]
    )
    fuel = np.asarray(codes, dtype=np.int16)[scores.argmax(axis=0)]
    fuel[urban] = 91  # NB1
    fuel[bare] = 99  # NB9
    fuel[water] = 98  # NB8

    # Canopy: smooth fields mapped to the ranges of each fuel group; zero on grass and NB.
    def smooth_range(low: float, high: float) -> np.ndarray:
        return _rescale(_smooth_noise(rng, shape, patch_scale), low, high)

    timber = ((fuel >= 161) & (fuel <= 165)) | ((fuel >= 181) & (fuel <= 189))
    shrub = (fuel >= 141) & (fuel <= 149)
    canopy_cover = np.where(timber, smooth_range(40, 80), np.where(shrub, smooth_range(5, 20), 0))  # %
    canopy_height = np.where(timber, smooth_range(10, 30), np.where(shrub, smooth_range(2, 5), 0))  # m
    canopy_base = np.where(timber, smooth_range(1, 5), np.where(shrub, smooth_range(0.5, 1.5), 0))  # m
    bulk_density = np.where(timber, smooth_range(0.05, 0.25), np.where(shrub, smooth_range(0.01, 0.04), 0))  # kg/m³

    def to_int16(values: np.ndarray) -> np.ndarray:
        return np.rint(values).astype(np.int16)

    return {
        "elevation": to_int16(elevation),
        "slope": slope_pct,
        "aspect": aspect,
        "fuel_model": fuel,
        "canopy_cover": to_int16(canopy_cover),
        "canopy_height": to_int16(canopy_height * 10),
        "canopy_base_height": to_int16(canopy_base * 10),
        "canopy_bulk_density": to_int16(bulk_density * 100),
    }


def _synthetic_manifest(rows: int, cols: int, seed: int, cell_size: float) -> dict:
    return {"generator": "firebreak_exp.landscape", "version": _SYNTHETIC_VERSION, "rows": rows, "cols": cols, "seed": seed, "cell_size": cell_size}


def _check_existing_synthetic(out_dir: Path, manifest: dict) -> None:
    """LandscapeError unless out_dir holds a complete synthetic landscape made with these parameters."""
    missing = [name for name in [_SYNTHETIC_MANIFEST, *(_synthetic_file(layer) for layer in LAYERS)] if not (out_dir / name).is_file()]
    if missing:
        raise LandscapeError(f"{out_dir} exists but is not a complete synthetic landscape (missing {missing}); remove it or choose another folder")
    found = json.loads((out_dir / _SYNTHETIC_MANIFEST).read_text())
    if found != manifest:
        raise LandscapeError(f"{out_dir} holds a synthetic landscape made with {found}, not the requested {manifest}")


def write_synthetic_landscape(out_dir: str | os.PathLike, rows: int, cols: int, seed: int, cell_size: float = 30.0) -> Path:
    """Write a deterministic synthetic landscape in LANDFIRE's layout and units; return ``out_dir``.

    Eight int16 GeoTIFFs (nodata 32767, EPSG:5070, ``cell_size`` m cells), one sub-folder per layer
    (``SYN_Elev/SYN_Elev_000.tif``, ``SYN_SlpP/SYN_SlpP_000.tif``, ...) so ``DEFAULT_LAYER_PATTERNS`` match,
    plus ``synthetic.json`` recording the parameters. Content: fractal terrain (m); slope (%) and
    aspect (degrees, -1 flat) derived from it; coherent FBFM40 fuel patches (grass, shrub, timber)
    with ~9 % non-burnable (NB8 water in the lowest terrain, NB9 bare on the highest, NB1 towns);
    canopy layers matching the fuel (timber: cover 40–80 %, height 10–30 m, base 1–5 m, bulk
    density 0.05–0.25 kg/m³; shrub: small canopy; grass and NB: none).

    Written into a temporary sibling folder, then renamed to ``out_dir``; an existing complete
    ``out_dir`` with the same parameters is returned as is (another process may have written it).
    """
    out_dir = Path(out_dir).expanduser()
    for label, value in (("rows", rows), ("cols", cols)):
        if not _is_int(value) or value < 2:
            raise LandscapeError(f"synthetic landscape {label} must be an integer >= 2, got {value!r}")
    if not _is_int(seed):
        raise LandscapeError(f"synthetic landscape seed must be an integer, got {seed!r}")
    if not cell_size > 0:
        raise LandscapeError(f"synthetic landscape cell_size must be > 0 m, got {cell_size!r}")
    rows, cols, seed, cell_size = int(rows), int(cols), int(seed), float(cell_size)
    manifest = _synthetic_manifest(rows, cols, seed, cell_size)
    if out_dir.exists():
        _check_existing_synthetic(out_dir, manifest)
        return out_dir

    layers = _synthetic_layers(rows, cols, seed, cell_size)
    profile = {
        "driver": "GTiff",
        "height": rows,
        "width": cols,
        "count": 1,
        "dtype": "int16",
        "nodata": LANDFIRE_NODATA,
        "crs": CRS.from_string(_SYNTHETIC_CRS),
        "transform": rasterio.Affine(cell_size, 0.0, _SYNTHETIC_ORIGIN[0], 0.0, -cell_size, _SYNTHETIC_ORIGIN[1]),
        "compress": "deflate",
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        for layer in LAYERS:
            path = tmp_dir / _synthetic_file(layer)
            path.parent.mkdir()
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(layers[layer], 1)
        (tmp_dir / _SYNTHETIC_MANIFEST).write_text(json.dumps(manifest, indent=1))
        try:
            os.rename(tmp_dir, out_dir)
        except OSError:
            if not out_dir.exists():
                raise
            _check_existing_synthetic(out_dir, manifest)  # another process won the race
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return out_dir


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

SOURCES = ("landfire", "synthetic")


def _evenly_spaced(items: list, count: int) -> list:
    """At most count items spread evenly over the list (first one included), order kept."""
    if count >= len(items):
        return list(items)
    return [items[i * len(items) // count] for i in range(count)]


def load_landscapes(
    source: str,
    grid_size: int,
    num_landscapes: int | None,
    heldout_fraction: float,
    raster_dir: str | None,
    layer_patterns: Mapping[str, str] | None,
    synthetic_rows: int | None,
    synthetic_cols: int | None,
    seed: int | None,
    cache_dir: str | None,
) -> LandscapeSet:
    """Train and held-out tiles (grid_size × grid_size cells) of one landscape source.

    ``source`` "landfire" reads ``raster_dir`` (with ``layer_patterns``); "synthetic" writes (once)
    and reads ``<cache_dir>/synthetic_<rows>x<cols>_seed<seed>`` (cache_dir defaults to
    ``<system temp>/firebreak_exp``). Tiles are non-overlapping and split east/west by
    :func:`split_tiles`. ``num_landscapes`` caps the train tiles and the held-out tiles to
    ``max(2, ceil(num_landscapes * f / (1 - f)))`` (f = heldout_fraction), each chosen evenly
    spaced over the row-major list; None keeps all. Memoised per process on the arguments.
    """
    if source not in SOURCES:
        raise LandscapeError(f"unknown landscape source {source!r}; expected one of {SOURCES}")
    if num_landscapes is not None and (not _is_int(num_landscapes) or num_landscapes < 1):
        raise LandscapeError(f"num_landscapes must be None or an integer >= 1, got {num_landscapes!r}")
    if source == "landfire":
        if raster_dir is None:
            raise LandscapeError("source 'landfire' needs raster_dir (the folder holding the LANDFIRE GeoTIFFs)")
        raster_dir = str(Path(raster_dir).expanduser().resolve())
        cache_dir = None  # not used: keep it out of the memo key
    else:
        raster_dir = None
        cache_dir = str(Path(cache_dir or Path(tempfile.gettempdir()) / "firebreak_exp").expanduser().resolve())
    patterns_key = tuple(sorted(layer_patterns.items())) if layer_patterns else None
    cached = _load_landscapes_cached(
        source, grid_size, num_landscapes, heldout_fraction, raster_dir, patterns_key,
        synthetic_rows, synthetic_cols, seed, cache_dir,
    )
    # Fresh lists, so a caller appending to them cannot change the memoised set. Tiles are read-only.
    return LandscapeSet(train=list(cached.train), heldout=list(cached.heldout), source=cached.source)


def _cached_synthetic_stack(folder: Path, rows: int, cols: int, seed: int, layer_patterns) -> dict:
    """The layers of the synthetic landscape cached in ``folder``, written first if absent. A cached folder
    that cannot be read (a corrupt or missing raster, a damaged manifest) is reported as a warning naming
    what is wrong, set aside and written anew."""
    try:
        return read_layers(write_synthetic_landscape(folder, rows, cols, seed), layer_patterns)
    except (LandscapeError, ValueError) as error:       # ValueError: a damaged synthetic.json
        if not folder.exists():
            raise
        log.warning("synthetic landscape cache %s is unreadable (%s); rebuilding it", folder, error)
        discarded = Path(tempfile.mkdtemp(prefix=f".{folder.name}.corrupt-", dir=folder.parent))
        os.replace(folder, discarded / folder.name)    # readers of the old folder keep their open files
        shutil.rmtree(discarded, ignore_errors=True)
    return read_layers(write_synthetic_landscape(folder, rows, cols, seed), layer_patterns)


def _with_burnable_cells(tiles: list[Tile], where) -> list[Tile]:
    """The tiles holding at least one burnable cell (no fire can burn on the others, no break be placed), order
    kept; how many were dropped is logged."""
    kept = [tile for tile in tiles if tile.burnable.any()]
    if len(kept) < len(tiles):
        log.info("dropped %d of %d tiles of %s without burnable cells", len(tiles) - len(kept), len(tiles), where)
    return kept


@functools.lru_cache(maxsize=16)
def _load_landscapes_cached(
    source, grid_size, num_landscapes, heldout_fraction, raster_dir, patterns_key,
    synthetic_rows, synthetic_cols, seed, cache_dir,
) -> LandscapeSet:
    layer_patterns = dict(patterns_key) if patterns_key else None
    if source == "synthetic":
        folder = Path(cache_dir) / f"synthetic_{synthetic_rows}x{synthetic_cols}_seed{seed}"
        raster_dir, label = folder, "synthetic"
        stack = _cached_synthetic_stack(folder, synthetic_rows, synthetic_cols, seed, layer_patterns)
    else:
        label = raster_dir
        stack = read_layers(raster_dir, layer_patterns)
    tiles = cut_tiles(stack, grid_size)
    if not tiles:
        raise LandscapeError(f"no {grid_size}×{grid_size} tile of {raster_dir} lies fully inside the valid (non-nodata) area")
    train, heldout = split_tiles(tiles, heldout_fraction)
    train, heldout = _with_burnable_cells(train, raster_dir), _with_burnable_cells(heldout, raster_dir)
    if not train:
        raise LandscapeError(f"no {grid_size}×{grid_size} training tile of {raster_dir} holds a burnable cell")
    if num_landscapes is not None:
        train = _evenly_spaced(train, num_landscapes)
        if heldout_fraction > 0:
            heldout_cap = max(2, math.ceil(num_landscapes * heldout_fraction / (1 - heldout_fraction)))
            heldout = _evenly_spaced(heldout, heldout_cap)
    return LandscapeSet(train=train, heldout=heldout, source=label)
