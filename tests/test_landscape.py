"""Tests of firebreak_exp.landscape on real GeoTIFFs (the Worcester, VT LANDFIRE sample and synthetic sets)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import WORCESTER as WORCESTER_DIR, require_shared
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine

from firebreak_exp import landscape as ls
from firebreak_exp.landscape import (
    DEFAULT_LAYER_PATTERNS,
    FBFM40_CODES,
    FUEL_GROUPS,
    LAYERS,
    NON_BURNABLE_CODES,
    LandscapeError,
    LandscapeSet,
    Tile,
    cut_tiles,
    fuel_group_index,
    load_landscapes,
    read_layers,
    split_tiles,
    write_synthetic_landscape,
)

NODATA = 32767
# LANDFIRE integer / divisor = physical value (independent of the module's own table).
DIVISOR = {
    "elevation": 1,
    "slope": 100,
    "aspect": 1,
    "canopy_cover": 100,
    "canopy_height": 10,
    "canopy_base_height": 10,
    "canopy_bulk_density": 100,
}

#: load_landscapes' source-specific arguments, as conf/landscape/landfire.yaml and synthetic.yaml set them
LANDFIRE = dict(layer_patterns=None, synthetic_rows=None, synthetic_cols=None, seed=None, cache_dir=None)
SYNTHETIC = dict(raster_dir=None, layer_patterns=None, synthetic_rows=200, synthetic_cols=200, seed=0)


def test_require_shared_skips_or_fails(tmp_path, monkeypatch):
    missing = tmp_path / "no_shared"
    monkeypatch.delenv("FIREBREAK_REQUIRE_SHARED", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no_shared"):
        require_shared(missing)
    monkeypatch.setenv("FIREBREAK_REQUIRE_SHARED", "1")
    with pytest.raises(pytest.fail.Exception, match="FIREBREAK_REQUIRE_SHARED=1"):
        require_shared(missing)
    assert require_shared(tmp_path) == tmp_path


@pytest.fixture(scope="module")
def worcester_dir() -> Path:
    return require_shared(WORCESTER_DIR)


@pytest.fixture(scope="module")
def worcester_stack(worcester_dir):
    return read_layers(worcester_dir)


@pytest.fixture(scope="module")
def worcester_raw(worcester_dir) -> dict[str, np.ndarray]:
    """Raw int16 arrays read directly with rasterio."""
    raw = {}
    for layer, pattern in DEFAULT_LAYER_PATTERNS.items():
        (path,) = list(worcester_dir.glob(pattern))
        with rasterio.open(path) as src:
            raw[layer] = src.read(1)
    return raw


@pytest.fixture(scope="module")
def small_synthetic(tmp_path_factory) -> Path:
    """A 40×40 synthetic set, to copy and break."""
    return write_synthetic_landscape(tmp_path_factory.mktemp("syn") / "small", 40, 40, seed=11)


@pytest.fixture
def broken_copy(small_synthetic, tmp_path) -> Path:
    """A fresh copy of the small synthetic set that a test may break."""
    return Path(shutil.copytree(small_synthetic, tmp_path / "broken"))


def _layer_path(folder: Path, layer: str) -> Path:
    (path,) = list(folder.glob(DEFAULT_LAYER_PATTERNS[layer]))
    return path


def _rewrite(path: Path, data: np.ndarray | None = None, transform=None, crs=None) -> None:
    """Rewrite a GeoTIFF with other data, transform or CRS (the rest kept)."""
    with rasterio.open(path) as src:
        profile = src.profile
        old = src.read(1)
    data = old if data is None else data
    profile.update(height=data.shape[0], width=data.shape[1])
    if transform is not None:
        profile["transform"] = transform
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


def _read_raw(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


# --------------------------------------------------------------------------------------------
# Constants and small helpers
# --------------------------------------------------------------------------------------------


def test_constants():
    assert set(DEFAULT_LAYER_PATTERNS) == set(LAYERS)
    assert NON_BURNABLE_CODES <= FBFM40_CODES
    assert len(FBFM40_CODES) == 45 and min(FBFM40_CODES) == 91 and max(FBFM40_CODES) == 204
    assert 13 not in FBFM40_CODES  # Anderson models are not FBFM40


def test_fuel_group_index():
    codes = np.array([[91, 99, 101, 109], [121, 124, 141, 149], [161, 165, 181, 189], [201, 204, 98, 186]])
    groups = np.array(FUEL_GROUPS)[fuel_group_index(codes)]
    assert fuel_group_index(codes).dtype == np.int8
    assert groups.tolist() == [["NB", "NB", "GR", "GR"], ["GS", "GS", "SH", "SH"], ["TU", "TU", "TL", "TL"], ["SB", "SB", "NB", "TL"]]
    with pytest.raises(LandscapeError, match="77"):
        fuel_group_index(np.array([102, 77]))


def test_slope_aspect_planes_point_downslope():
    rows, cols = np.mgrid[0:5, 0:6].astype(float)
    east_rising = 3.0 * cols  # 3 m per 30 m cell eastward: 10 % slope, faces west
    slope, aspect = ls._slope_aspect(east_rising, 30.0)
    assert (slope == 10).all() and (aspect == 270).all()
    north_rising = -3.0 * rows  # row index points south, so this rises northward: faces south
    slope, aspect = ls._slope_aspect(north_rising, 30.0)
    assert (slope == 10).all() and (aspect == 180).all()
    south_rising = 3.0 * rows  # faces north
    assert (ls._slope_aspect(south_rising, 30.0)[1] == 0).all()
    slope, aspect = ls._slope_aspect(np.full((4, 4), 250.0), 30.0)
    assert (slope == 0).all() and (aspect == -1).all()


# --------------------------------------------------------------------------------------------
# Worcester, VT (real LANDFIRE)
# --------------------------------------------------------------------------------------------


def test_each_default_pattern_matches_one_worcester_file(worcester_dir):
    for layer, pattern in DEFAULT_LAYER_PATTERNS.items():
        assert len([p for p in worcester_dir.glob(pattern) if p.is_file()]) == 1, (layer, pattern)


def test_worcester_units_and_nodata(worcester_stack, worcester_raw):
    stack, raw = worcester_stack, worcester_raw
    assert stack.name == "worcester_vt"
    assert stack.shape == (400, 549) and stack.cell_size == 30.0 and stack.crs == CRS.from_epsg(5070)
    raw_nodata = np.logical_or.reduce([raw[layer] == NODATA for layer in LAYERS])
    np.testing.assert_array_equal(stack.valid, ~raw_nodata)
    assert (~stack.valid).sum() == 63588

    valid = stack.valid
    for layer, divisor in DIVISOR.items():
        got = stack.layers[layer]
        assert got.dtype == np.float32
        np.testing.assert_allclose(got[valid], raw[layer][valid] / divisor, rtol=1e-6)
        assert (got[~valid] == 0).all()
        assert not np.isclose(got, NODATA / divisor).any()  # 327.67, 3276.7, ... never leak as values
        assert np.abs(got).max() < 2000  # elevation is the largest (m)
    fuel = stack.layers["fuel_model"]
    assert fuel.dtype == np.int16
    np.testing.assert_array_equal(fuel[valid], raw["fuel_model"][valid])

    # A few cells by hand: raw LANDFIRE integer -> physical unit.
    rows, cols = np.nonzero(valid)
    for r, c in zip(rows[::9000], cols[::9000]):
        assert stack.layers["slope"][r, c] == pytest.approx(raw["slope"][r, c] / 100)
        assert stack.layers["canopy_height"][r, c] == pytest.approx(raw["canopy_height"][r, c] / 10)
        assert stack.layers["canopy_base_height"][r, c] == pytest.approx(raw["canopy_base_height"][r, c] / 10)
        assert stack.layers["canopy_bulk_density"][r, c] == pytest.approx(raw["canopy_bulk_density"][r, c] / 100)
        assert stack.layers["canopy_cover"][r, c] == pytest.approx(raw["canopy_cover"][r, c] / 100)
    flat = (raw["aspect"] == -1) & valid
    assert flat.any() and (stack.layers["aspect"][flat] == -1).all()
    assert stack.layers["canopy_cover"].max() <= 1.0
    assert stack.paths["fuel_model"].name == "LC22_F40_230.tif"


def _count_clean_tiles(invalid: np.ndarray, g: int) -> int:
    rows, cols = invalid.shape
    return sum(
        not invalid[r : r + g, c : c + g].any() for r in range(0, rows - g + 1, g) for c in range(0, cols - g + 1, g)
    )


@pytest.mark.parametrize("grid_size, readme_count", [(25, 225), (50, 49)])
def test_worcester_tiles_avoid_nodata(worcester_stack, worcester_raw, grid_size, readme_count):
    invalid = np.logical_or.reduce([worcester_raw[layer] == NODATA for layer in LAYERS])
    expected = _count_clean_tiles(invalid, grid_size)
    assert expected == readme_count
    tiles = cut_tiles(worcester_stack, grid_size)
    assert len(tiles) == expected
    assert [(t.row, t.col) for t in tiles] == sorted((t.row, t.col) for t in tiles)  # row-major
    for tile in tiles:
        window = (slice(tile.row, tile.row + grid_size), slice(tile.col, tile.col + grid_size))
        assert tile.shape == (grid_size, grid_size)
        assert not invalid[window].any()
        np.testing.assert_array_equal(tile.fuel_model, worcester_raw["fuel_model"][window])
        np.testing.assert_allclose(tile.slope, worcester_raw["slope"][window] / 100, rtol=1e-6)
    tile = tiles[0]
    assert tile.name == f"worcester_vt/r{tile.row:04d}_c{tile.col:04d}"
    assert tile.cell_size == 30.0
    assert not tile.elevation.flags.writeable  # shared tiles are read-only
    np.testing.assert_array_equal(tile.burnable, ~np.isin(tile.fuel_model, list(NON_BURNABLE_CODES)))


def test_cut_tiles_stride(worcester_stack):
    tiles = cut_tiles(worcester_stack, 50, stride=25)
    assert len(tiles) > 49
    assert all(t.row % 25 == 0 and t.col % 25 == 0 for t in tiles)
    assert all(worcester_stack.valid[t.row : t.row + 50, t.col : t.col + 50].all() for t in tiles)


def test_split_is_deterministic_disjoint_and_non_empty(worcester_stack):
    tiles = cut_tiles(worcester_stack, 25)
    train, heldout = split_tiles(tiles, 0.2)
    assert train and heldout
    assert len(train) + len(heldout) == len(tiles)
    assert max(t.col + 25 for t in train) <= min(t.col for t in heldout)  # no spatial overlap
    again = split_tiles(tiles, 0.2)
    assert [t.name for t in again[0]] == [t.name for t in train]
    assert [t.name for t in again[1]] == [t.name for t in heldout]
    # The eastern 20 % of columns 0..525 starts at 420: held-out tiles are the columns >= 425.
    assert min(t.col for t in heldout) == 425
    assert split_tiles(tiles, 0.0) == (tiles, [])


def test_split_moves_boundary_to_keep_both_sides(worcester_stack):
    tiles = cut_tiles(worcester_stack, 25)
    for fraction in (0.001, 0.999):
        train, heldout = split_tiles(tiles, fraction)
        assert train and heldout
        assert max(t.col + 25 for t in train) <= min(t.col for t in heldout)
    west, east = min(tiles, key=lambda t: t.col), max(tiles, key=lambda t: t.col)
    assert split_tiles([east, west], 0.5) == ([west], [east])
    one_column = [t for t in tiles if t.col == 200]
    train, heldout = split_tiles(one_column, 0.3)  # falls back to a north/south split
    assert train and heldout and max(t.row + 25 for t in train) <= min(t.row for t in heldout)


def test_split_overlapping_tiles_stay_disjoint(worcester_stack):
    tiles = cut_tiles(worcester_stack, 50, stride=25)
    train, heldout = split_tiles(tiles, 0.25)
    assert train and heldout
    assert max(t.col + 50 for t in train) <= min(t.col for t in heldout)


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5])
def test_split_rejects_bad_fraction(worcester_stack, fraction):
    with pytest.raises(LandscapeError, match="heldout_fraction"):
        split_tiles(cut_tiles(worcester_stack, 50), fraction)


def test_load_landfire_caps_and_memoises(worcester_dir):
    full = load_landscapes("landfire", 25, None, 0.2, raster_dir=str(worcester_dir), **LANDFIRE)
    assert len(full.train) + len(full.heldout) == 225
    assert full.source == str(worcester_dir.resolve())
    capped = load_landscapes("landfire", 25, 10, 0.2, raster_dir=str(worcester_dir), **LANDFIRE)
    assert len(capped.train) == 10 and len(capped.heldout) == 3  # max(2, ceil(10 * 0.2 / 0.8))
    assert {t.name for t in capped.train} <= {t.name for t in full.train}
    cols = [t.col for t in capped.train]
    assert max(cols) - min(cols) > 100  # evenly spaced, not the first 10
    again = load_landscapes("landfire", 25, 10, 0.2, raster_dir=str(worcester_dir), **LANDFIRE)
    assert again.train is not capped.train  # fresh lists ...
    assert all(a is b for a, b in zip(again.train, capped.train))  # ... of the memoised tiles
    assert capped.tile(0) is capped.train[0] and capped.tile(10) is capped.heldout[0]
    assert len(capped) == 13
    with pytest.raises(IndexError):
        capped.tile(13)


# --------------------------------------------------------------------------------------------
# Synthetic landscapes
# --------------------------------------------------------------------------------------------


def _raw_arrays(folder: Path) -> dict[str, np.ndarray]:
    return {layer: _read_raw(_layer_path(folder, layer)) for layer in LAYERS}


def test_synthetic_is_deterministic(tmp_path):
    a = _raw_arrays(write_synthetic_landscape(tmp_path / "a", 60, 70, seed=5))
    b = _raw_arrays(write_synthetic_landscape(tmp_path / "b", 60, 70, seed=5))
    c = _raw_arrays(write_synthetic_landscape(tmp_path / "c", 60, 70, seed=6))
    for layer in LAYERS:
        assert a[layer].dtype == np.int16 and a[layer].shape == (60, 70)
        assert a[layer].tobytes() == b[layer].tobytes(), layer
    assert not np.array_equal(a["elevation"], c["elevation"])
    assert not np.array_equal(a["fuel_model"], c["fuel_model"])


def test_synthetic_layout_and_content(tmp_path):
    folder = write_synthetic_landscape(tmp_path / "syn", 120, 100, seed=2)
    assert (folder / "SYN_SlpP" / "SYN_SlpP_000.tif").is_file()
    with rasterio.open(_layer_path(folder, "elevation")) as src:
        assert src.crs == CRS.from_epsg(5070) and src.res == (30.0, 30.0) and src.nodata == NODATA
    stack = read_layers(folder)
    assert stack.valid.all() and stack.shape == (120, 100)
    raw = _raw_arrays(folder)

    relief = raw["elevation"].max() - raw["elevation"].min()
    assert 100 < relief < 1500

    fuel = raw["fuel_model"]
    codes = set(np.unique(fuel).tolist())
    assert codes <= FBFM40_CODES
    assert codes & NON_BURNABLE_CODES and len(codes - NON_BURNABLE_CODES) >= 4
    non_burnable = np.isin(fuel, list(NON_BURNABLE_CODES)).mean()
    assert 0.05 <= non_burnable <= 0.15
    burnable_codes = np.unique(fuel[~np.isin(fuel, list(NON_BURNABLE_CODES))])
    # Coherent patches: most cells share their fuel with their right-hand neighbour.
    assert (fuel[:, 1:] == fuel[:, :-1]).mean() > 0.8
    assert len(burnable_codes) >= 4

    # Slope and aspect are derived from elevation (row index grows southward).
    elevation = raw["elevation"].astype(float)
    d_row, d_col = np.gradient(elevation, 30.0)
    slope_pct = 100 * np.hypot(d_row, d_col)
    assert np.abs(raw["slope"] - slope_pct).max() <= 0.5 + 1e-9
    steep = slope_pct > 5
    downslope = np.degrees(np.arctan2(-d_col, d_row)) % 360  # east = -d/dcol, north = +d/drow downhill
    diff = np.abs((raw["aspect"][steep] - downslope[steep] + 180) % 360 - 180)
    assert diff.max() <= 0.5 + 1e-6
    # Water (NB8) is a flat lake: where the 4-neighbourhood of elevation is constant, slope 0 and aspect -1.
    flat = np.zeros_like(fuel, dtype=bool)
    e = raw["elevation"]
    flat[1:-1, 1:-1] = (e[1:-1, 1:-1] == e[:-2, 1:-1]) & (e[1:-1, 1:-1] == e[2:, 1:-1]) & (e[1:-1, 1:-1] == e[1:-1, :-2]) & (e[1:-1, 1:-1] == e[1:-1, 2:])
    assert flat[fuel == 98].any()
    assert (raw["slope"][flat] == 0).all() and (raw["aspect"][flat] == -1).all()

    # Canopy follows fuel.
    groups = np.array(FUEL_GROUPS)[fuel_group_index(fuel)]
    grass_or_nb = np.isin(groups, ["GR", "GS", "NB"])
    timber = np.isin(groups, ["TU", "TL"])
    for layer in ("canopy_cover", "canopy_height", "canopy_base_height", "canopy_bulk_density"):
        assert (stack.layers[layer][grass_or_nb] == 0).all(), layer
    assert (stack.layers["canopy_cover"][timber] > 0).mean() > 0.9
    for layer, low, high in [
        ("canopy_cover", 0.4, 0.8),
        ("canopy_height", 10, 30),
        ("canopy_base_height", 1, 5),
        ("canopy_bulk_density", 0.05, 0.25),
    ]:
        values = stack.layers[layer][timber]
        assert values.min() >= low - 1e-6 and values.max() <= high + 1e-6, layer


def test_synthetic_existing_folder_is_reused(tmp_path):
    folder = write_synthetic_landscape(tmp_path / "syn", 30, 30, seed=1)
    stamp = _layer_path(folder, "elevation").stat().st_mtime_ns
    assert write_synthetic_landscape(folder, 30, 30, seed=1) == folder
    assert _layer_path(folder, "elevation").stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temporary folder removed
    with pytest.raises(LandscapeError, match="seed"):
        write_synthetic_landscape(folder, 30, 30, seed=2)
    (tmp_path / "junk").mkdir()
    with pytest.raises(LandscapeError, match="junk"):
        write_synthetic_landscape(tmp_path / "junk", 30, 30, seed=1)


def test_load_synthetic(tmp_path):
    landscapes = load_landscapes("synthetic", 25, None, 0.2, cache_dir=str(tmp_path), **SYNTHETIC)
    assert isinstance(landscapes, LandscapeSet) and landscapes.source == "synthetic"
    assert (tmp_path / "synthetic_200x200_seed0" / "synthetic.json").is_file()
    assert len(landscapes.train) + len(landscapes.heldout) == 64
    assert landscapes.train and landscapes.heldout
    assert all(isinstance(t, Tile) and t.shape == (25, 25) for t in landscapes.tiles)
    assert landscapes.tile(0).name == "synthetic_200x200_seed0/r0000_c0000"


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------


def test_missing_folder(tmp_path):
    with pytest.raises(LandscapeError, match="nowhere"):
        read_layers(tmp_path / "nowhere")


def test_missing_layer_file(broken_copy):
    _layer_path(broken_copy, "canopy_bulk_density").unlink()
    with pytest.raises(LandscapeError, match=r"canopy_bulk_density.*\*\*/\*_CBD_\*\.tif") as error:
        read_layers(broken_copy)
    assert str(broken_copy) in str(error.value)


def test_two_files_for_one_layer(broken_copy):
    path = _layer_path(broken_copy, "slope")
    shutil.copy(path, path.with_name("SYN_SlpP_001.tif"))
    with pytest.raises(LandscapeError, match="2 files for layer 'slope'"):
        read_layers(broken_copy)


def test_unknown_pattern_key_and_custom_pattern(broken_copy):
    with pytest.raises(LandscapeError, match="'fuels'"):
        read_layers(broken_copy, {"fuels": "**/*.tif"})
    path = _layer_path(broken_copy, "slope")
    path.rename(path.with_name("slope_percent.tif"))
    stack = read_layers(broken_copy, {"slope": "**/slope_percent.tif"})
    assert stack.paths["slope"].name == "slope_percent.tif"


def test_different_shape(broken_copy):
    path = _layer_path(broken_copy, "slope")
    _rewrite(path, data=_read_raw(path)[:-1])
    with pytest.raises(LandscapeError, match="shape") as error:
        read_layers(broken_copy)
    assert str(path) in str(error.value) and str(_layer_path(broken_copy, "elevation")) in str(error.value)


def test_different_transform(broken_copy):
    path = _layer_path(broken_copy, "canopy_cover")
    _rewrite(path, transform=Affine(30.0, 0.0, 1_800_030.0, 0.0, -30.0, 2_600_000.0))
    with pytest.raises(LandscapeError, match="transform") as error:
        read_layers(broken_copy)
    assert str(path) in str(error.value) and str(_layer_path(broken_copy, "elevation")) in str(error.value)


def test_different_crs(broken_copy):
    path = _layer_path(broken_copy, "aspect")
    _rewrite(path, crs=CRS.from_epsg(32618))
    with pytest.raises(LandscapeError, match="CRS") as error:
        read_layers(broken_copy)
    assert str(path) in str(error.value) and str(_layer_path(broken_copy, "elevation")) in str(error.value)


def test_all_nodata(broken_copy):
    path = _layer_path(broken_copy, "canopy_height")
    _rewrite(path, data=np.full((40, 40), NODATA, dtype=np.int16))
    with pytest.raises(LandscapeError, match="nodata") as error:
        read_layers(broken_copy)
    assert str(path) in str(error.value)


def test_nodata_cells_are_masked_and_zero(broken_copy):
    path = _layer_path(broken_copy, "canopy_bulk_density")
    data = _read_raw(path)
    data[:5, :] = NODATA
    _rewrite(path, data=data)
    stack = read_layers(broken_copy)
    assert not stack.valid[:5].any() and stack.valid[5:].all()
    for layer in LAYERS:
        assert (stack.layers[layer][:5] == 0).all()
    assert all(t.row >= 5 for t in cut_tiles(stack, 10, stride=1))


def test_unknown_fuel_codes(broken_copy):
    path = _layer_path(broken_copy, "fuel_model")
    data = _read_raw(path)
    data[0, :3] = 77
    data[1, 0] = 13  # an Anderson model, not FBFM40
    data[2, 0] = NODATA  # ignored
    _rewrite(path, data=data)
    with pytest.raises(LandscapeError, match=r"\[13, 77\]") as error:
        read_layers(broken_copy)
    assert str(path) in str(error.value)


def test_grid_size_too_large_or_small(small_synthetic):
    stack = read_layers(small_synthetic)
    expected = f"landscape.grid_size=50: expected at most 40 cells, the shorter side of the raster 40×40 of {small_synthetic}"
    with pytest.raises(LandscapeError, match=re.escape(expected)):
        cut_tiles(stack, 50)
    with pytest.raises(LandscapeError, match="grid_size"):
        cut_tiles(stack, 1)
    with pytest.raises(LandscapeError, match="stride"):
        cut_tiles(stack, 10, stride=0)


def test_truncated_geotiff(broken_copy):
    path = _layer_path(broken_copy, "elevation")
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size // 2)
    with pytest.raises(LandscapeError, match="truncated") as error:
        read_layers(broken_copy)
    assert str(path) in str(error.value)


def test_unknown_source(tmp_path):
    with pytest.raises(LandscapeError, match=r"'modis'.*landfire.*synthetic"):
        load_landscapes("modis", 25, None, 0.2, cache_dir=str(tmp_path), **SYNTHETIC)


def test_landfire_source_needs_raster_dir():
    with pytest.raises(LandscapeError, match="raster_dir"):
        load_landscapes("landfire", 25, None, 0.2, raster_dir=None, **LANDFIRE)


def test_no_tile_survives(broken_copy):
    path = _layer_path(broken_copy, "elevation")
    data = _read_raw(path)
    data[::9, ::9] = NODATA  # every 10×10 window touches nodata
    _rewrite(path, data=data)
    with pytest.raises(LandscapeError, match="no 10×10 tile"):
        load_landscapes("landfire", 10, None, 0.2, raster_dir=str(broken_copy), **LANDFIRE)


def test_tiles_without_burnable_cells_are_dropped(broken_copy, caplog):
    """A tile of water or rock alone (no burnable cell) has no fire to stop: it leaves the tile sets, and a log
    line says how many went."""
    path = _layer_path(broken_copy, "fuel_model")
    data = _read_raw(path)
    data[:10, :10] = 98           # the top-left training tile: open water
    data[20:30, 30:40] = 99       # a held-out tile: bare ground
    _rewrite(path, data=data)
    every = cut_tiles(read_layers(broken_copy), 10)
    with caplog.at_level("INFO", logger="firebreak_exp.landscape"):
        tiles = load_landscapes("landfire", 10, None, 0.25, raster_dir=str(broken_copy), **LANDFIRE)
    names = {tile.name for tile in tiles.tiles}
    assert len(tiles) == len(every) - 2
    assert not any(name.endswith(("r0000_c0000", "r0020_c0030")) for name in names)
    assert all(tile.burnable.any() for tile in tiles.tiles)
    dropped = [r.getMessage() for r in caplog.records if "without burnable cells" in r.getMessage()]
    where = broken_copy.resolve()
    assert dropped == [f"dropped 1 of 12 tiles of {where} without burnable cells",
                       f"dropped 1 of 4 tiles of {where} without burnable cells"]


def test_no_training_tile_burns(broken_copy):
    path = _layer_path(broken_copy, "fuel_model")
    _rewrite(path, data=np.full((40, 40), 91, dtype=np.int16))
    with pytest.raises(LandscapeError, match="no 10×10 training tile .* holds a burnable cell"):
        load_landscapes("landfire", 10, None, 0.25, raster_dir=str(broken_copy), **LANDFIRE)
