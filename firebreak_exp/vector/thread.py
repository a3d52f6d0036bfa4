"""The ``thread`` backend: the environments in this process, stepped by a persistent thread pool.

pyretechnics holds the GIL, so threads rarely beat sequential (the benchmark measures it).
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, List, Optional, Sequence

from firebreak_exp.vector.backend import Backend, apply


class ThreadBackend(Backend):
    """One task per environment and command on a thread pool of ``max_workers`` threads."""

    def __init__(self, num_envs: int, max_workers: int):
        super().__init__(num_envs, max_workers)
        self._executor: Optional[ThreadPoolExecutor] = None
        self._futures: List[Future] = []

    def start(self, vec_env) -> None:
        self.envs = [vec_env.create_environment(i) for i in range(self.num_envs)]
        self._executor = ThreadPoolExecutor(self.max_workers, thread_name_prefix="fire-env")

    def _send(self, command: str, payloads: Sequence[Any]) -> None:
        self._futures = [self._executor.submit(apply, env, command, p) for env, p in zip(self.envs, payloads)]

    def _receive(self) -> list:
        futures, self._futures = self._futures, []
        return [future.result() for future in futures]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None
