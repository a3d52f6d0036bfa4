"""Exact re-runs from the archive: a run's ``.hydra/config.yaml`` holds what the run used (the number of
environments ``num_envs=auto`` chose, absolute paths), so it re-runs from another folder to the same metrics."""
import json
import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import ROOT
from firebreak_exp.commands.archive import absolute_uri, load_archive


def run_cli(*args: str, cwd, env=None) -> None:
    result = subprocess.run([sys.executable, "-m", "firebreak_exp", *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def metrics(client: MlflowClient, run_id: str) -> dict:
    run = client.get_run(run_id)
    return {key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
            for key in run.data.metrics if not key.startswith("perf/")}


def _other_version(cfg, fault: str):
    """``cfg`` as a plain dict, as an archive of a version whose keys differ would hold it."""
    plain = OmegaConf.to_container(cfg)
    if fault == "moved_key":         # num_ignitions lived in the scenario
        plain["scenario"]["num_ignitions"] = plain["env"].pop("num_ignitions")
    elif fault == "moved_target":    # the simulators lived in firebreak_exp.simulation
        plain["simulator"]["_target_"] = "firebreak_exp.simulation.TravelTimeSimulator"
    elif fault == "missing_value":   # the environment was built without _target_
        del plain["env"]["_target_"]
    return plain


# fault -> the one line's words after the file name: the key and what this version expects
OTHER_VERSION = {
    "moved_key": ["scenario.num_ignitions: Key 'num_ignitions' not in 'ScenarioConfig'; scenario has the keys "
                  "_target_, wind_speed,", "; this version has num_ignitions as env.num_ignitions"],
    "moved_target": ["simulator._target_=firebreak_exp.simulation.TravelTimeSimulator does not import",
                     "expected one of firebreak_exp.fire.reference.PyretechnicsSimulator (conf/simulator/pyretechnics"
                     ".yaml), firebreak_exp.fire.travel_time.TravelTimeSimulator (conf/simulator/travel_time.yaml)"],
    "missing_value": ["env._target_ has no value; expected one of firebreak_exp.environment.FuelBreakEnv "
                      "(conf/env/default.yaml)"],
}


@pytest.mark.parametrize("fault", sorted(OTHER_VERSION))
def test_an_archive_this_version_cannot_build_is_refused_naming_the_key(make_cfg, tmp_path, fault):
    path = tmp_path / "config.yaml"
    OmegaConf.save(_other_version(make_cfg(), fault), path)
    with pytest.raises(ValueError) as refused:
        load_archive(path)
    line = str(refused.value)
    assert line.startswith(f"archived config {path}: ") and "\n" not in line
    for words in OTHER_VERSION[fault]:
        assert words in line, (words, line)


def test_a_planner_setting_newer_than_the_archive_takes_its_default(make_cfg, tmp_path):
    """A run archived before the searches had swaps is evaluated with the default swaps, and keeps its own
    settings."""
    from firebreak_exp.commands.evaluate import add_new_planner_settings
    from firebreak_exp.planning.evaluation import build_planners
    path = tmp_path / "config.yaml"
    plain = OmegaConf.to_container(make_cfg("planners.flow_search.rollouts=3"))
    for key in ("swap_candidates", "swap_passes"):
        del plain["planners"]["flow_search"][key]
    OmegaConf.save(plain, path)
    archived = load_archive(path)
    own = OmegaConf.to_container(make_cfg(), resolve=False)
    add_new_planner_settings(archived, own)
    search = build_planners(archived.planners, ["flow_search"], None)["flow_search"]
    defaults = own["planners"]["flow_search"]
    assert (search.rollouts, search.swap_candidates, search.swap_passes) == (
        3, defaults["swap_candidates"], defaults["swap_passes"])


def test_resuming_a_run_of_another_version_exits_2_in_one_line(make_cfg, tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(_other_version(make_cfg(), "moved_target"), run / ".hydra" / "config.yaml")
    (run / ".mlflow_run_id").write_text("0" * 32)
    result = subprocess.run([sys.executable, "-m", "firebreak_exp", f"resume={run}", f"hydra.run.dir={tmp_path / 'out'}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"firebreak_exp: error: archived config {run}/.hydra/config.yaml: "
                                                   f"simulator._target_=firebreak_exp.simulation."), lines
    assert not (tmp_path / "mlflow.db").exists()       # refused before the archive's tracking store is opened


def test_relative_sqlite_uris_become_absolute(tmp_path):
    assert absolute_uri("sqlite:///outputs/mlflow.db", tmp_path) == f"sqlite:///{tmp_path}/outputs/mlflow.db"
    assert absolute_uri("sqlite:////data/mlflow.db", tmp_path) == "sqlite:////data/mlflow.db"
    assert absolute_uri("http://127.0.0.1:5000", tmp_path) == "http://127.0.0.1:5000"


@pytest.mark.slow
def test_an_archived_process_run_reruns_exactly_from_another_folder(tmp_path):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    recommendation = tmp_path / "recommended.json"
    recommendation.write_text(json.dumps({"backend": "process", "simulator": "travel_time", "num_envs": 2,
                                          "max_workers": 2}))
    env = {**os.environ, "FIREBREAK_RECOMMENDATION_FILE": str(recommendation)}
    run_cli("experiment=smoke", "parallel=process", "parallel.num_envs=auto", "hydra.run.dir=outputs/run",
            "tracking.uri=sqlite:///outputs/mlflow.db", cwd=project, env=env)
    archive = project / "outputs" / "run" / ".hydra"
    archived = OmegaConf.load(archive / "config.yaml")
    assert (archived.parallel.backend, archived.parallel.num_envs, archived.parallel.max_workers) == ("process", 2, 2)
    assert archived.tracking.uri == f"sqlite:///{project}/outputs/mlflow.db"
    assert archived.landscape.cache_dir == str(project / "outputs" / "landscapes")
    assert "${hydra:" not in OmegaConf.to_yaml(archived)

    run_cli("--config-path", str(archive), "--config-name", "config", f"hydra.run.dir={tmp_path / 'rerun'}",
            cwd=elsewhere)
    assert not (elsewhere / "outputs").exists()
    client = MlflowClient(tracking_uri=archived.tracking.uri)
    first, second = client.search_runs([client.get_experiment_by_name("firebreak_exp").experiment_id],
                                       order_by=["attributes.start_time ASC"])
    assert first.data.params["parallel.num_envs"] == second.data.params["parallel.num_envs"] == "2"
    assert first.data.params["parallel.num_envs_requested"] == "auto"
    assert second.info.status == "FINISHED"
    original, rerun = metrics(client, first.info.run_id), metrics(client, second.info.run_id)
    assert "return" in original and "loss" in original and original == rerun


def test_a_planner_newer_than_the_archive_is_added_whole(make_cfg, tmp_path):
    """A run archived before the hindsight reference existed can still be evaluated with it."""
    from firebreak_exp.commands.evaluate import add_new_planner_settings
    from firebreak_exp.planning.evaluation import build_planners
    from firebreak_exp.planning.search import HindsightPlanner
    path = tmp_path / "config.yaml"
    plain = OmegaConf.to_container(make_cfg("planners.local_search.candidates=5"))
    del plain["planners"]["hindsight"]
    OmegaConf.save(plain, path)
    archived = load_archive(path)
    assert "hindsight" not in archived.planners
    add_new_planner_settings(archived, OmegaConf.to_container(make_cfg(), resolve=False))
    reference = build_planners(archived.planners, ["hindsight"], None)["hindsight"]
    assert isinstance(reference, HindsightPlanner) and reference.planner.candidates == 5   # the archive's local search
