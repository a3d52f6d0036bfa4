"""``python -m firebreak_exp.evaluate``: a trained policy against baselines on held-out tiles, tracked in MLflow.

Examples::

    python -m firebreak_exp.evaluate checkpoint=outputs/runs/<date_time>/checkpoints/best.pt
    python -m firebreak_exp.evaluate checkpoint=<MLflow run id> simulator=travel_time budgets=[5]
    python -m firebreak_exp.evaluate checkpoint=null experiment=smoke methods=[no_treatment,random,domirank]

``checkpoint`` is a checkpoint file, a training run folder (``<run>/checkpoints/<checkpoint_file>``), or the
id of a training run in the tracking store (``checkpoints/<checkpoint_file>`` and ``.hydra/config.yaml``
are downloaded from its artifacts). The training run's config is the base of the evaluation; groups and
keys given on the command line override it. Every method plans on the held-out tiles at every budget
(% of burnable cells) and every plan is scored on the same fresh ignitions per tile with the configured
simulator (see :mod:`firebreak_exp.planning.evaluation`). The Hydra run folder receives ``evaluation.json``
(``{"budgets": [...], "methods": {name: {"R", "R_ci", "burned_fraction", "plan_seconds"}}, ...}``) and
``plots/`` (R against budget, fuel breaks per method, burn probability before/after per method); an MLflow
run tagged ``run_kind=evaluation`` (and ``training_run_id`` when the training run is found) logs them.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import MISSING, DictConfig, OmegaConf

from firebreak_exp.commands.archive import check_buildable, load_archive
from firebreak_exp.commands.cli import CONF_DIR, run_job
from firebreak_exp.commands.tracking import flatten, tracked_run
from firebreak_exp.config import Config, register_command_schema, validate

log = logging.getLogger("firebreak_exp")

TRAINING_GROUPS = ("landscape", "scenario", "simulator", "env", "parallel", "agent", "trainer")
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class GreedySettings:
    simulator: Optional[str] = MISSING       # simulator of the greedy and flow searches; None = the scoring one
    num_ignitions: Optional[int] = MISSING   # planning ignitions for greedy; None = env.num_ignitions


@dataclass
class CeilingSettings:
    num_ignitions: Optional[int] = MISSING   # planning ignitions of local_search; None = env.num_ignitions


@dataclass
class EvaluateConfig(Config):
    """The composed configuration of ``python -m firebreak_exp.evaluate``: the training groups plus these."""
    checkpoint: Optional[str] = MISSING      # checkpoint file, training run folder or MLflow run id; None = baselines
    checkpoint_file: str = MISSING           # checkpoint of a run folder / run id (falls back to last.pt)
    budgets: List[float] = MISSING           # % of burnable cells
    num_ignitions: int = MISSING             # scoring ignitions per tile
    random_seeds: int = MISSING              # random plans averaged per tile
    methods: List[str] = MISSING             # names of ``planners`` to run
    max_tiles: Optional[int] = MISSING       # cap on held-out tiles
    split: str = MISSING                     # tiles evaluated: heldout (reporting) or train (tuning)
    scoring_simulator: Optional[str] = MISSING  # simulator scoring the plans (e.g. pyretechnics); None = the planning one
    progress: bool = MISSING                 # progress bar over the plans scored
    example_budget: float = MISSING          # budget shown in the map plots
    greedy: GreedySettings = field(default_factory=GreedySettings)
    ceiling: CeilingSettings = field(default_factory=CeilingSettings)


EVALUATION_KEYS = register_command_schema("evaluate_schema", EvaluateConfig)


# ---------------------------------------------------------------------------------------------------------
# Checkpoint and training config
# ---------------------------------------------------------------------------------------------------------

def check_evaluation_values(cfg) -> None:
    """Range checks of the evaluation keys; ValueError names the key."""
    if not cfg.budgets:
        raise ValueError("budgets=[]: expected at least one budget (% of burnable cells)")
    for b in cfg.budgets:
        if not 0 < b <= 100:
            raise ValueError(f"budgets: {b} is not a percentage in (0, 100]")
    for key in ("num_ignitions", "random_seeds"):
        if cfg[key] < 1:
            raise ValueError(f"{key}={cfg[key]}: expected a positive integer")
    if cfg.max_tiles is not None and cfg.max_tiles < 1:
        raise ValueError(f"max_tiles={cfg.max_tiles}: expected a positive integer or null")
    unknown = [m for m in cfg.methods if m not in cfg.planners]   # the evaluation's own planners
    if unknown or not cfg.methods:
        raise ValueError(f"methods={list(cfg.methods)}: unknown {unknown}; expected some of {sorted(cfg.planners)}")
    from firebreak_exp.fire import SIMULATORS
    for key in ("greedy.simulator", "scoring_simulator"):
        name = OmegaConf.select(cfg, key)
        if name is not None and name not in SIMULATORS:
            raise ValueError(f"{key}={name}: expected one of {sorted(SIMULATORS)} or null")
    from firebreak_exp.planning.evaluation import check_planner_settings
    check_planner_settings(OmegaConf.select(cfg, "planners"))


def resolve_checkpoint(spec: str, checkpoint_file: str, tracking_uri: str, download_dir: Path) -> dict:
    """Where the checkpoint and its training config are: ``{"path", "config_path", "run_dir", "run_id"}``.

    ``spec`` is a checkpoint file (its run folder is the parent of ``checkpoints/``), a run folder, or an
    MLflow run id (artifacts downloaded into ``download_dir``; ``checkpoint_file`` first, then last.pt).
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / checkpoint_file if (path / "checkpoints").is_dir() else path / checkpoint_file
        if not path.is_file():
            path = path.with_name("last.pt")
    if path.is_file():
        path = path.resolve()
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        config_path = run_dir / ".hydra" / "config.yaml"
        if not config_path.is_file():
            raise FileNotFoundError(f"checkpoint {path}: its training config {config_path} is missing")
        return {"path": path, "config_path": config_path, "run_dir": run_dir, "run_id": None}
    if not RUN_ID.match(spec):
        raise FileNotFoundError(f"checkpoint={spec}: no such file or folder, and not an MLflow run id")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        client.get_run(spec)
    except MlflowException as error:
        raise FileNotFoundError(f"checkpoint={spec}: no such run in the tracking store {tracking_uri}") from error
    download_dir.mkdir(parents=True, exist_ok=True)
    local = None
    for name in dict.fromkeys((checkpoint_file, "last.pt")):
        try:
            local = Path(client.download_artifacts(spec, f"checkpoints/{name}", str(download_dir)))
            break
        except (MlflowException, OSError):
            continue
    if local is None:
        raise FileNotFoundError(f"MLflow run {spec} has no artifact checkpoints/{checkpoint_file} (nor last.pt)")
    try:
        config_path = Path(client.download_artifacts(spec, ".hydra/config.yaml", str(download_dir)))
    except (MlflowException, OSError) as error:
        raise FileNotFoundError(f"MLflow run {spec} has no artifact .hydra/config.yaml") from error
    return {"path": local, "config_path": config_path, "run_dir": None, "run_id": spec}


def find_training_run(tracking_uri: str, run_dir: Path, max_runs: int = 200) -> Optional[str]:
    """The id of the training run whose Hydra output folder is ``run_dir`` (a ``run_dir`` tag, else the
    ``hydra.runtime.output_dir`` of its ``.hydra/hydra.yaml`` artifact), newest first; None if not found."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return None
    runs = client.search_runs(experiments, "tags.run_kind = 'train'", max_results=max_runs,
                              order_by=["attributes.start_time DESC"])
    target = Path(run_dir).resolve()
    for run in runs:
        tagged = run.data.tags.get("run_dir")
        if tagged and Path(tagged).resolve() == target:
            return run.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        for i, run in enumerate(runs):
            try:
                local = client.download_artifacts(run.info.run_id, ".hydra/hydra.yaml", str(Path(tmp) / str(i)))
                output_dir = OmegaConf.load(local).hydra.runtime.output_dir
            except (MlflowException, OSError, AttributeError, KeyError, ValueError):
                continue
            if output_dir and Path(str(output_dir)).resolve() == target:
                return run.info.run_id
    return None


def task_overrides() -> list:
    """The overrides given on the command line (empty outside a Hydra app)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def training_config(cfg: DictConfig, archived: Optional[DictConfig], overrides: List[str],
                    own_keys: tuple = EVALUATION_KEYS) -> DictConfig:
    """The config the policy and baselines run under: the archived training config (or ``cfg``'s training
    part without one) with the command line's training groups and keys taken from ``cfg``; ``tracking``
    always comes from ``cfg``; the command's ``own_keys`` are left out. Validated against the training schema
    and checked by :func:`~firebreak_exp.commands.archive.check_buildable`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    own = OmegaConf.to_container(cfg, resolve=False)
    base = own if archived is None else OmegaConf.to_container(archived, resolve=False)
    base = {k: v for k, v in base.items() if k not in own_keys and k != "hydra"}
    base = OmegaConf.create(base)
    if archived is not None:
        add_new_planner_settings(base, own)
        for override in OverridesParser.create().parse_overrides(overrides=overrides):
            key = override.key_or_group
            head = key.split(".")[0]
            if override.is_delete() or head in own_keys or head in ("tracking", "hydra"):
                continue
            if head == "experiment":
                log.warning("ignoring %s: the checkpoint's training config is the base of the evaluation",
                            override.input_line)
                continue
            if "." not in key and key in TRAINING_GROUPS:
                base[key] = OmegaConf.create(own[key])
            elif head in own:
                OmegaConf.update(base, key, OmegaConf.select(cfg, key), merge=False, force_add=True)
    base.tracking = OmegaConf.create(own["tracking"])
    base = validate(base)
    check_buildable(base)
    return base


def add_new_planner_settings(base: DictConfig, own: dict) -> None:
    """Give each planner of an archived config ``base`` the settings it lacks from the command's own
    ``planners`` (the same ``_target_``), and the planners it lacks whole: a run archived before a planner or
    one of its settings existed plans with the default, and the log says so."""
    for name, planner in own["planners"].items():
        archived = base.planners.get(name)
        if archived is None:
            base.planners[name] = planner
            log.info("planners.%s is not in the archived config: the default", name)
            continue
        if archived.get("_target_") != planner.get("_target_"):
            continue
        for key, value in planner.items():
            if key not in archived:
                archived[key] = value
                log.info("planners.%s.%s is not in the archived config: the default %s", name, key, value)


def load_agent(train_cfg, checkpoint_path: Path, grid_shape: tuple):
    """A DQNAgent built with the training config's agent settings and the checkpoint's Q-network weights."""
    from firebreak_exp.observation import CHANNELS
    from firebreak_exp.factory import make_agent
    from firebreak_exp.rl.checkpoint import CheckpointError, load_checkpoint

    state = load_checkpoint(checkpoint_path, with_replay=False)
    agent = make_agent(train_cfg, (len(CHANNELS), *grid_shape))
    try:
        agent.q_network.load_state_dict(state["agent"]["q_network"])
        agent.target_network.load_state_dict(state["agent"]["target_network"])
    except (RuntimeError, KeyError) as error:
        raise CheckpointError(f"checkpoint {checkpoint_path} does not fit the agent of its training config: "
                              f"{str(error).splitlines()[0]}") from error
    return agent


# ---------------------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------------------

def evaluate_job(cfg: DictConfig) -> dict:
    """Evaluate, write ``evaluation.json`` and plots into the Hydra run folder, log an MLflow run."""
    from firebreak_exp.factory import env_factory
    from firebreak_exp.fire import SIMULATORS
    from firebreak_exp.planning.evaluation import (build_planners, compare_planners, format_table, heldout_tiles,
                                                   summarize)
    from firebreak_exp.plots import plot_method_burn_probability, plot_method_fuel_breaks, plot_r_against_budget

    check_evaluation_values(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path.cwd()
    source = None
    archived = None
    if cfg.checkpoint is not None:
        source = resolve_checkpoint(str(cfg.checkpoint), cfg.checkpoint_file, cfg.tracking.uri,
                                    run_dir / "training_run")
        archived = load_archive(source["config_path"])
    train_cfg = training_config(cfg, archived, task_overrides())
    tiles = heldout_tiles(train_cfg, cfg.max_tiles, cfg.split)
    if not tiles:
        raise ValueError("the landscape has no held-out tiles (landscape.heldout_fraction=0?)")
    kwargs = env_factory(train_cfg).keywords
    agent = load_agent(train_cfg, source["path"], tiles[0].shape) if source else None
    planners = build_planners(train_cfg.planners, cfg.methods, agent)
    training_run_id = None
    if source is not None:
        training_run_id = source["run_id"] or find_training_run(cfg.tracking.uri, source["run_dir"])

    tags = {"run_kind": "evaluation", "checkpoint": str(cfg.checkpoint)}
    if source is not None:
        tags["checkpoint_path"] = str(source["path"])
        if source["run_dir"] is not None:
            tags["training_run_dir"] = str(source["run_dir"])
    if training_run_id:
        tags["training_run_id"] = training_run_id
    with tracked_run(cfg.tracking, "evaluate", tags) as tracker:
        params = OmegaConf.to_container(train_cfg, resolve=True)
        params["evaluation"] = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k])
                                else cfg[k] for k in EVALUATION_KEYS}
        tracker.log_params(flatten(params))
        if (run_dir / ".hydra").is_dir():
            tracker.log_artifact(run_dir / ".hydra", ".hydra")
        greedy_sim = SIMULATORS[cfg.greedy.simulator] if cfg.greedy.simulator else None
        raw = compare_planners(
            tiles, planners, kwargs["simulator_factory"], kwargs["scenario"], list(cfg.budgets),
            seed=int(train_cfg.seed), num_scoring_ignitions=int(cfg.num_ignitions),
            num_planning_ignitions=int(kwargs["num_ignitions"]), random_seeds=int(cfg.random_seeds),
            planner_simulators={name: greedy_sim for name in ("greedy", "flow", "local_search", "hindsight")},
            planner_ignitions={"greedy": cfg.greedy.num_ignitions, "local_search": cfg.ceiling.num_ignitions},
            example_budget=float(cfg.example_budget),
            scoring_factory=SIMULATORS[cfg.scoring_simulator] if cfg.scoring_simulator else None,
            progress=bool(cfg.progress))
        summary = summarize(raw)
        result = {**summary, "checkpoint": None if source is None else str(source["path"]),
                  "training_run_id": training_run_id, "num_tiles": len(tiles), "tiles": raw["tiles"],
                  "split": cfg.split,
                  "num_ignitions": int(cfg.num_ignitions), "simulator": str(train_cfg.simulator._target_),
                  "scoring_simulator": cfg.scoring_simulator, "grid_size": list(tiles[0].shape),
                  "burned_fraction_untreated": raw["untreated"].tolist(),
                  "burned_fraction_per_tile": {m: b.tolist() for m, b in raw["burned_fraction"].items()},
                  "num_breaks": raw["num_breaks"].tolist()}
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "evaluation.json").write_text(json.dumps(result, indent=2))
        plots = run_dir / "plots"
        plot_r_against_budget(summary, plots / "r_against_budget.png")
        plot_method_fuel_breaks(raw["example"], plots / "fuel_breaks_by_method.png")
        plot_method_burn_probability(raw["example"], plots / "burn_probability_by_method.png")
        metrics = {}
        for name, method in summary["methods"].items():
            for j, b in enumerate(summary["budgets"]):
                suffix = f"budget_{b:g}"
                metrics[f"{name}/R_{suffix}"] = method["R"][j]
                metrics[f"{name}/R_ci_low_{suffix}"] = method["R_ci"][j][0]
                metrics[f"{name}/R_ci_high_{suffix}"] = method["R_ci"][j][1]
                metrics[f"{name}/burned_fraction_{suffix}"] = method["burned_fraction"][j]
                metrics[f"{name}/plan_seconds_{suffix}"] = method["plan_seconds"][j]
        tracker.log_metrics(metrics, 0)
        tracker.log_artifact(run_dir / "evaluation.json")
        tracker.log_artifact(plots, "plots")
    table = format_table(summary)
    scorer = cfg.scoring_simulator or train_cfg.simulator._target_.rsplit('.', 1)[-1]
    print(f"{'Held-out' if cfg.split == 'heldout' else 'Training-tile'} evaluation on {len(tiles)} tiles, "
          f"{cfg.num_ignitions} scoring ignitions each (scored by {scorer}); R = 1 - BA/BA0, bootstrap 95% CI "
          "over tiles")
    print(table)
    print(f"evaluation.json and plots in {run_dir}; MLflow run {tracker.run_id}"
          + (f" (training run {training_run_id})" if training_run_id else ""))
    sys.stdout.flush()
    return result


def validate_evaluation(cfg: DictConfig) -> DictConfig:
    """``cfg`` (without ``hydra``) merged into the evaluation schema, its values range-checked."""
    return validate(cfg, EvaluateConfig)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def main(cfg: DictConfig):
    return run_job(evaluate_job, cfg, validator=validate_evaluation, preflight=None)
