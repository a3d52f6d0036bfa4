"""The dask backend with real components only: a Dask LocalCluster on loopback, a scheduler by address,
a worker killed with SIGKILL."""
import os
import signal

import numpy as np
import pytest
import requests
from conftest import assert_same_rollouts, free_port, rollout

from firebreak_exp import make_vector_env
from firebreak_exp.vector import dask_cluster
from firebreak_exp.vector.backend import ClusterUnavailableError, WorkerDiedError


@pytest.mark.slow
def test_dask_local_cluster_gives_the_sequential_transitions(make_cfg):
    cfg = make_cfg("parallel=dask", "parallel.num_envs=3", "parallel.max_workers=2")
    with make_vector_env(cfg, backend="sequential") as vec_env:
        reference = rollout(vec_env, seed=11, steps=12)
    assert reference[1]["total_episodes"] > 0  # autoreset happened within the rollout
    with make_vector_env(cfg) as vec_env:
        assert vec_env.backend == "dask"
        cluster = vec_env.runner.cluster
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        workers = cluster.scheduler_info["workers"]
        assert len(workers) == 2 and all(w.startswith("tcp://127.0.0.1:") for w in workers)
        assert all(info["nthreads"] == 1 for info in workers.values())
        http = cluster.scheduler.http_server  # no dashboard, only the plain HTTP endpoint, on loopback
        assert http.address == "127.0.0.1" and http.port != 8787
        assert requests.get(f"http://127.0.0.1:{http.port}/health", timeout=5).ok
        assert requests.get(f"http://127.0.0.1:{http.port}/status", timeout=5).status_code == 404
        assert_same_rollouts(rollout(vec_env, seed=11, steps=12), reference)
        assert vec_env.get_env_states()[2]["tile_index"] == vec_env.call("get_state")[2]["tile_index"]
    assert cluster.status.name == "closed" and vec_env.runner.client is None


@pytest.mark.slow
def test_dask_backend_uses_a_running_cluster_by_address_and_notices_a_dead_worker(make_cfg):
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster, set_as_default=False) as client:
        cfg = make_cfg("parallel=dask", "parallel.num_envs=3", f"parallel.address={cluster.scheduler_address}",
                       "parallel.step_timeout_s=300")
        assert cfg.parallel.address == cluster.scheduler_address
        with make_vector_env(cfg, backend="sequential") as vec_env:
            reference = rollout(vec_env, seed=5, steps=4)
        vec_env = make_vector_env(cfg)
        try:
            assert vec_env.runner.cluster is None and vec_env.max_workers == 2  # one env group per worker
            assert_same_rollouts(rollout(vec_env, seed=5, steps=4), reference)
            # Kill one worker of the cluster (its nanny restarts an empty one): the next step must fail fast.
            pids = client.run(os.getpid)
            os.kill(pids[sorted(pids)[0]], signal.SIGKILL)
            actions = np.zeros(vec_env.num_envs, dtype=int)
            # noticed as lost, not as silent: step_timeout_s only guards against a hang
            with pytest.raises(WorkerDiedError, match=r"^Dask worker tcp://127\.0\.0\.1:\d+ holding environments "
                                                      r"\[[\d, ]+\] (died|was lost)"):
                vec_env.step(actions)
            with pytest.raises(WorkerDiedError, match="unusable"):  # never a stale or repeated step
                vec_env.step(actions)
        finally:
            vec_env.close()
        # the environments are released and the shared cluster keeps running
        assert client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0
        assert len(client.scheduler_info()["workers"]) >= 1


def test_unreachable_dask_scheduler_fails_after_the_connect_timeout(make_cfg, monkeypatch):
    """The short connect timeout ends the attempt (the message names it), not Dask's own retries."""
    monkeypatch.setattr(dask_cluster, "DASK_CONNECT_TIMEOUT_SECONDS", 2)
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ClusterUnavailableError, match=rf"{address} .*no connection or no worker within 2 s"):
        make_vector_env(make_cfg("parallel=dask", f"parallel.address={address}"))
