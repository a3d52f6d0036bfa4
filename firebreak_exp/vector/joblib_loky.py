"""The ``joblib`` backend: joblib's loky worker processes, persistent across steps.

The environments are split evenly over ``max_workers`` groups; each group lives in the one worker of its own
loky executor (``joblib.externals.loky.ProcessPoolExecutor`` with one worker and no idle timeout), which
builds the group's environments once and keeps them between tasks. A step is one short task per group on
its executor, never a new ``joblib.Parallel`` call (about 10 ms each). One executor per group pins each group
to its worker: a shared pool cannot route a task to the worker that holds its environments (and loky's
shared reusable executor waits for running tasks before it resizes).

Tasks travel by cloudpickle, so a ``create_environment`` override defined in a notebook or ``__main__``
works here, and a script needs no ``if __name__ == "__main__":`` guard (loky's workers do not import the
main script). A worker that dies (killed, out of memory), at start or later, cannot build its environments,
or gives no answer within ``step_timeout_s`` raises :class:`~firebreak_exp.vector.backend.WorkerDiedError`
naming it, with its exit code.
"""
from __future__ import annotations

import os
import re
import time
from concurrent.futures import TimeoutError as FuturesTimeoutError
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from joblib.externals.loky import BrokenProcessPool, ProcessPoolExecutor

from firebreak_exp.vector.backend import Backend, apply, exit_cause

#: In a worker: the environments of each group it holds, by group token.
_GROUPS: Dict[str, list] = {}
#: How loky's BrokenProcessPool message gives the exit codes of its workers: ``{EXIT(3)}``, ``{SIGKILL(-9)}``.
LOKY_EXIT_CODE = re.compile(r"exit codes of the workers are \{\w+\((-?\d+)\)")


def _build_group(token: str, builder, indices: Sequence[int]) -> int:
    """In a worker: build the group's environments from ``builder`` (a VectorizedFireEnv without workers)."""
    _GROUPS[token] = [builder.create_environment(i) for i in indices]
    return os.getpid()


def _run_group(token: str, command: str, payloads: Sequence[Any]) -> list:
    """In a worker: one command for every environment of the group; one payload per environment."""
    return [apply(env, command, p) for env, p in zip(_GROUPS[token], payloads)]


class JoblibBackend(Backend):
    """The environments split evenly over ``max_workers`` loky workers, one single-worker executor each."""

    def __init__(self, num_envs: int, max_workers: int):
        super().__init__(num_envs, max_workers)
        self.groups: List[np.ndarray] = []
        self.executors: List[ProcessPoolExecutor] = []
        self.pids: List[int] = []
        self._futures: list = []

    def start(self, vec_env) -> None:
        builder = vec_env.builder()
        self.groups = np.array_split(np.arange(self.num_envs), self.max_workers)
        self.executors = [ProcessPoolExecutor(max_workers=1, timeout=None) for _ in self.groups]
        futures = [executor.submit(_build_group, self._token(g), builder, group.tolist())
                   for g, (executor, group) in enumerate(zip(self.executors, self.groups))]
        self.pids = self._results(futures, self.start_limit(), starting=True)

    def _token(self, group: int) -> str:
        return f"{id(self)}-{group}"

    def _send(self, command: str, payloads: Sequence[Any]) -> None:
        futures = []
        try:
            for g, (executor, group) in enumerate(zip(self.executors, self.groups)):
                futures.append(executor.submit(_run_group, self._token(g), command, [payloads[i] for i in group]))
        except BrokenProcessPool as error:
            self._exited(len(futures), error, starting=False)
        self._futures = futures

    def _receive(self) -> list:
        futures, self._futures = self._futures, []
        return [result for group in self._results(futures, self.step_timeout_s) for result in group]

    def _results(self, futures: list, limit: Optional[float], starting: bool = False) -> list:
        """Every future's result, in order; all are awaited first, so none is left for a later step. A worker
        with no answer within ``limit`` seconds (None: no limit) is stopped and named; one that cannot build
        its environments (``starting``) is named with the error."""
        results, errors = [], []
        deadline = None if limit is None else time.monotonic() + limit
        for group, future in enumerate(futures):
            where = f"joblib (loky) worker of environments {self.groups[group].tolist()}"
            try:
                results.append(future.result(timeout=None if deadline is None else max(0.0, deadline - time.monotonic())))
            except FuturesTimeoutError:
                pid = f" (pid {self.pids[group]})" if self.pids else ""
                self.fail(f"{where}{pid} gave no answer within {limit:g} s (parallel.step_timeout_s); it was stopped "
                          f"(an environment stuck in a loop, or a stopped process?)")
            except Exception as error:
                errors.append((group, error))
        if errors:   # a dead worker first: it makes the backend unusable
            group, error = min(errors, key=lambda e: not isinstance(e[1], BrokenProcessPool))
            where = f"joblib (loky) worker of environments {self.groups[group].tolist()}"
            if isinstance(error, BrokenProcessPool):
                self._exited(group, error, starting)
            if starting:
                self.fail(f"{where} could not build its environments: {type(error).__name__}: "
                          f"{(str(error).strip().splitlines() or [''])[0]}", error)
            raise RuntimeError(f"error in {where}: {type(error).__name__}: {error}") from error
        return results

    def _exited(self, group: int, error: BrokenProcessPool, starting: bool) -> None:
        """Name the worker of ``group`` that exited, its exit code (from loky's message) and the likely cause."""
        found = LOKY_EXIT_CODE.search(str(error))
        code = int(found.group(1)) if found else None
        pid = f" (pid {self.pids[group]})" if self.pids else ""
        head = (f"joblib (loky) worker of environments {self.groups[group].tolist()}{pid} exited"
                + ("" if code is None else f" with code {code}"))
        if starting:
            self.fail(f"{head} before it was ready" + (exit_cause(code) or "; its error output above says why"), error)
        self.fail(f"{head} while stepping (its environments' steps are lost){exit_cause(code)}", error)

    def close(self) -> None:
        for executor in self.executors:
            executor.shutdown(wait=True, kill_workers=self.failed is not None)   # after a death: kill the rest
        self.executors = []
