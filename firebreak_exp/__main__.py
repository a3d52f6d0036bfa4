"""``python -m firebreak_exp``: train a fuel-break DQN agent, tracked in MLflow.

Examples::

    python -m firebreak_exp                                   # built-in synthetic landscape
    python -m firebreak_exp experiment=smoke                  # well under a minute
    python -m firebreak_exp parallel.num_envs=4,8 -m          # sweep: one parent run, a child per job
    python -m firebreak_exp --config-path <run>/.hydra --config-name config   # re-run an archived run
"""
import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from firebreak_exp.cli import run_job
from firebreak_exp.config import register_configs

log = logging.getLogger("firebreak_exp")
register_configs()


def train_job(cfg: DictConfig) -> dict:
    """One training job inside an MLflow run; the config archive is logged first."""
    from firebreak_exp.tracking import Tracker, config_params, job_tags, run_name
    from firebreak_exp.training import ParallelFuelBreakTrainer
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    tracker = Tracker(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.get("artifact_location"))
    tracker.start(run_name("train"), job_tags({"run_kind": "train",
                                               "experiment_name": str(cfg.experiment_name or "default")}))
    try:
        tracker.log_params(config_params(cfg))
        tracker.log_artifact(run_dir / ".hydra", ".hydra")
        summary = ParallelFuelBreakTrainer(cfg, run_dir, tracker).train()
    except BaseException as error:
        tracker.finish("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    tracker.finish("FINISHED")
    log.info("MLflow run %s in %s", tracker.run_id, cfg.tracking.uri)
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig):
    return run_job(train_job, cfg)


if __name__ == "__main__":
    main()
