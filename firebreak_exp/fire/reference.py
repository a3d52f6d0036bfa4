"""The reference simulator: pyretechnics' Eulerian level-set spread model."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from firebreak_exp.fire.cubes import build_space_time_cubes, cube_layers, from_pyretechnics, to_pyretechnics
from firebreak_exp.fire.scenario import BREAK_FUEL_MODEL, Scenario
from firebreak_exp.fire.simulator import FireSimulator, as_breaks, as_ignitions

#: Non-burnable columns added east of the tile in the reference's cubes (pyretechnics edge workaround).
_EAST_PAD = 1


class PyretechnicsSimulator(FireSimulator):
    """Reference simulator: pyretechnics' Eulerian level-set spread (``spread_fire_with_phi_field``).

    Surface fire with crown fire initiation and spread as pyretechnics computes them; no spotting.
    The SpaceTimeCubes are built once per tile (one time band longer than the burn, cell size from the tile);
    with fuel breaks only the fuel-model cube is rebuilt, from a copy of the fuel array with breaks set to 99.
    Each ignition is one fire (``SpreadState().ignite_cell``, ``max_duration = burn_duration``); a cell is
    burned when its time of arrival is finite.

    East-edge workaround: pyretechnics 2026.10.20's narrow-band tracker never tracks the last grid column
    (``narrow_band_tracking.resolve_truncated_x_segment`` treats an inclusive end as exclusive), so fires
    never burn a grid's eastern column. The cubes therefore carry one extra non-burnable (NB9) column east of
    the tile (cube shape (1, H, W + 1)); it stands in for the domain edge, and results are cropped to the tile.

    Burned cells stay burned: pyretechnics' level set states that phi only ever decreases, but its
    flux-limiter correction can flip the sign of dphi/dt where the phi gradient is lopsided, e.g. a lone
    ignited cell next to a non-burnable or broken cell, or a crown run along the tile edge; phi then rises
    back above 0 and the fire dies within minutes ("no burnable cells") although it would spread. With
    ``phi_check_interval`` (minutes, default 60) the fire is run in chunks of that length, each continuing
    the same SpreadState, and after each chunk phi is lowered back to its running minimum, which enforces
    the library's invariant; ``phi_check_interval=None`` runs one unchecked call, exactly as the library does.
    On Worcester tiles this rescues the 2-5% of fires that die that way and costs about 10% more time.
    """

    name = "pyretechnics"

    def __init__(self, tile, scenario: Scenario, max_cells_per_timestep: float = 0.4,
                 surface_lw_ratio_model: str = "behave", phi_check_interval: Optional[float] = 60.0):
        super().__init__(tile, scenario)
        if surface_lw_ratio_model not in ("behave", "rothermel"):
            raise ValueError("surface_lw_ratio_model must be 'behave' or 'rothermel'")
        if not max_cells_per_timestep > 0.0:
            raise ValueError("max_cells_per_timestep must be > 0")
        if phi_check_interval is not None and not phi_check_interval > 0.0:
            raise ValueError("phi_check_interval must be > 0 minutes or None")
        self.phi_check_interval = None if phi_check_interval is None else float(phi_check_interval)
        self.max_cells_per_timestep = float(max_cells_per_timestep)
        self.surface_lw_ratio_model = surface_lw_ratio_model
        band_duration = self.scenario.burn_duration + 60.0   # one band that outlasts the burn
        layers = cube_layers(tile, east_pad=_EAST_PAD)
        self._fuel = layers["fuel_model"].copy()               # padded fuel grid, never written
        self._fuel.flags.writeable = False
        self._cubes, self._cube_shape, self._cube_resolution = build_space_time_cubes(
            tile, self.scenario, band_duration, layers=layers)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["_cubes"]                                    # pyretechnics cubes do not pickle: rebuild
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._cubes, _, _ = build_space_time_cubes(self.tile, self.scenario, self._cube_resolution[0],
                                                   layers=cube_layers(self.tile, east_pad=_EAST_PAD))

    def _cubes_with_breaks(self, breaks: Optional[np.ndarray]) -> dict:
        if breaks is None:
            return self._cubes
        from pyretechnics.space_time_cube import SpaceTimeCube

        fuel = np.array(self._fuel, dtype=np.float32, copy=True)
        fuel[:, :self.shape[1]][to_pyretechnics(breaks) > 0.5] = BREAK_FUEL_MODEL
        cubes = dict(self._cubes)
        cubes["fuel_model"] = SpaceTimeCube(self._cube_shape, fuel)
        return cubes

    def time_of_arrival(self, ignition, fuel_breaks: Optional[np.ndarray] = None) -> np.ndarray:
        """float32 (H, W) minutes from ignition to arrival, NaN where the fire did not arrive.

        Raises ``ValueError`` for an ignition on a non-burnable or broken cell (nothing burns there).
        """
        (row, col), = as_ignitions(ignition, self.shape)
        breaks = as_breaks(fuel_breaks, self.shape)
        if not self.burnable[row, col] or (breaks is not None and breaks[row, col]):
            raise ValueError(f"ignition ({row}, {col}) is on a non-burnable or broken cell")
        return self._time_of_arrival(self._cubes_with_breaks(breaks), row, col)

    def _time_of_arrival(self, cubes: dict, row: int, col: int) -> np.ndarray:
        from pyretechnics.eulerian_level_set import SpreadState, spread_fire_with_phi_field

        state = SpreadState(self._cube_shape).ignite_cell((self.shape[0] - 1 - int(row), int(col)))
        duration = float(self.scenario.burn_duration)
        step = duration if self.phi_check_interval is None else float(self.phi_check_interval)
        floor = None                                           # lowest phi seen so far (monotone mode)
        if self.phi_check_interval is not None:
            floor = np.array(state.get_full_matrices(["phi"])["phi"], copy=True)
        now, calls = 0.0, 0
        while duration - now > 1.0 / 60.0:                    # pyretechnics' own 1-second exit threshold
            result = spread_fire_with_phi_field(
                cubes, state,
                cube_resolution=self._cube_resolution,
                start_time=now,
                max_duration=min(step, duration - now),
                max_cells_per_timestep=self.max_cells_per_timestep,
                surface_lw_ratio_model=self.surface_lw_ratio_model,
            )
            state, calls = result["spread_state"], calls + 1
            stopped_at = float(result["stop_time"])
            if floor is None:
                break
            phi = state.get_full_matrices(["phi"])["phi"]        # a view of the state's phi field
            np.minimum(phi, floor, out=phi)
            if not np.array_equal(state.get_full_matrices(["phi"])["phi"], phi):
                raise RuntimeError("pyretechnics no longer exposes phi as a view; use phi_check_interval=None")
            floor = np.array(phi, copy=True)
            if stopped_at <= now or calls > 4 * math.ceil(duration / step) + 100:
                break                                          # the fire is out (or will not progress)
            now = stopped_at
        toa = state.get_full_matrices(["time_of_arrival"])["time_of_arrival"]
        return from_pyretechnics(toa[:, :self.shape[1]]).astype(np.float32, copy=True)

    def _arrival(self, ignitions: np.ndarray, breaks: Optional[np.ndarray]) -> np.ndarray:
        cubes = self._cubes_with_breaks(breaks)
        times = np.stack([self._time_of_arrival(cubes, row, col) for row, col in ignitions]).astype(np.float64)
        return np.where(np.isnan(times), np.inf, times)
