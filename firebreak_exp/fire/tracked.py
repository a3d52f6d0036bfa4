"""Fires followed while fuel breaks are added."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from firebreak_exp.fire.flows import fire_flows
from firebreak_exp.fire.simulator import FireSimulator, IncrementalFireSimulator


class TrackedFires:
    """A fixed set of fires followed while fuel breaks are added (an episode's shown and reward fires).

    :meth:`update` brings ``arrival`` (float64 (k, H, W) minutes, as :meth:`FireSimulator.arrival_times`)
    and, with ``with_flows``, ``flows`` (:func:`fire_flows`) to the given breaks. On a simulator that adds
    breaks to a search (an :class:`IncrementalFireSimulator`) a fire is searched again only below the
    moves a new break blocks on its shortest paths, and its flows counted again only when its arrival
    changed; otherwise, or when a break was taken away, every fire is simulated again. Either way the result
    is what simulating every fire under the breaks gives.

    A fire lit on a broken cell burns nothing (as the simulator has it), unless ``own_ignition_burns``: then a
    break on a fire's own ignition point does not stop that fire, which burns as if that one cell were unbroken,
    while the break still blocks every other fire (such fires are simulated again at every update).
    """

    def __init__(self, simulator: FireSimulator, ignitions: np.ndarray, with_flows: bool = True,
                 own_ignition_burns: bool = False):
        self.simulator = simulator
        self.ignitions = np.asarray(ignitions, dtype=np.int64).reshape(-1, 2)
        self.with_flows = bool(with_flows)
        self.own_ignition_burns = bool(own_ignition_burns)
        self.arrival: Optional[np.ndarray] = None
        self.flows: Optional[np.ndarray] = None
        self.breaks: Optional[np.ndarray] = None
        self._search: Any = None            # the fires' search on an IncrementalFireSimulator

    def update(self, breaks: np.ndarray) -> "TrackedFires":
        breaks = np.asarray(breaks, dtype=bool)
        adds_breaks = isinstance(self.simulator, IncrementalFireSimulator)
        if self.arrival is None or not adds_breaks or (self.breaks & ~breaks).any():
            if adds_breaks:
                self._search = self.simulator.search(self.ignitions, breaks)
                self.arrival = self._search.arrival
            else:
                self.arrival = self.simulator.arrival_times(self.ignitions, breaks)
            changed = np.arange(len(self.ignitions))
        else:
            changed = self.simulator.add_breaks(self._search, breaks)
        if self.own_ignition_burns:
            changed = self._burn_from_broken_ignitions(breaks, changed)
        if self.with_flows and len(changed):
            flows = fire_flows(self.arrival[changed], self.simulator.spread_graph())
            if self.flows is None:
                self.flows = flows
            else:
                self.flows[changed] = flows
        self.breaks = breaks.copy()
        return self

    def _burn_from_broken_ignitions(self, breaks: np.ndarray, changed: np.ndarray) -> np.ndarray:
        """Simulate the fires lit on a broken cell under the breaks less their own cell, into ``arrival``;
        returns ``changed`` with them added. (On an incremental search ``arrival`` is the search's own: it
        writes such a fire's row, as unlit, only when it updates that fire, and every update writes the row
        here again after it.)"""
        own = np.flatnonzero(breaks[self.ignitions[:, 0], self.ignitions[:, 1]])
        for fire in own:
            row, col = self.ignitions[fire]
            others = breaks.copy()
            others[row, col] = False
            self.arrival[fire] = self.simulator.arrival_times(self.ignitions[fire:fire + 1], others)[0]
        return np.union1d(changed, own).astype(np.int64)
