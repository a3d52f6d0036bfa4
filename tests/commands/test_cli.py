"""Bad input through the real CLI (`python -m firebreak_exp ...` in subprocesses): each case must stop with
a clear message naming the file, key or value and what was expected, a non-zero exit, no Python traceback,
and no MLflow run (the inputs are checked before the run is created).

Every error is ONE line on stderr, ``firebreak_exp: error: <message>``, and exit status 2: those of the
command line itself that Hydra finds while composing the config (unknown key, wrong type, unknown option)
too, on every command. The cases of a group run concurrently (a few subprocesses at a time) to keep the
suite short.
"""
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from rasterio.crs import CRS
from rasterio.transform import Affine
from test_landscape import _layer_path, _read_raw, _rewrite, NODATA

from firebreak_exp.landscape import write_synthetic_landscape

ROOT = Path(__file__).resolve().parents[2]
CONCURRENT_CASES = 3


def _remove(folder: Path, layer: str) -> None:
    _layer_path(folder, layer).unlink()


def _shorter(folder: Path, layer: str) -> None:
    path = _layer_path(folder, layer)
    _rewrite(path, data=_read_raw(path)[:-1])


def _shifted(folder: Path, layer: str) -> None:
    _rewrite(_layer_path(folder, layer), transform=Affine(30.0, 0.0, 1_800_030.0, 0.0, -30.0, 2_600_000.0))


def _reprojected(folder: Path, layer: str) -> None:
    _rewrite(_layer_path(folder, layer), crs=CRS.from_epsg(32618))


def _all_nodata(folder: Path, layer: str) -> None:
    path = _layer_path(folder, layer)
    _rewrite(path, data=np.full(_read_raw(path).shape, NODATA, dtype=np.int16))


def _unknown_fuels(folder: Path, layer: str) -> None:
    path = _layer_path(folder, layer)
    data = _read_raw(path)
    data[0, :3], data[1, 0] = 77, 13  # 13 is an Anderson model, not FBFM40
    _rewrite(path, data=data)


def _corrupted(folder: Path, layer: str) -> None:
    _layer_path(folder, layer).write_bytes(b"this is not a GeoTIFF\n" * 100)


def _truncated(folder: Path, layer: str) -> None:
    path = _layer_path(folder, layer)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


# id -> (break one layer of a copy of the 40x40 synthetic set, layer, extra overrides, expected in the message)
RASTER_CASES = {
    "missing_layer_file": (_remove, "canopy_bulk_density", [], ["no file for layer 'canopy_bulk_density'",
                                                                "'**/*_CBD_*.tif'", "{dir}"]),
    "shape_differs": (_shorter, "slope", [], ["shape differs", "{path}", "39×40", "40×40"]),
    "transform_differs": (_shifted, "canopy_cover", [], ["transform differs", "{path}"]),
    "crs_differs": (_reprojected, "aspect", [], ["CRS differs", "{path}", "EPSG:32618", "EPSG:5070"]),
    "all_nodata": (_all_nodata, "canopy_height", [], ["every cell of canopy_height raster {path} is nodata"]),
    "unknown_fuel_codes": (_unknown_fuels, "fuel_model", [], ["{path}", "not FBFM40 codes: [13, 77]"]),
    "corrupted_geotiff": (_corrupted, "elevation", [], ["cannot read elevation raster {path}",
                                                        "corrupt or truncated GeoTIFF"]),
    "truncated_geotiff": (_truncated, "elevation", [], ["cannot read elevation raster {path}",
                                                        "corrupt or truncated GeoTIFF"]),
    "grid_size_larger_than_raster": (None, None, ["landscape.grid_size=50"],
                                     ["landscape.grid_size=50: expected at most 40 cells, the shorter side of the raster 40×40 of {dir}"]),
    "raster_dir_missing": (None, None, ["landscape.raster_dir={tmp}/nowhere"],
                           ["raster folder {tmp}/nowhere does not exist"]),
}

# id -> (overrides, the one line's text after "firebreak_exp: error: ")
CONFIG_CASES = {
    "unknown_key_added": (["+agent.lrr=0.1"], "agent.lrr: Key 'lrr' not in 'AgentConfig'"),
    "unknown_key": (["agent.lrr=0.1"], "agent.lrr=0.1: unknown key agent.lrr; did you mean agent.lr?"),
    "unknown_key_far_from_any": (["trainer.zzz=1"], "trainer.zzz=1: unknown key trainer.zzz; trainer has the keys "
                                                    "episodes, steps_per_collection, "),
    "wrong_type_float": (["agent.lr=fast"], "agent.lr=fast: expected a number"),
    "wrong_type_int": (["trainer.episodes=ten"], "trainer.episodes=ten: expected an integer"),
    "nan_for_an_integer": (["seed=nan"], "seed=nan: expected an integer"),
    "fraction_for_an_integer": (["landscape.grid_size=1.5"], "landscape.grid_size=1.5: expected an integer"),
    "null_for_a_required_value": (["trainer.episodes=null"], "trainer.episodes=null: expected an integer, not null"),
    "wrong_type_bool": (["trainer.deterministic=maybe"], "trainer.deterministic=maybe: expected true or false"),
    "unparsable_override": (["seed=["], "seed=[: cannot parse this override (no viable alternative at input '['); "
                                        "see https://hydra.cc/docs/"),
    "unknown_group_option": (["parallel=gpu"], "parallel=gpu: config group parallel has no option 'gpu'; expected "
                                               "one of dask, joblib, process, sequential, thread"),
    "num_envs_zero": (["parallel.num_envs=0"], "parallel.num_envs=0: expected a positive integer"),
    "num_envs_negative": (["parallel.num_envs=-2"], "parallel.num_envs=-2: expected a positive integer"),
    "num_envs_not_a_number": (["parallel.num_envs=many"], "parallel.num_envs=many: expected a positive integer"),
    "unknown_backend": (["parallel.backend=gpu"], "parallel.backend=gpu: unknown parallel backend 'gpu'; expected "
                                                  "one of sequential, thread, process, joblib, dask"),
    "address_without_dask": (["parallel.address=tcp://127.0.0.1:8786"],
                             "parallel.address=tcp://127.0.0.1:8786: only the dask backend uses an address"),
    "heldout_fraction_out_of_range": (["landscape.heldout_fraction=1.5"],
                                      "landscape.heldout_fraction=1.5: expected a value in [0, 1)"),
    "synthetic_raster_too_large": (["landscape.synthetic_rows=1000000000000000000"],
                                   "landscape.synthetic_rows=1000000000000000000: expected an integer in [2, 5,000]"),
    "tile_larger_than_the_synthetic_raster": (["landscape.grid_size=61"],
                                              "landscape.grid_size=61: expected at most 60 cells, the shorter side of "
                                              "the generated raster"),
}
#: The other commands, the same kinds of command-line mistakes: (module, override, the line's text)
COMMAND_CASES = [
    ("firebreak_exp.evaluate", "seed=nan", "seed=nan: expected an integer"),
    ("firebreak_exp.plan", "trainer.total_episodes=abc", "trainer.total_episodes=abc: unknown key "
                                                         "trainer.total_episodes; did you mean "),
    ("firebreak_exp.benchmark", "agent.lr=fast", "agent.lr=fast: expected a number"),
    ("firebreak_exp.evaluate", "parallel.num_envs=-3", "parallel.num_envs=-3: expected a positive integer"),
    ("firebreak_exp.plan", "landscape.synthetic_cols=1000000", "landscape.synthetic_cols=1000000: expected an "
                                                               "integer in [2, 5,000]"),
    ("firebreak_exp.benchmark", "planners=none", "planners=none: config group planners has no option 'none'; "
                                                 "expected one of default"),
]


def run_cli(*args: str, module: str = "firebreak_exp") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, "experiment=smoke", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


class Outcomes:
    """Runs every case of a group concurrently the first time one of them is asked for."""

    def __init__(self, tmp: Path):
        self.tmp, self.results = tmp, {}
        self.clean = write_synthetic_landscape(tmp / "clean", 40, 40, seed=11)

    def _case_args(self, case: str, group: str):
        work = self.tmp / case
        work.mkdir()
        args = [f"tracking.uri=sqlite:///{work / 'mlflow.db'}", f"hydra.run.dir={work / 'run'}",
                f"landscape.cache_dir={self.tmp / 'landscapes'}"]
        context = {"tmp": str(self.tmp), "dir": "", "path": ""}
        if group == "raster":
            breaker, layer, extra, _ = RASTER_CASES[case]
            folder = Path(shutil.copytree(self.clean, work / "rasters"))
            context["dir"] = str(folder)
            if breaker is not None:
                context["path"] = str(_layer_path(folder, layer))
                breaker(folder, layer)
            args += ["landscape=landfire", f"landscape.raster_dir={folder}", "landscape.grid_size=12"]
            args += [e.format(**context) for e in extra]
        else:
            args += CONFIG_CASES[case][0]
        return work, args, context

    def get(self, case: str, group: str):
        if case not in self.results:
            cases = RASTER_CASES if group == "raster" else CONFIG_CASES
            prepared = {name: self._case_args(name, group) for name in cases if name not in self.results}
            with ThreadPoolExecutor(CONCURRENT_CASES) as pool:
                futures = {name: pool.submit(run_cli, *args) for name, (_, args, _) in prepared.items()}
                for name, future in futures.items():
                    work, _, context = prepared[name]
                    self.results[name] = (future.result(), work, context)
        return self.results[case]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> Outcomes:
    return Outcomes(tmp_path_factory.mktemp("bad_input"))


def _check(result: subprocess.CompletedProcess, work: Path, expected) -> str:
    report = f"exit {result.returncode}\n--- stderr\n{result.stderr[-3000:]}\n--- stdout\n{result.stdout[-2000:]}"
    assert result.returncode == 2, report
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, report
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("firebreak_exp: error: "), report
    for text in expected:
        assert text in result.stderr, (text, report)
    # checked before any MLflow run exists: the store was never even created
    assert not (work / "mlflow.db").exists(), report
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(RASTER_CASES))
def test_bad_raster_input_gives_one_line(outcomes, case):
    result, work, context = outcomes.get(case, "raster")
    expected = [text.format(**context) for text in RASTER_CASES[case][3]]
    _check(result, work, expected)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_input_names_the_key(outcomes, case):
    result, work, _ = outcomes.get(case, "config")
    line = _check(result, work, [])
    assert line.startswith(f"firebreak_exp: error: {CONFIG_CASES[case][1]}"), line


@pytest.mark.slow
def test_command_line_mistakes_give_one_line_on_every_command(tmp_path):
    def run(case):
        module, override, _ = case
        work = tmp_path / str(COMMAND_CASES.index(case))
        work.mkdir()
        return run_cli(override, f"tracking.uri=sqlite:///{work / 'mlflow.db'}", f"hydra.run.dir={work / 'run'}",
                       module=module), work
    with ThreadPoolExecutor(CONCURRENT_CASES) as pool:
        results = list(pool.map(run, COMMAND_CASES))
    for (module, override, expected), (result, work) in zip(COMMAND_CASES, results):
        line = _check(result, work, [])
        assert line.startswith(f"firebreak_exp: error: {expected}"), (module, line)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_bad_input_in_a_sweep_is_reported_without_traceback(tmp_path, launcher):
    """In a multirun the job's line goes through Hydra (no traceback, the other jobs still run) and the
    parent run, created before the jobs, is left FAILED."""
    from mlflow.tracking import MlflowClient
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_cli("landscape.grid_size=500,600", f"hydra/launcher={launcher}", f"tracking.uri={uri}",
                     f"hydra.sweep.dir={tmp_path / 'multi'}", f"landscape.cache_dir={tmp_path / 'ls'}", "-m")
    report = f"exit {result.returncode}\n--- stderr\n{result.stderr[-3000:]}"
    assert result.returncode == 1, report
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, report
    assert "firebreak_exp: error: landscape.grid_size=500: expected at most 60 cells" in result.stderr, report
    job_logs = "".join(log.read_text() for log in (tmp_path / "multi").glob("*/*.log"))
    assert "error: landscape.grid_size=600: expected at most 60" in job_logs, report  # the other job ran too
    client = MlflowClient(tracking_uri=uri)
    (parent,) = client.search_runs([client.get_experiment_by_name("firebreak_exp").experiment_id])
    assert parent.info.run_name == "sweep" and parent.info.status == "FAILED"
