"""Fires shared between worker processes: a worker that waits burns the others' fires."""
from __future__ import annotations

import queue
import time
import traceback
from multiprocessing.connection import wait
from typing import Any, Optional, Sequence

import numpy as np

from firebreak_exp.fire.simulator import IncrementalFireSimulator


class FireExchange:
    """The process backend's workers burning each other's fires.

    A simulator that burns every fire from scratch (pyretechnics: ~0.2 s a fire on 25 x 25) makes a reward
    evaluation costly, and on a given step only some environments evaluate: with whole environments per
    worker, the other workers sit idle. Here such a simulator (:class:`SharedFireSimulator`) puts each of
    its fires on one queue that every worker takes from whenever it waits, for its own fires or for the
    next command; the answers come back on the asking worker's own queue. The longest fires are queued
    first (by how long each took when last burned; an environment burns the same fires again after each
    few breaks), so the workers finish a request together rather than one waiting on a long fire taken
    last. A fire's arrival times depend on the tile, ignition and breaks alone, so which worker burns it
    changes no number. Simulators that add breaks to a search they keep
    (an :class:`~firebreak_exp.fire.simulator.IncrementalFireSimulator`) keep their fires: the search is the
    environment's own state.
    """

    def __init__(self, worker: int, tasks, answers: Sequence):
        self.worker, self.tasks, self.answers = worker, tasks, answers
        self.tiles: Sequence[Any] = ()
        self.scenario: Any = None
        self.simulators: dict = {}          # tile index -> this worker's simulator of it
        self._factory: Any = None
        self._requests = 0
        self._received: dict = {}           # request id -> {fire: (arrival, fires simulated, worker, seconds)}
        self._seconds: dict = {}            # (tile index, row, col) -> seconds its fire last took to burn
        self.burned_for_others = 0          # fires of other workers' environments this one burned
        self.burned_by_others = 0           # fires of this worker's environments another one burned

    def wrap(self, factory, tiles: Sequence[Any], scenario: Any) -> "_ExchangeFactory":
        """``factory`` (the simulator factory of ``tiles`` under ``scenario``, the same in every worker) made
        to build simulators that share their fires."""
        self._factory, self.tiles, self.scenario = factory, list(tiles), scenario
        return _ExchangeFactory(factory, self)

    def simulator(self, tile_index: int):
        """This worker's simulator of tile ``tile_index`` (built on first use, by the wrapped factory)."""
        if tile_index not in self.simulators:
            self.simulators[tile_index] = self._factory(tile=self.tiles[tile_index], scenario=self.scenario)
        return self.simulators[tile_index]

    def burn(self, tile_index: int, ignitions: np.ndarray, breaks: Optional[np.ndarray]) -> tuple:
        """Arrival times (k, H, W) of ``ignitions`` on tile ``tile_index``, burned one fire per task by whichever
        worker is free (this one included), and the fires the simulators counted."""
        request, self._requests = self._requests, self._requests + 1
        answers = self._received[request] = {}
        keys = [(tile_index, int(row), int(col)) for row, col in ignitions]
        for fire in sorted(range(len(ignitions)), key=lambda f: -self._seconds.get(keys[f], np.inf)):
            self.tasks.put((self.worker, request, fire, tile_index, ignitions[fire][None], breaks))
        try:
            while len(answers) < len(ignitions):
                self.serve(wait_for_answer=True)
        finally:
            del self._received[request]
        failed = [answer for answer in answers.values() if isinstance(answer, str)]
        if failed:
            raise RuntimeError(f"a fire burned for this worker failed:\n{failed[0]}")
        self.burned_by_others += sum(answer[2] != self.worker for answer in answers.values())
        if len(self._seconds) > 100_000:     # ignitions of long-finished episodes
            self._seconds.clear()
        self._seconds.update((keys[fire], answer[3]) for fire, answer in answers.items())
        return (np.concatenate([answers[fire][0] for fire in range(len(ignitions))]),
                sum(answer[1] for answer in answers.values()))

    def serve(self, wait_for_answer: bool = False, also=()) -> list:
        """Wait until a fire is queued (or, with ``wait_for_answer``, one of this worker's answers arrives, or
        one of the connections ``also`` is ready); burn the fire or file the answer. Returns the ready ones
        of ``also``."""
        mine = self.answers[self.worker]
        watched = [self.tasks._reader] + ([mine._reader] if wait_for_answer else []) + list(also)
        ready = wait(watched)
        if wait_for_answer and mine._reader in ready:
            request, fire, answer = mine.get()
            if request in self._received:        # not for a request abandoned when its environment failed
                self._received[request][fire] = answer
        if self.tasks._reader in ready:
            try:
                owner, request, fire, tile_index, ignition, breaks = self.tasks.get_nowait()
            except queue.Empty:                      # another worker took it first
                return [c for c in also if c in ready]
            try:
                simulator = self.simulator(tile_index)
                before, start = simulator.fires_simulated, time.perf_counter()
                arrival = simulator.arrival_times(ignition, breaks)
                answer = (arrival, simulator.fires_simulated - before, self.worker, time.perf_counter() - start)
            except Exception:
                answer = traceback.format_exc()
            self.burned_for_others += owner != self.worker
            if owner == self.worker:
                if request in self._received:
                    self._received[request][fire] = answer
            else:
                self.answers[owner].put((request, fire, answer))
        return [c for c in also if c in ready]


class _ExchangeFactory:
    """A simulator factory whose simulators share their fires through a FireExchange (those that add breaks
    to a search keep them). Pickles as the plain factory (queues stay in the worker)."""

    def __init__(self, factory, exchange: FireExchange):
        self.factory, self.exchange = factory, exchange
        self._index = {id(tile): i for i, tile in enumerate(exchange.tiles)}

    def __call__(self, tile, scenario):
        index = self._index.get(id(tile))
        if index is None or scenario != self.exchange.scenario:   # not what every worker holds: burned here
            return self.factory(tile=tile, scenario=scenario)
        simulator = self.exchange.simulator(index)   # one per tile and worker: its environments' and others' fires
        if isinstance(simulator, IncrementalFireSimulator):
            return simulator
        return SharedFireSimulator(simulator, index, self.exchange)

    def __reduce__(self):
        return (_plain_factory, (self.factory,))


def _plain_factory(factory):
    return factory


class SharedFireSimulator:
    """A tile's simulator whose :meth:`arrival_times` burns its fires through a :class:`FireExchange`; every
    other attribute is the simulator's own. ``fires_simulated`` counts this one's fires, wherever burned."""

    def __init__(self, simulator, tile_index: int, exchange: FireExchange):
        self.simulator, self.tile_index, self.exchange = simulator, tile_index, exchange
        self.fires_simulated = 0

    def __getattr__(self, name: str):
        return getattr(self.__dict__["simulator"], name)

    def arrival_times(self, ignitions: np.ndarray, fuel_breaks: Optional[np.ndarray] = None) -> np.ndarray:
        ignitions = np.asarray(ignitions, dtype=np.int64).reshape(-1, 2)
        if len(ignitions) < 2:
            before = self.simulator.fires_simulated
            arrival = self.simulator.arrival_times(ignitions, fuel_breaks)
            self.fires_simulated += self.simulator.fires_simulated - before
            return arrival
        arrival, fires = self.exchange.burn(self.tile_index, ignitions, fuel_breaks)
        self.fires_simulated += fires
        return arrival

    def burn_maps(self, ignitions: np.ndarray, fuel_breaks: Optional[np.ndarray] = None) -> np.ndarray:
        return np.isfinite(self.arrival_times(ignitions, fuel_breaks))
