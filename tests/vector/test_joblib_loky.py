"""The joblib backend: loky workers that keep their environments between steps, and a killed worker is
noticed at once."""
import signal
import time

import numpy as np
import psutil
import pytest
from conftest import rollout

from firebreak_exp import make_vector_env
from firebreak_exp.vector.backend import WorkerDiedError


def _alive(pids, wait_seconds: float = 10) -> set:
    """The processes among ``pids`` still running after up to ``wait_seconds``."""
    deadline = time.monotonic() + wait_seconds
    while True:
        alive = set()
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.add(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def test_joblib_workers_persist_across_steps_and_stop_at_close(make_cfg):
    """The same loky worker processes serve every step (none is started per step), each holding its share
    of the environments; closing the vector env stops them."""
    cfg = make_cfg("parallel.num_envs=3")
    with make_vector_env(cfg, backend="joblib", max_workers=2) as vec_env:
        pids = list(vec_env.runner.pids)
        assert len(set(pids)) == 2
        children_before = {p.pid for p in psutil.Process().children(recursive=True)}
        trace, stats = rollout(vec_env, seed=3, steps=10)
        children_after = {p.pid for p in psutil.Process().children(recursive=True)}
        assert children_after == children_before and set(pids) <= children_after
        assert vec_env.runner.pids == pids
        assert [len(group) for group in vec_env.runner.groups] == [2, 1]
        assert stats["total_episodes"] > 0   # the environments kept their episodes between steps
    assert not _alive(pids)


def test_error_in_a_joblib_worker_names_its_environments(make_cfg):
    with make_vector_env(make_cfg(), backend="joblib", num_envs=2, max_workers=2) as vec_env:
        with pytest.raises(RuntimeError, match=r"error in joblib \(loky\) worker of environments \[0\]: "
                                               r"AttributeError.*no_such_method"):
            vec_env.call("no_such_method")
        observations, _ = vec_env.reset(seed=0)   # an environment's error leaves the workers usable
        assert observations.shape[0] == 2


def test_killed_joblib_worker_is_detected(make_cfg):
    with make_vector_env(make_cfg(), backend="joblib", num_envs=2, max_workers=2) as vec_env:
        _, infos = vec_env.reset(seed=0)
        actions = [int(np.flatnonzero(mask)[0]) for mask in infos["action_mask"]]
        vec_env.step(actions)
        victim = vec_env.runner.pids[1]
        psutil.Process(victim).send_signal(signal.SIGKILL)
        with pytest.raises(WorkerDiedError, match=rf"^joblib \(loky\) worker of environments \[1\] \(pid {victim}\) "
                                                  r"exited with code -9 while stepping \(its environments' steps are "
                                                  r"lost\) \(killed by SIGKILL, out of memory\?\)$"):
            vec_env.step(actions)
        with pytest.raises(WorkerDiedError, match="unusable"):   # never a stale or repeated step
            vec_env.step(actions)
    assert not _alive(vec_env.runner.pids)
