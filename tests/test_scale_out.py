"""Scaling out, with real components only: a Dask LocalCluster on loopback, Hydra's joblib and
submitit launchers in subprocesses, a real `mlflow server`, and worker processes killed with SIGKILL."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
from mlflow.tracking import MlflowClient

from firebreak_exp import make_vector_env
from firebreak_exp import vectorization
from firebreak_exp.tracking import Tracker, TrackingUnavailableError
from firebreak_exp.vectorization import ClusterUnavailableError, WorkerDiedError
from test_environment import _rollout

ROOT = Path(__file__).resolve().parents[1]
MLFLOW = Path(sys.executable).with_name("mlflow")


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m firebreak_exp ARGS`` in a subprocess (exit status not checked)."""
    return subprocess.run([sys.executable, "-m", "firebreak_exp", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def describe(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_same_rollouts(a, b) -> None:
    (trace_a, stats_a), (trace_b, stats_b) = a, b
    assert len(trace_a) == len(trace_b)
    for x, y in zip(trace_a, trace_b):
        np.testing.assert_array_equal(x, y)
    assert stats_a == stats_b


def spawned_children(process: psutil.Process) -> list:
    """Worker processes of the process backend below ``process`` (multiprocessing 'spawn' children)."""
    found = []
    for child in process.children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


# -- Dask backend -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_dask_local_cluster_gives_the_sequential_transitions(make_cfg):
    cfg = make_cfg("parallel=dask", "parallel.num_envs=3", "parallel.max_workers=2")
    with make_vector_env(cfg, method="sequential") as vec_env:
        reference = _rollout(vec_env, seed=11, steps=12)
    assert reference[1]["total_episodes"] > 0  # autoreset happened within the rollout
    with make_vector_env(cfg) as vec_env:
        assert vec_env.backend == "dask"
        cluster = vec_env._dask_cluster
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        workers = cluster.scheduler_info["workers"]
        assert len(workers) == 2 and all(w.startswith("tcp://127.0.0.1:") for w in workers)
        assert all(info["nthreads"] == 1 for info in workers.values())
        http = cluster.scheduler.http_server  # no dashboard, only the plain HTTP endpoint, on loopback
        assert http.address == "127.0.0.1" and http.port != 8787
        assert requests.get(f"http://127.0.0.1:{http.port}/health", timeout=5).ok
        assert requests.get(f"http://127.0.0.1:{http.port}/status", timeout=5).status_code == 404
        assert_same_rollouts(_rollout(vec_env, seed=11, steps=12), reference)
        assert vec_env.get_env_states()[2]["tile_index"] == vec_env.call("get_state")[2]["tile_index"]
    assert cluster.status.name == "closed" and vec_env._dask_client is None


@pytest.mark.slow
def test_dask_backend_uses_a_running_cluster_by_address_and_notices_a_dead_worker(make_cfg):
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster, set_as_default=False) as client:
        cfg = make_cfg("parallel=dask", "parallel.num_envs=3", f"parallel.address={cluster.scheduler_address}")
        assert cfg.parallel.address == cluster.scheduler_address
        with make_vector_env(cfg, method="sequential") as vec_env:
            reference = _rollout(vec_env, seed=5, steps=4)
        vec_env = make_vector_env(cfg)
        try:
            assert vec_env._dask_cluster is None and vec_env.max_workers == 2  # one env group per worker
            assert_same_rollouts(_rollout(vec_env, seed=5, steps=4), reference)
            # Kill one worker of the cluster (its nanny restarts an empty one): the next step must fail fast.
            pids = client.run(os.getpid)
            os.kill(pids[sorted(pids)[0]], signal.SIGKILL)
            actions = np.zeros(vec_env.num_envs, dtype=int)
            start = time.monotonic()
            with pytest.raises(WorkerDiedError, match="Dask worker tcp://127.0.0.1:"):
                vec_env.step(actions)
            assert time.monotonic() - start < 5
            with pytest.raises(WorkerDiedError, match="unusable"):  # never a stale or repeated step
                vec_env.step(actions)
        finally:
            vec_env.close()
        # the environments are released and the shared cluster keeps running
        assert client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0
        assert len(client.scheduler_info()["workers"]) >= 1


def test_unreachable_dask_scheduler_fails_fast(make_cfg, monkeypatch):
    monkeypatch.setattr(vectorization, "DASK_CONNECT_TIMEOUT_SECONDS", 2)
    address = f"tcp://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(ClusterUnavailableError, match=address):
        make_vector_env(make_cfg("parallel=dask", f"parallel.address={address}"))
    assert time.monotonic() - start < 15


# -- Worker faults ----------------------------------------------------------------------------------

def test_killed_process_worker_is_detected_within_seconds(make_cfg):
    me = psutil.Process()
    before = {p.pid for p in spawned_children(me)}
    with make_vector_env(make_cfg(), method="process", num_envs=2, max_workers=2) as vec_env:
        workers = [p for p in spawned_children(me) if p.pid not in before]
        assert len(workers) == 2
        _, infos = vec_env.reset(seed=0)
        actions = [int(np.flatnonzero(mask)[0]) for mask in infos["action_mask"]]
        vec_env.step(actions)
        victim = workers[0]
        victim.send_signal(signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(WorkerDiedError, match=rf"worker process fire-env-worker-\d+ \(pid {victim.pid}\) "
                                                  rf"exited with code -9"):
            vec_env.step(actions)
        assert time.monotonic() - start < 3
        # the other worker's answer to that step is never handed out later as if it were a new step
        with pytest.raises(WorkerDiedError, match="unusable"):
            vec_env.step(actions)
        with pytest.raises(WorkerDiedError):
            vec_env.reset(seed=1)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers)


@pytest.mark.slow
def test_cli_reports_a_killed_worker_in_one_line(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["experiment=smoke", "parallel=process", "parallel.num_envs=2", "trainer.episodes=100000",
            f"tracking.uri={uri}", f"hydra.run.dir={tmp_path / 'run'}", f"landscape.cache_dir={tmp_path / 'ls'}"]
    process = subprocess.Popen([sys.executable, "-m", "firebreak_exp", *args], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        parent, deadline = psutil.Process(process.pid), time.monotonic() + 240
        while len(spawned_children(parent)) < 2:
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.2)
        time.sleep(3)  # training is stepping by now
        victim = spawned_children(parent)[0]
        victim.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        stdout, stderr = process.communicate(timeout=60)
        elapsed = time.monotonic() - killed_at
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 1, (stdout[-2000:], stderr[-2000:])
    assert elapsed < 20
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"firebreak_exp: error: WorkerDiedError: worker process fire-env-worker-"), lines
    assert f"(pid {victim.pid}) exited with code -9" in lines[-1]
    assert "Traceback" not in stderr and "Traceback" not in stdout
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("firebreak_exp").experiment_id])
    assert run.info.status == "FAILED"


# -- Hydra launchers ------------------------------------------------------------------------------------

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
    assert sorted(c.info.run_name for c in children) == ["train-0", "train-1", "train-2", "train-3"]


def test_slurm_launcher_preset_extends_the_plugin_config():
    result = cli("hydra/launcher=slurm", "hydra.launcher.partition=cpu", "--cfg", "hydra", "-p", "hydra.launcher",
                 timeout=120)
    assert result.returncode == 0, describe(result)
    assert "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in result.stdout
    assert "timeout_min: 1440" in result.stdout and "partition: cpu" in result.stdout
    assert "deprecated" not in result.stderr


# -- Remote tracking ----------------------------------------------------------------------------------

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


def test_unreachable_tracking_server_fails_within_seconds():
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(TrackingUnavailableError, match=f"MLflow tracking server {uri} .* is unreachable"):
        Tracker(uri, "firebreak_exp")
    assert time.monotonic() - start < 6


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
