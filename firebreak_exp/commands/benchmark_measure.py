"""The benchmark's measurements: counted fire simulations, the machine, experience collection per backend,
the learner, end to end and simulator fidelity, and the recommendation derived from them."""
from __future__ import annotations

import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from firebreak_exp.vector.env import VectorizedFireEnv

log = logging.getLogger("firebreak_exp")

FIDELITY_TARGETS = {"speedup": 30.0, "burned_fraction_mae": 0.03, "plan_spearman": 0.9}
PROCESS_SPEEDUP_TARGET = 1.8


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


def load_average() -> Optional[list]:
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
            "load_average_start": load_average(), "sched_autogroup": _autogroup()}


# ---------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------

def evenly(items: Sequence, count: Optional[int]) -> list:
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
    from firebreak_exp.fire import SIMULATORS
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
        from firebreak_exp.rl.trainer import ParallelExperienceCollector

        self.backend, self.num_envs, self.workers, self.agent = backend, num_envs, workers, agent
        self.rng = np.random.default_rng(seed)
        started = time.perf_counter()
        self.vec_env = CountingVectorEnv(tiles, num_envs, method=backend, max_workers=workers,
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
    from firebreak_exp.rl.trainer import ParallelExperienceCollector
    with VectorizedFireEnv(tiles, 1, env_kwargs=env_kwargs) as vec_env:
        collector = ParallelExperienceCollector(vec_env, agent, replay, batch_size=batch_size,
                                                learning_starts=sys.maxsize, seed=seed)
        while len(replay) < batch_size:
            collector.collect_experiences(8)


def onednn_for(cfg: DictConfig) -> bool:
    """Whether training uses oneDNN convolutions: ``trainer.deterministic`` turns them off (see
    firebreak_exp.rl.parts.seed_everything), and the benchmark times what training runs."""
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
    from firebreak_exp.factory import make_agent

    thread_counts = [int(settings.threads)] if settings.threads else sorted({1, available_cores()})
    onednn, share = onednn_for(cfg), demonstration_share(cfg)
    marks = np.random.default_rng(int(cfg.seed)).random(len(replay)) < share
    modes = (onednn, not onednn) if settings.compare_onednn else (onednn,)
    settings_list = [(threads, mode, demos) for demos in ((False, True) if share > 0 else (False,))
                     for mode in modes for threads in thread_counts]
    previous, previous_onednn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    batch_size = int(cfg.agent.batch_size)
    rates = {setting: [] for setting in settings_list}
    try:
        agents = {setting: make_agent(cfg, obs_shape, num_threads=setting[0])
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
    from firebreak_exp.factory import make_agent
    from firebreak_exp.rl.trainer import ParallelExperienceCollector

    learner_threads = int(cfg.agent.num_threads) if cfg.agent.get("num_threads") else available_cores()
    previous = torch.get_num_threads()
    torch.set_num_threads(learner_threads)
    vec_env = CountingVectorEnv(tiles, choice["num_envs"], method=choice["backend"],
                                          max_workers=choice["max_workers"], env_kwargs=env_kwargs,
                                          share_fires=bool(cfg.parallel.share_fires))
    try:
        obs_shape = vec_env.single_observation_space.shape
        agent = make_agent(cfg, obs_shape, num_threads=learner_threads, epsilon_start=float(cfg.agent.epsilon_end))
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
    from firebreak_exp.fire import PyretechnicsSimulator, TravelTimeSimulator
    from firebreak_exp.fire.fidelity import compare_simulators

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
            tiles = evenly(build_landscapes(grid_cfg).heldout, per_grid(settings.max_tiles, index))
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
    """Most experiences/s; within ``tolerance`` of it, fewer environments, then sequential < thread < process <
    joblib."""
    top = max(r["experiences_per_s"] for r in rows)
    order = {"sequential": 0, "thread": 1, "process": 2, "joblib": 3, "dask": 4}
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
