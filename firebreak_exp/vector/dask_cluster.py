"""The ``dask`` backend: one Dask actor per worker of a Dask cluster.

``address`` names a running scheduler; without it a LocalCluster on 127.0.0.1 starts here and
:meth:`DaskBackend.close` closes it. Each actor builds its share of environments once, exactly as a process
worker does, and per step receives only its actions (one actor call per worker per step, straight to the
worker).
"""
from __future__ import annotations

import logging
import os
import pickle
import time
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import numpy as np

from firebreak_exp.vector.backend import (WORKER_POLL_SECONDS, Backend, ClusterUnavailableError, apply, exit_cause,
                                         leave_if_main_script_reentered)

DASK_CONNECT_TIMEOUT_SECONDS = 10


class _DaskEnvGroup:
    """Dask actor holding a share of the environments on one worker, built once from the pickled builder."""

    def __init__(self, builder_bytes: bytes, indices: Sequence[int]):
        builder = pickle.loads(builder_bytes)
        self.indices = list(indices)
        self.envs = [builder.create_environment(i) for i in self.indices]

    def run(self, command: str, payload: Sequence[Any]) -> list:
        """One command for every environment of this group; one payload per environment."""
        return [apply(env, command, p) for env, p in zip(self.envs, payload)]

    def pid(self) -> int:
        return os.getpid()


def _nanny_noting_exits(exits: dict) -> type:
    """A LocalCluster's Nanny that notes in ``exits`` (worker name -> exit code) how its worker process
    ended: when a worker dies while the cluster starts, Dask's own error says only "Nanny failed to start"."""
    from distributed import Nanny

    class ExitNotingNanny(Nanny):
        def _on_worker_exit_sync(self, exitcode):
            exits[self.name] = exitcode
            super()._on_worker_exit_sync(exitcode)

    return ExitNotingNanny


def _start_failure(exits: dict, error: BaseException) -> str:
    """What to say about a LocalCluster whose worker processes did not start: the first worker that exited,
    its exit code and the likely cause (``exits``: worker name -> exit code)."""
    if not exits:
        return (f"the Dask LocalCluster's worker processes did not start: {type(error).__name__}: "
                f"{(str(error).strip().splitlines() or [''])[0]}")
    name, code = min(exits.items(), key=lambda item: str(item[0]))
    head = f"Dask worker process {name} of the LocalCluster exited with code {code} before it was ready"
    return head + (exit_cause(code) or "; its error output above says why")


def _is_lost_dask_worker(error: BaseException) -> bool:
    """Whether an actor call failed because the worker holding the actor is gone (not an env error)."""
    from distributed.comm.core import CommClosedError
    message = str(error)
    return (isinstance(error, CommClosedError) or message.startswith("Unable to contact Actor's worker")
            or message.startswith("Worker holding Actor was lost"))


@dataclass
class EnvGroup:
    """An actor, the future of the task that placed it, its environments and the worker holding it."""

    actor: Any
    task: Any
    indices: List[int]
    worker: str


class DaskBackend(Backend):
    """The environments split evenly over ``max_workers`` actors (with ``address``: over the cluster's
    workers, ``max_workers`` of them when given, else all)."""

    def __init__(self, num_envs: int, max_workers: int, address: Optional[str] = None,
                 requested_workers: Optional[int] = None):
        super().__init__(num_envs, max_workers)
        self.address = address
        self._requested_workers = requested_workers
        self.client: Any = None
        self.cluster: Any = None
        self.groups: List[EnvGroup] = []
        self._calls: list = []               # (actor call future, group) of the command in flight

    @classmethod
    def for_env(cls, vec_env, requested_workers: Optional[int]) -> "DaskBackend":
        return cls(vec_env.num_envs, vec_env.max_workers, address=vec_env.address,
                   requested_workers=requested_workers)

    def start(self, vec_env) -> None:
        """Connect to ``address`` (or start a LocalCluster) and place one environment-group actor per worker."""
        from distributed import Client, LocalCluster
        leave_if_main_script_reentered()
        if self.address:
            try:
                self.client = Client(self.address, timeout=DASK_CONNECT_TIMEOUT_SECONDS, set_as_default=False)
                self.client.wait_for_workers(1, timeout=DASK_CONNECT_TIMEOUT_SECONDS)
            except (OSError, TimeoutError) as error:
                raise ClusterUnavailableError(
                    f"cannot use the Dask scheduler at {self.address} (parallel.address): no connection or no "
                    f"worker within {DASK_CONNECT_TIMEOUT_SECONDS} s ({type(error).__name__}: {error})") from error
            workers = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
            requested = int(self._requested_workers) if self._requested_workers else len(workers)
            self.max_workers = max(1, min(self.num_envs, requested))
        else:
            # No dashboard; the scheduler's plain HTTP endpoint (health, metrics) on a free loopback port.
            exits: dict = {}
            try:
                self.cluster = LocalCluster(n_workers=self.max_workers, threads_per_worker=1, processes=True,
                                            host="127.0.0.1", dashboard_address=None,
                                            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                            silence_logs=logging.ERROR, worker_class=_nanny_noting_exits(exits))
            except Exception as error:  # a worker process died before it was ready (the cluster closed itself)
                self.fail(_start_failure(exits, error), error)
            self.client = Client(self.cluster, set_as_default=False)
            workers = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
        client, builder = self.client, pickle.dumps(vec_env.builder())
        submitted = []
        for group, indices in enumerate(np.array_split(np.arange(self.num_envs), self.max_workers)):
            worker = workers[group % len(workers)]
            task = client.submit(_DaskEnvGroup, builder, indices.tolist(), actor=True, workers=[worker],
                                 allow_other_workers=False, key=f"fire-env-group-{indices[0]}-{os.urandom(6).hex()}")
            submitted.append((task, indices.tolist(), worker))
        with client.as_current():  # the actor proxies talk through this client, not a global one
            for task, indices, worker in submitted:
                self.groups.append(EnvGroup(self._placed(task, indices, worker), task, indices, worker))

    def _placed(self, task, indices: List[int], worker: str) -> Any:
        """The actor of ``task`` once its environments are built; WorkerDiedError names the worker when they
        cannot be built there, when the worker leaves the cluster meanwhile, or when building takes longer
        than :meth:`start_limit`."""
        started, limit = time.monotonic(), self.start_limit()
        while True:
            try:
                return task.result(timeout=WORKER_POLL_SECONDS)
            except TimeoutError:
                if worker not in self.client.scheduler_info(n_workers=-1)["workers"]:
                    self.fail(f"Dask worker {worker} left the cluster before the environments {indices} were "
                              f"built there")
                if limit is not None and time.monotonic() - started > limit:
                    self.fail(f"Dask worker {worker} did not build the environments {indices} within {limit:g} s "
                              f"(parallel.step_timeout_s)")
            except Exception as error:
                if _is_lost_dask_worker(error):
                    self.fail(f"Dask worker {worker} died before the environments {indices} were built ({error})",
                              error)
                first_line = (str(error).strip().splitlines() or [""])[0]
                self.fail(f"Dask worker {worker} could not build the environments {indices}: "
                          f"{type(error).__name__}: {first_line}", error)

    def _send(self, command: str, payloads: Sequence[Any]) -> None:
        # one actor call per worker, carrying only that worker's payloads
        self._calls = [(group.actor.run(command, [payloads[i] for i in group.indices]), group)
                       for group in self.groups]

    def _receive(self) -> list:
        calls, self._calls = self._calls, []
        return [result for call, group in calls for result in self._result(call, group)]

    def _result(self, call, group: EnvGroup) -> Any:
        started = time.monotonic()
        while True:
            try:
                return call.result(timeout=WORKER_POLL_SECONDS)
            except TimeoutError:
                if group.task.status not in ("finished", "pending"):
                    self.fail(f"Dask worker {group.worker} holding environments {group.indices} was lost "
                              f"(actor status {group.task.status}); their steps are lost")
                if self.step_timeout_s is not None and time.monotonic() - started > self.step_timeout_s:
                    self.fail(f"Dask worker {group.worker} holding environments {group.indices} gave no answer "
                              f"within {self.step_timeout_s:g} s (parallel.step_timeout_s); their steps are lost "
                              f"(an environment stuck in a loop?)")
            except Exception as error:
                if _is_lost_dask_worker(error):
                    self.fail(f"Dask worker {group.worker} holding environments {group.indices} died ({error}); "
                              f"their steps are lost", error)
                raise

    def close(self) -> None:
        groups, client, cluster = self.groups, self.client, self.cluster
        self.groups, self.client, self.cluster = [], None, None
        if client is not None:
            try:
                if groups and cluster is None:  # free the environments on a shared cluster
                    client.cancel([group.task for group in groups])
                client.close(timeout=5)
            except Exception:  # closing must not hide the error that made us close
                pass
        if cluster is not None:
            try:
                cluster.close(timeout=10)
            except Exception:
                pass
