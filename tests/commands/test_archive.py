"""Exact re-runs from the archive: a run's ``.hydra/config.yaml`` holds what the run used (the number of
environments ``num_envs=auto`` chose, absolute paths), so it re-runs from another folder to the same metrics."""
import json
import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from firebreak_exp.commands.archive import absolute_uri


def run_cli(*args: str, cwd, env=None) -> None:
    result = subprocess.run([sys.executable, "-m", "firebreak_exp", *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def metrics(client: MlflowClient, run_id: str) -> dict:
    run = client.get_run(run_id)
    return {key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
            for key in run.data.metrics if not key.startswith("perf/")}


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
