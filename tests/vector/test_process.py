"""The process backend: workers burn each other's fires, and a killed worker is noticed within seconds."""
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from mlflow.tracking import MlflowClient
from conftest import rollout, ROOT, spawned_children

from firebreak_exp import make_vector_env
from firebreak_exp.vector.backend import WorkerDiedError


@pytest.mark.slow
def test_process_workers_burn_each_others_fires(make_cfg):
    """pyretechnics on the process backend: an evaluating environment's fires are spread over all workers
    (FireExchange; test_backends_give_identical_transitions checks the numbers); travel-time fires, which
    their environment's search keeps, stay home, and share_fires=False keeps every fire home."""
    counts = {}
    for simulator, share in (("pyretechnics", True), ("pyretechnics", False), ("travel_time", True)):
        cfg = make_cfg("parallel.num_envs=2", f"simulator={simulator}")
        with make_vector_env(cfg, backend="process", max_workers=2, share_fires=share) as vec_env:
            rollout(vec_env, seed=2, steps=4)
            workers = vec_env.fires_shared()
        assert len(workers) == 2
        counts[simulator, share] = [sum(w[key] for w in workers) for key in ("burned_for_others", "burned_by_others")]
    burned_for_others, burned_by_others = counts["pyretechnics", True]
    assert burned_for_others == burned_by_others > 0
    assert counts["pyretechnics", False] == [0, 0]
    assert counts["travel_time", True] == [0, 0]


def test_killed_process_worker_is_detected_by_its_exit(make_cfg):
    """The step fails because the worker's exit is noticed, not because it stops answering: the timeout is a
    guard against a hang, and its message would not name the exit code."""
    me = psutil.Process()
    before = {p.pid for p in spawned_children(me)}
    with make_vector_env(make_cfg(), backend="process", num_envs=2, max_workers=2, step_timeout_s=300) as vec_env:
        workers = [p for p in spawned_children(me) if p.pid not in before]
        assert len(workers) == 2
        _, infos = vec_env.reset(seed=0)
        actions = [int(np.flatnonzero(mask)[0]) for mask in infos["action_mask"]]
        vec_env.step(actions)
        victim = workers[0]
        victim.send_signal(signal.SIGKILL)
        with pytest.raises(WorkerDiedError, match=rf"worker process fire-env-worker-\d+ \(pid {victim.pid}\) "
                                                  rf"exited with code -9"):
            vec_env.step(actions)
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
        stdout, stderr = process.communicate(timeout=600)   # a guard against a hang: the run ends by itself
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 1, (stdout[-2000:], stderr[-2000:])
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"firebreak_exp: error: WorkerDiedError: worker process fire-env-worker-"), lines
    assert f"(pid {victim.pid}) exited with code -9" in lines[-1]
    assert "Traceback" not in stderr and "Traceback" not in stdout
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("firebreak_exp").experiment_id])
    assert run.info.status == "FAILED"
