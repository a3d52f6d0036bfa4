"""``resume=auto``: continue the run folder's own run when it has a readable checkpoint, else start fresh.

"The run folder" is the job's Hydra output folder, so re-running a command after a kill continues it only
when the folder is the same: pin it (``hydra.run.dir=outputs/runs/<name>``), as a sweep's jobs are pinned
by ``hydra.sweep.dir`` and a requeued submitit job is by its launcher. Jobs launched by submitit use
``resume=auto`` unless told otherwise, so a requeued job continues where it stopped, in the same MLflow run.
"""
import os
from pathlib import Path
from typing import Optional

RUN_ID_FILE = ".mlflow_run_id"


def effective_resume(resume: Optional[str]) -> Optional[str]:
    """``resume`` as given; ``auto`` when not given inside a submitit job (so that a requeue continues)."""
    return resume if resume is not None or not os.environ.get("SUBMITIT_EXECUTOR") else "auto"


def auto_resume_run(run_dir: Path, params: dict, tracking_uri: str):
    """The MLflow run (an ``mlflow.entities.Run``) that ``resume=auto`` continues in ``run_dir``, or None to
    start fresh.

    A folder with a run id and a readable checkpoint is continued; its MLflow run must hold the same
    ``params`` (the parameters a fresh run logs; ValueError naming the first key that differs, so a changed command never continues an old run).
    """
    from firebreak_exp.rl.trainer import newest_readable_checkpoint
    id_file = run_dir / RUN_ID_FILE
    if not id_file.is_file() or newest_readable_checkpoint(run_dir / "checkpoints") is None:
        return None
    run_id = id_file.read_text().strip()
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    from firebreak_exp.commands.tracking import MAX_PARAM_LENGTH
    try:
        run = MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    except MlflowException as error:
        raise ValueError(f"resume=auto: {run_dir} holds MLflow run {run_id}, which {tracking_uri} (tracking.uri) "
                         f"does not have; choose another hydra.run.dir or the store of that run") from error
    logged = run.data.params
    wanted = {key: str(value)[:MAX_PARAM_LENGTH] for key, value in params.items() if key != "resume"}
    for key in sorted(set(wanted) | set(logged) - {"resume"}):
        if wanted.get(key) != logged.get(key):
            raise ValueError(f"resume=auto: {run_dir} holds a run with {key}={logged.get(key)}, but this command "
                             f"sets {key}={wanted.get(key)}; choose another hydra.run.dir, or resume={run_dir} to "
                             f"continue that run with its own config")
    return run
