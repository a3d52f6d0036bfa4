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
  simulator actually burns; an evaluation burns up to ``env.num_ignitions``), not estimated.
  Reported: the median over repeats of simulations/s and experiences/s, ``spread`` = (max - min) / median
  of the repeats' simulations/s (experiences/s when nothing burned), ``speedup_vs_sequential`` (simulations/s
  over the sequential backend's at the same num_envs) and ``efficiency`` = speedup / min(num_envs, cores).
  Each environment's simulators are built before timing (training amortizes them over many episodes).
* **Learner**: ``DQNAgent.update`` on batches of ``agent.batch_size`` sampled from the replay buffer that
  collection filled, timed separately with ``learner.threads`` torch threads (null: 1 and all cores), on
  batches without expert demonstrations and with the share a training run ends with (the margin loss).
* **End to end**: the recommended setting of the configured simulator (``end_to_end.simulators``: others
  too), collecting *with* learner updates (``trainer.train_frequency``), as a training run does.
* **Fidelity**: :func:`firebreak_exp.fire.fidelity.compare_simulators` (pyretechnics reference vs the
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

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import MISSING, DictConfig, OmegaConf

from firebreak_exp.commands.benchmark_measure import (FIDELITY_TARGETS, add_speedups, available_cores, evenly,
                                                      load_average, machine_info, measure_collection,
                                                      measure_end_to_end, measure_fidelity, measure_learner,
                                                      onednn_for, recommend, simulator_factories, top_up_replay,
                                                      worker_counts)
from firebreak_exp.commands.benchmark_report import benchmark_metrics, format_table, notes_for, plot_speedup, write_json
from firebreak_exp.commands.cli import CONF_DIR, run_job
from firebreak_exp.commands.tracking import config_params, tracked_run
from firebreak_exp.config import Config, register_command_schema, validate
from firebreak_exp.vector.backend import BACKENDS, resolve_backend
from firebreak_exp.vector.env import VectorizedFireEnv

log = logging.getLogger("firebreak_exp")


# ---------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------

@dataclass
class LearnerSettings:
    threads: Optional[int] = MISSING  # torch threads while timing updates; None = 1 and all cores
    warmup_updates: int = MISSING  # oneDNN builds a kernel per new convolution shape: untimed until built
    updates_per_repeat: int = MISSING
    repeats: int = MISSING
    compare_onednn: bool = MISSING  # also time the other oneDNN setting (what trainer.deterministic costs)


@dataclass
class EndToEndSettings:
    enabled: bool = MISSING  # time collection *with* learner updates at the recommended setting
    simulators: Optional[List[str]] = MISSING  # of benchmark.simulators; None = the configured simulator only
    warmup_steps: int = MISSING  # untimed vector steps (the learner's convolution kernels get built)
    steps: int = MISSING  # vector steps timed (extended until min_seconds)
    min_seconds: float = MISSING


@dataclass
class FidelitySettings:
    enabled: bool = MISSING
    grid_sizes: Optional[List[int]] = MISSING  # tile sizes; None = landscape.grid_size
    max_tiles: Any = MISSING  # held-out tiles (spread evenly): one
    ignitions_per_tile: Any = MISSING  # number, or one per grid size
    plan_ignitions: Any = MISSING  # of those, the fires scoring each plan (null: all)
    num_plans: int = MISSING  # fuel-break plans ranked by both simulators (pooled over tiles)
    budget_fraction: float = MISSING  # plan size, fraction of burnable cells
    seed: int = MISSING


@dataclass
class BenchmarkSettings:
    backends: List[str] = MISSING
    num_envs: List[int] = MISSING
    simulators: List[str] = MISSING
    max_workers: Optional[int] = MISSING  # workers of the thread/process/joblib backends; None = min(num_envs, cores)
    oversubscribe: bool = MISSING  # process backend: also one worker per environment when num_envs > cores
    max_tiles: Optional[int] = MISSING  # training tiles the environments draw from (spread evenly); None = all
    warmup_steps: int = MISSING  # untimed vector steps before the repeats
    repeats: int = MISSING
    steps_per_repeat: int = MISSING  # vector steps per timed repeat
    min_repeat_seconds: float = MISSING  # a repeat goes on (in steps_per_repeat chunks) until this long
    collector_threads: int = MISSING  # torch threads of the main process while collecting
    recommend_tolerance: float = MISSING  # fewer environments win when within this fraction of the best
    recommendation_file: Optional[str] = MISSING  # where num_envs=auto looks; None = do not write one
    env_overrides: Dict[str, Any] = MISSING  # per simulator name, env settings on top of ``env``
    learner: LearnerSettings = field(default_factory=LearnerSettings)
    end_to_end: EndToEndSettings = field(default_factory=EndToEndSettings)
    fidelity: FidelitySettings = field(default_factory=FidelitySettings)


@dataclass
class BenchmarkConfig(Config):
    """The composed configuration of ``python -m firebreak_exp.benchmark``: the training groups plus ``benchmark``."""
    benchmark: BenchmarkSettings = field(default_factory=BenchmarkSettings)


register_command_schema("benchmark_schema", BenchmarkConfig)


def validate_benchmark(cfg: Any) -> DictConfig:
    """Merge onto the typed schema (unknown keys and wrong types raise with their name) and range-check."""
    merged = validate(cfg, BenchmarkConfig)
    bench = merged.benchmark
    if not bench.backends:
        raise ValueError(f"benchmark.backends is empty: name at least one of {', '.join(BACKENDS)}")
    for backend in bench.backends:
        try:
            resolve_backend(backend)
        except ValueError as error:
            raise ValueError(f"benchmark.backends: {error}") from None
    if not bench.num_envs or any(n <= 0 for n in bench.num_envs):
        raise ValueError(f"benchmark.num_envs={list(bench.num_envs)}: expected positive integers")
    from firebreak_exp.fire import SIMULATORS
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

# The job
# ---------------------------------------------------------------------------------------------------------

def run_benchmark(cfg: DictConfig, run_dir: Path) -> dict:
    """Measure everything the module docstring lists; returns the report written to benchmark.json."""
    import torch
    from firebreak_exp.factory import build_landscapes, env_factory, make_agent, make_replay, simulator_name

    bench = cfg.benchmark
    cores = available_cores()
    machine = machine_info()
    landscapes = build_landscapes(cfg)
    tiles = evenly(landscapes.train, bench.max_tiles)
    base_kwargs = env_factory(cfg).keywords
    factories = simulator_factories(cfg, list(bench.simulators))

    def env_kwargs_for(simulator: str) -> dict:
        """The environments' keyword arguments with ``simulator`` and its ``benchmark.env_overrides``."""
        return {**base_kwargs, **bench.env_overrides.get(simulator, {}), "simulator_factory": factories[simulator]}
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
                    agent = make_agent(cfg, obs_shape, num_threads=int(bench.collector_threads),
                                       epsilon_start=float(cfg.agent.epsilon_end))
                    replay = make_replay(cfg, obs_shape, capacity=min(int(cfg.replay.capacity), 8192))
                configs = [(b, num_envs, w) for b in backends for w in worker_counts(b, num_envs, bench, cores)]
                log.info("collecting with %s, %d envs: %s", simulator, num_envs,
                         ", ".join(f"{b} ({w} workers)" for b, _, w in configs))
                for row in measure_collection(tiles, kwargs, configs, agent, replay, bench, seed, batch_size,
                                              bool(cfg.parallel.share_fires)):
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

    machine["load_average_end"] = load_average()
    report = {
        "machine": machine,
        "landscape": {"source": cfg.landscape.source, "raster_dir": cfg.landscape.get("raster_dir"),
                      "grid_size": grid, "tiles": len(tiles), "train_tiles": len(landscapes.train),
                      "num_ignitions": int(cfg.env.num_ignitions),
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
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with tracked_run(cfg.tracking, "benchmark", {"run_kind": "benchmark"}) as tracker:
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
    log.info("benchmark in %s; MLflow run %s in %s", run_dir, tracker.run_id, cfg.tracking.uri)
    return report


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="benchmark")
def main(cfg: DictConfig):
    return run_job(benchmark_job, cfg, validator=validate_benchmark)
