"""End to end: `python -m firebreak_exp` in subprocesses against a real SQLite MLflow store."""
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from firebreak_exp.rl.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "firebreak_exp", *args], cwd=cwd, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def metric_history(client: MlflowClient, run_id: str) -> dict:
    run = client.get_run(run_id)
    return {key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
            for key in run.data.metrics if not key.startswith("perf/")}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke training run; its folder, store URI and MLflow run."""
    work = tmp_path_factory.mktemp("smoke")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    run_dir = work / "run"
    run_cli("experiment=smoke", f"tracking.uri={uri}", f"hydra.run.dir={run_dir}",
            f"landscape.cache_dir={work / 'landscapes'}")
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("firebreak_exp").experiment_id])
    return {"work": work, "uri": uri, "run_dir": run_dir, "client": client, "run": run}


def _artifact_files(client, run_id, path=""):
    files = []
    for item in client.list_artifacts(run_id, path):
        files += _artifact_files(client, run_id, item.path) if item.is_dir else [item.path]
    return files


@pytest.mark.slow
def test_mlflow_run_holds_params_metrics_and_artifacts(smoke_run):
    run, client = smoke_run["run"], smoke_run["client"]
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["parallel.num_envs"] == "1" and params["agent.gamma"] == "0.99"
    assert params["trainer.episodes"] == "12" and params["landscape.grid_size"] == "12"
    assert "experiment=smoke" in run.data.tags["overrides"]
    # named after what differs: its overrides, but where it is logged
    assert run.info.run_name == f"experiment=smoke landscape.cache_dir={smoke_run['work'] / 'landscapes'}"
    assert len(run.data.tags["git_commit"]) in (40, len("unknown"))
    for key in ("return", "burned_area_reduction", "loss", "epsilon", "perf/experiences_per_second",
                "heldout/R", "heldout/burned_area_reduction"):
        assert key in run.data.metrics, key
    epsilons = [m.value for m in client.get_metric_history(run.info.run_id, "epsilon")]
    assert epsilons[0] > epsilons[-1] >= 0.05 - 1e-9
    files = _artifact_files(client, run.info.run_id)
    for expected in (".hydra/config.yaml", ".hydra/overrides.yaml", "checkpoints/last.pt", "checkpoints/best.pt",
                     "checkpoints/last.replay.npz", "plots/training_curves.png", "plots/fuel_breaks.png"):
        assert expected in files, (expected, files)
    assert any(f.startswith("checkpoints/episode_") and f.endswith(".pt") for f in files)


@pytest.mark.slow
def test_checkpoint_holds_the_full_training_state(smoke_run):
    state = load_checkpoint(smoke_run["run_dir"] / "checkpoints" / "last.pt")
    assert set(state["agent"]) >= {"q_network", "target_network", "optimizer", "updates", "rng"}
    assert state["counters"]["episodes"] >= 12
    assert state["counters"]["updates"] == state["agent"]["updates"] > 0
    replay = state["replay"]
    # every experience is in the buffer but the steps of unfinished episodes, which wait for their returns
    pending = int(state["collector"]["n_step"]["counts"].sum())
    assert int(replay["size"]) == min(state["counters"]["experiences"] - pending, len(replay["actions"]))
    assert replay["fuel_breaks"].dtype == np.bool_ and replay["burn_probability"].dtype == np.float16
    assert set(state["rng"]) >= {"numpy", "torch", "python"}
    weights = state["agent"]["q_network"]
    assert all(isinstance(v, torch.Tensor) for v in weights.values())


@pytest.mark.slow
def test_rerunning_the_archive_gives_identical_metrics(smoke_run):
    archive = smoke_run["run_dir"] / ".hydra"
    rerun_dir = smoke_run["work"] / "rerun"
    run_cli("--config-path", str(archive), "--config-name", "config", f"hydra.run.dir={rerun_dir}")
    client = smoke_run["client"]
    runs = client.search_runs([smoke_run["run"].info.experiment_id], order_by=["attributes.start_time ASC"])
    assert len(runs) == 2 and runs[1].info.status == "FINISHED"
    first, second = (metric_history(client, r.info.run_id) for r in runs)
    assert set(first) == set(second) and "return" in first and "loss" in first
    assert first == second


@pytest.mark.slow
@pytest.mark.parametrize("order", ["overrides_then_m", "m_then_overrides", "m_among_overrides"])
def test_multirun_is_one_parent_with_a_child_per_job(tmp_path, order):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = ["experiment=smoke", "parallel.num_envs=1,2", "trainer.episodes=3", f"tracking.uri={uri}",
                 f"hydra.sweep.dir={tmp_path / 'multirun'}", f"landscape.cache_dir={tmp_path / 'landscapes'}"]
    args = {"overrides_then_m": [*overrides, "-m"], "m_then_overrides": ["-m", *overrides],
            "m_among_overrides": [*overrides[:2], "-m", *overrides[2:]]}[order]
    run_cli(*args)
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("firebreak_exp").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    assert all(r.info.status == "FINISHED" for r in runs)
    assert sorted(c.data.params["parallel.num_envs"] for c in children) == ["1", "2"]
    assert sorted(c.info.run_name for c in children) == ["parallel.num_envs=1", "parallel.num_envs=2"]


def test_wrong_key_or_type_fails_at_start_with_its_name(tmp_path):
    for override, expected in (("+agent.lrr=0.1", "lrr"), ("agent.lr=fast", "agent.lr"),
                               ("parallel.num_envs=0", "num_envs")):
        result = subprocess.run([sys.executable, "-m", "firebreak_exp", "experiment=smoke", override,
                                 f"tracking.uri=sqlite:///{tmp_path / 'db.sqlite'}",
                                 f"hydra.run.dir={tmp_path / 'run'}"],
                                cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode != 0
        assert expected in result.stderr, (override, result.stderr[-2000:])


@pytest.mark.slow
def test_a_killed_runs_checkpoints_are_in_mlflow(tmp_path):
    """Checkpoints reach MLflow as they are written: a run killed (SIGKILL) after its first periodic
    checkpoint has that checkpoint and its replay buffer among its artifacts, readable."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "firebreak_exp", "experiment=smoke", "trainer.episodes=100000",
                                "trainer.checkpoint_frequency=2", f"tracking.uri={uri}", f"hydra.run.dir={run_dir}",
                                f"landscape.cache_dir={tmp_path / 'landscapes'}"], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    client = MlflowClient(tracking_uri=uri)
    complete = []      # periodic checkpoints logged together with their replay buffers
    try:
        deadline = time.monotonic() + 300
        while not complete:   # the two files of a checkpoint reach the store one after the other
            assert process.poll() is None, process.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no periodic checkpoint in MLflow within 300 s"
            time.sleep(0.5)
            if (run_dir / ".mlflow_run_id").exists():
                run_id = (run_dir / ".mlflow_run_id").read_text().strip()
                logged = set(_artifact_files(client, run_id, "checkpoints"))
                complete = sorted(f for f in logged if "episode_" in f and f.endswith(".pt")
                                  and f.replace(".pt", ".replay.npz") in logged)
    finally:
        process.kill()
        process.wait()
    episode = complete[0]
    assert client.get_run(run_id).info.status == "RUNNING"   # killed: it never finished
    downloaded = Path(client.download_artifacts(run_id, "checkpoints", str(tmp_path / "downloaded")))
    state = load_checkpoint(downloaded / Path(episode).name)
    assert state["counters"]["episodes"] >= 2 and int(state["replay"]["size"]) > 0
