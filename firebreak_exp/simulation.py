"""Fire simulation backends: burn a landscape tile from point ignitions, with or without fuel breaks.

Two interchangeable simulators share the :class:`FireSimulator` interface:

* :class:`PyretechnicsSimulator` (``"pyretechnics"``) is the reference: pyretechnics' Eulerian level-set
  spread model (``spread_fire_with_phi_field``), with crown fire handled as the library does.
* :class:`TravelTimeSimulator` (``"travel_time"``) is the fast backend used for training: minimum travel
  time (Finney 2002) over a 16-neighbour cell graph whose edge times come from pyretechnics' own directional
  spread rates. :func:`compare_simulators` measures how closely it follows the reference.

Grid orientation. Tiles are stored like the GeoTIFFs they come from: row 0 is the northern edge and
aspect/wind directions are degrees clockwise from north. pyretechnics puts ``y = 0`` at the *southern*
edge (its ``y`` axis points north), so every layer is flipped north-south on the way in and every result
flipped back on the way out. This keeps wind, aspect and slope geographically consistent.

Fuel breaks turn cells into non-burnable fuel model 99 (NB9, bare ground) for the simulation only; the
tile itself is never modified.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Sequence

import numpy as np

__all__ = [
    "Scenario",
    "FireSimulator",
    "PyretechnicsSimulator",
    "TravelTimeSimulator",
    "SIMULATORS",
    "compare_simulators",
    "compare_details",
    "fit_rate_factor",
    "fire_flow",
    "fire_flows",
    "SpreadGraph",
    "random_ignitions",
    "directional_spread_rates",
    "ray_spread_rates",
    "build_space_time_cubes",
    "TRAVEL_TIME_RATE_FACTOR",
    "NONBURNABLE_FUEL_MODELS",
    "BREAK_FUEL_MODEL",
]

#: Scott & Burgan 40 non-burnable codes (NB1 urban, NB2 snow/ice, NB3 agriculture, NB8 water, NB9 bare).
NONBURNABLE_FUEL_MODELS = (91, 92, 93, 98, 99)
#: Fuel model written into fuel-break cells (NB9, bare ground).
BREAK_FUEL_MODEL = 99
#: Non-burnable columns added east of the tile in the reference's cubes (pyretechnics edge workaround).
_EAST_PAD = 1


# ---------------------------------------------------------------------------------------------------------
# Scenario
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    """Fire weather and how fires are evaluated.

    Units: ``wind_speed`` km/h at 10 m; ``wind_direction`` degrees clockwise from north the wind blows
    FROM (pyretechnics' ``upwind_direction``; 270 = westerly wind, fires run east); fuel and foliar
    moistures kg water / kg oven-dry fuel; ``burn_duration`` minutes each fire burns; ``num_ignitions``
    fires an episode shows (used by the environment, not by the simulators; 8 here, as the tests and
    ``experiment=pyretechnics`` use, and 32 in the default config, ``conf/scenario/dry_summer.yaml``).

    The defaults are a dry, windy late-summer day with cured herbaceous fuel. LANDFIRE's northern-hardwood
    timber-litter fuels (TL5/TL6, most of Worcester, VT) spread at well under 1 m/min under their canopy
    even then, so fires burn for a long shift (14 h) to cover a substantial share of a tile of 30 m cells.
    Measured (mean burned fraction of the tile's burnable cells over random burnable ignitions): Worcester
    25 x 25 tiles 0.43 (1800 fires, travel-time backend; 0.46 over 60 reference fires), Worcester 50 x 50
    tiles 0.15; the synthetic landscape's more flammable fuels 0.63 (25 x 25) and 0.6 (50 x 50), many
    fires there burning the whole tile unless breaks stop them.
    """

    wind_speed: float = 30.0
    wind_direction: float = 270.0
    fuel_moisture_dead_1hr: float = 0.03
    fuel_moisture_dead_10hr: float = 0.04
    fuel_moisture_dead_100hr: float = 0.05
    fuel_moisture_live_herbaceous: float = 0.30
    fuel_moisture_live_woody: float = 0.60
    foliar_moisture: float = 0.80
    burn_duration: float = 840.0
    num_ignitions: int = 8

    def __post_init__(self) -> None:
        if not self.wind_speed >= 0.0:
            raise ValueError(f"Scenario.wind_speed must be >= 0 km/h, got {self.wind_speed!r}")
        if not math.isfinite(self.wind_direction):
            raise ValueError(f"Scenario.wind_direction must be finite, got {self.wind_direction!r}")
        for name in ("fuel_moisture_dead_1hr", "fuel_moisture_dead_10hr", "fuel_moisture_dead_100hr",
                     "fuel_moisture_live_herbaceous", "fuel_moisture_live_woody", "foliar_moisture"):
            value = getattr(self, name)
            if not value > 0.0:
                raise ValueError(f"Scenario.{name} must be > 0 kg/kg, got {value!r}")
        if not self.burn_duration > 0.0:
            raise ValueError(f"Scenario.burn_duration must be > 0 minutes, got {self.burn_duration!r}")
        if int(self.num_ignitions) != self.num_ignitions or self.num_ignitions < 1:
            raise ValueError(f"Scenario.num_ignitions must be a positive integer, got {self.num_ignitions!r}")

    def pyretechnics_weather(self) -> Dict[str, float]:
        """The scenario as pyretechnics' constant weather inputs (cube name -> value)."""
        return {
            "wind_speed_10m": float(self.wind_speed),
            "upwind_direction": float(self.wind_direction) % 360.0,
            "fuel_moisture_dead_1hr": float(self.fuel_moisture_dead_1hr),
            "fuel_moisture_dead_10hr": float(self.fuel_moisture_dead_10hr),
            "fuel_moisture_dead_100hr": float(self.fuel_moisture_dead_100hr),
            "fuel_moisture_live_herbaceous": float(self.fuel_moisture_live_herbaceous),
            "fuel_moisture_live_woody": float(self.fuel_moisture_live_woody),
            "foliar_moisture": float(self.foliar_moisture),
        }


# ---------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------

def _to_pyretechnics(array: np.ndarray) -> np.ndarray:
    """A tile layer (row 0 = north) as a new C-contiguous float32 grid in pyretechnics' layout (y = 0 south)."""
    return np.ascontiguousarray(np.flipud(np.asarray(array)), dtype=np.float32).copy()


def _from_pyretechnics(array: np.ndarray) -> np.ndarray:
    """A pyretechnics grid (y = 0 south) back in tile layout (row 0 = north)."""
    return np.ascontiguousarray(np.flipud(np.asarray(array)))


def _burnable_mask(fuel_model: np.ndarray) -> np.ndarray:
    return ~np.isin(np.asarray(fuel_model), NONBURNABLE_FUEL_MODELS)


def _tile_layers(tile) -> Dict[str, np.ndarray]:
    """Tile layers in pyretechnics units and layout (new arrays; the tile is only read)."""
    slope = np.asarray(tile.slope, dtype=np.float32)
    aspect = np.asarray(tile.aspect, dtype=np.float32)
    flat = (aspect < 0.0) | ~np.isfinite(aspect)      # LANDFIRE writes -1 where the ground is flat
    layers = {
        "slope": np.where(flat, np.float32(0.0), slope),
        "aspect": np.where(flat, np.float32(0.0), aspect),
        "fuel_model": np.asarray(tile.fuel_model),
        "canopy_cover": np.asarray(tile.canopy_cover),
        "canopy_height": np.asarray(tile.canopy_height),
        "canopy_base_height": np.asarray(tile.canopy_base_height),
        "canopy_bulk_density": np.asarray(tile.canopy_bulk_density),
    }
    shape = tuple(np.shape(tile.fuel_model))
    for name, array in layers.items():
        if array.shape != shape:
            raise ValueError(f"tile layer {name!r} has shape {array.shape}, expected {shape}")
        if name != "fuel_model" and not np.all(np.isfinite(array)):
            raise ValueError(f"tile layer {name!r} contains non-finite values (nodata?)")
    return {name: _to_pyretechnics(array) for name, array in layers.items()}


def _cube_layers(tile, east_pad: int = 0) -> Dict[str, np.ndarray]:
    """Topography/fuel layers in pyretechnics' layout, with ``east_pad`` non-burnable (NB9) columns appended
    on the east edge (see :class:`PyretechnicsSimulator` for why)."""
    layers = _tile_layers(tile)
    if east_pad:
        cols = layers["fuel_model"].shape[1]
        for name in layers:
            layers[name] = np.ascontiguousarray(np.pad(layers[name], ((0, 0), (0, int(east_pad))), mode="edge"))
        layers["fuel_model"][:, cols:] = BREAK_FUEL_MODEL
    return layers


def build_space_time_cubes(tile, scenario: Scenario, band_duration: float, east_pad: int = 0,
                           layers: Optional[Dict[str, np.ndarray]] = None) -> tuple:
    """pyretechnics SpaceTimeCubes for ``tile`` under ``scenario``: one time band, cube shape (1, H, W + east_pad).

    Returns ``(cubes, cube_shape, cube_resolution)`` with ``cube_resolution = (band_duration, cell_size,
    cell_size)``. The cubes own copies of the tile's arrays in pyretechnics' layout (see module docstring);
    ``layers`` (from ``_cube_layers(tile, east_pad)``) may be passed to reuse arrays already built.
    """
    from pyretechnics.space_time_cube import SpaceTimeCube

    cell_size = float(tile.cell_size)
    if not cell_size > 0.0:
        raise ValueError(f"tile.cell_size must be > 0 m, got {tile.cell_size!r}")
    if layers is None:
        layers = _cube_layers(tile, east_pad)
    cube_shape = (1,) + tuple(int(n) for n in layers["fuel_model"].shape)
    cubes = {name: SpaceTimeCube(cube_shape, array) for name, array in layers.items()}
    for name, value in scenario.pyretechnics_weather().items():
        cubes[name] = SpaceTimeCube(cube_shape, value)
    return cubes, cube_shape, (float(band_duration), cell_size, cell_size)


def _as_ignitions(ignitions, shape: tuple) -> np.ndarray:
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


def _as_breaks(fuel_breaks, shape: tuple) -> Optional[np.ndarray]:
    if fuel_breaks is None:
        return None
    breaks = np.asarray(fuel_breaks)
    if breaks.shape != tuple(shape):
        raise ValueError(f"fuel_breaks has shape {breaks.shape}, expected {tuple(shape)}")
    breaks = breaks.astype(bool)
    return breaks if breaks.any() else None


# ---------------------------------------------------------------------------------------------------------
# Simulators
# ---------------------------------------------------------------------------------------------------------

class FireSimulator:
    """Burns a tile from point ignitions, optionally with fuel breaks (cells turned into non-burnable NB9
    fuel, code 99).

    Everything that depends only on the tile is built once in ``__init__``; :meth:`burn_maps` never mutates
    the tile. Subclasses implement :meth:`_arrival` for validated inputs.
    """

    name: str = "base"

    def __init__(self, tile, scenario: Optional[Scenario] = None):
        self.tile = tile
        self.scenario = Scenario() if scenario is None else scenario
        self.shape = tuple(int(n) for n in np.shape(tile.fuel_model))
        self.burnable = _burnable_mask(tile.fuel_model)
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
        ign = _as_ignitions(ignitions, self.shape)
        breaks = _as_breaks(fuel_breaks, self.shape)
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

    def __init__(self, tile, scenario: Optional[Scenario] = None, max_cells_per_timestep: float = 0.4,
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
        layers = _cube_layers(tile, east_pad=_EAST_PAD)
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
                                                   layers=_cube_layers(self.tile, east_pad=_EAST_PAD))

    def _cubes_with_breaks(self, breaks: Optional[np.ndarray]) -> dict:
        if breaks is None:
            return self._cubes
        from pyretechnics.space_time_cube import SpaceTimeCube

        fuel = np.array(self._fuel, dtype=np.float32, copy=True)
        fuel[:, :self.shape[1]][_to_pyretechnics(breaks) > 0.5] = BREAK_FUEL_MODEL
        cubes = dict(self._cubes)
        cubes["fuel_model"] = SpaceTimeCube(self._cube_shape, fuel)
        return cubes

    def time_of_arrival(self, ignition, fuel_breaks: Optional[np.ndarray] = None) -> np.ndarray:
        """float32 (H, W) minutes from ignition to arrival, NaN where the fire did not arrive.

        Raises ``ValueError`` for an ignition on a non-burnable or broken cell (nothing burns there).
        """
        (row, col), = _as_ignitions(ignition, self.shape)
        breaks = _as_breaks(fuel_breaks, self.shape)
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
        return _from_pyretechnics(toa[:, :self.shape[1]]).astype(np.float32, copy=True)

    def _arrival(self, ignitions: np.ndarray, breaks: Optional[np.ndarray]) -> np.ndarray:
        cubes = self._cubes_with_breaks(breaks)
        times = np.stack([self._time_of_arrival(cubes, row, col) for row, col in ignitions]).astype(np.float64)
        return np.where(np.isnan(times), np.inf, times)


# --- travel-time backend ---------------------------------------------------------------------------------

#: Neighbour offsets (d_row, d_col): the 8 king moves, then the 8 knight moves used with ``neighbours=16``.
_KING_OFFSETS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))
_KNIGHT_OFFSETS = ((-2, 1), (-1, 2), (1, 2), (2, 1), (2, -1), (1, -2), (-1, -2), (-2, -1))

#: Default rate factor of :class:`TravelTimeSimulator`, fitted with :func:`fit_rate_factor` (see its docstring):
#: 1.00 (mean |burned fraction error| 0.012 over 208 fires on 26 western Worcester tiles).
TRAVEL_TIME_RATE_FACTOR = 1.0


def _offset_azimuth(d_row: int, d_col: int) -> float:
    """Degrees clockwise from north of a move by (d_row, d_col) on a tile whose row 0 is north."""
    return math.degrees(math.atan2(d_col, -d_row)) % 360.0


def _knight_crossed_cells(d_row: int, d_col: int) -> tuple:
    """The two cells (offsets from the start) a straight knight move passes through between its ends.

    The segment from (0, 0) to (d_row, d_col) with |d_row|, |d_col| = {1, 2} passes through exactly two
    intermediate cells, a quarter of its length in each (and a quarter in each end cell).
    """
    if abs(d_col) == 2:
        step = int(np.sign(d_col))
        return (0, step), (d_row, step)
    step = int(np.sign(d_row))
    return (step, 0), (step, d_col)


def directional_spread_rates(tile, scenario: Scenario, azimuths: Sequence[float],
                             surface_lw_ratio_model: str = "behave", cubes: Optional[dict] = None) -> np.ndarray:
    """pyretechnics' spread rate (m/min, on the slope plane) of a fire front facing each azimuth.

    Calls ``pyretechnics.burn_cells.burn_all_cells_toward_azimuth`` once per azimuth (degrees clockwise
    from north) and returns float64 (len(azimuths), H, W) in tile layout. Crown fire is included where the
    surface fire's intensity in that direction initiates it, as pyretechnics does.
    """
    from pyretechnics.burn_cells import burn_all_cells_toward_azimuth

    if cubes is None:
        cubes, _, _ = build_space_time_cubes(tile, scenario, scenario.burn_duration + 60.0)
    rates = []
    for azimuth in azimuths:
        behaviour = burn_all_cells_toward_azimuth(cubes, float(azimuth), 0,
                                                  surface_lw_ratio_model=surface_lw_ratio_model)
        rates.append(_from_pyretechnics(behaviour["spread_rate"]).astype(np.float64))
    return np.stack(rates)


def ray_spread_rates(normal_rates: np.ndarray, azimuths: np.ndarray, slope: np.ndarray, aspect: np.ndarray,
                     ray_azimuths: Sequence[float]) -> np.ndarray:
    """Horizontal ray (Huygens wavelet) spread rates from pyretechnics' front-normal rates.

    pyretechnics' ``burn_cell_toward_azimuth`` gives the spread rate of a front whose normal faces the
    azimuth, measured on the slope plane: for its elliptical wavelets this is the ellipse's support
    function, i.e. exactly what the level-set model advances a front with. A travel-time path instead needs
    the distance a fire runs *along* a direction per minute, the radius of the wavelet itself (Wulff shape):

        r(u) = min over sampled normals n_j with n_j . u > 0 of  s_j / (n_j . u)

    where ``s_j`` is the horizontal normal speed. Both are horizontal: with elevation gradient ``g``, the
    slope-plane direction pyretechnics uses for azimuth unit vector ``a`` is the normal of horizontal fronts
    with normal ``n = unit(a + (a.g) g)``, and such a front moves horizontally at
    ``s = R * sqrt(1 - (n.g)^2 / (1 + |g|^2))`` (the same projection as pyretechnics' level set).

    Returns float64 (len(ray_azimuths), H, W), 0 where the cell does not burn.
    """
    az = np.radians(np.asarray(azimuths, dtype=np.float64))[:, None, None]
    up = np.radians(np.asarray(aspect, dtype=np.float64) + 180.0)
    slope = np.asarray(slope, dtype=np.float64)
    gx, gy = slope * np.sin(up), slope * np.cos(up)            # elevation gradient, east/north components
    ax, ay = np.sin(az), np.cos(az)                            # azimuth unit vectors
    a_dot_g = ax * gx + ay * gy
    nx, ny = ax + a_dot_g * gx, ay + a_dot_g * gy
    norm = np.hypot(nx, ny)
    nx, ny = nx / norm, ny / norm
    n_dot_g = nx * gx + ny * gy
    speed = np.asarray(normal_rates, dtype=np.float64) * np.sqrt(
        np.clip(1.0 - n_dot_g ** 2 / (1.0 + gx ** 2 + gy ** 2), 0.0, 1.0))
    out = np.empty((len(ray_azimuths),) + speed.shape[1:], dtype=np.float64)
    for k, ray in enumerate(ray_azimuths):
        ux, uy = math.sin(math.radians(ray)), math.cos(math.radians(ray))
        cos = nx * ux + ny * uy
        with np.errstate(divide="ignore", invalid="ignore"):
            candidate = np.where(cos > 1e-9, speed / cos, np.inf)
        out[k] = candidate.min(axis=0)
    out[~np.isfinite(out)] = 0.0
    return out


class TravelTimeSimulator(FireSimulator):
    """Fast backend: minimum travel time (Finney 2002) on a cell graph built from pyretechnics' rates.

    ``__init__`` (once per tile) asks pyretechnics for the front-normal spread rate of every cell toward
    ``num_azimuths`` evenly spaced azimuths (``burn_all_cells_toward_azimuth`` on the same cubes and weather
    as the reference, crown fire included), converts them to horizontal ray spread rates ``R_a(theta)``
    along each neighbour direction (:func:`ray_spread_rates`; feeding the front-normal rates to the graph
    directly would make flanks and backs several times too fast), and builds a directed graph over cells:

    * king moves (8 neighbours): ``t = d/2 * (1/R_a(theta) + 1/R_b(theta))``; a diagonal move squeezes
      between the two cells sharing the corner, so it needs both to be burnable and unbroken (pyretechnics'
      level set cannot pass a corner either, and a staircase of breaks must hold);
    * with ``neighbours=16`` (default) also knight moves (1, 2): the straight segment spends a quarter of its
      length in each end cell and in each of the two cells it crosses, so ``t = d/4 * sum of 1/R(theta)``
      over the four cells, and both crossed cells must burn (a one-cell break line cannot be jumped).
      16 neighbours bound the direction error of travel distances by 2.7% instead of 8.2% with 8 (Finney
      2002); with 8 the fit needs a larger fudge factor and agrees slightly worse.

    Edges are absent where either end does not burn. Ignition: pyretechnics' ``ignite_cell`` burns the whole
    cell at once (phi = -1 there, +1 around, so the front starts on the cell's edge); each cell therefore
    has a second, source-only graph node whose out-edges skip the ignition cell's own share of the edge
    time (``ignite_whole_cell=False`` starts fires at the cell centre instead). ``burn_maps`` skips the edges
    that need a broken cell and runs Dijkstra from each ignition, stopping at ``burn_duration``
    (:func:`_shortest_paths`, compiled; the numbers of ``scipy.sparse.csgraph.dijkstra`` with ``limit``);
    a cell is burned when its arrival time is within ``burn_duration``, every travel time being divided by
    ``rate_factor``.

    ``rate_factor`` is the one calibration constant; its default :data:`TRAVEL_TIME_RATE_FACTOR` (1.0) was
    fitted with :func:`fit_rate_factor` against :class:`PyretechnicsSimulator` (see there for the tiles).
    Building the graph costs about 0.1-0.2 s per 25 x 25 tile and 0.5-0.9 s per 50 x 50 tile (the
    ``num_azimuths`` pyretechnics calls); each fire then costs well under a millisecond.
    """

    name = "travel_time"

    def __init__(self, tile, scenario: Optional[Scenario] = None, rate_factor: Optional[float] = None,
                 neighbours: int = 16, num_azimuths: int = 32, surface_lw_ratio_model: str = "behave",
                 ignite_whole_cell: bool = True):
        super().__init__(tile, scenario)
        self.ignite_whole_cell = bool(ignite_whole_cell)
        if neighbours not in (8, 16):
            raise ValueError("neighbours must be 8 or 16")
        if num_azimuths < 8:
            raise ValueError("num_azimuths must be >= 8")
        self.rate_factor = float(TRAVEL_TIME_RATE_FACTOR if rate_factor is None else rate_factor)
        if not self.rate_factor > 0.0:
            raise ValueError("rate_factor must be > 0")
        self.neighbours = int(neighbours)
        self.num_azimuths = int(num_azimuths)
        self.surface_lw_ratio_model = surface_lw_ratio_model

        rows, cols = self.shape
        offsets = _KING_OFFSETS + (_KNIGHT_OFFSETS if neighbours == 16 else ())
        edge_azimuths = [_offset_azimuth(dr, dc) for dr, dc in offsets]
        sample_azimuths = np.arange(self.num_azimuths) * (360.0 / self.num_azimuths)
        normal = self.spread_rates(sample_azimuths, surface_lw_ratio_model)
        layers = _tile_layers(tile)                            # flat-aspect cleaned slope/aspect
        ray = ray_spread_rates(normal, sample_azimuths, _from_pyretechnics(layers["slope"]),
                               _from_pyretechnics(layers["aspect"]), edge_azimuths)
        ray[:, ~self.burnable] = 0.0
        with np.errstate(divide="ignore"):
            slowness = np.where(ray > 0.0, 1.0 / ray, np.inf)  # min/m, (num_offsets, H, W)

        cell_size = float(tile.cell_size)
        n_cells = rows * cols
        index = np.arange(n_cells).reshape(rows, cols)
        live = self.burnable.ravel()
        keys = ("src", "dst", "weight", "start_weight", "via1", "via2")
        parts = {key: [] for key in keys}
        for k, (dr, dc) in enumerate(offsets):
            r0, r1 = max(0, -dr), min(rows, rows - dr)
            c0, c1 = max(0, -dc), min(cols, cols - dc)
            if r0 >= r1 or c0 >= c1:
                continue
            cells = lambda o_r, o_c: index[r0 + o_r:r1 + o_r, c0 + o_c:c1 + o_c]      # noqa: E731
            near = lambda o_r, o_c: slowness[k, r0 + o_r:r1 + o_r, c0 + o_c:c1 + o_c]  # noqa: E731
            src, dst = cells(0, 0), cells(dr, dc)
            via1 = via2 = src                                   # cells besides the ends the move needs
            length = cell_size * math.hypot(dr, dc)
            if abs(dr) + abs(dc) == 3:                          # knight move through two crossed cells
                (ar, ac), (br, bc) = _knight_crossed_cells(dr, dc)
                via1, via2 = cells(ar, ac), cells(br, bc)
                start_weight = length / 4.0 * (near(dr, dc) + near(ar, ac) + near(br, bc))
                weight = start_weight + length / 4.0 * near(0, 0)
            else:
                start_weight = length / 2.0 * near(dr, dc)
                weight = start_weight + length / 2.0 * near(0, 0)
                if dr != 0 and dc != 0:                         # diagonal: squeezes between two cells
                    via1, via2 = cells(dr, 0), cells(0, dc)
            keep = np.isfinite(weight) & live[via1] & live[via2]
            for key, value in zip(keys, (src, dst, weight, start_weight, via1, via2)):
                parts[key].append(value[keep].ravel())
        edges = {key: np.concatenate(value) for key, value in parts.items()}
        # Graph nodes: cells 0..n-1, then one ignition node per cell (n..2n-1) whose out-edges skip the
        # source cell's share: pyretechnics ignites a whole cell (phi = -1 at its centre, +1 around), so its
        # front starts on the cell's boundary, not at its centre.
        if not self.ignite_whole_cell:
            edges["start_weight"] = edges["weight"]
        node_src = np.concatenate([edges["src"], edges["src"] + n_cells])
        order = np.argsort(node_src, kind="stable")
        self._node_src = node_src[order].astype(np.int32)
        self._weight = np.concatenate([edges["weight"], edges["start_weight"]])[order].astype(np.float64)
        for key in ("src", "dst", "via1", "via2"):
            setattr(self, "_" + key, np.concatenate([edges[key], edges[key]])[order].astype(np.int32))
        self._first_edge = np.concatenate(([0], np.cumsum(np.bincount(self._node_src, minlength=2 * n_cells))))
        self._in_edge = np.argsort(self._dst, kind="stable")          # edge ids by the node they reach
        self._in_first = np.concatenate(([0], np.cumsum(np.bincount(self._dst, minlength=2 * n_cells))))
        # the moves each cell blocks when broken (it starts, ends or is crossed by them): cell c's are
        # _blocked_edge[_blocked_first[c]:_blocked_first[c + 1]]
        # (cell, edge) pairs without repeats, sorted by cell then edge: one int64 key per pair
        num_moves = len(self._dst)
        cell_edge = np.unique(np.concatenate([self._src, self._dst, self._via1, self._via2]).astype(np.int64)
                              * num_moves + np.tile(np.arange(num_moves), 4))
        self._blocked_edge = cell_edge % num_moves
        self._blocked_first = np.concatenate(([0], np.cumsum(np.bincount(cell_edge // num_moves,
                                                                          minlength=n_cells))))
        self.num_edges = len(edges["src"])
        self._arrival(np.zeros((0, 2), np.int64), None)   # compiles the kernel here, not in the first fire
        self._spread_graph: Optional[SpreadGraph] = None

    def spread_graph(self) -> "SpreadGraph":
        """The graph's cell-to-cell moves (not the ignition nodes' shortened ones), in calibrated minutes."""
        if self._spread_graph is None:
            cell_moves = self._node_src < self.shape[0] * self.shape[1]
            self._spread_graph = SpreadGraph.from_moves(self._src[cell_moves], self._dst[cell_moves],
                                                        self._weight[cell_moves] / self.rate_factor,
                                                        self.shape[0] * self.shape[1])
        return self._spread_graph

    def _arrival(self, ignitions: np.ndarray, breaks: Optional[np.ndarray]) -> np.ndarray:
        """Calibrated minutes: graph distances / ``rate_factor``, inf beyond ``burn_duration``."""
        cells = ignitions[:, 0] * self.shape[1] + ignitions[:, 1]
        distance = np.empty((len(cells), len(self._first_edge) - 1))
        self._search(cells + self.burnable.size, self._keep(breaks), distance, np.empty((len(cells), 0), np.int64))
        return self._minutes(distance, cells)

    def search(self, ignitions: np.ndarray, fuel_breaks: Optional[np.ndarray] = None) -> "FireSearch":
        """:meth:`arrival_times` of ``ignitions`` under ``fuel_breaks`` (in ``.arrival``), with each fire's
        shortest-path tree kept, so that :meth:`add_breaks` brings them to more breaks cheaply."""
        ign = _as_ignitions(ignitions, self.shape)
        breaks = _as_breaks(fuel_breaks, self.shape)
        breaks = np.zeros(self.shape, bool) if breaks is None else breaks.copy()
        nodes = len(self._first_edge) - 1
        fires = FireSearch(ign, breaks, self._keep(breaks), np.empty((len(ign),) + self.shape),
                           np.empty((len(ign), nodes)), np.empty((len(ign), nodes), np.int64))
        cells = ign[:, 0] * self.shape[1] + ign[:, 1]
        searched, _ = self._search(cells + self.burnable.size, fires.keep, fires.distance, fires.parent)
        self.fires_simulated += int(searched.sum())
        self._update_arrival(fires, np.arange(len(ign)))
        return fires

    def add_breaks(self, fires: "FireSearch", fuel_breaks: np.ndarray) -> np.ndarray:
        """Bring ``fires`` (from :meth:`search`) to ``fuel_breaks``, its breaks and more; returns the indices
        of the fires whose arrival changed. A fire is searched again only where its shortest paths used a
        move the new breaks block; the arrival times are those :meth:`arrival_times` gives."""
        breaks = _as_breaks(fuel_breaks, self.shape)
        breaks = np.zeros(self.shape, bool) if breaks is None else breaks
        if (fires.breaks & ~breaks).any():
            raise ValueError("add_breaks cannot take breaks away; search again")
        blocked = [self._blocked_edge[self._blocked_first[c]:self._blocked_first[c + 1]]
                   for c in np.flatnonzero(breaks & ~fires.breaks)]
        removed = np.unique(np.concatenate(blocked, dtype=np.int64)) if blocked else np.zeros(0, np.int64)
        removed = removed[fires.keep[removed]]
        fires.keep[removed] = False
        searched, changed = self._search(np.full(len(fires.ignitions), -1), fires.keep, fires.distance,
                                         fires.parent, removed)
        self.fires_simulated += int(searched.sum())
        fires.breaks = breaks.copy()
        changed = np.flatnonzero(changed)
        self._update_arrival(fires, changed)
        return changed

    def _keep(self, breaks: Optional[np.ndarray]) -> np.ndarray:
        """bool per edge: the moves no break blocks (a break blocks every move that starts, ends or squeezes
        through it)."""
        if breaks is None:
            return np.ones(len(self._weight), dtype=bool)
        flat = breaks.ravel()
        return ~(flat[self._src] | flat[self._dst] | flat[self._via1] | flat[self._via2])

    def _search(self, starts, keep, distance, parent, removed=np.zeros(0, np.int64)) -> tuple:
        """:func:`_shortest_paths` on this graph (uncalibrated distances); returns ``(searched, changed)``."""
        searched, changed = np.zeros(len(starts), bool), np.zeros(len(starts), bool)
        _compiled(_shortest_paths)(self._first_edge, self._node_src, self._dst, self._weight, keep, self._in_first,
                                   self._in_edge, removed, float(self.scenario.burn_duration) * self.rate_factor,
                                   np.asarray(starts, np.int64), distance, parent, searched, changed)
        return searched, changed

    def _minutes(self, distance: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """float64 (k, H, W) calibrated arrival minutes from graph ``distance`` (k, nodes), 0 at each fire's
        ignition ``cells``."""
        arrival = distance[:, :self.burnable.size].copy()
        arrival[np.arange(len(cells)), cells] = 0.0
        return arrival.reshape((len(cells),) + self.shape) / self.rate_factor

    def _update_arrival(self, fires: "FireSearch", which: np.ndarray) -> None:
        """``fires.arrival`` of fires ``which`` from their distances (inf: lit on a broken or non-burnable cell)."""
        ign = fires.ignitions[which]
        fires.arrival[which] = self._minutes(fires.distance[which], ign[:, 0] * self.shape[1] + ign[:, 1])
        lit = (self.burnable & ~fires.breaks)[ign[:, 0], ign[:, 1]]
        fires.arrival[which[~lit]] = np.inf


@dataclass
class FireSearch:
    """Fires on a :class:`TravelTimeSimulator` with their shortest-path trees, for adding breaks
    (:meth:`TravelTimeSimulator.search`, :meth:`TravelTimeSimulator.add_breaks`)."""

    ignitions: np.ndarray   # int64 (k, 2) rows and columns
    breaks: np.ndarray      # bool (H, W) the breaks the fires burned under
    keep: np.ndarray        # bool (edges) the moves they leave open
    arrival: np.ndarray     # float64 (k, H, W) minutes, as FireSimulator.arrival_times
    distance: np.ndarray    # float64 (k, nodes) graph distances (before the rate factor)
    parent: np.ndarray      # int64 (k, nodes) the edge each node was reached by (-1: none)


def _shortest_paths(first_edge, source, target, weight, keep, in_first, in_edge, removed, limit, starts,
                    dist, parent, searched, changed):
    """Dijkstra's shortest distances over a graph whose edge e runs from ``source[e]`` to ``target[e]``,
    node u's edges being ``first_edge[u]:first_edge[u + 1]`` (``in_first``/``in_edge``: the edge ids into
    each node), skipping the edges where ``keep`` is false; inf beyond ``limit`` (scipy's
    ``dijkstra(..., limit=)``, the same numbers; compiled with numba: a binary heap whose stale entries are
    skipped when popped). Row i of ``dist`` (nodes) receives fire i's distances, and of ``parent``, when it
    has columns, its shortest-path tree: the edge that reached each node (-1: none).

    ``starts[i]`` >= 0 searches from that node. ``starts[i]`` < 0 continues a search whose tree is in
    ``dist[i]`` and ``parent[i]`` on a graph that also had the ``removed`` edges (ids): only the nodes whose
    tree path used one of them can be reached later now, so just they are reset and reached again, from
    their other neighbours (the distances of all the others stand, and the numbers are a new search's).
    ``searched[i]`` tells whether fire i was searched (anew, or again below a removed edge), ``changed[i]``
    whether any of its distances changed."""
    nodes = len(first_edge) - 1
    track = parent.shape[1] > 0
    heap_key = np.empty(len(target) + 1)            # a node enters the heap once per shortening edge
    heap_node = np.empty(len(target) + 1, np.int64)
    stack = np.empty(nodes, np.int64)               # the nodes a continued search reaches again
    previous = np.empty(nodes)
    affected = np.zeros(nodes, np.bool_)
    for i in range(len(starts)):
        size, count = 0, 0
        if starts[i] >= 0:
            dist[i] = np.inf
            if track:
                parent[i] = -1
            dist[i, starts[i]] = 0.0
            heap_key[0], heap_node[0], size = 0.0, starts[i], 1
        else:
            for edge in removed:                     # the tree below a removed edge is cut off
                node = target[edge]
                if parent[i, node] == edge and not affected[node]:
                    affected[node], stack[count], count = True, node, count + 1
            done = 0
            while done < count:
                node, done = stack[done], done + 1
                for edge in range(first_edge[node], first_edge[node + 1]):
                    child = target[edge]
                    if parent[i, child] == edge and not affected[child]:
                        affected[child], stack[count], count = True, child, count + 1
            for j in range(count):
                previous[j], dist[i, stack[j]], parent[i, stack[j]] = dist[i, stack[j]], np.inf, -1
            for j in range(count):                   # reached again from the nodes whose distance stands
                node = stack[j]
                for k in range(in_first[node], in_first[node + 1]):
                    edge = in_edge[k]
                    reach = dist[i, source[edge]] + weight[edge]
                    if keep[edge] and not affected[source[edge]] and reach < dist[i, node] and reach <= limit:
                        dist[i, node], parent[i, node] = reach, edge
                if dist[i, node] < np.inf:
                    heap_key[size], heap_node[size], size = dist[i, node], node, size + 1
            order = np.argsort(heap_key[:size])      # sorted keys are a heap
            heap_key[:size], heap_node[:size] = heap_key[:size][order], heap_node[:size][order]
        while size > 0:
            d, node = heap_key[0], heap_node[0]
            size -= 1
            if size > 0:                                # pop: the last entry sifts down from the root
                key, item, pos = heap_key[size], heap_node[size], 0
                while 2 * pos + 1 < size:
                    child = 2 * pos + 1
                    if child + 1 < size and heap_key[child + 1] < heap_key[child]:
                        child += 1
                    if heap_key[child] >= key:
                        break
                    heap_key[pos], heap_node[pos] = heap_key[child], heap_node[child]
                    pos = child
                heap_key[pos], heap_node[pos] = key, item
            if d > dist[i, node]:
                continue                                # stale: the node was reached sooner since
            for edge in range(first_edge[node], first_edge[node + 1]):
                to, reach = target[edge], d + weight[edge]
                if keep[edge] and reach < dist[i, to] and reach <= limit:
                    dist[i, to] = reach
                    if track:
                        parent[i, to] = edge
                    pos = size                          # push: sift up from the end
                    size += 1
                    while pos > 0 and heap_key[(pos - 1) // 2] > reach:
                        heap_key[pos], heap_node[pos] = heap_key[(pos - 1) // 2], heap_node[(pos - 1) // 2]
                        pos = (pos - 1) // 2
                    heap_key[pos], heap_node[pos] = reach, to
        searched[i] = starts[i] >= 0 or count > 0
        changed[i] = starts[i] >= 0
        for j in range(count):
            changed[i] |= dist[i, stack[j]] != previous[j]
            affected[stack[j]] = False


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


#: Minutes within which two paths to a cell count as equally fast in :func:`path_tree_flows`.
PATH_TIE_MINUTES = 1e-6


def fire_flow(arrival: np.ndarray, graph: Optional[SpreadGraph] = None) -> np.ndarray:
    """float32 (H, W): per cell, the mean over fires of :func:`fire_flows`, an estimate of how many burned
    cells a break there keeps each fire from (``arrival``: (k, H, W) minutes, inf where not burned, as from
    :meth:`FireSimulator.arrival_times`; ``graph``: the simulator's :meth:`FireSimulator.spread_graph`)."""
    arrival = np.asarray(arrival)
    if len(arrival) == 0:
        return np.zeros(arrival.shape[1:], np.float32)
    return fire_flows(arrival, graph).mean(axis=0).astype(np.float32)


def fire_flows(arrival: np.ndarray, graph: Optional[SpreadGraph] = None) -> np.ndarray:
    """float64 (k, H, W): per fire and cell, the burned cells that the fire reaches through the cell, counted
    on two spread trees and averaged: the king tree (:func:`king_tree_flows`) and, with the simulator's
    ``graph``, the path tree (:func:`path_tree_flows`); without a graph the king tree alone.

    Either count is what a break there saves if the fire finds no other way round (an upper bound when it
    does); they err in different places (the king tree ignores knight moves, the path tree follows the
    fastest paths only), and a cell both trees rank high carries the fire on most routes. Breaking at the averaged count's maximum saved more
    than either alone, on the training and on the held-out tiles of both default landscapes (docs/tuning.md).
    """
    flows = _tree_flows(arrival, graph)
    return flows[0] if graph is None else 0.5 * (flows[0] + flows[1])


def king_tree_flows(arrival: np.ndarray) -> np.ndarray:
    """float64 (k, H, W): per fire, how many burned cells it reaches *through* each cell on its king tree.

    Each burned cell's parent is its earliest-burning king neighbour that burned strictly before it (the
    first in row-major neighbour order among equals); a cell's flow counts it and its descendants. Cells
    without a parent (the ignition, and cells a knight move reached before any king neighbour burned) are
    roots and get 0, as a break there does not stop its fire.
    """
    return _tree_flows(arrival, None)[0]


def path_tree_flows(arrival: np.ndarray, graph: SpreadGraph) -> np.ndarray:
    """float64 (k, H, W): per fire, how many burned cells it reaches through each cell on the simulator's
    path tree: a burned cell hangs from the cell its fastest move arrives from (a move of ``graph`` with
    arrival(source) + minutes = arrival(cell), within :data:`PATH_TIE_MINUTES`); a cell that equally fast
    moves reach from several cells hangs from the latest cell all of their paths pass through (its
    immediate dominator). Cells no move explains (the ignition's neighbours, reached from the ignition
    cell's edge) hang from the ignition, which gets 0.
    """
    return _tree_flows(arrival, graph)[1]


def _tree_flows(arrival: np.ndarray, graph: Optional[SpreadGraph]) -> np.ndarray:
    """float64 (trees, k, H, W): the king tree's flows and, with ``graph``, the path tree's."""
    arrival = np.ascontiguousarray(arrival, dtype=np.float64)
    if graph is None:
        graph = SpreadGraph(np.zeros(0, np.int64), np.zeros(0), np.zeros(arrival[0].size + 1, np.int64))
        trees = 1
    else:
        trees = 2
    flows = np.zeros((trees,) + arrival.shape)
    _compiled(_tree_counts)(arrival, graph.source, graph.minutes, graph.start, PATH_TIE_MINUTES, flows)
    return flows


@functools.lru_cache(maxsize=None)
def _compiled(function):
    """``numba.njit(cache=True)`` of ``function`` (numba imported when first needed)."""
    import numba
    return numba.njit(cache=True)(function)


def _tree_counts(arrival, source, minutes, start, tie, out):
    """Per fire of (k, H, W) ``arrival``: the king tree's descendant counts into ``out[0]`` and, when ``out``
    holds two trees, the path tree's (moves ``source``/``minutes``/``start``, see :class:`SpreadGraph`) into
    ``out[1]`` (compiled with numba)."""
    fires, height, width = arrival.shape
    trees = out.shape[0]
    for fire in range(fires):
        times = arrival[fire].ravel()
        burned = np.nonzero(np.isfinite(times))[0]
        order = burned[np.argsort(times[burned], kind="mergesort")]    # earliest first
        if len(order) == 0:
            continue
        parent = np.full((trees, height * width), -1, np.int64)
        # king tree: the earliest king neighbour that burned strictly before
        for cell in order:
            row, col = cell // width, cell % width
            best = times[cell]
            for dr in range(-1, 2):
                for dc in range(-1, 2):
                    r, c = row + dr, col + dc
                    if (dr != 0 or dc != 0) and 0 <= r < height and 0 <= c < width and times[r * width + c] < best:
                        best, parent[0, cell] = times[r * width + c], r * width + c
        if trees == 2:
            # path tree: the nearest common ancestor of the cells the fastest moves come from
            depth = np.full(height * width, -1, np.int64)
            root = order[0]
            depth[root] = 0
            for i in range(1, len(order)):
                cell = order[i]
                common = -1
                for move in range(start[cell], start[cell + 1]):
                    before = source[move]
                    if depth[before] < 0 or abs(times[before] + minutes[move] - times[cell]) > tie:
                        continue                       # not burned yet, or not a fastest move into the cell
                    if common < 0:
                        common = before
                        continue
                    a, b = common, before
                    while a != b:
                        if depth[a] > depth[b]:
                            a = parent[1, a]
                        elif depth[b] > depth[a]:
                            b = parent[1, b]
                        else:
                            a, b = parent[1, a], parent[1, b]
                    common = a
                if common < 0:
                    common = root
                parent[1, cell] = common
                depth[cell] = depth[common] + 1
        for tree in range(trees):          # each cell adds itself and its descendants to its parent
            counts = out[tree, fire].ravel()
            for i in range(len(order) - 1, -1, -1):
                cell = order[i]
                counts[cell] += 1.0
                if parent[tree, cell] >= 0:
                    counts[parent[tree, cell]] += counts[cell]
            for cell in order:
                if parent[tree, cell] < 0:
                    counts[cell] = 0.0         # roots


def king_dilation(maps: np.ndarray) -> np.ndarray:
    """bool (k, H, W): the cells of ``maps`` and their 8 neighbours. Of travel-time burn maps, the cells where
    a break can change each fire (a move needs its end cells and the cells it crosses, all within one king
    move of the burned cell it leaves)."""
    maps = np.asarray(maps, dtype=bool)
    padded = np.pad(maps, ((0, 0), (1, 1), (1, 1)))
    rows, cols = maps.shape[-2:]
    out = np.zeros_like(maps)
    for dr in (0, 1, 2):
        for dc in (0, 1, 2):
            out |= padded[:, dr:dr + rows, dc:dc + cols]
    return out


class TrackedFires:
    """A fixed set of fires followed while fuel breaks are added (an episode's shown and reward fires).

    :meth:`update` brings ``arrival`` (float64 (k, H, W) minutes, as :meth:`FireSimulator.arrival_times`)
    and, with ``with_flows``, ``flows`` (:func:`fire_flows`) to the given breaks. On a simulator that adds
    breaks to a search (:meth:`TravelTimeSimulator.add_breaks`) a fire is searched again only below the
    moves a new break blocks on its shortest paths, and its flows counted again only when its arrival
    changed; otherwise, or when a break was taken away, every fire is simulated again. Either way the result
    is what simulating every fire under the breaks gives.
    """

    def __init__(self, simulator: FireSimulator, ignitions: np.ndarray, with_flows: bool = True):
        self.simulator = simulator
        self.ignitions = np.asarray(ignitions, dtype=np.int64).reshape(-1, 2)
        self.with_flows = bool(with_flows)
        self.arrival: Optional[np.ndarray] = None
        self.flows: Optional[np.ndarray] = None
        self.breaks: Optional[np.ndarray] = None
        self._search: Optional[FireSearch] = None

    def update(self, breaks: np.ndarray) -> "TrackedFires":
        breaks = np.asarray(breaks, dtype=bool)
        adds_breaks = hasattr(self.simulator, "add_breaks")
        if self.arrival is None or not adds_breaks or (self.breaks & ~breaks).any():
            if adds_breaks:
                self._search = self.simulator.search(self.ignitions, breaks)
                self.arrival = self._search.arrival
            else:
                self.arrival = self.simulator.arrival_times(self.ignitions, breaks)
            changed = np.arange(len(self.ignitions))
        else:
            changed = self.simulator.add_breaks(self._search, breaks)
        if self.with_flows and len(changed):
            flows = fire_flows(self.arrival[changed], self.simulator.spread_graph())
            if self.flows is None:
                self.flows = flows
            else:
                self.flows[changed] = flows
        self.breaks = breaks.copy()
        return self


SIMULATORS = {"pyretechnics": PyretechnicsSimulator, "travel_time": TravelTimeSimulator}


# ---------------------------------------------------------------------------------------------------------
# Fidelity: comparing simulators and fitting the travel-time rate factor
# ---------------------------------------------------------------------------------------------------------

def _simulator_name(factory) -> str:
    name = getattr(factory, "name", None)
    if name is None and hasattr(factory, "func"):             # functools.partial (Hydra _partial_)
        name = getattr(factory.func, "name", None)
    return str(name if name is not None else getattr(factory, "__name__", repr(factory)))


def random_ignitions(tile, count: int, rng: np.random.Generator) -> np.ndarray:
    """int (count, 2) (row, col) of burnable cells, drawn without replacement while there are enough."""
    cells = np.argwhere(_burnable_mask(tile.fuel_model))
    if len(cells) == 0:
        raise ValueError(f"tile {getattr(tile, 'name', '?')!r} has no burnable cells")
    pick = rng.choice(len(cells), size=count, replace=count > len(cells))
    return cells[pick].astype(np.int64)


def _budget(num_burnable: int, budget_fraction: float) -> int:
    return max(1, int(round(budget_fraction * num_burnable)))


def _random_plan(burnable: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    cells = np.flatnonzero(burnable)
    plan = np.zeros(burnable.size, dtype=bool)
    plan[rng.choice(cells, size=min(budget, len(cells)), replace=False)] = True
    return plan.reshape(burnable.shape)


def _frequency_plan(burnable: np.ndarray, burn_counts: np.ndarray, budget: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Cells sampled (without replacement) in proportion to how many reference fires burned them."""
    cells = np.flatnonzero(burnable)
    weight = burn_counts.ravel()[cells].astype(np.float64) + 0.05
    pick = rng.choice(cells, size=min(budget, len(cells)), replace=False, p=weight / weight.sum())
    plan = np.zeros(burnable.size, dtype=bool)
    plan[pick] = True
    return plan.reshape(burnable.shape)


def _line_plan(burnable: np.ndarray, burn_counts: np.ndarray, budget: int, wind_direction: float,
               rng: np.random.Generator) -> np.ndarray:
    """A break line across the wind (perpendicular to the fire's run) through a cell fires reach."""
    rows, cols = burnable.shape
    reached = np.argwhere(burnable & (burn_counts > 0))
    pool = reached if len(reached) else np.argwhere(burnable)
    centre = pool[rng.integers(len(pool))]
    heading = math.radians(wind_direction + 180.0)             # direction the fire runs
    run_east, run_north = math.sin(heading), math.cos(heading)
    rr, cc = np.mgrid[0:rows, 0:cols]
    east, north = cc - centre[1], -(rr - centre[0])
    along = np.abs(east * run_east + north * run_north)        # distance along the run, cells
    across = np.abs(east * run_north - north * run_east)       # distance along the line, cells
    score = np.round(along) * (rows + cols) * 4 + across       # line first, then the parallel ones
    score = np.where(burnable, score, np.inf).ravel()
    pick = np.argsort(score, kind="stable")[:min(budget, int(burnable.sum()))]
    plan = np.zeros(burnable.size, dtype=bool)
    plan[pick] = True
    return plan.reshape(burnable.shape)


def _timed_burn(simulator: FireSimulator, ignitions: np.ndarray, breaks=None) -> tuple:
    start = time.perf_counter()
    maps = simulator.burn_maps(ignitions, breaks)
    return maps, time.perf_counter() - start


def compare_simulators(reference, candidate, tiles: Iterable, scenario: Optional[Scenario] = None,
                       ignitions_per_tile: int = 8, num_plans: int = 30, budget_fraction: float = 0.05,
                       seed: int = 0, plan_ignitions: Optional[int] = None) -> dict:
    """Fidelity of ``candidate`` against ``reference`` (simulator classes, or factories taking
    ``(tile, scenario)``) on ``tiles`` (pass held-out tiles).

    Per tile: ``ignitions_per_tile`` random burnable ignitions, burned by both without breaks; then
    ``ceil(num_plans / num_tiles)`` (at least 2) fuel-break plans of ``budget_fraction`` of the burnable
    cells, half random burnable cells and half heuristic (alternately cells sampled by how many reference
    fires burned them, and a line across the wind through a cell the fires reach), each scored by both
    simulators as the expected burned fraction over the tile's first ``plan_ignitions`` ignitions (None: all;
    fewer keep a large burned-fraction sample affordable where reference fires are slow).

    Returns ``reference``/``simulator`` (names), ``speedup`` (candidate simulations/s over reference
    simulations/s, timing ``burn_maps`` only), ``burned_fraction_mae`` (mean |difference| over tile x ignition
    pairs, no breaks), ``iou_mean`` (mean intersection-over-union of the burn maps over pairs where either is
    non-empty), ``plan_spearman`` (Spearman correlation of the plans' expected burned fractions, pooled over
    tiles), ``num_tiles``, ``num_ignitions`` (pairs) and ``num_plans`` (pooled).
    """
    from scipy.stats import spearmanr

    d = compare_details(reference, candidate, tiles, scenario, ignitions_per_tile, num_plans,
                        budget_fraction, seed, plan_ignitions)
    ref_scores, cand_scores = d["plan_scores"][:, 0], d["plan_scores"][:, 1]
    rho = spearmanr(ref_scores, cand_scores).correlation if len(ref_scores) > 1 else float("nan")
    return {
        "reference": d["reference"],
        "simulator": d["simulator"],
        "speedup": (d["sims"][1] / max(d["seconds"][1], 1e-12)) / (d["sims"][0] / max(d["seconds"][0], 1e-12)),
        "burned_fraction_mae": float(np.mean(np.abs(d["fractions"][:, 0] - d["fractions"][:, 1]))),
        "iou_mean": float(np.mean(d["ious"])) if len(d["ious"]) else float("nan"),
        "plan_spearman": float(rho),
        "num_tiles": d["num_tiles"],
        "num_ignitions": len(d["fractions"]),
        "num_plans": len(d["plan_scores"]),
    }


def compare_details(reference, candidate, tiles: Iterable, scenario: Optional[Scenario] = None,
                    ignitions_per_tile: int = 8, num_plans: int = 30, budget_fraction: float = 0.05,
                    seed: int = 0, plan_ignitions: Optional[int] = None) -> dict:
    """The raw material of :func:`compare_simulators`: ``fractions`` (pairs x [reference, candidate]) burned
    without breaks, ``ious`` (pairs where either map is non-empty), ``plan_scores`` (plans x [reference,
    candidate]) expected burned fractions, ``plan_tile`` / ``plan_kind`` ("random", "frequency", "line")
    per plan, ``sims`` and ``seconds`` ([reference, candidate] simulations run and burn_maps time)."""
    scenario = Scenario() if scenario is None else scenario
    tiles = [t for t in tiles if _burnable_mask(t.fuel_model).any()]
    if not tiles:
        raise ValueError("compare_simulators needs at least one tile with burnable cells")
    rng = np.random.default_rng(seed)
    plans_per_tile = max(2, -(-int(num_plans) // len(tiles)))
    seconds, sims = [0.0, 0.0], [0, 0]
    fractions, ious, plan_scores, plan_tile, plan_kind = [], [], [], [], []
    for t_index, tile in enumerate(tiles):
        simulators = (reference(tile, scenario), candidate(tile, scenario))
        ignitions = random_ignitions(tile, ignitions_per_tile, rng)
        total = float(simulators[0].num_burnable)

        def run(fires, breaks=None):
            maps = []
            for j, simulator in enumerate(simulators):
                burned, elapsed = _timed_burn(simulator, fires, breaks)
                seconds[j] += elapsed
                sims[j] += len(fires)
                maps.append(burned)
            return maps

        ref_maps, cand_maps = run(ignitions)
        flat_ref, flat_cand = ref_maps.reshape(len(ignitions), -1), cand_maps.reshape(len(ignitions), -1)
        fractions.extend(zip(flat_ref.sum(1) / total, flat_cand.sum(1) / total))
        union = (flat_ref | flat_cand).sum(1)
        inter = (flat_ref & flat_cand).sum(1)
        ious.extend((inter[union > 0] / union[union > 0]).tolist())

        burnable = simulators[0].burnable
        budget = _budget(simulators[0].num_burnable, budget_fraction)
        counts = ref_maps.sum(axis=0)
        for p in range(plans_per_tile):
            if p % 2 == 0:
                kind, plan = "random", _random_plan(burnable, budget, rng)
            elif (p // 2) % 2 == 0:
                kind, plan = "frequency", _frequency_plan(burnable, counts, budget, rng)
            else:
                kind, plan = "line", _line_plan(burnable, counts, budget, scenario.wind_direction, rng)
            maps = run(ignitions[:plan_ignitions], plan)
            plan_scores.append([m.reshape(len(m), -1).sum(1).mean() / total for m in maps])
            plan_tile.append(t_index)
            plan_kind.append(kind)
    return {
        "reference": _simulator_name(reference),
        "simulator": _simulator_name(candidate),
        "num_tiles": len(tiles),
        "fractions": np.array(fractions, dtype=np.float64).reshape(-1, 2),
        "ious": np.array(ious, dtype=np.float64),
        "plan_scores": np.array(plan_scores, dtype=np.float64).reshape(-1, 2),
        "plan_tile": np.array(plan_tile, dtype=np.int64),
        "plan_kind": np.array(plan_kind),
        "sims": sims,
        "seconds": seconds,
    }


def fit_rate_factor(tiles: Iterable, scenario: Optional[Scenario] = None, ignitions_per_tile: int = 8,
                    seed: int = 0, factors: Optional[Sequence[float]] = None, **travel_time_kwargs) -> dict:
    """Fit :class:`TravelTimeSimulator`'s ``rate_factor`` to :class:`PyretechnicsSimulator` on ``tiles``.

    Burns ``ignitions_per_tile`` random burnable ignitions per tile with the reference (no breaks), then
    picks the factor minimising the mean absolute burned-fraction error over all tile x ignition pairs
    (a travel-time cell burns iff its uncalibrated arrival time <= ``factor * burn_duration``, so every
    factor is scored from one Dijkstra run). Returns ``{"rate_factor", "mae", "num_pairs", "mae_by_factor"}``.

    The default :data:`TRAVEL_TIME_RATE_FACTOR` was fitted with this under the default :class:`Scenario` on
    tiles of the Worcester, VT LANDFIRE sample that lie entirely west of column 400 (the held-out tiles
    of ``landscape.split_tiles(tiles, 0.2)`` start at column 425 for 25 x 25 and 450 for 50 x 50 tiles):
    ``rng = np.random.default_rng(2024)``, 20 of the western 25 x 25 tiles then 6 of the western 50 x 50
    tiles (``rng.choice`` on ``cut_tiles`` order, sorted), 8 ignitions each (``seed=7``): factor 1.00,
    MAE 0.0117 over 208 fires (0.99: 0.0122, 1.01: 0.0127). It was validated with
    :func:`compare_simulators` on eastern tiles (column >= 400), which it never saw.
    """
    scenario = Scenario() if scenario is None else scenario
    if factors is None:
        factors = np.round(np.arange(0.70, 1.501, 0.01), 4)
    factors = np.asarray(factors, dtype=np.float64)
    rng = np.random.default_rng(seed)
    errors = []
    for tile in tiles:
        if not _burnable_mask(tile.fuel_model).any():
            continue
        ref_sim = PyretechnicsSimulator(tile, scenario)
        tt_sim = TravelTimeSimulator(tile, scenario, rate_factor=1.0, **travel_time_kwargs)
        ignitions = random_ignitions(tile, ignitions_per_tile, rng)
        ref_frac = ref_sim.burned_fraction(ignitions)
        # arrival times at factor 1, searched up to the largest factor
        tt_sim.rate_factor = float(factors.max())
        arrival = tt_sim.arrival_times(ignitions) * tt_sim.rate_factor
        tt_sim.rate_factor = 1.0
        total = float(ref_sim.num_burnable)
        flat = arrival.reshape(len(ignitions), -1)
        for i in range(len(ignitions)):
            frac = np.array([(flat[i] <= f * scenario.burn_duration).sum() / total for f in factors])
            errors.append(np.abs(frac - ref_frac[i]))
    if not errors:
        raise ValueError("fit_rate_factor needs at least one tile with burnable cells")
    mae = np.mean(np.stack(errors), axis=0)
    best = int(np.argmin(mae))
    return {"rate_factor": float(factors[best]), "mae": float(mae[best]), "num_pairs": len(errors),
            "mae_by_factor": dict(zip(factors.tolist(), mae.tolist()))}
