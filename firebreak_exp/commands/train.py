"""``python -m firebreak_exp``: train a fuel-break DQN agent, tracked in MLflow.

Examples::

    python -m firebreak_exp                                   # built-in synthetic landscape
    python -m firebreak_exp experiment=smoke                  # well under a minute
    python -m firebreak_exp parallel.num_envs=4,8 -m          # sweep: one parent run, a child per job
    python -m firebreak_exp --config-path <run>/.hydra --config-name config   # re-run an archived run
    python -m firebreak_exp resume=<run folder or MLflow run id>              # continue a killed run
    python -m firebreak_exp hydra.run.dir=outputs/runs/a resume=auto          # continue a/ if it has a checkpoint
    python -m firebreak_exp +seed_config=parallel_config.json                 # the seed's JSON settings

The archived config (``<run>/.hydra/config.yaml``) is the config the run used, resolved
(:mod:`~firebreak_exp.commands.archive`): ``parallel.num_envs=auto`` as the number it chose, absolute paths.
"""
import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from firebreak_exp.commands.archive import check_buildable, load_archive, resolved_for_archive, write_archive
from firebreak_exp.commands.auto_resume import RUN_ID_FILE, auto_resume_run, effective_resume
from firebreak_exp.commands.cli import CONF_DIR, run_job
from firebreak_exp.commands.seed_config import apply_seed_config
from firebreak_exp.commands.tracking import config_params, tracked_run
from firebreak_exp.config import register_configs, validate
from firebreak_exp.interrupt import graceful_stop

log = logging.getLogger("firebreak_exp")
register_configs()


def locate_run(resume: str, tracking_uri: str) -> tuple[Path, str]:
    """The run folder and MLflow run id of ``resume`` (a run folder or an MLflow run id)."""
    folder = Path(resume)
    if folder.is_dir():
        id_file = folder / RUN_ID_FILE
        if not id_file.exists():
            raise FileNotFoundError(f"resume={resume}: {id_file} is missing; is this a firebreak_exp run folder?")
        return folder.resolve(), id_file.read_text().strip()
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    try:
        run = MlflowClient(tracking_uri=tracking_uri).get_run(resume)
    except MlflowException as error:
        raise ValueError(f"resume={resume}: neither a run folder nor a run id in {tracking_uri}") from error
    return Path(run.data.tags["run_dir"]), run.info.run_id


def train_job(cfg: DictConfig) -> dict:
    """One training job inside an MLflow run; the config archive is logged first, then the run's parts (vector
    env, agent, replay, end-of-run evaluation, expert memories) are built from the config and handed to the
    trainer."""
    from firebreak_exp.rl.parts import build_training
    from firebreak_exp.rl.trainer import ParallelFuelBreakTrainer
    with graceful_stop():   # SIGINT/SIGTERM from here on end in a checkpoint and one line (cli.run_job)
        resume_id, resume = None, effective_resume(cfg.resume)
        run_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
        params = None
        if resume and resume != "auto":
            run_dir, resume_id = locate_run(resume, cfg.tracking.uri)
            cfg = load_archive(run_dir / ".hydra" / "config.yaml")
        else:
            requested_num_envs = cfg.parallel.num_envs
            cfg = resolved_for_archive(cfg)
            params = {**config_params(cfg), "parallel.num_envs_requested": requested_num_envs}
            if resume == "auto":
                previous = auto_resume_run(run_dir, params, cfg.tracking.uri)
                if previous is not None and previous.info.status == "FINISHED":
                    log.info("resume=auto: %s holds the finished MLflow run %s; nothing to do", run_dir,
                             previous.info.run_id)
                    return None
                resume_id = previous.info.run_id if previous is not None else None
            write_archive(cfg, run_dir)
        tags = {"run_kind": "train", "experiment_name": str(cfg.experiment_name or "default"), "run_dir": str(run_dir)}
        with tracked_run(cfg.tracking, "train", tags, run_id=resume_id) as tracker:
            if resume_id is None:
                (run_dir / RUN_ID_FILE).write_text(tracker.run_id)
                tracker.log_params(params)
                tracker.log_artifact(run_dir / ".hydra", ".hydra")
            resuming = resume_id is not None
            trainer = ParallelFuelBreakTrainer(cfg, run_dir, tracker, resume=resuming,
                                               parts=build_training(cfg, resume=resuming))
            summary = trainer.train()
    log.info("MLflow run %s in %s", tracker.run_id, cfg.tracking.uri)
    return summary


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig):
    return run_job(train_job, cfg, validator=validate_training)


def validate_training(cfg: DictConfig) -> DictConfig:
    """The training schema's check of ``cfg`` (with a ``+seed_config=FILE``'s settings applied first), and
    that every key has a value and every ``_target_`` imports (e.g. of an archive re-run by --config-path)."""
    cfg = validate(apply_seed_config(cfg))
    check_buildable(cfg)
    return cfg
