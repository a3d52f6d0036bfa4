"""``python -m firebreak_exp.benchmark``: how fast this machine collects experience, simulates fires and
learns, per parallel backend and number of environments, and how faithful the fast simulator is.

Examples::

    python -m firebreak_exp.benchmark                                   # default (minutes on 2 cores)
    python -m firebreak_exp.benchmark benchmark=quick                   # a tiny run (the tests use it)
    python -m firebreak_exp.benchmark landscape=landfire landscape.raster_dir=../shared/data/landfire/worcester_vt
    python -m firebreak_exp.benchmark benchmark.backends=[sequential,process] benchmark.num_envs=[2,4]

What is measured (the same training config groups compose the environments and the learner):

* **Experience collection**, for every simulator x num_envs x backend (the process backend also with one
  worker per environment when ``oversubscribe`` and num_envs > cores): a ``ParallelExperienceCollector``
  steps a ``VectorizedFireEnv`` with the agent's epsilon-greedy policy at ``agent.epsilon_end`` (mostly
  greedy, so acting costs what it costs in most of a training run) and fills a replay buffer, without
  learner updates; ``warmup_steps`` vector steps, then ``repeats`` timed windows of ``steps_per_repeat``
  vector steps (extended until ``min_repeat_seconds``). The backends of one num_envs stay alive together
  and take turns (repeat 1 of each, then repeat 2 of each, ...), so a shift in background load hits them
  alike; each gets the same seeds and actions, so all simulate the same fires. Fire simulations are
  *counted* (every fire a
  simulator actually burns; an evaluation burns up to ``scenario.num_ignitions``), not estimated.
  Reported: the median over repeats of simulations/s and experiences/s, ``spread`` = (max - min) / median
  of the repeats' simulations/s (experiences/s when nothing burned), ``speedup_vs_sequential`` (simulations/s
  over the sequential backend's at the same num_envs) and ``efficiency`` = speedup / min(num_envs, cores).
  Each environment's simulators are built before timing (training amortizes them over many episodes).
* **Learner**: ``DQNAgent.update`` on batches of ``agent.batch_size`` sampled from the replay buffer that
  collection filled, timed separately with ``learner.threads`` torch threads (null: 1 and all cores), on
  batches without expert demonstrations and with the share a training run ends with (the margin loss).
* **End to end**: the recommended setting of the configured simulator (``end_to_end.simulators``: others
  too), collecting *with* learner updates (``trainer.train_frequency``), as a training run does.
* **Fidelity**: :func:`firebreak_exp.simulation.compare_simulators` (pyretechnics reference vs the
  travel-time simulator) on held-out tiles, per ``fidelity.grid_sizes``.

The recommendation (per simulator: the backend and num_envs with the most experiences/s, preferring fewer
environments within ``recommend_tolerance``) goes to ``benchmark.json`` and to ``recommendation_file``,
where ``parallel.num_envs=auto`` finds it (:func:`firebreak_exp.factory.resolve_parallel`). The Hydra run
folder receives ``benchmark.json``, ``recommended.json`` and ``speedup.png``; one MLflow run tagged
``run_kind=benchmark`` logs the flattened config, the rates as metrics and these files plus ``.hydra``.

The thread backend shares one Python interpreter lock (GIL): only code that releases it runs in parallel,
never the Python part of a step, so its efficiency is bounded by that share; the benchmark measures it
and says so in its notes.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import hydra
import numpy as np
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from firebreak_exp.config import Config, check_values, register_configs
from firebreak_exp.vectorization import VectorizedFireEnv, resolve_backend

log = logging.getLogger("firebreak_exp")

FIDELITY_TARGETS = {"speedup": 30.0, "burned_fraction_mae": 0.03, "plan_spearman": 0.9}
PROCESS_SPEEDUP_TARGET = 1.8


# ---------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------

@dataclass
class LearnerSettings:
    threads: Optional[int] = None        # torch threads while timing updates; None = 1 and all cores
    warmup_updates: int = 40             # oneDNN builds a kernel per new convolution shape: untimed until built
    updates_per_repeat: int = 15
    repeats: int = 3
    compare_onednn: bool = False         # also time the other oneDNN setting (what trainer.deterministic costs)


@dataclass
class EndToEndSettings:
    enabled: bool = True                 # time collection *with* learner updates at the recommended setting
    simulators: Optional[List[str]] = None   # of benchmark.simulators; None = the configured simulator only
    warmup_steps: int = 10               # untimed vector steps (the learner's convolution kernels get built)
    steps: int = 6                       # vector steps timed (extended until min_seconds)
    min_seconds: float = 2.0


@dataclass
class FidelitySettings:
    enabled: bool = True
    grid_sizes: Optional[List[int]] = field(default_factory=lambda: [25, 50])  # tile sizes; None = landscape.grid_size
    max_tiles: Any = field(default_factory=lambda: [3, 4])           # held-out tiles (spread evenly): one
    ignitions_per_tile: Any = field(default_factory=lambda: [4, 8])  # number, or one per grid size
    plan_ignitions: Any = field(default_factory=lambda: [4, 3])      # of those, the fires scoring each plan (null: all)
    num_plans: int = 30                  # fuel-break plans ranked by both simulators (pooled over tiles)
    budget_fraction: float = 0.05        # plan size, fraction of burnable cells
    seed: int = 0


@dataclass
class BenchmarkSettings:
    backends: List[str] = field(default_factory=lambda: ["sequential", "thread", "process"])
    num_envs: List[int] = field(default_factory=lambda: [1, 2, 4, 8])
    simulators: List[str] = field(default_factory=lambda: ["pyretechnics", "travel_time"])
    max_workers: Optional[int] = None    # workers of the thread/process backends; None = min(num_envs, cores)
    oversubscribe: bool = True           # process backend: also one worker per environment when num_envs > cores
    max_tiles: Optional[int] = 4         # training tiles the environments draw from (spread evenly); None = all
    warmup_steps: int = 0                # untimed vector steps before the repeats
    repeats: int = 2
    steps_per_repeat: int = 6            # vector steps per timed repeat
    min_repeat_seconds: float = 1.0      # a repeat goes on (in steps_per_repeat chunks) until this long
    collector_threads: int = 1           # torch threads of the main process while collecting
    recommend_tolerance: float = 0.05    # fewer environments win when within this fraction of the best
    recommendation_file: Optional[str] = None  # where num_envs=auto looks; None = do not write one
    # env settings per simulator name on top of ``env``, ``num_ignitions`` on top of ``scenario`` (a
    # pyretechnics fire takes ~0.2 s: its environments evaluate as conf/experiment/pyretechnics.yaml trains,
    # 8 shown fires only, every 1 % of burnable cells)
    env_overrides: Dict[str, Any] = field(default_factory=lambda: {
        "pyretechnics": {"reward_ignitions": None, "percentage_increment": 1.0, "num_ignitions": 8}})
    learner: LearnerSettings = field(default_factory=LearnerSettings)
    end_to_end: EndToEndSettings = field(default_factory=EndToEndSettings)
    fidelity: FidelitySettings = field(default_factory=FidelitySettings)


@dataclass
class BenchmarkConfig(Config):
    """The composed configuration of ``python -m firebreak_exp.benchmark``: the training groups plus ``benchmark``."""
    benchmark: BenchmarkSettings = field(default_factory=BenchmarkSettings)


def register_benchmark_config() -> None:
    register_configs()
    ConfigStore.instance().store(name="benchmark_schema", node=BenchmarkConfig)


register_benchmark_config()


def validate_benchmark(cfg: Any) -> DictConfig:
    """Merge onto the typed schema (unknown keys and wrong types raise with their name) and range-check."""
    schema = OmegaConf.structured(BenchmarkConfig)
    plain = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else dict(cfg)
    plain = {k: v for k, v in plain.items() if k != "hydra"}
    merged = OmegaConf.merge(schema, plain)
    check_values(merged)
    bench = merged.benchmark
    if not bench.backends:
        raise ValueError("benchmark.backends is empty: name at least one of sequential, thread, process")
    for backend in bench.backends:
        try:
            resolve_backend(backend)
        except ValueError as error:
            raise ValueError(f"benchmark.backends: {error}") from None
    if not bench.num_envs or any(n <= 0 for n in bench.num_envs):
        raise ValueError(f"benchmark.num_envs={list(bench.num_envs)}: expected positive integers")
    from firebreak_exp.simulation import SIMULATORS
    unknown = [s for s in bench.simulators if s not in SIMULATORS]
    if unknown or not bench.simulators:
        raise ValueError(f"benchmark.simulators={list(bench.simulators)}: expected names among {sorted(SIMULATORS)}")
    e2e = bench.end_to_end.simulators
    if e2e is not None and (not e2e or any(s not in bench.simulators for s in e2e)):
        raise ValueError(f"benchmark.end_to_end.simulators={list(e2e)}: expected names among "
                         f"benchmark.simulators={list(bench.simulators)}, or null (the configured simulator)")
    positive = {"benchmark.repeats": bench.repeats, "benchmark.steps_per_repeat": bench.steps_per_repeat,
                "benchmark.collector_threads": bench.collector_threads,
                "benchmark.learner.updates_per_repeat": bench.learner.updates_per_repeat,
                "benchmark.learner.repeats": bench.learner.repeats,
                "benchmark.end_to_end.steps": bench.end_to_end.steps,
                "benchmark.fidelity.num_plans": bench.fidelity.num_plans}
    sizes = bench.fidelity.grid_sizes
    for key in ("max_tiles", "ignitions_per_tile", "plan_ignitions"):
        value = bench.fidelity[key]
        values = list(value) if OmegaConf.is_list(value) or isinstance(value, (list, tuple)) else [value]
        if OmegaConf.is_list(value) and (sizes is None or len(values) != len(sizes)):
            raise ValueError(f"benchmark.fidelity.{key}={values}: a list needs one value per grid size "
                             f"(benchmark.fidelity.grid_sizes={None if sizes is None else list(sizes)})")
        if key == "plan_ignitions":       # null: every ignition of the tile scores each plan
            values = [v for v in values if v is not None]
        if any(not isinstance(v, int) or isinstance(v, bool) or v <= 0 for v in values):
            raise ValueError(f"benchmark.fidelity.{key}={value}: expected a positive integer or a list of them")
    for key, value in positive.items():
        if value <= 0:
            raise ValueError(f"{key}={value}: expected a positive integer")
    for key, value in {"benchmark.warmup_steps": bench.warmup_steps,
                       "benchmark.learner.warmup_updates": bench.learner.warmup_updates,
                       "benchmark.end_to_end.warmup_steps": bench.end_to_end.warmup_steps}.items():
        if value < 0:
            raise ValueError(f"{key}={value}: expected an integer >= 0")
    for key, value in {"benchmark.max_workers": bench.max_workers, "benchmark.max_tiles": bench.max_tiles,
                       "benchmark.learner.threads": bench.learner.threads}.items():
        if value is not None and value <= 0:
            raise ValueError(f"{key}={value}: expected a positive integer or null")
    if not 0 < bench.fidelity.budget_fraction < 1:
        raise ValueError(f"benchmark.fidelity.budget_fraction={bench.fidelity.budget_fraction}: expected (0, 1)")
    if bench.fidelity.grid_sizes is not None and any(g <= 1 for g in bench.fidelity.grid_sizes):
        raise ValueError(f"benchmark.fidelity.grid_sizes={list(bench.fidelity.grid_sizes)}: expected sizes > 1")
    return merged


# ---------------------------------------------------------------------------------------------------------
# Counting simulations
# ---------------------------------------------------------------------------------------------------------

class CountingSimulatorFactory:
    """Wraps a simulator factory; ``count`` is the fires the simulators it built have burned
    (``FireSimulator.fires_simulated``: the lit ignitions they simulated, and the fires a travel-time search
    took up again after a new break), the fire simulations actually run."""

    def __init__(self, factory: Callable):
        self.factory = factory
        self.simulators: list = []
        self.counted = 0                  # what a pickled copy (sent back from a worker) carries instead

    def __call__(self, *args, **kwargs):
        simulator = self.factory(*args, **kwargs)
        self.simulators.append(simulator)
        return simulator

    @property
    def count(self) -> int:
        return self.counted + sum(simulator.fires_simulated for simulator in self.simulators)

    def __getstate__(self) -> dict:   # sent back to the parent by ``simulation_counts``: the count only
        return {"factory": self.factory, "simulators": [], "counted": self.count}


class StepClock:
    """Seconds an environment spends in each of its steps (a reset right after a step, the autoreset,
    counts to that step), measured where the environment runs (in its worker for the process backend)."""

    def __init__(self, env):
        self.seconds: list = []
        self.cpu_seconds = 0.0     # CPU time of this process during the steps
        step, reset = env.step, env.reset

        def timed_step(action):
            start, cpu = time.perf_counter(), time.process_time()
            try:
                return step(action)
            finally:
                self.seconds.append(time.perf_counter() - start)
                self.cpu_seconds += time.process_time() - cpu

        def timed_reset(**kwargs):
            start, cpu = time.perf_counter(), time.process_time()
            try:
                return reset(**kwargs)
            finally:
                if self.seconds:
                    self.seconds[-1] += time.perf_counter() - start
                    self.cpu_seconds += time.process_time() - cpu

        env.step, env.reset = timed_step, timed_reset

    def take(self) -> tuple:
        """(per-step seconds, CPU seconds of the process during them) since the last take."""
        seconds, cpu, self.seconds, self.cpu_seconds = self.seconds, self.cpu_seconds, [], 0.0
        return seconds, cpu


class CountingVectorEnv(VectorizedFireEnv):
    """A VectorizedFireEnv whose environments count the fire simulations they run, time each of their
    steps, and build all their simulators up front (so that timing sees steady-state steps, not
    simulator construction). The environments of one process share their simulators (as in training)
    and one counter."""

    def create_environment(self, index: int):
        if getattr(self, "_counting_factory", None) is None:   # per process: workers get a copy without it
            self._counting_factory = CountingSimulatorFactory(self.env_kwargs["simulator_factory"])
            self.env_kwargs = {**self.env_kwargs, "simulator_factory": self._counting_factory}
        env = super().create_environment(index)
        for tile_index in range(len(env.landscapes)):
            env.simulator(tile_index)
        env.take_step_seconds = StepClock(env).take
        return env

    def simulation_counts(self) -> list:
        """Fire simulations run so far by the environments of each process (one message per worker)."""
        counts = [factory.count for factory in self.call("get_wrapper_attr", "simulator_factory")]
        if self.backend in ("sequential", "thread"):
            return counts[:1]
        return [counts[group[0]] for group in np.array_split(np.arange(self.num_envs), self.max_workers)]

    def take_step_seconds(self) -> list:
        """Per environment, (seconds of each step, CPU seconds during them) since the last call."""
        return list(self.call("take_step_seconds"))


def counting_vector_env_class() -> type:
    """CountingVectorEnv as ``firebreak_exp.benchmark`` defines it: worker processes unpickle the class by
    that name, also when this file runs as ``__main__`` (``python -m firebreak_exp.benchmark``)."""
    import importlib
    return importlib.import_module("firebreak_exp.benchmark").CountingVectorEnv


# ---------------------------------------------------------------------------------------------------------
# Machine
# ---------------------------------------------------------------------------------------------------------

def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> Optional[float]:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _version(package: str) -> Optional[str]:
    from importlib import metadata
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _load_average() -> Optional[list]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _autogroup() -> Optional[bool]:
    """Whether Linux shares CPU time per session (autogroup): then other sessions' jobs cap this one's share."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return None


def machine_info() -> dict:
    """Cores, CPU model, memory, GPU and the versions that set the speed."""
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cores": available_cores(), "cpu_count": os.cpu_count(), "cpu_model": _cpu_model(),
            "memory_gib": _memory_gib(), "gpu": gpu, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "scipy": _version("scipy"), "pyretechnics": _version("pyretechnics"),
            "load_average_start": _load_average(), "sched_autogroup": _autogroup()}


# ---------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------

def _evenly(items: Sequence, count: Optional[int]) -> list:
    items = list(items)
    if count is None or count >= len(items):
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def _median_spread(values: Sequence[float]) -> tuple:
    median = float(statistics.median(values))
    spread = (max(values) - min(values)) / median if median > 0 and len(values) > 1 else 0.0
    return median, float(spread)


def simulator_factories(cfg: DictConfig, names: Sequence[str]) -> Dict[str, Callable]:
    """name -> factory(tile=..., scenario=...); the configured simulator keeps its own settings."""
    from hydra.utils import instantiate
    from firebreak_exp.factory import simulator_name
    from firebreak_exp.simulation import SIMULATORS
    configured = simulator_name(cfg)
    plain = OmegaConf.to_container(cfg.simulator, resolve=True)
    return {name: instantiate(plain) if name == configured else SIMULATORS[name] for name in names}


def worker_counts(backend: str, num_envs: int, bench: DictConfig, cores: int) -> List[int]:
    """max_workers settings measured for a backend: min(num_envs, max_workers or cores), and for the process
    backend with ``oversubscribe`` also one worker per environment (the OS then balances uneven steps)."""
    if backend == "sequential":
        return [1]
    base = max(1, min(num_envs, bench.max_workers or cores))
    return [base, num_envs] if backend == "process" and bench.oversubscribe and num_envs > base else [base]


class CollectionSetup:
    """One backend x num_envs x workers, alive for the whole measurement of a num_envs: its environments, a
    collector without learner updates, and its own action RNG (the same seeds and the same actions give the
    same episodes on every backend, so every backend simulates the same fires)."""

    def __init__(self, tiles: Sequence, env_kwargs: dict, backend: str, num_envs: int, workers: int,
                 agent, replay, seed: int, batch_size: int, share_fires: bool = True):
        from firebreak_exp.training import ParallelExperienceCollector

        self.backend, self.num_envs, self.workers, self.agent = backend, num_envs, workers, agent
        self.rng = np.random.default_rng(seed)
        started = time.perf_counter()
        self.vec_env = counting_vector_env_class()(tiles, num_envs, method=backend, max_workers=workers,
                                                   env_kwargs=env_kwargs, share_fires=share_fires)
        try:
            self.collector = ParallelExperienceCollector(self.vec_env, agent, replay, batch_size=batch_size,
                                                         learning_starts=sys.maxsize, seed=seed)
        except BaseException:
            self.vec_env.close()
            raise
        self.startup = time.perf_counter() - started
        self.sims_rates, self.exp_rates = [], []
        self.steps = self.sims = self.sims_shared = 0
        self.seconds = self.cpu_seconds = 0.0
        self.env_seconds = self.critical_seconds = self.balanced_seconds = self.env_cpu_seconds = 0.0
        self.groups = np.array_split(np.arange(num_envs), 1 if backend == "sequential" else workers)

    def collect(self, steps: int) -> None:
        self.agent.rng = self.rng
        self.collector.collect_experiences(steps)

    def repeat(self, steps_per_repeat: int, min_seconds: float) -> None:
        """One timed repeat: ``steps_per_repeat`` vector steps, in such chunks until ``min_seconds`` passed."""
        before = sum(self.vec_env.simulation_counts())
        shared_before = self._fires_shared()
        self.vec_env.take_step_seconds()
        steps, start, cpu_start = 0, time.perf_counter(), time.process_time()
        while True:
            self.collect(steps_per_repeat)
            steps += steps_per_repeat
            if time.perf_counter() - start >= min_seconds:
                break
        seconds = time.perf_counter() - start
        self.cpu_seconds += time.process_time() - cpu_start
        sims = sum(self.vec_env.simulation_counts()) - before
        taken = self.vec_env.take_step_seconds()
        self._add_step_times(np.array([seconds for seconds, _ in taken], dtype=np.float64))
        self.env_cpu_seconds += sum(cpu for _, cpu in taken)
        self.sims_rates.append(sims / seconds)
        self.exp_rates.append(steps * self.num_envs / seconds)
        self.steps, self.sims, self.seconds = self.steps + steps, self.sims + sims, self.seconds + seconds
        self.sims_shared += self._fires_shared() - shared_before

    def _fires_shared(self) -> int:
        """Fires so far that a process worker burned for another worker's environment (FireExchange)."""
        return sum(worker["burned_by_others"] for worker in self.vec_env.fires_shared())

    def _add_step_times(self, times: np.ndarray) -> None:
        """times: (num_envs, steps) seconds. The critical path is what the slowest worker of each step
        takes (its environments run one after the other); the balanced path is the same with each step's
        work spread perfectly over the cores (never below its longest environment step)."""
        if times.ndim != 2 or times.shape[1] == 0:
            return
        per_worker = np.stack([times[group].sum(axis=0) for group in self.groups])
        cores = min(available_cores(), self.num_envs)
        self.env_seconds += float(times.sum())
        self.critical_seconds += float(per_worker.max(axis=0).sum())
        self.balanced_seconds += float(np.maximum(times.max(axis=0), times.sum(axis=0) / cores).sum())

    def result(self) -> dict:
        sims_per_s, sims_spread = _median_spread(self.sims_rates)
        experiences_per_s, exp_spread = _median_spread(self.exp_rates)
        return {"backend": self.backend, "num_envs": self.num_envs, "max_workers": self.workers,
                "sims_per_s": sims_per_s, "experiences_per_s": experiences_per_s,
                "spread": sims_spread if self.sims else exp_spread, "repeats": len(self.sims_rates),
                "sims_per_s_repeats": self.sims_rates, "experiences_per_s_repeats": self.exp_rates,
                "steps_timed": self.steps, "simulations_timed": self.sims, "seconds_timed": self.seconds,
                "sims_per_experience": self.sims / max(1, self.steps * self.num_envs), "startup_s": self.startup,
                "main_cpu_share": self.cpu_seconds / self.seconds if self.seconds > 0 else None,
                "env_step_seconds": self.env_seconds, "critical_path_seconds": self.critical_seconds,
                "balanced_path_seconds": self.balanced_seconds,
                "outside_env_fraction": (max(0.0, self.seconds - self.critical_seconds) / self.seconds
                                         if self.seconds > 0 else None),
                "fires_shared": (self.sims_shared / self.sims if self.backend == "process" and self.sims else None),
                # with fires shared a worker's steps also hold the fires it burns for others: no bound then
                "balance_bound": (self.env_seconds / self.critical_seconds
                                  if self.critical_seconds > 0 and not self.sims_shared else None),
                "env_cpu_share": (self.env_cpu_seconds / self.env_seconds
                                  if self.env_seconds > 0 and self.backend != "thread" else None)}

    def close(self) -> None:
        self.vec_env.close()


def measure_collection(tiles: Sequence, env_kwargs: dict, configs: Sequence[tuple], agent, replay,
                       bench: DictConfig, seed: int, batch_size: int, share_fires: bool = True) -> List[dict]:
    """Time experience collection (no learner updates) of every ``(backend, num_envs, workers)`` in
    ``configs`` (one num_envs). All stay alive and their repeats are interleaved (A B C A B C ...), so a
    change in the machine's background load hits every backend alike and the speedups stay comparable."""
    setups = []
    try:
        for backend, num_envs, workers in configs:
            log.info("starting %s x %d envs, %d workers", backend, num_envs, workers)
            setups.append(CollectionSetup(tiles, env_kwargs, backend, num_envs, workers, agent, replay, seed,
                                          batch_size, share_fires))
            if bench.warmup_steps:
                setups[-1].collect(bench.warmup_steps)
        for _ in range(bench.repeats):
            for setup in setups:
                setup.repeat(bench.steps_per_repeat, bench.min_repeat_seconds)
        return [setup.result() for setup in setups]
    finally:
        for setup in setups:
            setup.close()


def top_up_replay(tiles: Sequence, env_kwargs: dict, agent, replay, batch_size: int, seed: int) -> None:
    """Collect on one sequential environment until ``replay`` holds a batch: with Monte Carlo returns a
    transition is stored when its episode ends, which a short timing window may not reach."""
    from firebreak_exp.training import ParallelExperienceCollector
    with VectorizedFireEnv(tiles, 1, env_kwargs=env_kwargs) as vec_env:
        collector = ParallelExperienceCollector(vec_env, agent, replay, batch_size=batch_size,
                                                learning_starts=sys.maxsize, seed=seed)
        while len(replay) < batch_size:
            collector.collect_experiences(8)


def onednn_for(cfg: DictConfig) -> bool:
    """Whether training uses oneDNN convolutions: ``trainer.deterministic`` turns them off (see
    firebreak_exp.training.seed_everything), and the benchmark times what training runs."""
    return not bool(cfg.trainer.get("deterministic", False))


def demonstration_share(cfg: DictConfig) -> float:
    """The share of expert demonstrations in the replay buffer once a training run of ``cfg`` has collected
    all its episodes (before the buffer wraps around): expert_memories / (expert_memories + episodes), or 0
    when the margin loss is off. Their updates cost more (the margin loss reads the dense Q map)."""
    memories = int(cfg.trainer.get("expert_memories", 0) or 0)
    if memories <= 0 or float(cfg.agent.get("expert_loss_weight", 0.0)) <= 0:
        return 0.0
    return memories / (memories + int(cfg.trainer.episodes))


def measure_learner(cfg: DictConfig, obs_shape: tuple, replay, settings: DictConfig) -> dict:
    """``DQNAgent.update`` on batches of ``agent.batch_size`` from ``replay``: updates/s (median of repeats),
    with ``learner.threads`` torch threads, or with 1 and with all cores when it is null, with training's
    oneDNN setting (and the other one with ``compare_onednn``), after ``warmup_updates`` untimed ones (oneDNN
    builds a kernel for each convolution shape it has not seen), and with no demonstrations in the buffer and
    with training's share of them (:func:`demonstration_share`, random transitions marked as expert's); all
    repeats interleaved.
    ``updates_per_s`` and ``threads`` are the faster thread count's with training's oneDNN setting
    (``onednn``) on batches without demonstrations; ``updates_per_s_with_demonstrations`` the same thread
    count's with them; ``updates_per_s_by_setting`` has them all. The marks stay in ``replay`` afterwards."""
    import torch
    from firebreak_exp.agent import DQNAgent

    thread_counts = [int(settings.threads)] if settings.threads else sorted({1, available_cores()})
    onednn, share = onednn_for(cfg), demonstration_share(cfg)
    marks = np.random.default_rng(int(cfg.seed)).random(len(replay)) < share
    modes = (onednn, not onednn) if settings.compare_onednn else (onednn,)
    settings_list = [(threads, mode, demos) for demos in ((False, True) if share > 0 else (False,))
                     for mode in modes for threads in thread_counts]
    previous, previous_onednn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    agent_kwargs = OmegaConf.to_container(cfg.agent, resolve=True)
    batch_size = int(cfg.agent.batch_size)
    rates = {setting: [] for setting in settings_list}
    try:
        agents = {setting: DQNAgent(obs_shape, seed=int(cfg.seed), **{**agent_kwargs, "num_threads": setting[0]})
                  for setting in settings_list}
        for rep in range(-1, settings.repeats):            # -1: warm-up
            for (threads, mode, demos), agent in agents.items():
                torch.set_num_threads(threads)
                torch.backends.mkldnn.enabled = mode
                replay.expert[:len(replay)] = marks if demos else False
                count = settings.warmup_updates if rep < 0 else settings.updates_per_repeat
                start = time.perf_counter()
                for _ in range(count):
                    agent.update(replay.sample(batch_size, agent.device))
                if rep >= 0:
                    rates[(threads, mode, demos)].append(count / (time.perf_counter() - start))
    finally:
        torch.set_num_threads(previous)
        torch.backends.mkldnn.enabled = previous_onednn
        replay.expert[:len(replay)] = marks
    summary = {setting: _median_spread(values) for setting, values in rates.items()}
    best = max(thread_counts, key=lambda t: summary[(t, onednn, False)][0])
    agent = agents[(best, onednn, False)]
    parameters = sum(p.numel() for p in agent.q_network.parameters())
    label = lambda t, m, d: f"threads_{t}/onednn_{'on' if m else 'off'}" + ("/demonstrations" if d else "")
    return {"updates_per_s": summary[(best, onednn, False)][0], "spread": summary[(best, onednn, False)][1],
            "threads": best, "onednn": onednn, "repeats": int(settings.repeats),
            "updates_per_s_repeats": rates[(best, onednn, False)],
            "updates_per_s_by_threads": {str(t): summary[(t, onednn, False)][0] for t in thread_counts},
            "demonstration_share": share,
            "updates_per_s_with_demonstrations": summary[(best, onednn, True)][0] if share > 0 else None,
            "updates_per_s_by_setting": {label(*setting): summary[setting][0] for setting in settings_list},
            "batch_size": batch_size, "device": str(agent.device), "channels": int(cfg.agent.channels),
            "num_layers": int(cfg.agent.num_layers), "parameters": int(parameters),
            "grid": list(obs_shape[1:]), "replay_size": len(replay)}


def measure_end_to_end(cfg: DictConfig, tiles: Sequence, env_kwargs: dict, choice: dict, replay,
                       settings: DictConfig) -> dict:
    """Collection with learner updates (one per ``trainer.train_frequency`` experiences) at ``choice``, the
    learner on ``agent.num_threads`` torch threads as in training (null: all cores)."""
    import torch
    from firebreak_exp.agent import DQNAgent
    from firebreak_exp.training import ParallelExperienceCollector

    learner_threads = int(cfg.agent.num_threads) if cfg.agent.get("num_threads") else available_cores()
    previous = torch.get_num_threads()
    torch.set_num_threads(learner_threads)
    vec_env = counting_vector_env_class()(tiles, choice["num_envs"], method=choice["backend"],
                                          max_workers=choice["max_workers"], env_kwargs=env_kwargs,
                                          share_fires=bool(cfg.parallel.get("share_fires", True)))
    try:
        obs_shape = vec_env.single_observation_space.shape
        agent = DQNAgent(obs_shape, seed=int(cfg.seed), **{**OmegaConf.to_container(cfg.agent, resolve=True),
                                                          "num_threads": learner_threads,
                                                          "epsilon_start": float(cfg.agent.epsilon_end)})
        batch_size = int(cfg.agent.batch_size)
        collector = ParallelExperienceCollector(vec_env, agent, replay, batch_size=batch_size,
                                                learning_starts=min(len(replay), batch_size), seed=int(cfg.seed))
        frequency = int(cfg.trainer.train_frequency)
        if settings.warmup_steps:
            collector.collect_experiences(settings.warmup_steps, frequency)
        updates_before, steps, start = collector.total_updates, 0, time.perf_counter()
        while True:
            collector.collect_experiences(settings.steps, frequency)
            steps += settings.steps
            if time.perf_counter() - start >= settings.min_seconds:
                break
        seconds = time.perf_counter() - start
        updates = collector.total_updates - updates_before
    finally:
        vec_env.close()
        torch.set_num_threads(previous)
    return {"backend": choice["backend"], "num_envs": choice["num_envs"], "max_workers": choice["max_workers"],
            "train_frequency": frequency, "learner_threads": learner_threads,
            "experiences_per_s": steps * choice["num_envs"] / seconds, "updates_per_s": updates / seconds,
            "seconds_timed": seconds}


def measure_fidelity(cfg: DictConfig, settings: DictConfig) -> list:
    """compare_simulators(PyretechnicsSimulator, TravelTimeSimulator, held-out tiles) per grid size."""
    from hydra.utils import instantiate
    from firebreak_exp.factory import build_landscapes, simulator_name
    from firebreak_exp.simulation import PyretechnicsSimulator, TravelTimeSimulator, compare_simulators

    scenario = instantiate(OmegaConf.to_container(cfg.scenario, resolve=True))
    candidate = instantiate(OmegaConf.to_container(cfg.simulator, resolve=True)) \
        if simulator_name(cfg) == "travel_time" else TravelTimeSimulator
    results = []
    grid_sizes = settings.grid_sizes if settings.grid_sizes is not None else [cfg.landscape.grid_size]

    def per_grid(value, index: int) -> int:
        value = value[index] if OmegaConf.is_list(value) or isinstance(value, (list, tuple)) else value
        return None if value is None else int(value)

    for index, grid in enumerate(grid_sizes):
        grid_cfg = OmegaConf.merge(cfg, {"landscape": {"grid_size": int(grid)}})
        try:
            tiles = _evenly(build_landscapes(grid_cfg).heldout, per_grid(settings.max_tiles, index))
        except ValueError as error:   # the landscape may be too small for this tile size
            log.warning("fidelity at %dx%d skipped: %s", grid, grid, error)
            continue
        if not tiles:
            log.warning("fidelity at %dx%d skipped: no held-out tiles", grid, grid)
            continue
        start = time.perf_counter()
        result = compare_simulators(PyretechnicsSimulator, candidate, tiles, scenario,
                                    ignitions_per_tile=per_grid(settings.ignitions_per_tile, index),
                                    plan_ignitions=per_grid(settings.plan_ignitions, index),
                                    num_plans=settings.num_plans,
                                    budget_fraction=settings.budget_fraction, seed=settings.seed)
        result.update(grid_size=int(grid), seconds=time.perf_counter() - start,
                      meets_targets={"speedup": result["speedup"] >= FIDELITY_TARGETS["speedup"],
                                     "burned_fraction_mae":
                                         result["burned_fraction_mae"] <= FIDELITY_TARGETS["burned_fraction_mae"],
                                     "plan_spearman": result["plan_spearman"] >= FIDELITY_TARGETS["plan_spearman"]})
        results.append(result)
        log.info("fidelity %dx%d: %s", grid, grid, {k: result[k] for k in
                                                   ("speedup", "burned_fraction_mae", "iou_mean", "plan_spearman")})
    return results


# ---------------------------------------------------------------------------------------------------------
# Derived numbers
# ---------------------------------------------------------------------------------------------------------

def add_speedups(results: List[dict], cores: int) -> None:
    """speedup_vs_sequential (simulations/s, or experiences/s when nothing burned) and efficiency, in place."""
    sequential = {(r["simulator"], r["num_envs"]): r for r in results if r["backend"] == "sequential"}
    for row in results:
        base = sequential.get((row["simulator"], row["num_envs"]))
        if base is None:
            row["speedup_vs_sequential"] = row["efficiency"] = None
            continue
        key = "sims_per_s" if base["sims_per_s"] > 0 and row["sims_per_s"] > 0 else "experiences_per_s"
        row["speedup_vs_sequential"] = row[key] / base[key] if base[key] > 0 else None
        row["efficiency"] = (row["speedup_vs_sequential"] / min(row["num_envs"], cores)
                             if row["speedup_vs_sequential"] is not None else None)


def _best(rows: Sequence[dict], tolerance: float) -> dict:
    """Most experiences/s; within ``tolerance`` of it, fewer environments, then sequential < thread < process."""
    top = max(r["experiences_per_s"] for r in rows)
    order = {"sequential": 0, "thread": 1, "process": 2, "dask": 3}
    close = [r for r in rows if r["experiences_per_s"] >= (1.0 - tolerance) * top]
    return min(close, key=lambda r: (r["num_envs"], order.get(r["backend"], 9), r["max_workers"]))


def _choice(row: dict) -> dict:
    return {"backend": row["backend"], "num_envs": int(row["num_envs"]), "max_workers": int(row["max_workers"]),
            "experiences_per_s": row["experiences_per_s"], "sims_per_s": row["sims_per_s"]}


def recommend(results: List[dict], primary_simulator: str, cores: int, tolerance: float) -> dict:
    """The backend, num_envs and max_workers to use on this machine, overall and per simulator and backend."""
    by_simulator = {}
    for simulator in dict.fromkeys(r["simulator"] for r in results):
        rows = [r for r in results if r["simulator"] == simulator]
        entry = _choice(_best(rows, tolerance))
        entry["by_backend"] = {backend: _choice(_best([r for r in rows if r["backend"] == backend], tolerance))
                               for backend in dict.fromkeys(r["backend"] for r in rows)}
        by_simulator[simulator] = entry
    primary = primary_simulator if primary_simulator in by_simulator else next(iter(by_simulator))
    overall = {k: v for k, v in by_simulator[primary].items() if k != "by_backend"}
    return {**overall, "simulator": primary, "cores": cores, "by_simulator": by_simulator}


# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------

def _fmt(value, pattern: str = "{:.2f}") -> str:
    return "-" if value is None else pattern.format(value)


def format_table(report: dict) -> str:
    """The results as a fixed-width text table, with the learner, recommendation, fidelity and notes."""
    machine, learner = report["machine"], report["learner"]
    lines = [f"machine: {machine['cores']} cores ({machine['cpu_model']}), {machine['memory_gib']} GiB, "
             f"python {machine['python']}, torch {machine['torch']}, numpy {machine['numpy']}; "
             f"load average {machine.get('load_average_start')} -> {machine.get('load_average_end')}",
             f"landscape: {report['landscape']}",
             "",
             f"{'simulator':<13}{'backend':<11}{'envs':>5}{'workers':>8}{'sims/s':>10}{'exp/s':>10}"
             f"{'updates/s':>10}{'speedup':>9}{'effic.':>8}{'spread':>8}{'reps':>5}{'bound':>7}{'outside':>8}"
             f"{'cpu':>6}{'shared':>8}"]
    for r in report["results"]:
        lines.append(f"{r['simulator']:<13}{r['backend']:<11}{r['num_envs']:>5}{r['max_workers']:>8}"
                     f"{r['sims_per_s']:>10.1f}{r['experiences_per_s']:>10.1f}{r['updates_per_s']:>10.1f}"
                     f"{_fmt(r['speedup_vs_sequential']):>9}{_fmt(r['efficiency']):>8}"
                     f"{r['spread']:>8.2f}{r['repeats']:>5}{_fmt(r.get('balance_bound')):>7}"
                     f"{_fmt(r.get('outside_env_fraction'), '{:.0%}'):>8}"
                     f"{_fmt(r.get('env_cpu_share'), '{:.0%}'):>6}"
                     f"{_fmt(r.get('fires_shared'), '{:.0%}'):>8}")
    def setting_label(key: str) -> str:     # "threads_2/onednn_on/demonstrations" -> "threads 2, oneDNN on, ..."
        return ", ".join(part.replace("onednn", "oneDNN").replace("_", " ") for part in key.split("/"))
    settings = ", ".join(f"{v:.1f} ({setting_label(k)})" for k, v in learner["updates_per_s_by_setting"].items())
    with_demos = learner.get("updates_per_s_with_demonstrations")
    demos = "" if with_demos is None else (f", {with_demos:.1f} with {learner['demonstration_share']:.0%} expert "
                                           f"demonstrations in the buffer (the margin loss), as a training run ends")
    lines += ["", f"learner: {learner['updates_per_s']:.1f} updates/s with {learner['threads']} thread(s) and oneDNN "
                  f"{'on' if learner['onednn'] else 'off'} as training runs (trainer.deterministic turns it off){demos}; "
                  f"batch {learner['batch_size']}, grid {'x'.join(map(str, learner['grid']))}, {learner['channels']} "
                  f"channels x {learner['num_layers']} layers, {learner['parameters']} parameters, {learner['device']}, "
                  f"spread {learner['spread']:.2f}; all settings: {settings}"]
    for simulator, entry in report["recommended"]["by_simulator"].items():
        lines.append(f"recommended for {simulator}: backend={entry['backend']} num_envs={entry['num_envs']} "
                     f"max_workers={entry['max_workers']} ({entry['experiences_per_s']:.1f} experiences/s)")
    for e2e in report.get("end_to_end", []):
        lines.append(f"end to end with learning ({e2e['simulator']}, {e2e['backend']} x {e2e['num_envs']}, "
                     f"train_frequency {e2e['train_frequency']}, {e2e['learner_threads']} learner thread(s)): "
                     f"{e2e['experiences_per_s']:.1f} experiences/s, "
                     f"{e2e['updates_per_s']:.1f} updates/s")
    for f in report.get("fidelity_by_grid_size", []):
        lines.append(f"fidelity {f['grid_size']}x{f['grid_size']} ({f['simulator']} vs {f['reference']}, "
                     f"{f['num_tiles']} held-out tiles, {f['num_ignitions']} fires, {f['num_plans']} plans): "
                     f"speedup {f['speedup']:.1f}x (target >= {FIDELITY_TARGETS['speedup']:.0f}), "
                     f"burned_fraction_mae {f['burned_fraction_mae']:.4f} "
                     f"(<= {FIDELITY_TARGETS['burned_fraction_mae']}), "
                     f"iou_mean {f['iou_mean']:.3f}, plan_spearman {f['plan_spearman']:.3f} "
                     f"(>= {FIDELITY_TARGETS['plan_spearman']})")
    lines += ["", "bound: the speedup the slowest worker of each step allows (environment step times measured in the "
                  "workers; - where workers burned each other's fires, which their steps then include); shared: "
                  "share of the fires a process worker burned for another worker's environment; outside: share of "
                  "wall time outside the busiest worker's environment steps (acting, replay, pipes, waiting for a "
                  "core); cpu: CPU time / wall time of the processes running the "
                  "environments while they step (100% = a core each; less = the cores were shared)"]
    lines += [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines)


def notes_for(results: List[dict], cores: int) -> List[str]:
    """Plain statements about what the numbers mean on this machine (GIL, the process target)."""
    notes = []
    thread = [r["efficiency"] for r in results if r["backend"] == "thread" and r["num_envs"] > 1
              and r["efficiency"] is not None]
    if thread:
        notes.append(f"thread backend: Python threads share one interpreter lock (GIL); only code that releases "
                     f"it (parts of numpy/scipy and compiled simulator loops) runs in parallel, and the Python "
                     f"part of every step never does, so threads scale at most as far as that part allows; "
                     f"measured efficiency {min(thread):.2f}-{max(thread):.2f} (1.0 = perfect scaling over "
                     f"min(num_envs, {cores}) cores).")
    for simulator in dict.fromkeys(r["simulator"] for r in results):
        process = [r for r in results if r["backend"] == "process" and r["simulator"] == simulator
                   and r["num_envs"] >= 2 and r["speedup_vs_sequential"] is not None]
        if process:
            best = max(process, key=lambda r: r["speedup_vs_sequential"])
            target = min(PROCESS_SPEEDUP_TARGET, 0.9 * cores)
            why = ""
            if best.get("balance_bound") is not None:
                why = (f"; there the slowest worker of each step allowed {best['balance_bound']:.2f}x and "
                       f"{best['outside_env_fraction']:.0%} of the time went outside environment steps")
            elif best.get("fires_shared"):
                why = f"; there workers burned {best['fires_shared']:.0%} of the fires for each other's environments"
            notes.append(f"process backend, {simulator}: best speedup {best['speedup_vs_sequential']:.2f}x "
                         f"sequential at num_envs={best['num_envs']} with {best['max_workers']} workers (target >= "
                         f"{target:.1f}x at num_envs >= 2, limit {min(cores, max(r['num_envs'] for r in process))}x "
                         f"on {cores} cores){why}.")
    shares = [r["env_cpu_share"] for r in results if r["backend"] == "process" and r["num_envs"] >= 2
              and r["max_workers"] <= cores and r.get("env_cpu_share") is not None]
    if shares and statistics.median(shares) < 0.85:
        notes.append(f"the machine was busy: process workers got only {statistics.median(shares):.0%} of a core "
                     f"while stepping (CPU time / wall time, median over the process rows with at most {cores} "
                     f"workers); other jobs "
                     f"shared the cores (Linux shares CPU time per session), so parallel speedups are understated. "
                     f"Re-run on an idle machine before trusting speedups and the recommendation.")
    notes.append("rates are wall-clock on a machine that may be shared: the load averages above show how busy "
                 "it was; compare ratios from one run.")
    return notes


def plot_speedup(report: dict, path: Path) -> Path:
    """Speedup over sequential and experiences/s against num_envs, one line per backend, per simulator."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    results, cores = report["results"], report["machine"]["cores"]
    simulators = list(dict.fromkeys(r["simulator"] for r in results))
    fig, axes = plt.subplots(2, len(simulators), figsize=(5.5 * len(simulators), 8), squeeze=False)
    for column, simulator in enumerate(simulators):
        rows = [r for r in results if r["simulator"] == simulator]
        envs = sorted({r["num_envs"] for r in rows})
        speed_ax, rate_ax = axes[0][column], axes[1][column]
        speed_ax.plot(envs, [min(n, cores) for n in envs], "k--", linewidth=1, label=f"ideal (min(n, {cores} cores))")
        def series(row):
            return row["backend"] + (", a worker per env" if row["backend"] != "sequential"
                                     and row["max_workers"] == row["num_envs"] > min(row["num_envs"], cores) else "")
        for label in dict.fromkeys(series(r) for r in rows):
            mine = sorted((r for r in rows if series(r) == label), key=lambda r: r["num_envs"])
            xs = [r["num_envs"] for r in mine]
            speed_ax.plot(xs, [r["speedup_vs_sequential"] or np.nan for r in mine], "o-", label=label)
            rate_ax.plot(xs, [r["experiences_per_s"] for r in mine], "o-", label=label)
        speed_ax.set(title=f"{simulator}: speedup vs sequential (simulations/s)", xlabel="num_envs",
                     ylabel="speedup")
        rate_ax.set(title=f"{simulator}: experience collection", xlabel="num_envs", ylabel="experiences/s")
        for ax in (speed_ax, rate_ax):
            ax.set_xscale("log", base=2)
            ax.set_xticks(envs, [str(n) for n in envs])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"{report['machine']['cores']} cores, {report['machine']['cpu_model']}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def benchmark_metrics(report: dict) -> dict:
    """Flat MLflow metrics: per result row, the learner, end to end, fidelity and the recommendation."""
    metrics = {}
    for r in report["results"]:
        prefix = f"{r['simulator']}/{r['backend']}/n{r['num_envs']}"
        for key in ("sims_per_s", "experiences_per_s", "speedup_vs_sequential", "efficiency", "spread"):
            if r.get(key) is not None:
                metrics[f"{prefix}/{key}"] = r[key]
    metrics["learner/updates_per_s"] = report["learner"]["updates_per_s"]
    if report["learner"].get("updates_per_s_with_demonstrations") is not None:
        metrics["learner/updates_per_s_with_demonstrations"] = report["learner"]["updates_per_s_with_demonstrations"]
    for setting, value in report["learner"]["updates_per_s_by_setting"].items():
        metrics[f"learner/updates_per_s/{setting}"] = value
    for e2e in report.get("end_to_end", []):
        metrics[f"end_to_end/{e2e['simulator']}/experiences_per_s"] = e2e["experiences_per_s"]
        metrics[f"end_to_end/{e2e['simulator']}/updates_per_s"] = e2e["updates_per_s"]
    for f in report.get("fidelity_by_grid_size", []):
        for key in ("speedup", "burned_fraction_mae", "iou_mean", "plan_spearman"):
            if f[key] is not None and np.isfinite(f[key]):
                metrics[f"fidelity/{f['grid_size']}/{key}"] = f[key]
    metrics["recommended/num_envs"] = report["recommended"]["num_envs"]
    metrics["recommended/max_workers"] = report["recommended"]["max_workers"]
    return metrics


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_json(data: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default))
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------------------

def run_benchmark(cfg: DictConfig, run_dir: Path) -> dict:
    """Measure everything the module docstring lists; returns the report written to benchmark.json."""
    import torch
    from firebreak_exp.agent import DQNAgent, ReplayBuffer
    from firebreak_exp.factory import build_landscapes, env_kwargs, simulator_name

    bench = cfg.benchmark
    cores = available_cores()
    machine = machine_info()
    landscapes = build_landscapes(cfg)
    tiles = _evenly(landscapes.train, bench.max_tiles)
    base_kwargs = env_kwargs(cfg)
    factories = simulator_factories(cfg, list(bench.simulators))

    def env_kwargs_for(simulator: str) -> dict:
        """The environments' keyword arguments with ``simulator`` and its ``benchmark.env_overrides``."""
        overrides = dict(bench.env_overrides.get(simulator, {}))
        scenario = base_kwargs["scenario"]
        if "num_ignitions" in overrides:      # the fires an episode shows belong to the scenario
            scenario = dataclasses.replace(scenario, num_ignitions=int(overrides.pop("num_ignitions")))
        return {**base_kwargs, **overrides, "scenario": scenario, "simulator_factory": factories[simulator]}
    backends = [resolve_backend(b) for b in bench.backends]
    backends = sorted(dict.fromkeys(backends), key=lambda b: b != "sequential")   # sequential first
    num_envs_list = sorted(dict.fromkeys(int(n) for n in bench.num_envs))
    seed, batch_size = int(cfg.seed), int(cfg.agent.batch_size)

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(int(bench.collector_threads))
    results, replay, agent, obs_shape = [], None, None, None
    try:
        for simulator in bench.simulators:
            kwargs = env_kwargs_for(simulator)
            for num_envs in num_envs_list:
                if agent is None:   # the acting agent and the replay the learner samples from
                    with VectorizedFireEnv(tiles, 1, env_kwargs=kwargs) as probe:
                        obs_shape = probe.single_observation_space.shape
                    agent = DQNAgent(obs_shape, seed=seed, **{**OmegaConf.to_container(cfg.agent, resolve=True),
                                                              "num_threads": int(bench.collector_threads),
                                                              "epsilon_start": float(cfg.agent.epsilon_end)})
                    replay = ReplayBuffer(min(int(cfg.agent.buffer_size), 8192), obs_shape, seed=seed)
                configs = [(b, num_envs, w) for b in backends for w in worker_counts(b, num_envs, bench, cores)]
                log.info("collecting with %s, %d envs: %s", simulator, num_envs,
                         ", ".join(f"{b} ({w} workers)" for b, _, w in configs))
                for row in measure_collection(tiles, kwargs, configs, agent, replay, bench, seed, batch_size,
                                              bool(cfg.parallel.get("share_fires", True))):
                    row["simulator"] = simulator
                    results.append(row)
                    log.info("  %s x %d, %d workers: %.1f simulations/s, %.1f experiences/s (spread %.2f)",
                             row["backend"], num_envs, row["max_workers"], row["sims_per_s"],
                             row["experiences_per_s"], row["spread"])
    finally:
        torch.set_num_threads(previous_threads)
    add_speedups(results, cores)

    if len(replay) < batch_size:
        top_up_replay(tiles, env_kwargs_for(bench.simulators[-1]), agent, replay, batch_size, seed)
    log.info("timing learner updates")
    learner = measure_learner(cfg, obs_shape, replay, bench.learner)
    for row in results:
        row["updates_per_s"] = learner["updates_per_s"]
    primary = simulator_name(cfg)
    recommended = recommend(results, primary, cores, float(bench.recommend_tolerance))
    recommended["learner_threads"] = learner["threads"]

    end_to_end = []
    if bench.end_to_end.enabled:
        wanted = bench.end_to_end.simulators if bench.end_to_end.simulators is not None else [primary]
        for simulator, choice in recommended["by_simulator"].items():
            if simulator not in wanted:
                continue
            log.info("end to end: %s, %s x %d", simulator, choice["backend"], choice["num_envs"])
            kwargs = env_kwargs_for(simulator)
            entry = measure_end_to_end(cfg, tiles, kwargs, choice, replay, bench.end_to_end)
            end_to_end.append({"simulator": simulator, **entry})

    fidelity_runs = measure_fidelity(cfg, bench.fidelity) if bench.fidelity.enabled else []
    grid = int(cfg.landscape.grid_size)
    fidelity = next((f for f in fidelity_runs if f["grid_size"] == grid), fidelity_runs[0] if fidelity_runs else None)

    machine["load_average_end"] = _load_average()
    report = {
        "machine": machine,
        "landscape": {"source": cfg.landscape.source, "raster_dir": cfg.landscape.get("raster_dir"),
                      "grid_size": grid, "tiles": len(tiles), "train_tiles": len(landscapes.train),
                      "num_ignitions": int(cfg.scenario.num_ignitions),
                      "percentage_increment": float(cfg.env.percentage_increment)},
        "settings": OmegaConf.to_container(bench, resolve=True),
        "results": results,
        "learner": learner,
        "end_to_end": end_to_end,
        "recommended": recommended,
        "fidelity": None if fidelity is None else {**fidelity, "targets": FIDELITY_TARGETS},
        "fidelity_by_grid_size": fidelity_runs,
        "notes": notes_for(results, cores),
    }
    return report


def recommendation_record(report: dict, benchmark_json: Path) -> dict:
    """What ``parallel.num_envs=auto`` reads: the recommendation plus where and when it was measured."""
    return {**report["recommended"], "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "benchmark_json": str(benchmark_json.resolve()), "landscape": report["landscape"],
            "cpu_model": report["machine"]["cpu_model"]}


def benchmark_job(cfg: DictConfig) -> dict:
    """One benchmark inside one MLflow run: measure, write benchmark.json, the plot and the recommendation."""
    from firebreak_exp.tracking import Tracker, config_params, job_tags, run_name

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    tracker = Tracker(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.get("artifact_location"))
    tracker.start(run_name("benchmark"), job_tags({"run_kind": "benchmark"}))
    try:
        tracker.log_params(config_params(cfg))
        tracker.log_artifact(run_dir / ".hydra", ".hydra")
        import torch
        previous_onednn = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = onednn_for(cfg)   # as training sets it (trainer.deterministic)
        try:
            report = run_benchmark(cfg, run_dir)
        finally:
            torch.backends.mkldnn.enabled = previous_onednn
        json_path = write_json(report, run_dir / "benchmark.json")
        plot_path = plot_speedup(report, run_dir / "speedup.png")
        record = recommendation_record(report, json_path)
        write_json(record, run_dir / "recommended.json")
        if cfg.benchmark.recommendation_file:
            target = write_json(record, Path(cfg.benchmark.recommendation_file))
            log.info("recommendation written to %s (parallel.num_envs=auto reads it)", target)
        table = format_table(report)
        print(table, flush=True)
        (run_dir / "benchmark.txt").write_text(table + "\n")
        tracker.log_metrics(benchmark_metrics(report), step=0)
        tracker.set_tags({"recommended": f"{record['backend']} x {record['num_envs']}",
                          "cores": str(report["machine"]["cores"])})
        for path in (json_path, plot_path, run_dir / "recommended.json", run_dir / "benchmark.txt"):
            tracker.log_artifact(path)
    except BaseException as error:
        tracker.finish("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    tracker.finish("FINISHED")
    log.info("benchmark in %s; MLflow run %s in %s", run_dir, tracker.run_id, cfg.tracking.uri)
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark")
def main(cfg: DictConfig):
    from firebreak_exp.cli import check_inputs, exit_with_error, runtime_faults, user_errors
    try:
        cfg = validate_benchmark(cfg)
        check_inputs(cfg)
        return benchmark_job(cfg)
    except user_errors() + runtime_faults() as error:
        exit_with_error(error)


if __name__ == "__main__":
    from firebreak_exp.cli import launch
    launch(main)
