"""What ``python -m firebreak_exp.plan`` writes for GIS users: GeoTIFFs on the input's grid (its CRS,
transform and nodata mask), the breaks as GeoJSON polygons, plan.json and a PNG preview. Every file is
written to a temporary name beside it and renamed, so a reader never sees half a file.
"""
from __future__ import annotations

import json
from pathlib import Path
import numpy as np
import rasterio

from firebreak_exp.atomic import write_atomically, write_text_atomically
from firebreak_exp.planning.whole_landscape import Landscape

#: Nodata value of fuel_breaks.tif (uint8: 0 no break, 1 break).
BREAKS_NODATA = 255
#: Nodata value of the burn-probability GeoTIFFs (float32, probabilities 0-1).
PROBABILITY_NODATA = -9999.0


def write_geotiff(path: Path, landscape: Landscape, values: np.ndarray, dtype: str, nodata: float) -> Path:
    """One-band GeoTIFF with the landscape's CRS and transform; cells outside ``landscape.valid`` hold
    ``nodata``. Written to a temporary file and renamed."""
    data = np.asarray(values).astype(dtype)
    data[~landscape.valid] = nodata
    height, width = data.shape
    profile = {"driver": "GTiff", "height": height, "width": width, "count": 1, "dtype": dtype,
               "crs": landscape.crs, "transform": landscape.transform, "nodata": nodata, "compress": "deflate"}

    def write(tmp):
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data, 1)
    return write_atomically(path, write)


def break_polygons(landscape: Landscape, breaks: np.ndarray) -> dict:
    """The break cells as a GeoJSON FeatureCollection of polygons (edge-connected cells merged) in the
    landscape's CRS (named in the legacy ``crs`` member, which GDAL and QGIS read)."""
    from rasterio.features import shapes
    raster = breaks.astype(np.uint8)
    features = [{"type": "Feature", "properties": {"fuel_break": 1}, "geometry": geometry}
                for geometry, _ in shapes(raster, mask=raster == 1, connectivity=4, transform=landscape.transform)]
    collection = {"type": "FeatureCollection", "features": features}
    if landscape.crs is not None:
        collection["crs"] = {"type": "name", "properties": {"name": landscape.crs.to_string()}}
    return collection


def hillshade(elevation: np.ndarray, cell_size: float, azimuth: float = 315.0, altitude: float = 45.0) -> np.ndarray:
    """Lambertian hillshade 0-1 of an elevation grid (m), lit from ``azimuth`` degrees clockwise from north."""
    d_row, d_col = np.gradient(elevation.astype(np.float64), cell_size)
    slope = np.arctan(np.hypot(d_row, d_col))
    aspect = np.arctan2(-d_col, d_row)        # downslope direction, clockwise from north (row 0 is north)
    zenith, light = np.radians(90.0 - altitude), np.radians(azimuth)
    shade = np.cos(zenith) * np.cos(slope) + np.sin(zenith) * np.sin(slope) * np.cos(light - aspect)
    return np.clip(shade, 0.0, 1.0)


def plot_plan(path: Path, landscape: Landscape, breaks: np.ndarray, before: np.ndarray, after: np.ndarray,
              title: str) -> Path:
    """plan.png: the breaks over a hillshade, and the burn probability untreated and treated."""
    import firebreak_exp.plots  # noqa: F401  (selects matplotlib's Agg backend)
    import matplotlib.pyplot as plt

    height, width = breaks.shape
    size = max(4.0, min(8.0, 8.0 * height / width))
    fig, axes = plt.subplots(1, 3, figsize=(3 * size * width / height + 2, size))
    shade = np.ma.masked_where(~landscape.valid, hillshade(landscape.tile.elevation, landscape.tile.cell_size))
    axes[0].imshow(shade, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[0].imshow(np.ma.masked_where(~breaks, breaks), cmap="autumn", interpolation="nearest")
    axes[0].set_title(f"{title}: {int(breaks.sum())} break cells (red)")
    for ax, values, label in ((axes[1], before, "untreated"), (axes[2], after, "treated")):
        image = ax.imshow(np.ma.masked_where(~landscape.valid, values), cmap="hot_r", vmin=0,
                          vmax=max(float(before.max()), 1e-6), interpolation="nearest")
        ax.set_title(f"burn probability, {label}")
        fig.colorbar(image, ax=ax, fraction=0.046)
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])

    def write(tmp):
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    try:
        return write_atomically(path, write)
    finally:
        plt.close(fig)


def write_json(path: Path, record: dict) -> Path:
    return write_text_atomically(path, json.dumps(record, indent=2))


def write_plan_outputs(folder: Path, landscape: Landscape, breaks: np.ndarray, before: np.ndarray,
                       after: np.ndarray, record: dict) -> list:
    """fuel_breaks.tif, burn_probability_untreated.tif, burn_probability_treated.tif, fuel_breaks.geojson,
    plan.png and plan.json in ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_geotiff(folder / "fuel_breaks.tif", landscape, breaks, "uint8", BREAKS_NODATA),
        write_geotiff(folder / "burn_probability_untreated.tif", landscape, before, "float32", PROBABILITY_NODATA),
        write_geotiff(folder / "burn_probability_treated.tif", landscape, after, "float32", PROBABILITY_NODATA),
        write_json(folder / "fuel_breaks.geojson", break_polygons(landscape, breaks)),
        plot_plan(folder / "plan.png", landscape, breaks, before, after, record["method"]),
        write_json(folder / "plan.json", record),
    ]
