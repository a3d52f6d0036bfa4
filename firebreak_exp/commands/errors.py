"""How a command reports a fault: one clear line on stderr and a non-zero exit (no bare traceback).

Exit codes: 2 bad input (config, rasters, checkpoints, an unreachable tracking server or Dask
scheduler); 1 a runtime fault the user can act on (an environment worker died). Inside a multirun job
the same line is raised as a ``JobError`` instead: Hydra prints it without a traceback once the batch is
done (so one bad combination does not stop the others, on any launcher) and the sweep exits 1.
"""
import dataclasses
import logging
import sys
from typing import NoReturn, Optional

from hydra.errors import CompactHydraException
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from firebreak_exp.vector.backend import WorkerDiedError

log = logging.getLogger("firebreak_exp")
BAD_INPUT_EXIT = 2
RUNTIME_FAULT_EXIT = 1


class JobError(CompactHydraException):
    """One job of a multirun stopped with a clear one-line message (Hydra reports it without a traceback)."""


class ParentRunError(RuntimeError):
    """A multirun's parent MLflow run could not be created (its jobs are not started)."""


def runtime_faults() -> tuple:
    """Exception types of faults outside the program that the user can act on (named in the message)."""
    checkpoint = sys.modules.get("firebreak_exp.rl.checkpoint")  # not imported: none raised (torch stays unloaded)
    return (WorkerDiedError, ParentRunError) + ((checkpoint.CheckpointWriteError,) if checkpoint is not None else ())


def one_line(error: BaseException) -> str:
    """The first line of ``error``'s message; OmegaConf errors get their key (``full_key``) in front, and a
    key the schema lacks the keys it takes (and where this version has a key of that name)."""
    if isinstance(error, OmegaConfBaseException):
        message = str(getattr(error, "msg", None) or error).strip()
        key = getattr(error, "full_key", None)
        first = message.splitlines()[0] if message else type(error).__name__
        first = f"{key}: {first}" if key and key not in first else first
        schema = getattr(error, "object_type", None)
        if isinstance(error, ConfigKeyError) and key and dataclasses.is_dataclass(schema):
            first += expected_keys(schema, key)
        return first
    message = str(error).strip()
    return message.splitlines()[0] if message else type(error).__name__


def expected_keys(schema: type, full_key: str) -> str:
    """For a message about the unknown key ``full_key`` of ``schema``: the keys ``schema`` has, and where the
    training config has a key of that name (one that moved)."""
    from firebreak_exp.config import Config
    parent, _, name = full_key.rpartition(".")
    text = f"; {parent or 'the config'} has the keys {', '.join(f.name for f in dataclasses.fields(schema))}"
    homes = [key for key in _schema_keys(Config) if key.rsplit(".", 1)[-1] == name]
    return text + (f"; this version has {name} as {' or '.join(homes)}" if homes else "")


def _schema_keys(schema: type, prefix: str = "") -> list:
    """Every key of a dataclass schema, nested ones dotted."""
    keys = []
    for field in dataclasses.fields(schema):
        nested = field.default_factory if callable(field.default_factory) else None
        if nested is not None and dataclasses.is_dataclass(nested):
            keys += _schema_keys(nested, f"{prefix}{field.name}.")
        else:
            keys.append(prefix + field.name)
    return keys


def exit_code(error: BaseException) -> int:
    return RUNTIME_FAULT_EXIT if isinstance(error, runtime_faults()) else BAD_INPUT_EXIT


def message(error: BaseException, code: int) -> str:
    """The line reported for ``error``: a runtime fault is named by its type."""
    line = one_line(error)
    return f"{type(error).__name__}: {line}" if code == RUNTIME_FAULT_EXIT else line


def exit_with_error(error: BaseException, code: Optional[int] = None) -> NoReturn:
    """Print ``firebreak_exp: error: <one line>`` on stderr (and to the job log) and exit non-zero."""
    code = exit_code(error) if code is None else code
    line = message(error, code)
    if log.hasHandlers():   # none before Hydra sets up logging: Python's fallback would print the line twice
        log.error("error: %s", line)
    print(f"firebreak_exp: error: {line}", file=sys.stderr, flush=True)
    sys.exit(code)
