"""The fire simulator interface: burn a tile from point ignitions, with or without fuel breaks.

:class:`FireSimulator` burns every fire from scratch; an :class:`IncrementalFireSimulator` also keeps a
search of fires and adds breaks to it, searching again only where the new breaks cut the fires' paths.
"""
from __future__ import annotations

import abc
import functools
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from firebreak_exp.fire.cubes import directional_spread_rates
from firebreak_exp.fire.scenario import Scenario, burnable_mask


def as_ignitions(ignitions, shape: tuple) -> np.ndarray:
    """int64 (k, 2) (row, col) of ``ignitions``; ValueError for non-integer cells or cells off the tile."""
    ign = np.asarray(ignitions)
    if ign.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if not np.issubdtype(ign.dtype, np.integer):
        if not np.all(np.equal(np.mod(ign, 1), 0)):
            raise ValueError("ignitions must be integer (row, col) cell indices")
    ign = ign.astype(np.int64).reshape(-1, 2)
    rows, cols = shape
    bad = (ign[:, 0] < 0) | (ign[:, 0] >= rows) | (ign[:, 1] < 0) | (ign[:, 1] >= cols)
    if bad.any():
        raise ValueError(f"ignitions outside the {rows}x{cols} tile: {ign[bad].tolist()}")
    return ign


def as_breaks(fuel_breaks, shape: tuple) -> Optional[np.ndarray]:
    """bool (H, W) of ``fuel_breaks``, or None when there are none; ValueError for another shape."""
    if fuel_breaks is None:
        return None
    breaks = np.asarray(fuel_breaks)
    if breaks.shape != tuple(shape):
        raise ValueError(f"fuel_breaks has shape {breaks.shape}, expected {tuple(shape)}")
    breaks = breaks.astype(bool)
    return breaks if breaks.any() else None


class FireSimulator:
    """Burns a tile from point ignitions, optionally with fuel breaks (cells turned into non-burnable NB9
    fuel, code 99).

    Everything that depends only on the tile is built once in ``__init__``; :meth:`burn_maps` never mutates
    the tile. Subclasses implement :meth:`_arrival` for validated inputs.
    """

    name: str = "base"

    def __init__(self, tile, scenario: Scenario):
        self.tile = tile
        self.scenario = scenario
        self.shape = tuple(int(n) for n in np.shape(tile.fuel_model))
        self.burnable = burnable_mask(tile.fuel_model)
        self.burnable.flags.writeable = False
        self.num_burnable = int(self.burnable.sum())
        self._spread_rates: dict = {}   # (azimuth, surface_lw_ratio_model) -> float64 (H, W) m/min
        self.fires_simulated = 0        # fires burned so far (searched again, for TravelTimeSimulator.add_breaks)

    def spread_rates(self, azimuths: Sequence[float], surface_lw_ratio_model: str = "behave") -> np.ndarray:
        """:func:`directional_spread_rates` of this tile and scenario, each azimuth computed once per
        simulator (the travel-time graph and the environment's spread-rate channels share them)."""
        missing = [float(a) for a in azimuths if (float(a), surface_lw_ratio_model) not in self._spread_rates]
        if missing:
            rates = directional_spread_rates(self.tile, self.scenario, missing, surface_lw_ratio_model)
            self._spread_rates.update({(a, surface_lw_ratio_model): rate for a, rate in zip(missing, rates)})
        return np.stack([self._spread_rates[(float(a), surface_lw_ratio_model)] for a in azimuths])

    def arrival_times(self, ignitions: np.ndarray, fuel_breaks: Optional[np.ndarray] = None) -> np.ndarray:
        """float64 (k, H, W): minutes from each ignition until the fire reaches a cell, inf where it does not
        within ``scenario.burn_duration``.

        ``ignitions``: int (k, 2) of (row, col); ``fuel_breaks``: bool (H, W) or None. An ignition on a
        non-burnable or broken cell burns nothing (all inf).
        """
        ign = as_ignitions(ignitions, self.shape)
        breaks = as_breaks(fuel_breaks, self.shape)
        times = np.full((len(ign),) + self.shape, np.inf)
        if len(ign) == 0:
            return times
        live = self.burnable if breaks is None else (self.burnable & ~breaks)
        lit = live[ign[:, 0], ign[:, 1]]
        if lit.any():
            times[lit] = self._arrival(ign[lit], breaks)
            self.fires_simulated += int(lit.sum())
        return times

    def burn_maps(self, ignitions: np.ndarray, fuel_breaks: Optional[np.ndarray] = None) -> np.ndarray:
        """bool (k, H, W): the cells each fire burns within ``scenario.burn_duration`` (see :meth:`arrival_times`)."""
        return np.isfinite(self.arrival_times(ignitions, fuel_breaks))

    def burned_fraction(self, ignitions: np.ndarray, fuel_breaks: Optional[np.ndarray] = None) -> np.ndarray:
        """float (k,): burned cells / burnable cells of the UNTREATED tile (so breaks lower it)."""
        maps = self.burn_maps(ignitions, fuel_breaks)
        if self.num_burnable == 0:
            return np.zeros(len(maps), dtype=np.float64)
        return maps.reshape(len(maps), -1).sum(axis=1) / float(self.num_burnable)

    def _arrival(self, ignitions: np.ndarray, breaks: Optional[np.ndarray]) -> np.ndarray:
        """float (k, H, W) arrival minutes (inf: not reached) for ignitions on burnable, unbroken cells."""
        raise NotImplementedError

    def spread_graph(self) -> Optional["SpreadGraph"]:
        """The cell-to-cell moves fire takes and their minutes, when the simulator has them (None here)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tile={getattr(self.tile, 'name', '?')!r}, shape={self.shape})"


class IncrementalFireSimulator(FireSimulator, metaclass=abc.ABCMeta):
    """A simulator that adds breaks to a running search of fires: :meth:`search` burns fires and keeps
    their search, :meth:`add_breaks` brings it to more breaks. The arrival times are those
    :meth:`FireSimulator.arrival_times` gives."""

    @abc.abstractmethod
    def search(self, ignitions: np.ndarray, fuel_breaks: Optional[np.ndarray] = None) -> Any:
        """The fires of ``ignitions`` under ``fuel_breaks``, their arrival times (k, H, W) minutes in
        ``.arrival``."""

    @abc.abstractmethod
    def add_breaks(self, fires: Any, fuel_breaks: np.ndarray) -> np.ndarray:
        """Bring ``fires`` (from :meth:`search`) to ``fuel_breaks``, their breaks and more; returns the
        indices of the fires whose arrival changed."""

    @abc.abstractmethod
    def select(self, fires: Any, which: np.ndarray) -> Any:
        """A copy of the fires ``which`` (indices) of ``fires`` (from :meth:`search`), which :meth:`add_breaks`
        can bring to more breaks while ``fires`` stays as it is."""


@dataclass(frozen=True)
class SpreadGraph:
    """A simulator's moves between cells, grouped by the cell they reach: the moves into cell ``v`` are
    ``source[start[v]:start[v + 1]]`` taking ``minutes[...]`` (int64, float64 arrays; ``start`` has H*W + 1
    entries)."""

    source: np.ndarray
    minutes: np.ndarray
    start: np.ndarray

    @classmethod
    def from_moves(cls, src: np.ndarray, dst: np.ndarray, minutes: np.ndarray, num_cells: int) -> "SpreadGraph":
        order = np.argsort(dst, kind="stable")
        start = np.concatenate(([0], np.cumsum(np.bincount(dst, minlength=num_cells))))
        return cls(np.asarray(src, np.int64)[order], np.asarray(minutes, np.float64)[order], start.astype(np.int64))


@functools.lru_cache(maxsize=None)
def compiled(function):
    """``numba.njit(cache=True)`` of ``function`` (numba imported when first needed)."""
    import numba
    return numba.njit(cache=True)(function)
