"""Many fuel-break environments stepped together, on one of several backends.

- ``sequential`` (:mod:`~firebreak_exp.vector.sequential`): all environments in this process, one after
  the other.
- ``thread`` (:mod:`~firebreak_exp.vector.thread`): a persistent thread pool.
- ``process`` (:mod:`~firebreak_exp.vector.process`): persistent worker processes, optionally burning each
  other's fires.
- ``joblib`` (:mod:`~firebreak_exp.vector.joblib_loky`): joblib's loky worker processes, persistent across
  steps.
- ``dask`` (:mod:`~firebreak_exp.vector.dask_cluster`): one Dask actor per worker of a Dask cluster.

A worker that dies (killed, out of memory) raises ``WorkerDiedError``; the vector env is then unusable
(every later call raises too), so no step is ever taken or recorded twice.

Environments reset themselves when an episode ends (Gymnasium's SAME_STEP autoreset): the returned
observation starts the next episode and ``infos["final_obs"]`` (masked by ``infos["_final_obs"]``) holds the
last one.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from firebreak_exp.vector.backend import Backend, backend_class, resolve_backend


class VectorizedFireEnv(gym.vector.VectorEnv):
    """``num_envs`` fuel-break environments over ``landscapes``, stepped by one backend (``runner``).

    ``env_class`` is the environment built for each index, ``env_class(landscapes, shared=SharedTiles,
    **env_kwargs)``: FuelBreakEnv (None) or a subclass, e.g. the ``env`` group's ``_target_``. For other
    custom environments override ``create_environment(index)``. Either runs inside the worker for the
    process, joblib and dask backends, so the class must be importable there. ``address`` (dask backend
    only) is a running Dask scheduler, e.g. ``tcp://10.0.0.5:8786``; without it a LocalCluster of
    ``max_workers`` single-threaded worker processes starts on 127.0.0.1. ``share_fires`` (process backend
    only): the workers burn each other's fires (:class:`~firebreak_exp.fire.sharing.FireExchange`).
    ``step_timeout_s`` (process, joblib and dask backends): seconds a worker may take to answer (to start,
    or to step its environments) before it is stopped and WorkerDiedError names it; None waits as long as
    it takes.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, landscapes: Sequence[Any], num_envs: int, method: str = "sequential",
                 max_workers: Optional[int] = None, env_kwargs: Optional[dict] = None,
                 address: Optional[str] = None, share_fires: bool = True, step_timeout_s: Optional[float] = None,
                 env_class: Optional[Callable[..., gym.Env]] = None):
        if int(num_envs) <= 0:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.landscapes = landscapes
        self.num_envs = int(num_envs)
        self.backend = resolve_backend(method)
        self.address = (address or None) if self.backend == "dask" else None  # other backends ignore it
        self.env_kwargs = dict(env_kwargs or {})
        self.env_class = env_class
        cores = os.cpu_count() or 1
        self.max_workers = max(1, min(self.num_envs, int(max_workers or cores)))
        self.share_fires = bool(share_fires) and self.backend == "process"
        self._completed_episodes: list[dict] = []
        self._episode_cursor = 0
        self.runner: Backend = backend_class(self.backend).for_env(self, max_workers)
        self.runner.step_timeout_s = None if step_timeout_s is None else float(step_timeout_s)
        try:
            self.runner.start(self)
        except BaseException:
            self.close()
            raise
        self.max_workers = self.runner.max_workers
        probe = self.runner.envs[0] if self.runner.envs else self.create_environment(0)
        self.single_observation_space = probe.observation_space
        self.single_action_space = probe.action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)

    def create_environment(self, index: int) -> gym.Env:
        """Build environment ``index``: an ``env_class`` (FuelBreakEnv by default) over all landscapes; the
        environments built in one process share their tiles' simulators and static channels (``SharedTiles``)."""
        from firebreak_exp.environment import FuelBreakEnv, SharedTiles
        if getattr(self, "_shared_tiles", None) is None:   # per process: workers get a copy without it
            self._shared_tiles = SharedTiles()
        return (self.env_class or FuelBreakEnv)(self.landscapes, shared=self._shared_tiles, **self.env_kwargs)

    def builder(self) -> "VectorizedFireEnv":
        """A copy of this object without live workers, sent once to each worker, which calls its
        ``create_environment``."""
        clone = object.__new__(type(self))
        clone.__dict__.update({k: v for k, v in self.__dict__.items()
                               if k in ("landscapes", "num_envs", "backend", "env_kwargs", "env_class", "max_workers")})
        return clone

    # -- Gymnasium VectorEnv API ------------------------------------------------------------------
    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        """Reset every environment; with ``seed``, environment i is seeded with ``seed + i``."""
        seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        results = self.runner.run("reset", [(s, options) for s in seeds])
        observations = np.stack([obs for obs, _ in results])
        return observations, self._batch_infos([info for _, info in results])

    def step_async(self, actions) -> None:
        """Start stepping all environments with ``actions`` (one per environment)."""
        self.runner.dispatch("step", [int(a) for a in np.asarray(actions).reshape(self.num_envs)])

    def wait_for_results(self):
        """Finish a ``step_async``: (observations, rewards, terminations, truncations, infos)."""
        results = self.runner.gather()
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
        return self.runner.run("call", [(name, tuple(args)) for args in per_env_args])

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

    def fires_shared(self) -> list:
        """Process backend: per worker, the fires it burned for other workers' environments
        (``burned_for_others``) and its environments' fires that others burned (``burned_by_others``), so
        far (:class:`~firebreak_exp.fire.sharing.FireExchange`); an empty list on other backends."""
        return self.runner.fires_shared()

    def get_episode_stats(self) -> dict:
        """Episodes finished since the last call: lists of return, length and burned-area reduction."""
        new = self._completed_episodes[self._episode_cursor:]
        self._episode_cursor = len(self._completed_episodes)
        keys = ("return", "length", "burned_area_reduction", "relative_reduction")
        stats = {key: [episode[key] for episode in new] for key in keys}
        stats["total_episodes"] = len(self._completed_episodes)
        return stats

    def close(self, **kwargs) -> None:
        runner = getattr(self, "runner", None)
        if runner is not None:
            runner.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        self.close()
