"""Many fuel-break environments stepped together, on one of several backends.

- ``sequential``: all environments in this process, one after the other.
- ``thread``: a persistent thread pool; pyretechnics holds the GIL, so threads
  rarely beat sequential (the benchmark measures it).
- ``process``: persistent worker processes, each building its own environments
  once and stepping its whole share per message (one pipe round-trip per
  worker per step; no pool is created per step). With ``share_fires`` the
  workers also burn each other's fires (``FireExchange``): on a step only some
  environments evaluate their reward, and their fires are spread over all
  workers instead of waiting on the one that holds them.
- ``dask``: one Dask actor per worker of a Dask cluster (``address`` of a
  running scheduler, or a LocalCluster on 127.0.0.1 started here and closed by
  ``close()``); each actor builds its share of environments once, exactly as a
  process worker does, and per step receives only its actions (one actor call
  per worker per step, straight to the worker).

A worker that dies (killed, out of memory) is noticed within
``WORKER_POLL_SECONDS`` and raises ``WorkerDiedError``; the vector env is then
unusable (every later call raises too), so no step is ever taken or recorded twice.

Environments reset themselves when an episode ends (Gymnasium's SAME_STEP
autoreset): the returned observation starts the next episode and
``infos["final_obs"]`` (masked by ``infos["_final_obs"]``) holds the last one.
"""
import logging
import multiprocessing as mp
import os
import pickle
import time
import queue
import traceback
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import wait
from typing import Any, Optional, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

BACKEND_ALIASES = {"threading": "thread", "multiprocessing": "process", "loky": "process"}
BACKENDS = ("sequential", "thread", "process", "dask")
WORKER_POLL_SECONDS = 0.5
DASK_CONNECT_TIMEOUT_SECONDS = 10


class WorkerDiedError(RuntimeError):
    """A worker (process of the process backend, or Dask worker) exited unexpectedly."""


class ClusterUnavailableError(RuntimeError):
    """The Dask scheduler at ``parallel.address`` cannot be reached (or has no workers)."""


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


def _apply(env: gym.Env, command: str, payload: Any) -> Any:
    """Run one vector-env command on one environment (the same code on every backend)."""
    if command == "step":
        return _step_and_autoreset(env, payload)
    if command == "reset":
        return _reset(env, *payload)
    if command == "call":
        return _call(env, *payload)
    raise ValueError(f"unknown worker command {command!r}")


class FireExchange:
    """The process backend's workers burning each other's fires.

    A simulator that burns every fire from scratch (pyretechnics: ~0.2 s a fire on 25 x 25) makes a reward
    evaluation costly, and on a given step only some environments evaluate: with whole environments per
    worker, the other workers sit idle. Here such a simulator (:class:`SharedFireSimulator`) puts each of
    its fires on one queue that every worker takes from whenever it waits, for its own fires or for the
    next command; the answers come back on the asking worker's own queue. The longest fires are queued
    first (by how long each took when last burned; an environment burns the same fires again after each
    few breaks), so the workers finish a request together rather than one waiting on a long fire taken
    last. A fire's arrival times depend on the tile, ignition and breaks alone, so which worker burns it
    changes no number. Simulators that add breaks to a search they keep
    (:meth:`~firebreak_exp.simulation.TravelTimeSimulator.add_breaks`) keep their fires: the search is the
    environment's own state.
    """

    def __init__(self, worker: int, tasks, answers: Sequence):
        self.worker, self.tasks, self.answers = worker, tasks, answers
        self.tiles: Sequence[Any] = ()
        self.scenario: Any = None
        self.simulators: dict = {}          # tile index -> this worker's simulator of it
        self._factory: Any = None
        self._requests = 0
        self._received: dict = {}           # request id -> {fire: (arrival, fires simulated, worker, seconds)}
        self._seconds: dict = {}            # (tile index, row, col) -> seconds its fire last took to burn
        self.burned_for_others = 0          # fires of other workers' environments this one burned
        self.burned_by_others = 0           # fires of this worker's environments another one burned

    def wrap(self, factory, tiles: Sequence[Any], scenario: Any) -> "_ExchangeFactory":
        """``factory`` (the simulator factory of ``tiles`` under ``scenario``, the same in every worker) made
        to build simulators that share their fires."""
        self._factory, self.tiles, self.scenario = factory, list(tiles), scenario
        return _ExchangeFactory(factory, self)

    def simulator(self, tile_index: int):
        """This worker's simulator of tile ``tile_index`` (built on first use, by the wrapped factory)."""
        if tile_index not in self.simulators:
            self.simulators[tile_index] = self._factory(tile=self.tiles[tile_index], scenario=self.scenario)
        return self.simulators[tile_index]

    def burn(self, tile_index: int, ignitions: np.ndarray, breaks: Optional[np.ndarray]) -> tuple:
        """Arrival times (k, H, W) of ``ignitions`` on tile ``tile_index``, burned one fire per task by whichever
        worker is free (this one included), and the fires the simulators counted."""
        request, self._requests = self._requests, self._requests + 1
        answers = self._received[request] = {}
        keys = [(tile_index, int(row), int(col)) for row, col in ignitions]
        for fire in sorted(range(len(ignitions)), key=lambda f: -self._seconds.get(keys[f], np.inf)):
            self.tasks.put((self.worker, request, fire, tile_index, ignitions[fire][None], breaks))
        try:
            while len(answers) < len(ignitions):
                self.serve(wait_for_answer=True)
        finally:
            del self._received[request]
        failed = [answer for answer in answers.values() if isinstance(answer, str)]
        if failed:
            raise RuntimeError(f"a fire burned for this worker failed:\n{failed[0]}")
        self.burned_by_others += sum(answer[2] != self.worker for answer in answers.values())
        if len(self._seconds) > 100_000:     # ignitions of long-finished episodes
            self._seconds.clear()
        self._seconds.update((keys[fire], answer[3]) for fire, answer in answers.items())
        return (np.concatenate([answers[fire][0] for fire in range(len(ignitions))]),
                sum(answer[1] for answer in answers.values()))

    def serve(self, wait_for_answer: bool = False, also=()) -> list:
        """Wait until a fire is queued (or, with ``wait_for_answer``, one of this worker's answers arrives, or
        one of the connections ``also`` is ready); burn the fire or file the answer. Returns the ready ones
        of ``also``."""
        mine = self.answers[self.worker]
        watched = [self.tasks._reader] + ([mine._reader] if wait_for_answer else []) + list(also)
        ready = wait(watched)
        if wait_for_answer and mine._reader in ready:
            request, fire, answer = mine.get()
            if request in self._received:        # not for a request abandoned when its environment failed
                self._received[request][fire] = answer
        if self.tasks._reader in ready:
            try:
                owner, request, fire, tile_index, ignition, breaks = self.tasks.get_nowait()
            except queue.Empty:                      # another worker took it first
                return [c for c in also if c in ready]
            try:
                simulator = self.simulator(tile_index)
                before, start = simulator.fires_simulated, time.perf_counter()
                arrival = simulator.arrival_times(ignition, breaks)
                answer = (arrival, simulator.fires_simulated - before, self.worker, time.perf_counter() - start)
            except Exception:
                answer = traceback.format_exc()
            self.burned_for_others += owner != self.worker
            if owner == self.worker:
                if request in self._received:
                    self._received[request][fire] = answer
            else:
                self.answers[owner].put((request, fire, answer))
        return [c for c in also if c in ready]


class _ExchangeFactory:
    """A simulator factory whose simulators share their fires through a FireExchange (those that add breaks
    to a search keep them). Pickles as the plain factory (queues stay in the worker)."""

    def __init__(self, factory, exchange: FireExchange):
        self.factory, self.exchange = factory, exchange
        self._index = {id(tile): i for i, tile in enumerate(exchange.tiles)}

    def __call__(self, tile, scenario):
        index = self._index.get(id(tile))
        if index is None or scenario != self.exchange.scenario:   # not what every worker holds: burned here
            return self.factory(tile=tile, scenario=scenario)
        simulator = self.exchange.simulator(index)   # one per tile and worker: its environments' and others' fires
        return simulator if hasattr(simulator, "add_breaks") else SharedFireSimulator(simulator, index, self.exchange)

    def __reduce__(self):
        return (_plain_factory, (self.factory,))


def _plain_factory(factory):
    return factory


class SharedFireSimulator:
    """A tile's simulator whose :meth:`arrival_times` burns its fires through a :class:`FireExchange`; every
    other attribute is the simulator's own. ``fires_simulated`` counts this one's fires, wherever burned."""

    def __init__(self, simulator, tile_index: int, exchange: FireExchange):
        self.simulator, self.tile_index, self.exchange = simulator, tile_index, exchange
        self.fires_simulated = 0

    def __getattr__(self, name: str):
        return getattr(self.__dict__["simulator"], name)

    def arrival_times(self, ignitions: np.ndarray, fuel_breaks: Optional[np.ndarray] = None) -> np.ndarray:
        ignitions = np.asarray(ignitions, dtype=np.int64).reshape(-1, 2)
        if len(ignitions) < 2:
            before = self.simulator.fires_simulated
            arrival = self.simulator.arrival_times(ignitions, fuel_breaks)
            self.fires_simulated += self.simulator.fires_simulated - before
            return arrival
        arrival, fires = self.exchange.burn(self.tile_index, ignitions, fuel_breaks)
        self.fires_simulated += fires
        return arrival

    def burn_maps(self, ignitions: np.ndarray, fuel_breaks: Optional[np.ndarray] = None) -> np.ndarray:
        return np.isfinite(self.arrival_times(ignitions, fuel_breaks))


def _worker_main(conn, builder_bytes: bytes, indices: Sequence[int], exchange: Optional[FireExchange] = None) -> None:
    """Worker process: build the environments once, then serve requests until 'close' (and, with an
    ``exchange``, the other workers' fires while it waits)."""
    try:
        builder = pickle.loads(builder_bytes)
        if exchange is not None:
            exchange.tasks.cancel_join_thread()       # never block this worker's exit on unread queue items
            for answers in exchange.answers:
                answers.cancel_join_thread()
            kwargs = builder.env_kwargs
            kwargs["simulator_factory"] = exchange.wrap(kwargs["simulator_factory"], builder.landscapes,
                                                        kwargs.get("scenario"))
        envs = [builder.create_environment(i) for i in indices]
        conn.send(("ok", None))
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        try:
            while exchange is not None and not exchange.serve(also=[conn]):
                pass                                  # burned another worker's fire; still no command
            command, payload = conn.recv()
        except EOFError:
            return
        try:
            if command == "close":
                conn.send(("ok", None))
                return
            if command == "fires_shared":
                conn.send(("ok", {"burned_for_others": exchange.burned_for_others if exchange else 0,
                                  "burned_by_others": exchange.burned_by_others if exchange else 0}))
                continue
            result = [_apply(env, command, p) for env, p in zip(envs, payload)]
            conn.send(("ok", result))
        except Exception:
            conn.send(("error", traceback.format_exc()))


class _DaskEnvGroup:
    """Dask actor holding a share of the environments on one worker, built once from the pickled builder."""

    def __init__(self, builder_bytes: bytes, indices: Sequence[int]):
        builder = pickle.loads(builder_bytes)
        self.indices = list(indices)
        self.envs = [builder.create_environment(i) for i in self.indices]

    def run(self, command: str, payload: Sequence[Any]) -> list:
        """One command for every environment of this group; one payload per environment."""
        return [_apply(env, command, p) for env, p in zip(self.envs, payload)]

    def pid(self) -> int:
        return os.getpid()


def _is_lost_dask_worker(error: BaseException) -> bool:
    """Whether an actor call failed because the worker holding the actor is gone (not an env error)."""
    from distributed.comm.core import CommClosedError
    message = str(error)
    return (isinstance(error, CommClosedError) or message.startswith("Unable to contact Actor's worker")
            or message.startswith("Worker holding Actor was lost"))


class VectorizedFireEnv(gym.vector.VectorEnv):
    """``num_envs`` fuel-break environments over ``landscapes``, stepped by one backend.

    Override ``create_environment(index)`` to vectorize a custom environment; it
    runs inside the worker for the process and dask backends, so the subclass must be
    importable there. ``address`` (dask backend only) is a running Dask scheduler,
    e.g. ``tcp://10.0.0.5:8786``; without it a LocalCluster of ``max_workers``
    single-threaded worker processes starts on 127.0.0.1. ``share_fires`` (process backend only): the
    workers burn each other's fires (:class:`FireExchange`).
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, landscapes: Sequence[Any], num_envs: int, method: str = "sequential",
                 max_workers: Optional[int] = None, env_kwargs: Optional[dict] = None,
                 address: Optional[str] = None, share_fires: bool = True):
        if int(num_envs) <= 0:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.landscapes = landscapes
        self.num_envs = int(num_envs)
        self.backend = resolve_backend(method)
        self.address = (address or None) if self.backend == "dask" else None  # other backends ignore it
        self._requested_workers = max_workers
        self.env_kwargs = dict(env_kwargs or {})
        cores = os.cpu_count() or 1
        self.max_workers = max(1, min(self.num_envs, int(max_workers or cores)))
        self._envs: list = []
        self._executor: Optional[ThreadPoolExecutor] = None
        self._workers: list = []
        self.share_fires = bool(share_fires) and self.backend == "process"
        self._fire_queues: list = []         # the FireExchange's queues (process backend, share_fires)
        self._pending: Any = None
        self._failed: Optional[str] = None
        self._dask_client: Any = None
        self._dask_cluster: Any = None
        self._dask_groups: list = []  # (actor, the actor's task future, env indices, worker address)
        self._completed_episodes: list[dict] = []
        self._episode_cursor = 0
        try:
            self._start_backend()
        except BaseException:
            self.close()
            raise
        probe = self._envs[0] if self._envs else self.create_environment(0)
        self.single_observation_space = probe.observation_space
        self.single_action_space = probe.action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)

    def create_environment(self, index: int) -> gym.Env:
        """Build environment ``index``: a FuelBreakEnv over all landscapes by default; the environments built in
        one process share their tiles' simulators and static channels (``SharedTiles``)."""
        from firebreak_exp.environment import FuelBreakEnv, SharedTiles
        if getattr(self, "_shared_tiles", None) is None:   # per process: workers get a copy without it
            self._shared_tiles = SharedTiles()
        return FuelBreakEnv(self.landscapes, shared=self._shared_tiles, **self.env_kwargs)

    # -- backends ---------------------------------------------------------------------------
    def _start_backend(self) -> None:
        if self.backend in ("sequential", "thread"):
            self._envs = [self.create_environment(i) for i in range(self.num_envs)]
            if self.backend == "thread":
                self._executor = ThreadPoolExecutor(self.max_workers, thread_name_prefix="fire-env")
            return
        if self.backend == "dask":
            self._start_dask()
            return
        context = mp.get_context("spawn")
        builder = pickle.dumps(self._builder())
        if self.share_fires and self.max_workers > 1:
            self._fire_queues = [context.Queue() for _ in range(self.max_workers + 1)]   # tasks, answers per worker
        for worker, indices in enumerate(np.array_split(np.arange(self.num_envs), self.max_workers)):
            parent, child = context.Pipe()
            exchange = FireExchange(worker, self._fire_queues[0], self._fire_queues[1:]) if self._fire_queues else None
            process = context.Process(target=_worker_main, args=(child, builder, indices.tolist(), exchange),
                                      daemon=True, name=f"fire-env-worker-{indices[0]}")
            process.start()
            child.close()
            self._workers.append((process, parent, indices.tolist()))
        for worker in self._workers:
            self._receive(worker)

    def _start_dask(self) -> None:
        """Connect to ``address`` (or start a LocalCluster) and place one environment-group actor per worker."""
        from distributed import Client, LocalCluster
        if self.address:
            try:
                self._dask_client = Client(self.address, timeout=DASK_CONNECT_TIMEOUT_SECONDS,
                                           set_as_default=False)
                self._dask_client.wait_for_workers(1, timeout=DASK_CONNECT_TIMEOUT_SECONDS)
            except (OSError, TimeoutError) as error:
                raise ClusterUnavailableError(
                    f"cannot use the Dask scheduler at {self.address} (parallel.address): no connection or no "
                    f"worker within {DASK_CONNECT_TIMEOUT_SECONDS} s ({type(error).__name__}: {error})") from error
            workers = sorted(self._dask_client.scheduler_info(n_workers=-1)["workers"])
            requested = int(self._requested_workers) if self._requested_workers else len(workers)
            self.max_workers = max(1, min(self.num_envs, requested))
        else:
            # No dashboard; the scheduler's plain HTTP endpoint (health, metrics) on a free loopback port.
            self._dask_cluster = LocalCluster(n_workers=self.max_workers, threads_per_worker=1, processes=True,
                                              host="127.0.0.1", dashboard_address=None,
                                              scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                              silence_logs=logging.ERROR)
            self._dask_client = Client(self._dask_cluster, set_as_default=False)
            workers = sorted(self._dask_client.scheduler_info(n_workers=-1)["workers"])
        client, builder = self._dask_client, pickle.dumps(self._builder())
        submitted = []
        for group, indices in enumerate(np.array_split(np.arange(self.num_envs), self.max_workers)):
            worker = workers[group % len(workers)]
            task = client.submit(_DaskEnvGroup, builder, indices.tolist(), actor=True, workers=[worker],
                                 allow_other_workers=False, key=f"fire-env-group-{indices[0]}-{os.urandom(6).hex()}")
            submitted.append((task, indices.tolist(), worker))
        with client.as_current():  # the actor proxies talk through this client, not a global one
            for task, indices, worker in submitted:
                self._dask_groups.append((task.result(), task, indices, worker))

    def _builder(self) -> "VectorizedFireEnv":
        """A copy of this object without live workers, sent once to each worker process."""
        clone = object.__new__(type(self))
        clone.__dict__.update({k: v for k, v in self.__dict__.items()
                               if k in ("landscapes", "num_envs", "backend", "env_kwargs", "max_workers")})
        return clone

    def _receive(self, worker) -> Any:
        process, conn, _ = worker
        while not conn.poll(WORKER_POLL_SECONDS):
            # any worker: one that waits for fires it shared waits as long as the one burning them is gone
            dead = next((p for p, _, _ in self._workers if not p.is_alive()), None)
            if dead is not None:
                self._fail(f"worker process {dead.name} (pid {dead.pid}) exited with code "
                           f"{dead.exitcode}; its environments' steps are lost")
        try:
            status, payload = conn.recv()
        except (EOFError, OSError) as error:  # EOF, or a reset connection when the worker was killed
            process.join(timeout=1)
            self._fail(f"worker process {process.name} (pid {process.pid}) exited with code {process.exitcode} "
                       f"({type(error).__name__}); its environments' steps are lost", error)
        if status == "error":
            raise RuntimeError(f"error in worker {process.name}:\n{payload}")
        return payload

    def _receive_dask(self, call, group) -> Any:
        _, task, indices, worker = group
        while True:
            try:
                return call.result(timeout=WORKER_POLL_SECONDS)
            except TimeoutError:
                if task.status not in ("finished", "pending"):
                    self._fail(f"Dask worker {worker} holding environments {indices} was lost "
                               f"(actor status {task.status}); their steps are lost")
            except Exception as error:
                if _is_lost_dask_worker(error):
                    self._fail(f"Dask worker {worker} holding environments {indices} died ({error}); "
                               f"their steps are lost", error)
                raise

    def _fail(self, message: str, cause: Optional[BaseException] = None):
        """Mark this vector env unusable (results of other workers may be in flight) and raise WorkerDiedError."""
        self._failed = message
        self._pending = None
        raise WorkerDiedError(message) from cause

    def _run_all(self, command: str, per_env: Sequence[Any]) -> list:
        """Send ``command`` with one payload per environment and gather the results in env order."""
        self._dispatch(command, per_env)
        return self._gather()

    def _dispatch(self, command: str, per_env: Sequence[Any]) -> None:
        if self._failed is not None:
            raise WorkerDiedError(f"this VectorizedFireEnv is unusable after an earlier failure: {self._failed}")
        if self.backend == "sequential":
            self._pending = [_apply(env, command, p) for env, p in zip(self._envs, per_env)]
        elif self.backend == "thread":
            self._pending = [self._executor.submit(_apply, env, command, p) for env, p in zip(self._envs, per_env)]
        elif self.backend == "dask":  # one actor call per worker, carrying only that worker's payloads
            self._pending = ("dask", [(group[0].run(command, [per_env[i] for i in group[2]]), group)
                                      for group in self._dask_groups])
        else:
            for process, conn, indices in self._workers:
                try:
                    conn.send((command, [per_env[i] for i in indices]))
                except OSError as error:  # the worker is gone: its end of the pipe is closed
                    process.join(timeout=1)
                    self._fail(f"worker process {process.name} (pid {process.pid}) exited with code "
                               f"{process.exitcode} ({type(error).__name__}); its environments' steps are lost", error)
            self._pending = "workers"

    def _gather(self) -> list:
        if self._pending is None:
            raise RuntimeError("wait_for_results() called without step_async()")
        if isinstance(self._pending, tuple):
            results = [r for call, group in self._pending[1] for r in self._receive_dask(call, group)]
        elif self._pending == "workers":
            results, errors = [], []
            for worker in self._workers:  # every worker's answer is read, so none is left for a later step
                try:
                    results += self._receive(worker)
                except WorkerDiedError:
                    raise
                except RuntimeError as error:  # an environment raised inside its worker
                    errors.append(error)
            if errors:
                self._pending = None
                raise errors[0]
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

    def fires_shared(self) -> list:
        """Process backend: per worker, the fires it burned for other workers' environments
        (``burned_for_others``) and its environments' fires that others burned (``burned_by_others``), so
        far (:class:`FireExchange`); an empty list on other backends."""
        if self.backend != "process":
            return []
        if self._failed is not None or self._pending is not None:
            raise RuntimeError("fires_shared() needs a usable vector env with no step in flight")
        for process, conn, _ in self._workers:
            conn.send(("fires_shared", None))
        return [self._receive(worker) for worker in self._workers]

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
            try:   # after a worker died the others may wait for its fires forever: they are killed
                if process.is_alive() and self._failed is None:
                    conn.send(("close", None))
                    conn.poll(5) and conn.recv()
            except (OSError, EOFError):
                pass
            process.join(timeout=5 if self._failed is None else 0.1)
            if process.is_alive():
                process.kill()
                process.join()
            conn.close()
        self._workers = []
        for fire_queue in self._fire_queues:
            fire_queue.close()
        self._fire_queues = []
        self._close_dask()

    def _close_dask(self) -> None:
        groups, client, cluster = self._dask_groups, self._dask_client, self._dask_cluster
        self._dask_groups, self._dask_client, self._dask_cluster = [], None, None
        if client is not None:
            try:
                if groups and cluster is None:  # free the environments on a shared cluster
                    client.cancel([task for _, task, _, _ in groups])
                client.close(timeout=5)
            except Exception:  # closing must not hide the error that made us close
                pass
        if cluster is not None:
            try:
                cluster.close(timeout=10)
            except Exception:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        if getattr(self, "_workers", None) or getattr(self, "_dask_client", None) is not None:
            self.close()
