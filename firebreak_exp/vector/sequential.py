"""The ``sequential`` backend: every environment in this process, one after the other."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from firebreak_exp.vector.backend import Backend, apply


class SequentialBackend(Backend):
    """Steps the environments one after the other when the command is dispatched."""

    def __init__(self, num_envs: int, max_workers: int):
        super().__init__(num_envs, max_workers)
        self._results: Optional[list] = None

    def start(self, vec_env) -> None:
        self.envs = [vec_env.create_environment(i) for i in range(self.num_envs)]

    def _send(self, command: str, payloads: Sequence[Any]) -> None:
        self._results = [apply(env, command, p) for env, p in zip(self.envs, payloads)]

    def _receive(self) -> list:
        results, self._results = self._results, None
        return results
