"""What every command does around its job: validate the config, check its inputs, and report bad input or
a known runtime fault as one clear line (:mod:`~firebreak_exp.commands.errors`), with ``-m`` accepted
anywhere among the overrides."""
import sys
from typing import Callable, Optional

from hydra.errors import InstantiationException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from firebreak_exp.commands.conf import CONF_DIR, register_help_resolver  # CONF_DIR: for the commands
from firebreak_exp.commands.errors import JobError, exit_code, exit_with_error, log, message, runtime_faults
from firebreak_exp.commands.hydra_errors import report_composition_errors
from firebreak_exp.commands.store_lock import StoreLockedError
from firebreak_exp.commands.tracking import TrackingUnavailableError
from firebreak_exp.config import validate
from firebreak_exp.interrupt import Interrupted
from firebreak_exp.landscape import LandscapeError
from firebreak_exp.vector.backend import ClusterUnavailableError, resolve_backend

MULTIRUN_FLAGS = ("-m", "--multirun")
register_help_resolver()


def multirun_flag_first(argv: list) -> list:
    """``argv`` with ``-m``/``--multirun`` moved before the overrides. Hydra's parser reads the overrides as one
    run of positional arguments, so ``parallel.num_envs=4,8 -m seed=0,1`` would stop with "unrecognized
    arguments"; with the flag first it is ``-m parallel.num_envs=4,8 seed=0,1``."""
    return argv[:1] + [a for a in argv[1:] if a in MULTIRUN_FLAGS] + [a for a in argv[1:] if a not in MULTIRUN_FLAGS]


def launch(main: Callable[[], object]) -> None:
    """Run a command's ``@hydra.main`` function with ``-m`` accepted anywhere among its overrides, and the
mistakes Hydra finds in them reported as one line (:mod:`~firebreak_exp.commands.hydra_errors`)."""
    sys.argv[:] = multirun_flag_first(sys.argv)
    report_composition_errors()
    try:
        main()
    except Interrupted as stop:   # a sweep stopped between its jobs (a job's own stop ends in run_job)
        print(stop.line(), file=sys.stderr, flush=True)
        sys.exit(stop.exit_code)


def user_errors() -> tuple:
    """Exception types that mean bad input (config, rasters, checkpoints, unreachable services), not a bug."""
    types = (LandscapeError, OmegaConfBaseException, ValueError, FileNotFoundError, TrackingUnavailableError,
             ClusterUnavailableError, StoreLockedError)
    checkpoint = sys.modules.get("firebreak_exp.rl.checkpoint")  # not imported: none raised (and torch stays unloaded)
    return types + ((checkpoint.CheckpointError,) if checkpoint is not None else ())


def _in_multirun_job() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def check_inputs(cfg: DictConfig) -> None:
    """Fail before any MLflow run exists: the parallel backend, and the landscapes (read and tiled once,
    memoised, so the job's own build costs nothing). Skipped for ``resume=`` (the archived config is used)."""
    if cfg.get("resume") and cfg.resume != "auto":
        return
    parallel = cfg.get("parallel")
    if parallel is not None and parallel.get("backend") is not None:
        try:
            backend = resolve_backend(parallel.backend)
        except ValueError as error:
            raise ValueError(f"parallel.backend={parallel.backend}: {error}") from None
        if parallel.get("address") and backend != "dask":
            raise ValueError(f"parallel.address={parallel.address}: only the dask backend uses an address "
                             f"(add parallel=dask), not {parallel.backend!r}")
    if cfg.get("landscape") is not None and cfg.landscape.get("_target_"):
        from firebreak_exp.factory import build_landscapes
        try:
            build_landscapes(cfg)
        except InstantiationException as error:  # hydra's wrapper around the LandscapeError itself
            raise (error.__cause__ or error) from None


def run_job(job: Callable[[DictConfig], object], cfg: DictConfig,
            validator: Callable[[DictConfig], DictConfig] = validate,
            preflight: Optional[Callable[[DictConfig], None]] = check_inputs):
    """Validate ``cfg`` (``validator``: against the command's typed schema), check its inputs
    (``preflight``) and run ``job``; bad input exits 2, a dead worker exits 1 and a stop signal 128 + its
    number, each with one line on stderr (in a multirun job: a ``JobError`` with that line, but a signal
    stops the sweep)."""
    try:
        cfg = validator(cfg)
        if preflight is not None:
            preflight(cfg)
        return job(cfg)
    except Interrupted as stop:   # SIGINT/SIGTERM: the job wrote its checkpoint and marked its run KILLED
        log.warning("%s", stop.line())
        print(stop.line(), file=sys.stderr, flush=True)
        if stop.requeue is not None:
            stop.requeue(stop.signum, None)   # submitit's handler: requeue this job, then exit
        sys.exit(stop.exit_code)
    except Exception as error:
        # hydra.utils.instantiate wraps the target's own error in an InstantiationException
        cause = error.__cause__ if isinstance(error, InstantiationException) else error
        if isinstance(cause, user_errors() + runtime_faults()):
            if _in_multirun_job():  # sys.exit would kill a launcher's worker or lose the other jobs
                line = message(cause, exit_code(cause))
                log.error("error: %s", line)
                raise JobError(f"firebreak_exp: error: {line}") from None
            exit_with_error(cause)
        raise
