"""``python -m firebreak_exp.plan``: plan fuel breaks on a whole landscape extract and write them for GIS.

Examples::

    python -m firebreak_exp.plan checkpoint=<checkpoint | run folder | MLflow run id> \\
        landscape=landfire landscape.raster_dir=../shared/data/landfire/worcester_vt budget_percent=5
    python -m firebreak_exp.plan method=flow landscape=landfire landscape.raster_dir=/data/lf
    python -m firebreak_exp.plan method=[policy,flow,random,domirank] checkpoint=<run> ...
    python -m firebreak_exp.plan method=[policy_search,flow_search] checkpoint=<run> ...   # decision-time search

``checkpoint`` resolves as in ``python -m firebreak_exp.evaluate`` (its training config is the base; the
groups and keys on the command line override it). The whole raster (or ``window``) is one grid (see
:mod:`firebreak_exp.planning.whole_landscape`); each method plans ``budget_percent`` % of its burnable cells (or
``budget_hectares``) on ``num_ignitions`` planning fires with the ``planning_simulator``, and every plan is
scored on the same ``scoring_ignitions`` fresh fires with the configured ``simulator``. The Hydra run folder
receives fuel_breaks.tif, burn_probability_untreated.tif, burn_probability_treated.tif (the input's CRS,
transform and nodata mask), fuel_breaks.geojson, plan.json and plan.png: in the folder itself for one method,
in ``<method>/`` sub-folders and a ``comparison.json`` for several, which are one MLflow parent run
(``run_kind=plan``) with a child run per method (:mod:`firebreak_exp.commands.plan_outputs` writes them).
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig, OmegaConf

from firebreak_exp.commands.archive import load_archive
from firebreak_exp.commands.cli import CONF_DIR, run_job
from firebreak_exp.commands.tracking import flatten, job_tags, tracked_run
from firebreak_exp.config import Config, register_command_schema, validate

log = logging.getLogger("firebreak_exp")


@dataclass
class PlanGreedySettings:
    exclude_ignitions: bool = MISSING           # planning ignition cells are not candidates
    max_candidates: Optional[int] = MISSING     # candidate cells simulated per batch (the most burned); None = all


@dataclass
class PlanConfig(Config):
    """The composed configuration of ``python -m firebreak_exp.plan``: the training groups plus these."""
    checkpoint: Optional[str] = MISSING      # checkpoint file, training run folder or MLflow run id (policy,
                                             # policy_search)
    checkpoint_file: str = MISSING           # checkpoint of a run folder / run id (falls back to last.pt)
    method: Any = MISSING                    # policy, policy_search, flow, flow_search, greedy, domirank, random,
                                             # or a list of them
    budget_percent: float = MISSING          # breaks, % of the burnable cells, in (0, 100)
    budget_hectares: Optional[float] = MISSING  # breaks in ha instead (cell area: cell_size^2 / 10,000 ha)
    num_ignitions: int = MISSING             # planning fires, drawn across the burnable cells
    scoring_ignitions: int = MISSING         # fresh scoring fires, drawn from another stream
    batch_percent: Optional[float] = MISSING  # breaks placed between fire updates, % of burnable cells;
                                              # null = env.percentage_increment
    planning_simulator: Optional[str] = MISSING  # simulator of the planning fires; null = `simulator`
    window: Optional[List[int]] = MISSING    # [row, col, height, width] cells: plan this part of the raster only
    plan_window: Optional[int] = MISSING     # cells: flow, policy, greedy and the searches plan window by window of
                                             # this size, each with env.num_ignitions fires; None = the whole grid
                                             # at once (not for the searches)
    window_budget: str = MISSING             # risk: windows share the budget by the burn probability of
                                             # risk_ignitions fires over the whole grid; burnable: by burnable cells
    risk_ignitions: int = MISSING            # untreated fires over the whole grid that measure the risk
    greedy: PlanGreedySettings = field(default_factory=PlanGreedySettings)


#: How windows share the budget (``window_budget``): by fire risk or by burnable cells.
WINDOW_BUDGETS = ("risk", "burnable")

PLAN_KEYS = register_command_schema("plan_schema", PlanConfig)


def methods_of(cfg) -> list:
    """``cfg.method`` as a list of method names (a name or a list of them)."""
    method = cfg.method
    names = [method] if isinstance(method, str) else list(method or [])
    return [str(name) for name in names]


def check_plan_values(cfg) -> None:
    """Range checks of the plan keys; ValueError names the key."""
    from firebreak_exp.fire import SIMULATORS
    from firebreak_exp.planning.whole_landscape import LEARNED_METHODS, METHODS, SEARCH_METHODS
    methods = methods_of(cfg)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods or len(set(methods)) != len(methods):
        raise ValueError(f"method={methods}: expected one or more distinct of {list(METHODS)}")
    for learned in LEARNED_METHODS:
        if learned in methods and cfg.checkpoint is None:
            raise ValueError(f"method={learned} needs checkpoint=<checkpoint file | training run folder | "
                             "MLflow run id>")
    if cfg.budget_hectares is None and not 0 < cfg.budget_percent < 100:
        raise ValueError(f"budget_percent={cfg.budget_percent}: expected a percentage of burnable cells in (0, 100)")
    if cfg.budget_hectares is not None and not cfg.budget_hectares > 0:
        raise ValueError(f"budget_hectares={cfg.budget_hectares}: expected a positive area in hectares")
    for key in ("num_ignitions", "scoring_ignitions", "risk_ignitions"):
        if cfg[key] < 1:
            raise ValueError(f"{key}={cfg[key]}: expected a positive integer")
    if cfg.batch_percent is not None and not 0 < cfg.batch_percent <= 100:
        raise ValueError(f"batch_percent={cfg.batch_percent}: expected a percentage of burnable cells in (0, 100]")
    if cfg.plan_window is not None and cfg.plan_window < 2:
        raise ValueError(f"plan_window={cfg.plan_window}: expected a window side of at least 2 cells, or null")
    searches = [m for m in methods if m in SEARCH_METHODS]
    if searches and cfg.plan_window is None:
        raise ValueError(f"plan_window=null: method {searches[0]} plans window by window only; expected a window "
                         "side such as the training tile size (25)")
    if cfg.window_budget not in WINDOW_BUDGETS:
        raise ValueError(f"window_budget={cfg.window_budget}: expected one of {list(WINDOW_BUDGETS)}")
    if cfg.planning_simulator is not None and cfg.planning_simulator not in SIMULATORS:
        raise ValueError(f"planning_simulator={cfg.planning_simulator}: expected one of {sorted(SIMULATORS)} or null")
    from firebreak_exp.planning.evaluation import check_planner_settings
    check_planner_settings(OmegaConf.select(cfg, "planners"))


# ---------------------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------------------

def _simulators(cfg, train_cfg, landscape, scenario) -> tuple:
    """(planning simulator, scoring simulator, scoring simulator's name) over the whole grid; one instance
    when both are the same kind."""
    from firebreak_exp.factory import simulator_name
    from firebreak_exp.fire import SIMULATORS
    scoring_name = simulator_name(train_cfg)
    factory = instantiate(OmegaConf.to_container(train_cfg.simulator, resolve=True))
    scoring = factory(tile=landscape.tile, scenario=scenario)
    planning_name = cfg.planning_simulator or scoring_name
    planning = scoring if planning_name == scoring_name else SIMULATORS[planning_name](landscape.tile, scenario)
    return planning, scoring, scoring_name


class WindowRisk:
    """The burn probability of ``cfg.risk_ignitions`` untreated fires over the whole grid, which windows share
    the budget by (``window_budget=risk``): simulated once per job, on first use; ``seconds`` it took."""

    def __init__(self, cfg, landscape, simulator, seed: int):
        self.cfg, self.landscape, self.simulator, self.seed = cfg, landscape, simulator, seed
        self.map, self.seconds = None, 0.0

    def __call__(self) -> Optional[np.ndarray]:
        from firebreak_exp.planning import whole_landscape as lp
        from firebreak_exp.planning.evaluation import PLANNING_STREAM, evaluation_rng
        if self.cfg.window_budget != "risk":
            return None
        if self.map is None:
            start = time.perf_counter()
            self.map = lp.burn_probability(self.simulator, self.landscape.tile, int(self.cfg.risk_ignitions),
                                           evaluation_rng(self.seed, PLANNING_STREAM, 2))
            self.seconds = time.perf_counter() - start
        return self.map


def _plan_one(method, cfg, train_cfg, landscape, simulator, scenario, num_breaks, planning, batch_percent, agent,
              seed, risk: WindowRisk) -> dict:
    """Plan with one method: ``{"cells", "batches", "windows", "seconds"}`` (in windows, the seconds include
    the risk fires' even when an earlier method of the job simulated them)."""
    from firebreak_exp.planning import whole_landscape as lp
    from firebreak_exp.planning.evaluation import PLANNER_STREAM, PLANNING_STREAM, build_planners, evaluation_rng
    from firebreak_exp.planning.planners import RandomPlanner, environment_class
    start = time.perf_counter()
    batches, windows = 1, 1
    if method == "random":
        cells = RandomPlanner().plan(landscape.tile, simulator, scenario, num_breaks, planning,
                                     evaluation_rng(seed, PLANNER_STREAM, 0, 0))
    elif method == "domirank":
        cells = instantiate(train_cfg.planners.domirank).plan(
            landscape.tile, simulator, scenario, num_breaks, planning, None)
    elif cfg.plan_window is None:
        cells, batches, _ = lp.plan_in_batches(landscape, simulator, scenario, num_breaks, planning,
                                               lp.batch_size(landscape.num_burnable, batch_percent),
                                               _scorer(method, cfg, agent), env_class=environment_class(
                                                   train_cfg.env._target_))
    else:
        start -= 0.0 if risk.map is None else risk.seconds
        size, fires = int(cfg.plan_window), int(train_cfg.env.num_ignitions)
        window_rng = evaluation_rng(seed, PLANNING_STREAM, 1)   # the same window fires for every method
        if method in lp.SEARCH_METHODS:
            planner = build_planners(train_cfg.planners, [method], agent)[method]
            cells, batches, windows = lp.search_in_windows(
                landscape, simulator, scenario, num_breaks, size, fires, planner, window_rng,
                lambda index: evaluation_rng(seed, PLANNER_STREAM, 1, index), risk(), progress=True)
        else:
            cells, batches, windows = lp.plan_in_windows(landscape, simulator, scenario, num_breaks, size, fires,
                                                         batch_percent, _scorer(method, cfg, agent), window_rng,
                                                         risk(), env_class=environment_class(train_cfg.env._target_))
    return {"cells": np.asarray(cells, np.int64), "batches": batches, "windows": windows,
            "seconds": time.perf_counter() - start}


def _scorer(method: str, cfg, agent):
    """``make_scorer`` of a method that places batches of breaks (:data:`~firebreak_exp.planning.whole_landscape.
    BATCHED_METHODS`)."""
    from firebreak_exp.planning import whole_landscape as lp
    if method == "flow":
        return lp.flow_scorer
    if method == "policy":
        return lp.PolicyScorer(agent)
    return lambda env: lp.greedy_scorer(env, cfg.greedy.max_candidates, cfg.greedy.exclude_ignitions)


def format_plan_table(records: list) -> str:
    """One row per method: breaks, burned area untreated and treated (ha, mean per fire), R [CI], seconds."""
    lines = [f"{'method':<14}{'breaks':>8}{'ha':>9}{'BA0 ha':>9}{'BA ha':>9}{'R':>8}{'95% CI':>18}"
             f"{'plan s':>8}{'score s':>9}"]
    for r in records:
        lo, hi = r["R_ci"]
        lines.append(f"{r['method']:<14}{r['break_cells']:>8d}{r['break_hectares']:>9.1f}"
                     f"{r['burned_area_untreated']['hectares']:>9.2f}{r['burned_area_treated']['hectares']:>9.2f}"
                     f"{r['R']:>8.4f}{f'[{lo:.4f}, {hi:.4f}]':>18}{r['plan_seconds']:>8.1f}"
                     f"{r['scoring_seconds']:>9.1f}")
    return "\n".join(lines)


def _metrics(record: dict, prefix: str = "") -> dict:
    return {f"{prefix}R": record["R"], f"{prefix}R_ci_low": record["R_ci"][0], f"{prefix}R_ci_high": record["R_ci"][1],
            f"{prefix}break_cells": record["break_cells"], f"{prefix}break_hectares": record["break_hectares"],
            f"{prefix}burned_fraction_untreated": record["burned_area_untreated"]["fraction"],
            f"{prefix}burned_fraction_treated": record["burned_area_treated"]["fraction"],
            f"{prefix}burned_hectares_untreated": record["burned_area_untreated"]["hectares"],
            f"{prefix}burned_hectares_treated": record["burned_area_treated"]["hectares"],
            f"{prefix}plan_seconds": record["plan_seconds"], f"{prefix}scoring_seconds": record["scoring_seconds"],
            f"{prefix}peak_rss_mb": record["peak_rss_mb"]}


COMPARED = ("R", "R_ci", "break_cells", "break_hectares", "burned_area_untreated", "burned_area_treated",
            "plan_seconds", "scoring_seconds", "planning")


def _log_child(cfg, parent_id: str, tags: dict, record: dict, folder: Path) -> None:
    """One method of a comparison as a child run of ``parent_id``: its metrics and output files."""
    child = instantiate(cfg.tracking)
    child.start(f"plan-{record['method']}", job_tags({**tags, "mlflow.parentRunId": parent_id}))
    try:
        child.log_params({"method": record["method"], "budget_percent": cfg.budget_percent,
                          "budget_hectares": cfg.budget_hectares})
        child.log_metrics(_metrics(record), 0)
        child.log_artifact(folder)
    except BaseException:
        child.finish("FAILED")
        raise
    child.finish("FINISHED")


def plan_job(cfg: DictConfig) -> dict:
    """Plan with every method, score, write the outputs into the Hydra run folder and log MLflow runs."""
    from firebreak_exp.commands import plan_outputs
    from firebreak_exp.commands.evaluate import load_agent, resolve_checkpoint, task_overrides, training_config
    from firebreak_exp.planning import whole_landscape as lp
    from firebreak_exp.planning.evaluation import PLANNING_STREAM, SCORING_STREAM, draw_ignitions, evaluation_rng

    methods = methods_of(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path.cwd()
    source, archived = None, None
    if cfg.checkpoint is not None:
        source = resolve_checkpoint(str(cfg.checkpoint), cfg.checkpoint_file, cfg.tracking.uri,
                                    run_dir / "training_run")
        archived = load_archive(source["config_path"])
    train_cfg = training_config(cfg, archived, task_overrides(), PLAN_KEYS)
    seed = int(train_cfg.seed)

    setup_start = time.perf_counter()
    landscape = lp.load_landscape(train_cfg.landscape, None if cfg.window is None else list(cfg.window))
    num_breaks = lp.budget_cells(landscape, cfg.budget_percent, cfg.budget_hectares)
    learned = any(m in lp.LEARNED_METHODS for m in methods)
    agent = load_agent(train_cfg, source["path"], landscape.tile.shape) if learned else None
    scenario = instantiate(OmegaConf.to_container(train_cfg.scenario, resolve=True))
    planning_sim, scoring_sim, scoring_name = _simulators(cfg, train_cfg, landscape, scenario)
    setup_seconds = time.perf_counter() - setup_start
    batch_percent = cfg.batch_percent if cfg.batch_percent is not None else float(train_cfg.env.percentage_increment)
    # windows place batch_percent % of each window's own burnable cells per batch (at least one)
    batch_cells = lp.batch_size(landscape.num_burnable, batch_percent) if cfg.plan_window is None else None
    planning = draw_ignitions(landscape.tile, cfg.num_ignitions, evaluation_rng(seed, PLANNING_STREAM, 0))
    scoring = draw_ignitions(landscape.tile, cfg.scoring_ignitions, evaluation_rng(seed, SCORING_STREAM, 0))
    chunk = 1 if scoring_name == "pyretechnics" else 16
    progress = scoring_name == "pyretechnics"
    log.info("%s: %d x %d cells, %d burnable; %d breaks, %s per batch; simulators built in %.1f s",
             landscape.source, *landscape.tile.shape, landscape.num_burnable, num_breaks,
             batch_cells if batch_cells is not None else f"{batch_percent} % of a window's burnable cells",
             setup_seconds)

    start = time.perf_counter()
    burned_untreated, before = lp.score_plan_fires(scoring_sim, scoring, None, chunk, progress, "untreated")
    untreated_seconds = time.perf_counter() - start

    common = {"landscape": {"source": landscape.source, "shape": list(landscape.tile.shape),
                            "window": None if cfg.window is None else list(cfg.window),
                            "cell_size_m": landscape.tile.cell_size, "crs": str(landscape.crs),
                            "burnable_cells": landscape.num_burnable,
                            "burnable_hectares": landscape.num_burnable * landscape.cell_hectares},
              "budget": {"percent": None if cfg.budget_hectares is not None else float(cfg.budget_percent),
                         "hectares": cfg.budget_hectares},
              "planning": {"ignitions": int(cfg.num_ignitions), "simulator": cfg.planning_simulator or scoring_name,
                           "batch_cells": batch_cells, "batch_percent": batch_percent,
                           "plan_window": cfg.plan_window,
                           "window_budget": None if cfg.plan_window is None else cfg.window_budget,
                           "risk_ignitions": None if cfg.plan_window is None or cfg.window_budget != "risk"
                           else int(cfg.risk_ignitions),
                           "ignitions_per_window": None if cfg.plan_window is None else int(train_cfg.env.num_ignitions)},
              "scoring": {"ignitions": int(cfg.scoring_ignitions), "simulator": scoring_name},
              "checkpoint": None if source is None else str(source["path"]), "seed": seed,
              "setup_seconds": setup_seconds}
    tags = {"run_kind": "plan", "method": ",".join(methods), "checkpoint": str(cfg.checkpoint)}
    records = []
    risk = WindowRisk(cfg, landscape, planning_sim, seed)
    with tracked_run(cfg.tracking, "plan-" + "-".join(methods), tags) as tracker:
        params = OmegaConf.to_container(train_cfg, resolve=True)
        params["plan"] = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                          for k in PLAN_KEYS}
        tracker.log_params(flatten(params))
        if (run_dir / ".hydra").is_dir():
            tracker.log_artifact(run_dir / ".hydra", ".hydra")
        for method in methods:
            planned = _plan_one(method, cfg, train_cfg, landscape, planning_sim, scenario, num_breaks, planning, batch_percent,
                                agent, seed, risk)
            breaks = np.zeros(landscape.tile.shape, bool)
            breaks.flat[planned["cells"]] = True
            start = time.perf_counter()
            burned_treated, after = lp.score_plan_fires(scoring_sim, scoring, breaks, chunk, progress, method)
            scoring_seconds = untreated_seconds + time.perf_counter() - start
            record = {**lp.plan_record(method, landscape, planned["cells"], burned_untreated, burned_treated),
                      **common, "plan_seconds": planned["seconds"], "scoring_seconds": scoring_seconds,
                      "peak_rss_mb": lp.peak_rss_mb()}
            record["planning"] = {**common["planning"], "batches": planned["batches"], "windows": planned["windows"]}
            folder = run_dir if len(methods) == 1 else run_dir / method
            paths = plan_outputs.write_plan_outputs(folder, landscape, breaks, before, after, record)
            records.append(record)
            log.info("%s: R %.4f [%.4f, %.4f], planned in %.1f s, scored in %.1f s", method, record["R"],
                     *record["R_ci"], record["plan_seconds"], record["scoring_seconds"])
            if len(methods) == 1:
                tracker.log_metrics(_metrics(record), 0)
                for path in paths:
                    tracker.log_artifact(path)
            else:
                _log_child(cfg, tracker.run_id, {**tags, "method": method}, record, folder)
                tracker.log_metrics(_metrics(record, f"{method}/"), 0)
        table = format_plan_table(records)
        if len(methods) > 1:
            comparison = {**common, "methods": {r["method"]: {k: r[k] for k in COMPARED} for r in records},
                          "peak_rss_mb": lp.peak_rss_mb()}
            tracker.log_artifact(plan_outputs.write_json(run_dir / "comparison.json", comparison))
        tracker.log_metrics({"peak_rss_mb": lp.peak_rss_mb(), "setup_seconds": setup_seconds}, 0)
    fires = (f"{cfg.num_ignitions} planning fires" if cfg.plan_window is None else
             f"{train_cfg.env.num_ignitions} planning fires per {cfg.plan_window} x {cfg.plan_window} window")
    print(f"Plans on {landscape.source} ({landscape.tile.shape[0]} x {landscape.tile.shape[1]} cells, "
          f"{landscape.num_burnable} burnable, {num_breaks} breaks = "
          f"{100.0 * num_breaks / landscape.num_burnable:.2f} %), {fires}, "
          f"scored on {cfg.scoring_ignitions} fresh fires ({scoring_name}); R = 1 - BA/BA0, bootstrap 95% CI "
          f"over the fires; BA in ha per fire")
    print(table)
    print(f"setup {setup_seconds:.1f} s, peak RSS {lp.peak_rss_mb():.0f} MiB; outputs in {run_dir}; "
          f"MLflow run {tracker.run_id}")
    sys.stdout.flush()
    return {"records": records, "run_id": tracker.run_id, "run_dir": str(run_dir)}


def validate_plan(cfg: DictConfig) -> DictConfig:
    """``cfg`` (without ``hydra``) merged into the plan schema, its values range-checked."""
    merged = validate(cfg, PlanConfig)
    check_plan_values(merged)
    return merged


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="plan")
def main(cfg: DictConfig):
    return run_job(plan_job, cfg, validator=validate_plan, preflight=None)
