"""What every command does around its job: validate the config, and turn bad input into one clear line."""
import logging
import sys
from typing import Callable

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from firebreak_exp.config import validate

log = logging.getLogger("firebreak_exp")


def user_errors() -> tuple:
    """Exception types that mean bad input (config, rasters, checkpoints), not a bug."""
    from firebreak_exp.checkpoint import CheckpointError
    from firebreak_exp.landscape import LandscapeError
    return (LandscapeError, CheckpointError, OmegaConfBaseException, ValueError, FileNotFoundError)


def run_job(job: Callable[[DictConfig], object], cfg: DictConfig):
    """Validate ``cfg`` against the typed schema and run ``job``; bad input exits 2 with one line."""
    try:
        cfg = validate(cfg)
        return job(cfg)
    except user_errors() as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        log.error("error: %s", message)
        print(f"firebreak_exp: error: {message}", file=sys.stderr)
        sys.exit(2)
