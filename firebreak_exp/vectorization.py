"""Many fuel-break environments stepped together, on one of several backends.

- ``sequential``: all environments in this process, one after the other.
- ``thread``: a persistent thread pool; pyretechnics holds the GIL, so threads
  rarely beat sequential (the benchmark measures it).
- ``process``: persistent worker processes, each building its own environments
  once and stepping its whole share per message (one pipe round-trip per
  worker per step; no pool is created per step).

Environments reset themselves when an episode ends (Gymnasium's SAME_STEP
autoreset): the returned observation starts the next episode and
``infos["final_obs"]`` (masked by ``infos["_final_obs"]``) holds the last one.
"""
import multiprocessing as mp
import os
import pickle
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

BACKEND_ALIASES = {"threading": "thread", "multiprocessing": "process", "loky": "process"}
BACKENDS = ("sequential", "thread", "process")
WORKER_POLL_SECONDS = 0.5


class WorkerDiedError(RuntimeError):
    """A worker process of the process backend exited unexpectedly."""


def resolve_backend(method: str) -> str:
    """Canonical backend name; the seed's ``threading``/``multiprocessing`` are aliases."""
    backend = BACKEND_ALIASES.get(method, method)
    if backend not in BACKENDS:
        raise ValueError(f"unknown parallel backend {method!r}; expected one of "
                         f"{', '.join(BACKENDS + tuple(BACKEND_ALIASES))}")
    return backend


def _step_and_autoreset(env: gym.Env, action) -> tuple:
    """Step one environment; when its episode ends, reset it and keep the last observation."""
    obs, reward, terminated, truncated, info = env.step(action)
    final = None
    if terminated or truncated:
        final = (obs, info)
        obs, info = env.reset()
    return obs, reward, terminated, truncated, info, final


def _reset(env: gym.Env, seed: Optional[int], options: Optional[dict]) -> tuple:
    return env.reset(seed=seed, options=options)


def _call(env: gym.Env, name: str, args: tuple) -> Any:
    return getattr(env, name)(*args)


def _worker_main(conn, builder_bytes: bytes, indices: Sequence[int]) -> None:
    """Worker process: build the environments once, then serve requests until 'close'."""
    try:
        builder = pickle.loads(builder_bytes)
        envs = [builder.create_environment(i) for i in indices]
        conn.send(("ok", None))
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        try:
            command, payload = conn.recv()
        except EOFError:
            return
        try:
            if command == "step":
                result = [_step_and_autoreset(env, a) for env, a in zip(envs, payload)]
            elif command == "reset":
                result = [_reset(env, s, o) for env, (s, o) in zip(envs, payload)]
            elif command == "call":
                result = [_call(env, *p) for env, p in zip(envs, payload)]
            elif command == "close":
                conn.send(("ok", None))
                return
            else:
                raise ValueError(f"unknown worker command {command!r}")
            conn.send(("ok", result))
        except Exception:
            conn.send(("error", traceback.format_exc()))


class VectorizedFireEnv(gym.vector.VectorEnv):
    """``num_envs`` fuel-break environments over ``landscapes``, stepped by one backend.

    Override ``create_environment(index)`` to vectorize a custom environment; it
    runs inside the worker for the process backend, so the subclass must be
    importable there.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, landscapes: Sequence[Any], num_envs: int, method: str = "sequential",
                 max_workers: Optional[int] = None, env_kwargs: Optional[dict] = None):
        if int(num_envs) <= 0:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.landscapes = landscapes
        self.num_envs = int(num_envs)
        self.backend = resolve_backend(method)
        self.env_kwargs = dict(env_kwargs or {})
        cores = os.cpu_count() or 1
        self.max_workers = max(1, min(self.num_envs, int(max_workers or cores)))
        self._envs: list = []
        self._executor: Optional[ThreadPoolExecutor] = None
        self._workers: list = []
        self._pending: Any = None
        self._completed_episodes: list[dict] = []
        self._episode_cursor = 0
        self._start_backend()
        probe = self._envs[0] if self._envs else self.create_environment(0)
        self.single_observation_space = probe.observation_space
        self.single_action_space = probe.action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)

    def create_environment(self, index: int) -> gym.Env:
        """Build environment ``index``: a FuelBreakEnv over all landscapes by default."""
        from firebreak_exp.environment import FuelBreakEnv
        return FuelBreakEnv(self.landscapes, **self.env_kwargs)

    # -- backends ---------------------------------------------------------------------------
    def _start_backend(self) -> None:
        if self.backend in ("sequential", "thread"):
            self._envs = [self.create_environment(i) for i in range(self.num_envs)]
            if self.backend == "thread":
                self._executor = ThreadPoolExecutor(self.max_workers, thread_name_prefix="fire-env")
            return
        context = mp.get_context("spawn")
        builder = pickle.dumps(self._builder())
        for indices in np.array_split(np.arange(self.num_envs), self.max_workers):
            parent, child = context.Pipe()
            process = context.Process(target=_worker_main, args=(child, builder, indices.tolist()),
                                      daemon=True, name=f"fire-env-worker-{indices[0]}")
            process.start()
            child.close()
            self._workers.append((process, parent, indices.tolist()))
        for worker in self._workers:
            self._receive(worker)

    def _builder(self) -> "VectorizedFireEnv":
        """A copy of this object without live workers, sent once to each worker process."""
        clone = object.__new__(type(self))
        clone.__dict__.update({k: v for k, v in self.__dict__.items()
                               if k in ("landscapes", "num_envs", "backend", "env_kwargs", "max_workers")})
        return clone

    def _receive(self, worker) -> Any:
        process, conn, _ = worker
        while not conn.poll(WORKER_POLL_SECONDS):
            if not process.is_alive():
                raise WorkerDiedError(
                    f"worker process {process.name} (pid {process.pid}) exited with code "
                    f"{process.exitcode}; its environments' steps are lost")
        try:
            status, payload = conn.recv()
        except EOFError as error:
            raise WorkerDiedError(f"worker process {process.name} closed its pipe") from error
        if status == "error":
            raise RuntimeError(f"error in worker {process.name}:\n{payload}")
        return payload

    def _run_all(self, command: str, per_env: Sequence[Any]) -> list:
        """Send ``command`` with one payload per environment and gather the results in env order."""
        self._dispatch(command, per_env)
        return self._gather()

    def _dispatch(self, command: str, per_env: Sequence[Any]) -> None:
        function = {"step": _step_and_autoreset, "reset": lambda env, p: _reset(env, *p),
                    "call": lambda env, p: _call(env, *p)}[command]
        if self.backend == "sequential":
            self._pending = [function(env, p) for env, p in zip(self._envs, per_env)]
        elif self.backend == "thread":
            self._pending = [self._executor.submit(function, env, p) for env, p in zip(self._envs, per_env)]
        else:
            for _, conn, indices in self._workers:
                conn.send((command, [per_env[i] for i in indices]))
            self._pending = "workers"

    def _gather(self) -> list:
        if self._pending is None:
            raise RuntimeError("wait_for_results() called without step_async()")
        if self._pending == "workers":
            results = [r for worker in self._workers for r in self._receive(worker)]
        elif self.backend == "thread":
            results = [future.result() for future in self._pending]
        else:
            results = self._pending
        self._pending = None
        return results

    # -- Gymnasium VectorEnv API ------------------------------------------------------------------
    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        """Reset every environment; with ``seed``, environment i is seeded with ``seed + i``."""
        seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        results = self._run_all("reset", [(s, options) for s in seeds])
        observations = np.stack([obs for obs, _ in results])
        return observations, self._batch_infos([info for _, info in results])

    def step_async(self, actions) -> None:
        """Start stepping all environments with ``actions`` (one per environment)."""
        self._dispatch("step", [int(a) for a in np.asarray(actions).reshape(self.num_envs)])

    def wait_for_results(self):
        """Finish a ``step_async``: (observations, rewards, terminations, truncations, infos)."""
        results = self._gather()
        observations = np.stack([r[0] for r in results])
        rewards = np.array([r[1] for r in results], dtype=np.float64)
        terminations = np.array([r[2] for r in results], dtype=bool)
        truncations = np.array([r[3] for r in results], dtype=bool)
        infos = self._batch_infos([r[4] for r in results])
        done = terminations | truncations
        final_obs = np.zeros_like(observations)
        for i, result in enumerate(results):
            if result[5] is not None:
                final_obs[i] = result[5][0]
                self._completed_episodes.append(result[5][1]["episode"])
        infos["final_obs"], infos["_final_obs"] = final_obs, done
        infos["final_info"] = [r[5][1] if r[5] is not None else {} for r in results]
        return observations, rewards, terminations, truncations, infos

    def step(self, actions):
        self.step_async(actions)
        return self.wait_for_results()

    @staticmethod
    def _batch_infos(infos: Sequence[dict]) -> dict:
        return {"action_mask": np.stack([i["action_mask"] for i in infos]),
                "tile_index": np.array([i["tile_index"] for i in infos]),
                "burned_fraction": np.array([i["burned_fraction"] for i in infos])}

    def call_each(self, name: str, per_env_args: Sequence[tuple]) -> list:
        """Call method ``name`` of every environment with its own arguments; results in env order."""
        return self._run_all("call", [(name, tuple(args)) for args in per_env_args])

    def call(self, name: str, *args) -> tuple:
        """Gymnasium's VectorEnv.call: the same method and arguments on every environment."""
        return tuple(self.call_each(name, [args] * self.num_envs))

    def get_env_states(self) -> list:
        """Each environment's mid-episode state (``FuelBreakEnv.get_state``), for checkpoints."""
        return self.call_each("get_state", [()] * self.num_envs)

    def set_env_states(self, states: Sequence[dict]):
        """Continue every environment from ``get_env_states()``'s result; returns (observations, infos)."""
        results = self.call_each("set_state", [(state,) for state in states])
        return np.stack([obs for obs, _ in results]), self._batch_infos([info for _, info in results])

    def get_episode_stats(self) -> dict:
        """Episodes finished since the last call: lists of return, length and burned-area reduction."""
        new = self._completed_episodes[self._episode_cursor:]
        self._episode_cursor = len(self._completed_episodes)
        keys = ("return", "length", "burned_area_reduction", "relative_reduction")
        stats = {key: [episode[key] for episode in new] for key in keys}
        stats["total_episodes"] = len(self._completed_episodes)
        return stats

    def close(self, **kwargs) -> None:
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None
        for process, conn, _ in self._workers:
            try:
                if process.is_alive():
                    conn.send(("close", None))
                    conn.poll(5) and conn.recv()
            except (OSError, EOFError):
                pass
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
            conn.close()
        self._workers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        if getattr(self, "_workers", None):
            self.close()
