"""Workers that die before they are ready, fail to build their environments, or hang (process backend, and
the joblib and dask backends where they differ)."""
import re
import subprocess
import sys

import psutil
import pytest
from conftest import ROOT, spawned_children

from firebreak_exp.factory import build_landscapes, env_factory
from firebreak_exp.vector.backend import WorkerDiedError
from firebreak_exp.vector.backend import MAIN_SCRIPT_REENTERED_EXIT

WITHOUT_MAIN_GUARD = """
import sys
from firebreak_exp.fire import Scenario, TravelTimeSimulator
from firebreak_exp.landscape import load_landscapes
from firebreak_exp.vector.env import VectorizedFireEnv

# 64 tiles of 25 x 25 cells: a pickled builder far larger than a pipe's buffer
scenario = Scenario(wind_speed=30.0, wind_direction=270.0, fuel_moisture_dead_1hr=0.03, fuel_moisture_dead_10hr=0.04,
                    fuel_moisture_dead_100hr=0.05, fuel_moisture_live_herbaceous=0.30, fuel_moisture_live_woody=0.60,
                    foliar_moisture=0.80, burn_duration=840.0)
tiles = load_landscapes("synthetic", 25, None, 0.2, raster_dir=None, layer_patterns=None, synthetic_rows=200,
                        synthetic_cols=200, seed=0, cache_dir=sys.argv[1]).train
vec_env = VectorizedFireEnv(tiles, num_envs=2, method=sys.argv[2], max_workers=2,
                            env_kwargs={"simulator_factory": TravelTimeSimulator, "scenario": scenario,
                                        "budget_percent": 5.0, "percentage_increment": 1.0, "num_ignitions": 8,
                                        "reward_ignitions": None})
print("stepping", vec_env.num_envs)
vec_env.close()
"""

FAULTY_ENVS = """
import os
import time

from firebreak_exp.vector.env import VectorizedFireEnv

IN_WORKER = os.getpid() != int(os.environ.setdefault("FAULTY_ENVS_PARENT_PID", str(os.getpid())))


class FailsToBuild(VectorizedFireEnv):
    def create_environment(self, index):
        if IN_WORKER:
            raise RuntimeError("no licence server for this simulator")
        return super().create_environment(index)


class Hangs(VectorizedFireEnv):
    def create_environment(self, index):
        env = super().create_environment(index)
        if IN_WORKER and index == 1:
            env.step = lambda action: time.sleep(3600)
        return env
"""

FAILS_AT_IMPORT = """
import os

if os.getpid() != int(os.environ.setdefault("FAULTY_ENVS_PARENT_PID", str(os.getpid()))):
    raise ImportError("libfire.so: cannot open shared object file")

from firebreak_exp.vector.env import VectorizedFireEnv


class ImportsOnlyHere(VectorizedFireEnv):
    pass
"""


DIES_IN_WORKER = """
import os
import signal
import sys

from firebreak_exp.fire import Scenario, TravelTimeSimulator
from firebreak_exp.landscape import load_landscapes
from firebreak_exp.vector.env import VectorizedFireEnv


class DiesInWorker(VectorizedFireEnv):
    def create_environment(self, index):
        if os.getpid() != int(os.environ["USER_SCRIPT_PID"]):
            if sys.argv[2] == "killed":
                os.kill(os.getpid(), signal.SIGKILL)
            os._exit(3)
        return super().create_environment(index)


if __name__ == "__main__":
    os.environ["USER_SCRIPT_PID"] = str(os.getpid())
    scenario = Scenario(wind_speed=30.0, wind_direction=270.0, fuel_moisture_dead_1hr=0.03,
                        fuel_moisture_dead_10hr=0.04, fuel_moisture_dead_100hr=0.05,
                        fuel_moisture_live_herbaceous=0.30, fuel_moisture_live_woody=0.60, foliar_moisture=0.80,
                        burn_duration=840.0)
    tiles = load_landscapes("synthetic", 25, None, 0.2, raster_dir=None, layer_patterns=None, synthetic_rows=100,
                            synthetic_cols=100, seed=0, cache_dir=sys.argv[1]).train
    vec_env = DiesInWorker(tiles, num_envs=2, method="joblib", max_workers=2,
                           env_kwargs={"simulator_factory": TravelTimeSimulator, "scenario": scenario,
                                       "budget_percent": 5.0, "percentage_increment": 1.0, "num_ignitions": 8,
                                       "reward_ignitions": None})
    print("stepping", vec_env.num_envs)
    vec_env.close()
"""


def run_user_script(tmp_path, text: str, *args: str) -> tuple:
    script = tmp_path / "train_custom.py"
    script.write_text(text)
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "landscapes"), *args], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)   # a hang fails here
    return script, result


WORKER_THAT_REENTERED = {"process": r"worker process fire-env-worker-[01] \(pid \d+\)",
                         "dask": "Dask worker process [01] of the LocalCluster"}


@pytest.mark.parametrize("backend", ["process", pytest.param("dask", marks=pytest.mark.slow)])
def test_a_script_without_main_guard_fails_with_the_cause_instead_of_hanging(tmp_path, backend):
    script, result = run_user_script(tmp_path, WITHOUT_MAIN_GUARD, backend)
    assert result.returncode != 0 and "stepping" not in result.stdout, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"firebreak_exp\.vector\.backend\.WorkerDiedError: {WORKER_THAT_REENTERED[backend]} exited "
                        rf"with code {MAIN_SCRIPT_REENTERED_EXIT} before it was ready: it re-ran {re.escape(str(script))} "
                        r"\(workers start by the spawn method, which imports the main script again\) and reached a "
                        r"vector env there; put the script's top-level code under 'if __name__ == \"__main__\":'"
                        r"( \(\w+\))?", last), last      # the process backend may add how it noticed (EOFError)
    assert "bootstrapping phase" not in result.stderr      # the workers end quietly


@pytest.mark.slow
def test_a_script_without_main_guard_runs_on_joblib(tmp_path):
    """loky's workers do not import the main script again: there the guard is not needed."""
    _, result = run_user_script(tmp_path, WITHOUT_MAIN_GUARD, "joblib")
    assert (result.returncode, result.stdout) == (0, "stepping 2\n"), result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("how, cause", [("exits", "with code 3 before it was ready; its error output above says why"),
                                        ("killed", "with code -9 before it was ready (killed by SIGKILL, out of "
                                                   "memory?)")])
def test_a_joblib_worker_that_dies_before_it_is_ready_is_named_with_its_exit_code(tmp_path, how, cause):
    _, result = run_user_script(tmp_path, DIES_IN_WORKER, how)
    assert result.returncode == 1 and "stepping" not in result.stdout, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"firebreak_exp\.vector\.backend\.WorkerDiedError: joblib \(loky\) worker of environments "
                        rf"\[[01]\] exited {re.escape(cause)}", last), last


@pytest.fixture
def faulty_modules(tmp_path, monkeypatch):
    (tmp_path / "faulty_envs.py").write_text(FAULTY_ENVS)
    (tmp_path / "fails_at_import.py").write_text(FAILS_AT_IMPORT)
    monkeypatch.syspath_prepend(str(tmp_path))       # spawned workers get the same sys.path
    for name in ("faulty_envs", "fails_at_import"):
        sys.modules.pop(name, None)
    yield
    for name in ("faulty_envs", "fails_at_import"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("env_class, cause", [
    ("faulty_envs:FailsToBuild", "RuntimeError: no licence server for this simulator"),
    ("fails_at_import:ImportsOnlyHere", "ImportError: libfire.so: cannot open shared object file"),
])
def test_an_environment_that_cannot_be_built_in_the_worker_names_the_worker(make_cfg, faulty_modules, env_class,
                                                                             cause):
    import importlib
    module, name = env_class.split(":")
    cls = getattr(importlib.import_module(module), name)
    cfg = make_cfg()
    me = psutil.Process()
    before = {p.pid for p in spawned_children(me)}
    with pytest.raises(WorkerDiedError) as raised:
        cls(build_landscapes(cfg).train, num_envs=2, method="process", max_workers=2, env_kwargs=env_factory(cfg).keywords)
    message = str(raised.value)
    assert message.startswith("worker process fire-env-worker-0 (pid ") and "could not build its environments: " \
        f"{cause} (the worker's traceback is in the log)" in message, message
    assert len(message.splitlines()) == 1
    left = [p for p in spawned_children(me) if p.pid not in before]
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in left), "workers left"


def test_a_worker_that_hangs_past_step_timeout_is_stopped_and_named(make_cfg, faulty_modules):
    from faulty_envs import Hangs
    cfg = make_cfg()
    me = psutil.Process()
    before = {p.pid for p in spawned_children(me)}
    vec_env = Hangs(build_landscapes(cfg).train, num_envs=2, method="process", max_workers=2,
                    env_kwargs=env_factory(cfg).keywords, step_timeout_s=10)
    workers = [p for p in spawned_children(me) if p.pid not in before]
    try:
        _, infos = vec_env.reset(seed=0)
        actions = [int(mask.nonzero()[0][0]) for mask in infos["action_mask"]]
        with pytest.raises(WorkerDiedError) as raised:
            vec_env.step(actions)
        message = str(raised.value)
        named = re.fullmatch(r"worker process fire-env-worker-1 \(pid (\d+)\) gave no answer within 10 s "
                             r"\(parallel.step_timeout_s\) while stepping \(its environments' steps are lost\); it "
                             r"was stopped \(an environment stuck in a loop, or a stopped process\?\)", message)
        assert named and int(named.group(1)) in {p.pid for p in workers}, message
        with pytest.raises(WorkerDiedError, match="unusable"):
            vec_env.step(actions)
    finally:
        vec_env.close()
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers), "workers left"


WORKER = {"dask": r"Dask worker tcp://127\.0\.0\.1:\d+", "joblib": r"joblib \(loky\) worker of"}
CANNOT_BUILD = {"dask": r" could not build the environments \[0\]: ", "joblib": r" environments \[0\] could not build its "
                r"environments: "}
NO_ANSWER = {"dask": r" holding environments \[1\] gave no answer within 10 s \(parallel.step_timeout_s\)",
             "joblib": r" environments \[1\] \(pid \d+\) gave no answer within 10 s \(parallel.step_timeout_s\)"}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["dask", "joblib"])
def test_workers_of_other_backends_that_cannot_build_or_hang_are_named(make_cfg, faulty_modules, backend):
    from faulty_envs import FailsToBuild, Hangs
    cfg = make_cfg()
    landscapes = build_landscapes(cfg).train
    with pytest.raises(WorkerDiedError, match=rf"^{WORKER[backend]}{CANNOT_BUILD[backend]}RuntimeError: no licence "
                                              rf"server for this simulator$"):
        FailsToBuild(landscapes, num_envs=2, method=backend, max_workers=2, env_kwargs=env_factory(cfg).keywords)
    with Hangs(landscapes, num_envs=2, method=backend, max_workers=2, env_kwargs=env_factory(cfg).keywords,
               step_timeout_s=10) as vec_env:
        _, infos = vec_env.reset(seed=0)
        with pytest.raises(WorkerDiedError, match=rf"^{WORKER[backend]}{NO_ANSWER[backend]}"):
            vec_env.step([int(mask.nonzero()[0][0]) for mask in infos["action_mask"]])
