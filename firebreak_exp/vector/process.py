"""The ``process`` backend: persistent worker processes, each building its share of the environments once
and stepping all of them per message (one pipe round-trip per worker per step; no pool is created per step).

With ``share_fires`` the workers also burn each other's fires
(:class:`~firebreak_exp.fire.sharing.FireExchange`): on a step only some environments evaluate their
reward, and their fires are spread over all workers instead of waiting on the one that holds them. A worker
that dies (killed, out of memory) is noticed within ``WORKER_POLL_SECONDS`` and raises
:class:`~firebreak_exp.vector.backend.WorkerDiedError`.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import pickle
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, List, Optional, Sequence

import numpy as np

from firebreak_exp.fire.sharing import FireExchange
from firebreak_exp.interrupt import ignore_stop_signals
from firebreak_exp.vector.backend import (WORKER_POLL_SECONDS, Backend, WorkerDiedError, apply, exit_cause,
                                         leave_if_main_script_reentered)

log = logging.getLogger(__name__)


def _worker_main(conn, indices: Sequence[int], exchange: Optional[FireExchange] = None) -> None:
    """Worker process: say it is ready, receive the pickled builder, build the environments once, then serve
    requests until 'close' (and, with an ``exchange``, the other workers' fires while it waits)."""
    ignore_stop_signals()                             # a Ctrl-C reaches the process group: the parent stops us
    conn.send(("ok", "ready"))
    try:
        builder = pickle.loads(conn.recv_bytes())     # sent only now: a worker that died never blocks its parent
        if exchange is not None:
            exchange.tasks.cancel_join_thread()       # never block this worker's exit on unread queue items
            for answers in exchange.answers:
                answers.cancel_join_thread()
            kwargs = builder.env_kwargs
            kwargs["simulator_factory"] = exchange.wrap(kwargs["simulator_factory"], builder.landscapes,
                                                        kwargs.get("scenario"))
        envs = [builder.create_environment(i) for i in indices]
        conn.send(("ok", None))
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        try:
            while exchange is not None and not exchange.serve(also=[conn]):
                pass                                  # burned another worker's fire; still no command
            command, payload = conn.recv()
        except EOFError:
            return
        try:
            if command == "close":
                conn.send(("ok", None))
                return
            if command == "fires_shared":
                conn.send(("ok", {"burned_for_others": exchange.burned_for_others if exchange else 0,
                                  "burned_by_others": exchange.burned_by_others if exchange else 0}))
                continue
            result = [apply(env, command, p) for env, p in zip(envs, payload)]
            conn.send(("ok", result))
        except Exception:
            conn.send(("error", traceback.format_exc()))


@dataclass
class Worker:
    """One worker process, the parent's end of its pipe, and the environments it holds."""

    process: Any
    conn: Connection
    indices: List[int]
    ready: bool = False          # it has built its environments


class ProcessBackend(Backend):
    """The environments split evenly over ``max_workers`` spawned worker processes."""

    def __init__(self, num_envs: int, max_workers: int, share_fires: bool = True):
        super().__init__(num_envs, max_workers)
        self.share_fires = share_fires
        self.workers: List[Worker] = []
        self._fire_queues: list = []         # the FireExchange's queues: tasks, then answers per worker

    @classmethod
    def for_env(cls, vec_env, requested_workers: Optional[int]) -> "ProcessBackend":
        return cls(vec_env.num_envs, vec_env.max_workers, share_fires=vec_env.share_fires)

    def start(self, vec_env) -> None:
        """Start the workers, then hand each its pickled builder once it says it runs (the payload never goes
        through ``Process.start``, which would block forever on a worker that died before reading it)."""
        leave_if_main_script_reentered()
        context = mp.get_context("spawn")
        builder = pickle.dumps(vec_env.builder())
        if self.share_fires and self.max_workers > 1:
            self._fire_queues = [context.Queue() for _ in range(self.max_workers + 1)]
        for worker, indices in enumerate(np.array_split(np.arange(self.num_envs), self.max_workers)):
            parent, child = context.Pipe()
            exchange = FireExchange(worker, self._fire_queues[0], self._fire_queues[1:]) if self._fire_queues else None
            process = context.Process(target=_worker_main, args=(child, indices.tolist(), exchange),
                                      daemon=True, name=f"fire-env-worker-{indices[0]}")
            process.start()
            child.close()
            self.workers.append(Worker(process, parent, indices.tolist()))
        for worker in self.workers:
            self._answer(worker)                     # "ready": it runs and reads its pipe
            try:
                worker.conn.send_bytes(builder)
            except OSError as error:                 # it died while reading
                worker.process.join(timeout=1)
                self.fail(self._death(worker.process, "before it was ready"), error)
        for worker in self.workers:
            try:
                self._answer(worker)                 # its environments are built
            except RuntimeError as error:
                if isinstance(error, WorkerDiedError):
                    raise
                log.error("%s", error)
                self.fail(f"worker process {worker.process.name} (pid {worker.process.pid}) could not build its "
                          f"environments: {str(error).strip().splitlines()[-1]} (the worker's traceback is in "
                          f"the log)")
            worker.ready = True

    def _death(self, process, stage: str) -> str:
        """What to say about a worker process that exited: its name, pid, exit code and the likely cause."""
        head = f"worker process {process.name} (pid {process.pid}) exited with code {process.exitcode} {stage}"
        return head + (exit_cause(process.exitcode) or ("" if self._all_ready() else "; its error output above "
                                                                                     "says why"))

    def _all_ready(self) -> bool:
        return all(worker.ready for worker in self.workers)

    def _send(self, command: str, payloads: Sequence[Any]) -> None:
        for worker in self.workers:
            try:
                worker.conn.send((command, [payloads[i] for i in worker.indices]))
            except OSError as error:  # the worker is gone: its end of the pipe is closed
                worker.process.join(timeout=1)
                self.fail(self._death(worker.process, self._stage(worker)) + f" ({type(error).__name__})", error)

    def _receive(self) -> list:
        results, errors = [], []
        for worker in self.workers:  # every worker's answer is read, so none is left for a later step
            try:
                results += self._answer(worker)
            except WorkerDiedError:
                raise
            except RuntimeError as error:  # an environment raised inside its worker
                errors.append(error)
        if errors:
            raise errors[0]
        return results

    def _answer(self, worker: Worker) -> Any:
        """One worker's answer; raises WorkerDiedError when any worker died meanwhile, or when this one gives
        no answer within ``step_timeout_s`` seconds (it is then stopped; starting: :meth:`start_limit`)."""
        process, conn = worker.process, worker.conn
        started, limit = time.monotonic(), self.step_timeout_s if worker.ready else self.start_limit()
        while not conn.poll(WORKER_POLL_SECONDS):
            # any worker: one that waits for fires it shared waits as long as the one burning them is gone
            dead = next((w for w in self.workers if not w.process.is_alive()), None)
            if dead is not None:
                self.fail(self._death(dead.process, self._stage(dead)))
            if limit is not None and time.monotonic() - started > limit:
                process.kill()
                self.fail(f"worker process {process.name} (pid {process.pid}) gave no answer within "
                          f"{limit:g} s (parallel.step_timeout_s) {self._stage(worker)}; it was "
                          f"stopped (an environment stuck in a loop, or a stopped process?)")
        try:
            status, payload = conn.recv()
        except (EOFError, OSError) as error:  # EOF, or a reset connection when the worker was killed
            process.join(timeout=1)
            self.fail(self._death(process, self._stage(worker)) + f" ({type(error).__name__})", error)
        if status == "error":
            raise RuntimeError(f"error in worker {process.name}:\n{payload}")
        return payload

    @staticmethod
    def _stage(worker: Worker) -> str:
        return "while stepping (its environments' steps are lost)" if worker.ready else "before it was ready"

    def fires_shared(self) -> list:
        if self.failed is not None or self.in_flight:
            raise RuntimeError("fires_shared() needs a usable vector env with no step in flight")
        for worker in self.workers:
            worker.conn.send(("fires_shared", None))
        return [self._answer(worker) for worker in self.workers]

    def close(self) -> None:
        for worker in self.workers:
            process, conn = worker.process, worker.conn
            try:   # after a worker died the others may wait for its fires forever: they are killed
                if process.is_alive() and self.failed is None:
                    conn.send(("close", None))
                    conn.poll(5) and conn.recv()
            except (OSError, EOFError):
                pass
            process.join(timeout=5 if self.failed is None else 0.1)
            if process.is_alive():
                process.kill()
                process.join()
            conn.close()
        self.workers = []
        for fire_queue in self._fire_queues:
            fire_queue.close()
        self._fire_queues = []
