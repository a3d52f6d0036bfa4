"""What every command does around its job: validate the config, check its inputs, and turn bad input
or a known runtime fault into one clear line on stderr and a non-zero exit (no bare traceback).

Exit codes: 2 bad input (config, rasters, checkpoints, an unreachable tracking server or Dask
scheduler); 1 a runtime fault the user can act on (an environment worker died). Inside a multirun job
the same line is raised as a ``JobError`` instead: Hydra prints it without a traceback once the batch is
done (so one bad combination does not stop the others, on any launcher) and the sweep exits 1.
"""
import logging
import sys
from typing import Callable, NoReturn, Optional

from hydra.errors import CompactHydraException, InstantiationException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from firebreak_exp.config import validate

log = logging.getLogger("firebreak_exp")
BAD_INPUT_EXIT = 2
RUNTIME_FAULT_EXIT = 1


MULTIRUN_FLAGS = ("-m", "--multirun")


def multirun_flag_first(argv: list) -> list:
    """``argv`` with ``-m``/``--multirun`` moved before the overrides. Hydra's parser reads the overrides as one
    run of positional arguments, so ``parallel.num_envs=4,8 -m seed=0,1`` would stop with "unrecognized
    arguments"; with the flag first it is ``-m parallel.num_envs=4,8 seed=0,1``."""
    return argv[:1] + [a for a in argv[1:] if a in MULTIRUN_FLAGS] + [a for a in argv[1:] if a not in MULTIRUN_FLAGS]


def launch(main: Callable[[], object]) -> None:
    """Run a command's ``@hydra.main`` function with ``-m`` accepted anywhere among its overrides."""
    sys.argv[:] = multirun_flag_first(sys.argv)
    main()


class JobError(CompactHydraException):
    """One job of a multirun stopped with a clear one-line message (Hydra reports it without a traceback)."""


def user_errors() -> tuple:
    """Exception types that mean bad input (config, rasters, checkpoints, unreachable services), not a bug."""
    from firebreak_exp.landscape import LandscapeError
    from firebreak_exp.tracking import TrackingUnavailableError
    from firebreak_exp.vectorization import ClusterUnavailableError
    types = (LandscapeError, OmegaConfBaseException, ValueError, FileNotFoundError, TrackingUnavailableError,
             ClusterUnavailableError)
    checkpoint = sys.modules.get("firebreak_exp.checkpoint")  # not imported: none raised (and torch stays unloaded)
    return types + ((checkpoint.CheckpointError,) if checkpoint is not None else ())


def runtime_faults() -> tuple:
    """Exception types of faults outside the program that the user can act on (named in the message)."""
    from firebreak_exp.vectorization import WorkerDiedError
    return (WorkerDiedError,)


def one_line(error: BaseException) -> str:
    """The first line of ``error``'s message; OmegaConf errors get their key (``full_key``) in front."""
    if isinstance(error, OmegaConfBaseException):
        message = str(getattr(error, "msg", None) or error).strip()
        key = getattr(error, "full_key", None)
        first = message.splitlines()[0] if message else type(error).__name__
        return f"{key}: {first}" if key and key not in first else first
    message = str(error).strip()
    return message.splitlines()[0] if message else type(error).__name__


def _message(error: BaseException, code: int) -> str:
    message = one_line(error)
    return f"{type(error).__name__}: {message}" if code == RUNTIME_FAULT_EXIT else message


def _exit_code(error: BaseException) -> int:
    return RUNTIME_FAULT_EXIT if isinstance(error, runtime_faults()) else BAD_INPUT_EXIT


def exit_with_error(error: BaseException, code: Optional[int] = None) -> NoReturn:
    """Print ``firebreak_exp: error: <one line>`` on stderr (and to the job log) and exit non-zero."""
    code = _exit_code(error) if code is None else code
    message = _message(error, code)
    log.error("error: %s", message)
    print(f"firebreak_exp: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _in_multirun_job() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def check_inputs(cfg: DictConfig) -> None:
    """Fail before any MLflow run exists: the parallel backend, and the landscapes (read and tiled once,
    memoised, so the job's own build costs nothing). Skipped for ``resume=`` (the archived config is used)."""
    if cfg.get("resume"):
        return
    parallel = cfg.get("parallel")
    if parallel is not None and parallel.get("backend") is not None:
        from firebreak_exp.vectorization import resolve_backend
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
            preflight: Optional[Callable[[DictConfig], None]] = check_inputs):
    """Validate ``cfg`` against the typed schema, check its inputs (``preflight``) and run ``job``;
    bad input exits 2 and a dead worker exits 1, each with one line on stderr."""
    try:
        cfg = validate(cfg)
        if preflight is not None:
            preflight(cfg)
        return job(cfg)
    except Exception as error:
        # hydra.utils.instantiate wraps the target's own error in an InstantiationException
        cause = error.__cause__ if isinstance(error, InstantiationException) else error
        if isinstance(cause, user_errors() + runtime_faults()):
            if _in_multirun_job():  # sys.exit would kill a launcher's worker or lose the other jobs
                message = _message(cause, _exit_code(cause))
                log.error("error: %s", message)
                raise JobError(f"firebreak_exp: error: {message}") from None
            exit_with_error(cause)
        raise
