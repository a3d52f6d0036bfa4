"""`python -m firebreak_exp.plan` end to end in subprocesses: real GeoTIFFs, simulations, Hydra and a SQLite
MLflow store."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from rasterio.features import rasterize
from rasterio.transform import Affine

from conftest import CONF_DIR, require_worcester
from firebreak_exp.commands.plan_outputs import BREAKS_NODATA, PROBABILITY_NODATA
from firebreak_exp.config import register_configs
from firebreak_exp.landscape import LAYERS, read_layers, write_synthetic_landscape
from firebreak_exp.observation import CHANNELS
from firebreak_exp.rl.network import QNetwork
from firebreak_exp.rl.checkpoint import CHECKPOINT_FORMAT
from test_landscape import NODATA, _layer_path, _read_raw, _rewrite

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = ("fuel_breaks.tif", "burn_probability_untreated.tif", "burn_probability_treated.tif",
           "fuel_breaks.geojson", "plan.json", "plan.png")
FAST = ["scenario.burn_duration=240", "num_ignitions=12", "scoring_ignitions=8", "batch_percent=1"]


def run_plan(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "firebreak_exp.plan", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == expect, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def rasters(tmp_path_factory) -> Path:
    """A 36 x 44 LANDFIRE-style set whose north-west corner is nodata (a triangle, as a county boundary)."""
    folder = write_synthetic_landscape(tmp_path_factory.mktemp("plan") / "rasters", 36, 44, seed=5)
    rows, cols = np.mgrid[0:36, 0:44]
    corner = rows + cols < 14
    for layer in LAYERS:
        path = _layer_path(folder, layer)
        data = _read_raw(path)
        data[corner] = NODATA
        _rewrite(path, data=data)
    return folder


def _check_outputs(folder: Path, raster_dir: Path, window=None) -> dict:
    """The GeoTIFFs line up with the input (CRS, transform, shape, nodata mask), breaks match the budget and lie
    on burnable cells only, the GeoJSON covers exactly the break cells; returns plan.json."""
    for name in OUTPUTS:
        assert (folder / name).stat().st_size > 0, name
    stack = read_layers(raster_dir)
    valid, transform = stack.valid, stack.transform
    fuel = stack.layers["fuel_model"]
    if window is not None:
        row, col, height, width = window
        valid, fuel = valid[row:row + height, col:col + width], fuel[row:row + height, col:col + width]
        transform = transform @ Affine.translation(col, row)
    with rasterio.open(_layer_path(raster_dir, "elevation")) as src:
        crs = src.crs
    record = json.loads((folder / "plan.json").read_text())
    arrays = {}
    for name, dtype, nodata in (("fuel_breaks.tif", "uint8", BREAKS_NODATA),
                                ("burn_probability_untreated.tif", "float32", PROBABILITY_NODATA),
                                ("burn_probability_treated.tif", "float32", PROBABILITY_NODATA)):
        with rasterio.open(folder / name) as src:
            assert src.crs == crs and src.transform == transform and src.shape == valid.shape, name
            assert src.dtypes[0] == dtype and src.nodata == nodata, name
            np.testing.assert_array_equal(src.dataset_mask() > 0, valid, err_msg=name)
            arrays[name] = src.read(1)
    breaks = arrays["fuel_breaks.tif"] == 1
    assert set(np.unique(arrays["fuel_breaks.tif"][valid])) <= {0, 1}
    burnable = valid & ~np.isin(fuel, [91, 92, 93, 98, 99])
    assert breaks.sum() == record["break_cells"] and not (breaks & ~burnable).any()
    expected = int(round(record["budget"]["percent"] / 100 * burnable.sum())) if record["budget"]["percent"] \
        else int(round(record["budget"]["hectares"] / (stack.cell_size ** 2 / 10_000)))
    assert record["break_cells"] == expected
    assert record["break_hectares"] == pytest.approx(expected * stack.cell_size ** 2 / 10_000)
    for name in ("burn_probability_untreated.tif", "burn_probability_treated.tif"):
        assert (arrays[name][valid] >= 0).all() and (arrays[name][valid] <= 1).all()
        assert (arrays[name][valid & ~burnable] == 0).all()
    geojson = json.loads((folder / "fuel_breaks.geojson").read_text())
    assert geojson["crs"]["properties"]["name"] == crs.to_string()
    covered = rasterize([(f["geometry"], 1) for f in geojson["features"]], out_shape=valid.shape,
                        transform=transform, fill=0, dtype="uint8")
    np.testing.assert_array_equal(covered == 1, breaks)
    lo, hi = record["R_ci"]
    assert lo <= record["R"] <= hi
    ba0, ba = record["burned_area_untreated"], record["burned_area_treated"]
    assert ba0["fraction"] > 0 and ba["fraction"] <= ba0["fraction"] + 1e-12
    assert record["R"] == pytest.approx(1 - ba["fraction"] / ba0["fraction"])
    assert ba0["hectares"] == pytest.approx(ba0["fraction"] * burnable.sum() * stack.cell_size ** 2 / 10_000)
    assert record["plan_seconds"] >= 0 and record["scoring_seconds"] > 0 and record["peak_rss_mb"] > 0
    return record


def _plan_runs(uri: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("firebreak_exp").experiment_id
    return client.search_runs([experiment], "tags.run_kind = 'plan'")


# ---------------------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------------------

def test_flow_plan_lines_up_with_the_input(rasters, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_plan("method=flow", "landscape=landfire", f"landscape.raster_dir={rasters}", "budget_percent=6",
                      f"hydra.run.dir={tmp_path / 'run'}", f"tracking.uri={uri}", *FAST)
    record = _check_outputs(tmp_path / "run", rasters)
    assert record["method"] == "flow" and record["budget"]["percent"] == 6.0
    assert record["planning"]["batches"] >= 2        # several fire updates, not one
    assert record["R"] > 0.05                          # flow's breaks stop some of the fresh fires
    (run,) = _plan_runs(uri)
    assert run.info.status == "FINISHED" and run.data.tags["method"] == "flow"
    assert run.data.metrics["R"] == pytest.approx(record["R"])
    artifacts = {a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(run.info.run_id)}
    assert set(OUTPUTS) <= artifacts
    assert "flow" in result.stdout and "R" in result.stdout


@pytest.mark.slow
def test_budget_in_hectares(rasters, tmp_path):
    run_plan("method=random", "landscape=landfire", f"landscape.raster_dir={rasters}", "budget_hectares=9",
             f"hydra.run.dir={tmp_path / 'run'}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", *FAST)
    record = _check_outputs(tmp_path / "run", rasters)
    assert record["break_cells"] == 100 and record["break_hectares"] == pytest.approx(9.0)   # 0.09 ha cells


def _training_run(folder: Path, in_channels: int) -> Path:
    """A training run folder (``.hydra/config.yaml`` and ``checkpoints/best.pt``) of the smoke experiment whose
    Q-network reads ``in_channels`` channels, its weights as training initializes them."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("config", overrides=["experiment=smoke"])
    GlobalHydra.instance().clear()
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    network = QNetwork(in_channels, cfg.agent.channels, cfg.agent.num_layers)
    (folder / "checkpoints").mkdir()
    torch.save({"format": CHECKPOINT_FORMAT, "agent": {"q_network": network.state_dict(),
                                                       "target_network": network.state_dict()}},
               folder / "checkpoints" / "best.pt")
    return folder


@pytest.mark.slow
def test_comparison_is_one_parent_run_with_a_child_per_method(rasters, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    training = _training_run(tmp_path / "training", len(CHANNELS))
    methods = ["policy", "flow", "random", "domirank", "greedy"]
    result = run_plan(f"method=[{','.join(methods)}]", f"checkpoint={training}", "landscape=landfire",
                      f"landscape.raster_dir={rasters}", "greedy.max_candidates=16",
                      f"hydra.run.dir={tmp_path / 'run'}", f"tracking.uri={uri}", *FAST)
    records = {m: _check_outputs(tmp_path / "run" / m, rasters) for m in methods}
    assert len({r["break_cells"] for r in records.values()}) == 1
    assert len({r["burned_area_untreated"]["hectares"] for r in records.values()}) == 1   # the same fresh fires
    comparison = json.loads((tmp_path / "run" / "comparison.json").read_text())
    assert list(comparison["methods"]) == methods
    for m in methods:
        assert comparison["methods"][m]["R"] == records[m]["R"]
        assert any(line.startswith(m) for line in result.stdout.splitlines())
    runs = _plan_runs(uri)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 1 + len(methods)
    assert sorted(r.data.tags["method"] for r in children) == sorted(methods)
    assert all(r.info.status == "FINISHED" for r in runs)
    for child in children:
        assert parent.data.metrics[f"{child.data.tags['method']}/R"] == pytest.approx(child.data.metrics["R"])


@pytest.mark.slow
def test_planning_in_windows_of_the_training_tile_size(rasters, tmp_path):
    training = _training_run(tmp_path / "training", len(CHANNELS))
    methods = ("policy", "flow", "policy_search", "flow_search")
    run_plan(f"method=[{','.join(methods)}]", f"checkpoint={training}", "landscape=landfire",
             f"landscape.raster_dir={rasters}", "plan_window=12", f"hydra.run.dir={tmp_path / 'run'}",
             f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", *FAST)
    for method in methods:
        record = _check_outputs(tmp_path / "run" / method, rasters)
        assert record["planning"]["plan_window"] == 12 and record["planning"]["windows"] == 3 * 4
        assert record["planning"]["ignitions_per_window"] == 3          # the smoke training's env.num_ignitions
        assert record["planning"]["window_budget"] == "risk" and record["planning"]["risk_ignitions"] == 1024


@pytest.mark.slow
def test_a_multirun_over_methods_is_a_child_run_per_job(rasters, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_plan("-m", "method=flow,random", "landscape=landfire", f"landscape.raster_dir={rasters}",
             f"hydra.sweep.dir={tmp_path / 'sweep'}", f"tracking.uri={uri}", *FAST)
    for job, method in enumerate(("flow", "random")):
        assert _check_outputs(tmp_path / "sweep" / str(job), rasters)["method"] == method
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("firebreak_exp").experiment_id])
    (sweep,) = [r for r in runs if r.data.tags.get("run_kind") == "sweep"]
    jobs = [r for r in runs if r.data.tags.get("run_kind") == "plan"]
    assert sorted(r.data.tags["method"] for r in jobs) == ["flow", "random"]
    assert all(r.data.tags["mlflow.parentRunId"] == sweep.info.run_id for r in jobs)


@pytest.mark.slow
def test_worcester_window_keeps_its_place_and_nodata(tmp_path):
    worcester = require_worcester()
    window = [40, 100, 60, 70]                        # on the county boundary: half of it is nodata
    run_plan("method=flow", "landscape=landfire", f"landscape.raster_dir={worcester}",
             f"window=[{','.join(map(str, window))}]", f"hydra.run.dir={tmp_path / 'run'}",
             f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", *FAST)
    record = _check_outputs(tmp_path / "run", worcester, window)
    assert record["landscape"]["shape"] == [60, 70] and record["landscape"]["window"] == window
    assert not read_layers(worcester).valid[40:100, 100:170].all()   # the window holds nodata cells, kept nodata


# id -> (overrides, words of the one-line message)
BAD_INPUT = {
    "budget_zero": (["budget_percent=0"], ["budget_percent=0", "(0, 100)"]),
    "budget_hundred": (["budget_percent=100"], ["budget_percent=100", "(0, 100)"]),
    "budget_hectares_too_large": (["budget_hectares=1000000"], ["budget_hectares=1000000", "ha"]),
    "policy_without_checkpoint": (["method=policy"], ["method=policy needs checkpoint"]),
    "policy_search_without_checkpoint": (["method=policy_search"], ["method=policy_search needs checkpoint"]),
    "search_on_the_whole_grid": (["method=flow_search", "plan_window=null"],
                                 ["plan_window=null", "flow_search", "window by window"]),
    "search_setting_out_of_range": (["method=flow_search", "planners.flow_search.swap_passes=-1"],
                                    ["planners.flow_search.swap_passes=-1", "expected an integer >= 0"]),
    "unknown_method": (["method=[flow,magic]"], ["magic", "policy"]),
    "window_outside": (["window=[30,0,20,20]"], ["window=[30, 0, 20, 20]", "inside the 36 x 44 raster"]),
    "window_budget_unknown": (["window_budget=area"], ["window_budget=area", "risk", "burnable"]),
    "risk_ignitions_zero": (["risk_ignitions=0"], ["risk_ignitions=0", "positive integer"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_line_and_exit_2(case, rasters, tmp_path):
    overrides, words = BAD_INPUT[case]
    result = run_plan("method=flow", "landscape=landfire", f"landscape.raster_dir={rasters}", *overrides,
                      f"hydra.run.dir={tmp_path / 'run'}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                      expect=2)
    _one_line(result, words)
    assert not (tmp_path / "mlflow.db").exists() or not _plan_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")


def _one_line(result: subprocess.CompletedProcess, words: list) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("firebreak_exp: error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_rasters_that_do_not_line_up_exit_2(rasters, tmp_path):
    folder = Path(shutil.copytree(rasters, tmp_path / "rasters"))
    path = _layer_path(folder, "canopy_cover")
    _rewrite(path, transform=Affine(30.0, 0.0, 1_800_030.0, 0.0, -30.0, 2_600_000.0))
    result = run_plan("method=flow", "landscape=landfire", f"landscape.raster_dir={folder}",
                      f"hydra.run.dir={tmp_path / 'run'}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                      expect=2)
    _one_line(result, ["transform differs", str(path)])


def test_checkpoint_whose_channels_do_not_fit_exits_2(rasters, tmp_path):
    training = _training_run(tmp_path / "training", len(CHANNELS) - 1)
    result = run_plan("method=policy", f"checkpoint={training}", "landscape=landfire",
                      f"landscape.raster_dir={rasters}", f"hydra.run.dir={tmp_path / 'run'}",
                      f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", expect=2)
    _one_line(result, [str(training / "checkpoints" / "best.pt"), "does not fit"])


@pytest.mark.slow
def test_reference_scoring_with_pyretechnics(rasters, tmp_path):
    result = run_plan("method=random", "simulator=pyretechnics", "landscape=landfire",
                      f"landscape.raster_dir={rasters}", f"hydra.run.dir={tmp_path / 'run'}",
                      f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", *FAST[:-2], "scoring_ignitions=3")
    record = _check_outputs(tmp_path / "run", rasters)
    assert record["scoring"] == {"ignitions": 3, "simulator": "pyretechnics"}
    assert record["planning"]["simulator"] == "travel_time"
    assert "scoring random" in result.stderr and "3/3" in result.stderr        # the progress bar
