"""MLflow tracking with real components: Hydra's joblib and submitit launchers in subprocesses, a real
`mlflow server`, and unreachable tracking servers."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient
from conftest import cli, describe, free_port

from firebreak_exp.commands.tracking import Tracker, TrackingUnavailableError

MLFLOW = Path(sys.executable).with_name("mlflow")


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_parallel_launcher_sweep_is_one_parent_with_four_finished_children(tmp_path, launcher):
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"  # a store that does not exist yet
    extra = ["hydra.launcher.n_jobs=4"] if launcher == "joblib" else ["hydra.launcher.timeout_min=20"]
    result = cli("-m", "experiment=smoke", "trainer.episodes=1", "trainer.eval_episodes=1", "seed=0,1,2,3",
                 f"hydra/launcher={launcher}", *extra, f"tracking.uri={uri}",
                 f"hydra.sweep.dir={tmp_path / 'multirun'}", f"landscape.cache_dir={tmp_path / 'ls'}")
    logs = "".join(p.read_text() for p in (tmp_path / "multirun").rglob("*.err"))  # submitit job logs
    assert result.returncode == 0, describe(result) + logs
    assert "database is locked" not in result.stderr + logs and "Traceback" not in result.stderr + logs
    client = MlflowClient(tracking_uri=uri)
    experiments = [e for e in client.search_experiments() if e.name == "firebreak_exp"]
    assert len(experiments) == 1
    runs = client.search_runs([experiments[0].experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.run_name == "sweep" and len(children) == 4
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    assert sorted(c.data.params["seed"] for c in children) == ["0", "1", "2", "3"]
    assert sorted(c.info.run_name for c in children) == ["seed=0", "seed=1", "seed=2", "seed=3"]  # what differs


def test_experiments_open_on_the_runs_table(tmp_path):
    """MLflow 3 shows an experiment's runs table (not the GenAI overview) for this experiment kind: set on a
    new experiment, and added to an existing one that lacks it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    Tracker(uri, "fresh", None)
    old_id = client.create_experiment("old")
    assert "mlflow.experimentKind" not in client.get_experiment(old_id).tags
    Tracker(uri, "old", None)
    for name in ("fresh", "old"):
        assert client.get_experiment_by_name(name).tags["mlflow.experimentKind"] == "custom_model_development"


def test_slurm_launcher_preset_extends_the_plugin_config():
    result = cli("hydra/launcher=slurm", "hydra.launcher.partition=cpu", "--cfg", "hydra", "-p", "hydra.launcher",
                 timeout=120)
    assert result.returncode == 0, describe(result)
    assert "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in result.stdout
    assert "timeout_min: 1440" in result.stdout and "partition: cpu" in result.stdout
    assert "deprecated" not in result.stderr


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` (SQLite store, served artifacts) on 127.0.0.1 and a free port; always killed."""
    port = free_port()
    artifacts = tmp_path / "server-artifacts"
    log = open(tmp_path / "server.log", "w")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job workers
    server = subprocess.Popen([str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--serve-artifacts", "--artifacts-destination", str(artifacts),
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow server did not start within 180 s"
            try:
                if requests.get(f"{uri}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        yield {"uri": uri, "artifacts": artifacts}
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if server.poll() is None:
                os.killpg(server.pid, sig)  # the server and the uvicorn worker it started
                try:
                    server.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    pass
        log.close()


@pytest.mark.slow
def test_training_on_dask_logs_to_a_remote_mlflow_server(tmp_path, mlflow_server):
    uri = mlflow_server["uri"]
    result = cli("experiment=smoke", "trainer.episodes=2", "trainer.learning_starts=4", "trainer.eval_episodes=1",
                 "parallel=dask",
                 f"tracking.uri={uri}", f"hydra.run.dir={tmp_path / 'run'}", f"landscape.cache_dir={tmp_path / 'ls'}")
    assert result.returncode == 0, describe(result)
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("firebreak_exp").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["parallel.backend"] == "dask" and run.data.params["parallel.num_envs"] == "2"
    assert "return" in run.data.metrics and "loss" in run.data.metrics
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    listed = {a.path for a in client.list_artifacts(run.info.run_id, ".hydra")}
    assert ".hydra/config.yaml" in listed
    stored = {p.relative_to(mlflow_server["artifacts"]).as_posix() for p in mlflow_server["artifacts"].rglob("*")}
    assert any(p.endswith(f"{run.info.run_id}/artifacts/.hydra/config.yaml") for p in stored), sorted(stored)[:20]
    assert any(p.endswith(f"{run.info.run_id}/artifacts/checkpoints/last.pt") for p in stored)


def test_continuing_a_run_the_store_lacks_names_the_run_and_the_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "firebreak_exp", None)
    with pytest.raises(ValueError, match=re.escape(f"MLflow run {'0' * 32} is not in {uri} (tracking.uri); continue "
                                                   f"it with the tracking store it was logged to")):
        tracker.start("train", {}, run_id="0" * 32)
    assert tracker.run_id is None


def test_unreachable_tracking_server_is_refused_by_the_probe():
    """The short probe (not MLflow's minutes of retries) reports it: its reason is in the message."""
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingUnavailableError, match=f"MLflow tracking server {uri} .* is unreachable: "
                                                       f"connection refused or host unreachable"):
        Tracker(uri, "firebreak_exp", None)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["run", "multirun"])
def test_cli_with_unreachable_tracking_server_exits_with_one_line(tmp_path, mode):
    uri = f"http://127.0.0.1:{free_port()}"
    args = ["experiment=smoke", f"tracking.uri={uri}", f"landscape.cache_dir={tmp_path / 'ls'}"]
    args += ["seed=0,1", f"hydra.sweep.dir={tmp_path / 'multi'}", "-m"] if mode == "multirun" else \
        [f"hydra.run.dir={tmp_path / 'run'}"]
    result = cli(*args, timeout=300)
    assert result.returncode == 2, describe(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"firebreak_exp: error: MLflow tracking server {uri} (tracking.uri) is unreachable: "
                     f"connection refused or host unreachable; start it (mlflow server ... --host 127.0.0.1 "
                     f"--port PORT) or choose another tracking.uri"], describe(result)
    assert "Traceback" not in result.stdout
