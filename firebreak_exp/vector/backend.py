"""The interface every vector-env backend implements, and what they share: the command each environment
runs, the errors, and the registry of backends by name.

A backend runs one command (``step``, ``reset`` or ``call``) on every environment at once:
:meth:`Backend.dispatch` starts it with one payload per environment and :meth:`Backend.gather` returns the
results in environment order. Adding a backend is one module with a :class:`Backend` subclass and one entry
in :data:`BACKENDS`.
"""
from __future__ import annotations

import abc
import importlib
import multiprocessing as mp
import signal
import sys
from typing import Any, NoReturn, Optional, Sequence

import gymnasium as gym

#: Backend name -> "module:class" (imported when chosen, so that e.g. dask loads only for ``dask``).
BACKENDS = {
    "sequential": "firebreak_exp.vector.sequential:SequentialBackend",
    "thread": "firebreak_exp.vector.thread:ThreadBackend",
    "process": "firebreak_exp.vector.process:ProcessBackend",
    "joblib": "firebreak_exp.vector.joblib_loky:JoblibBackend",
    "dask": "firebreak_exp.vector.dask_cluster:DaskBackend",
}
BACKEND_ALIASES = {"threading": "thread", "multiprocessing": "process", "loky": "joblib"}
#: Seconds between checks that the workers a backend waits on are alive.
WORKER_POLL_SECONDS = 0.5
#: Seconds a worker may take to start and build its environments when ``step_timeout_s`` is shorter.
WORKER_START_SECONDS = 120.0
#: Exit status of a worker that, re-running its parent's main script, reached a vector env there.
MAIN_SCRIPT_REENTERED_EXIT = 87


class WorkerDiedError(RuntimeError):
    """A worker (process of the process or joblib backend, or Dask worker) exited unexpectedly, could not
    build its environments, or gave no answer in time."""


class ClusterUnavailableError(RuntimeError):
    """The Dask scheduler at ``parallel.address`` cannot be reached (or has no workers)."""


def leave_if_main_script_reentered() -> None:
    """In a worker process started by the spawn method, which imports the parent's main script again, a
    script without ``if __name__ == "__main__":`` reaches its vector env once more: end that worker quietly
    with MAIN_SCRIPT_REENTERED_EXIT and let the parent name the cause (:func:`reentered_main_script`; the
    multiprocessing error would be a traceback per worker)."""
    if getattr(mp.current_process(), "_inheriting", False):
        sys.exit(MAIN_SCRIPT_REENTERED_EXIT)


def reentered_main_script() -> str:
    """The likely cause of a worker that exited with MAIN_SCRIPT_REENTERED_EXIT, and the fix."""
    script = getattr(sys.modules.get("__main__"), "__file__", None) or "the main script"
    return (f"it re-ran {script} (workers start by the spawn method, which imports the main script again) and "
            f"reached a vector env there; put the script's top-level code under 'if __name__ == \"__main__\":'")


def exit_cause(code: Optional[int]) -> str:
    """The likely cause of a worker process's exit ``code``, as the end of a message ('' when unknown)."""
    if code == MAIN_SCRIPT_REENTERED_EXIT:
        return f": {reentered_main_script()}"
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        return f" (killed by {name}" + (", out of memory?)" if -code == signal.SIGKILL else ")")
    return ""


def resolve_backend(method: str) -> str:
    """Canonical backend name; the seed's ``threading``/``multiprocessing`` are aliases."""
    backend = BACKEND_ALIASES.get(method, method)
    if backend not in BACKENDS:
        raise ValueError(f"unknown parallel backend {method!r}; expected one of "
                         f"{', '.join(tuple(BACKENDS) + tuple(BACKEND_ALIASES))}")
    return backend


def backend_class(name: str) -> type:
    """The :class:`Backend` subclass of backend ``name`` (canonical, see :func:`resolve_backend`)."""
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def step_and_autoreset(env: gym.Env, action) -> tuple:
    """Step one environment; when its episode ends, reset it and keep the last observation."""
    obs, reward, terminated, truncated, info = env.step(action)
    final = None
    if terminated or truncated:
        final = (obs, info)
        obs, info = env.reset()
    return obs, reward, terminated, truncated, info, final


def apply(env: gym.Env, command: str, payload: Any) -> Any:
    """Run one vector-env command on one environment (the same code on every backend)."""
    if command == "step":
        return step_and_autoreset(env, payload)
    if command == "reset":
        seed, options = payload
        return env.reset(seed=seed, options=options)
    if command == "call":
        name, args = payload
        return getattr(env, name)(*args)
    raise ValueError(f"unknown worker command {command!r}")


class Backend(abc.ABC):
    """Runs the environments of one :class:`~firebreak_exp.vector.env.VectorizedFireEnv`.

    ``envs`` holds the environments when they live in this process (else it is empty); ``max_workers`` is
    the number of workers actually used. After a worker died the backend is unusable: every later command
    raises :class:`WorkerDiedError`, so no step is ever taken or recorded twice.
    """

    def __init__(self, num_envs: int, max_workers: int):
        self.num_envs, self.max_workers = num_envs, max_workers
        self.envs: list = []
        self.failed: Optional[str] = None
        self.in_flight = False
        self.step_timeout_s: Optional[float] = None   # seconds a worker may take to answer (None: no limit)

    @classmethod
    def for_env(cls, vec_env, requested_workers: Optional[int]) -> "Backend":
        """The backend of ``vec_env`` (a VectorizedFireEnv; ``requested_workers``: its ``max_workers``
        argument)."""
        return cls(vec_env.num_envs, vec_env.max_workers)

    @abc.abstractmethod
    def start(self, vec_env) -> None:
        """Build the environments (``vec_env.create_environment``) where they will run."""

    @abc.abstractmethod
    def _send(self, command: str, payloads: Sequence[Any]) -> None:
        """Start ``command`` on every environment, one payload each."""

    @abc.abstractmethod
    def _receive(self) -> list:
        """The results of the command in flight, in environment order."""

    def close(self) -> None:
        """Stop the workers (nothing to stop when the environments live in this process)."""

    def dispatch(self, command: str, payloads: Sequence[Any]) -> None:
        """Start ``command`` on every environment, one payload each."""
        if self.failed is not None:
            raise WorkerDiedError(f"this VectorizedFireEnv is unusable after an earlier failure: {self.failed}")
        self._send(command, payloads)
        self.in_flight = True

    def gather(self) -> list:
        """The results of the command :meth:`dispatch` started, in environment order."""
        if not self.in_flight:
            raise RuntimeError("wait_for_results() called without step_async()")
        try:
            return self._receive()
        finally:
            self.in_flight = False

    def run(self, command: str, payloads: Sequence[Any]) -> list:
        """:meth:`dispatch` then :meth:`gather`."""
        self.dispatch(command, payloads)
        return self.gather()

    def start_limit(self) -> Optional[float]:
        """Seconds a worker may take to start: ``step_timeout_s``, at least WORKER_START_SECONDS; None: no limit."""
        return None if self.step_timeout_s is None else max(self.step_timeout_s, WORKER_START_SECONDS)

    def fail(self, message: str, cause: Optional[BaseException] = None) -> NoReturn:
        """Mark the backend unusable (results of other workers may be in flight) and raise WorkerDiedError."""
        self.failed = message
        self.in_flight = False
        raise WorkerDiedError(message) from cause

    def fires_shared(self) -> list:
        """Per worker, the fires it burned for others and others burned for it (process backend only)."""
        return []
