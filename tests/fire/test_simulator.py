"""Behaviour both fire simulators share, on real Worcester, VT LANDFIRE tiles."""
import dataclasses

import numpy as np
import pytest
from conftest import BREAK_COLUMN, DRY_SUMMER, FAST, line_breaks, MEADOW_IGNITION

from firebreak_exp.fire import SIMULATORS
from firebreak_exp.fire.reference import PyretechnicsSimulator
from firebreak_exp.fire.scenario import Scenario
from firebreak_exp.fire.travel_time import TRAVEL_TIME_RATE_FACTOR, TravelTimeSimulator


def test_burn_maps_shape_dtype_and_ignition_cell(sim, untreated, meadow):
    ignitions, maps = untreated
    assert maps.shape == (2,) + meadow.shape and maps.dtype == bool
    assert maps[0][MEADOW_IGNITION]
    frac = sim.burned_fraction(ignitions[:1])
    assert frac.shape == (1,) and frac.dtype == np.float64
    assert frac[0] == pytest.approx(maps[0].sum() / meadow.burnable.sum())
    assert 0.1 < frac[0] < 0.6, "the meadow fire should spread well beyond its ignition in an hour"
    assert not (maps[0] & ~meadow.burnable).any(), "non-burnable cells never burn"
    assert sim.burn_maps(np.zeros((0, 2), dtype=int)).shape == (0,) + meadow.shape


def test_ignition_on_nonburnable_or_broken_cell_burns_nothing(sim, untreated):
    ignitions, maps = untreated
    assert not sim.burnable[tuple(ignitions[1])]
    assert not maps[1].any()
    broken = np.zeros(sim.shape, dtype=bool)
    broken[MEADOW_IGNITION] = True
    assert not sim.burn_maps([MEADOW_IGNITION], broken).any()
    assert sim.burned_fraction([MEADOW_IGNITION], broken)[0] == 0.0


def test_break_line_across_the_wind_stops_the_fire(sim, untreated):
    _, maps = untreated
    beyond = np.s_[:, BREAK_COLUMN + 1:]
    assert maps[0][beyond].sum() >= 10, "precondition: the untreated fire crosses the line's column"
    treated = sim.burn_maps([MEADOW_IGNITION], line_breaks(sim.shape, BREAK_COLUMN))[0]
    assert treated.any() and not treated[:, BREAK_COLUMN:].any()


def test_diagonal_break_line_is_not_leaked_through_corners(sim, meadow):
    # A staircase of breaks (cells touching only at corners) crossing the fire's downwind run.
    rows, cols = meadow.shape
    breaks = np.zeros(meadow.shape, dtype=bool)
    for r in range(rows):
        breaks[r, min(cols - 1, 8 + r)] = True
    side = np.add.outer(np.arange(rows), -np.arange(cols)) + 8 < 0      # cells east of the staircase
    burned = sim.burn_maps([MEADOW_IGNITION], breaks)[0]
    assert not side[MEADOW_IGNITION] and burned.any()
    assert not (burned & side).any()


def test_breaks_never_increase_burned_fraction(sim, untreated):
    _, maps = untreated
    base = maps[0].sum() / sim.num_burnable
    rng = np.random.default_rng(3)
    cells = np.argwhere(sim.burnable)
    plan = np.zeros(sim.shape, dtype=bool)
    plan[tuple(cells[rng.choice(len(cells), 30, replace=False)].T)] = True
    plan[MEADOW_IGNITION] = False
    treated = sim.burned_fraction([MEADOW_IGNITION], plan)[0]
    assert treated <= base
    treated_map = sim.burn_maps([MEADOW_IGNITION], plan)[0]
    assert not (treated_map & plan).any(), "break cells never burn"


def test_no_mutation_and_deterministic(sim, untreated, meadow):
    ignitions, maps = untreated
    fuel_before = np.array(meadow.fuel_model, copy=True)
    breaks = line_breaks(sim.shape, BREAK_COLUMN)
    breaks_before = breaks.copy()
    sim.burn_maps(ignitions[:1], breaks)
    np.testing.assert_array_equal(meadow.fuel_model, fuel_before)
    np.testing.assert_array_equal(breaks, breaks_before)
    np.testing.assert_array_equal(sim.burn_maps(ignitions), maps)   # identical after a treated run too


def test_wind_from_the_north_pushes_the_fire_south(meadow):
    # Orientation check: tile row 0 is north, pyretechnics' y axis points north.
    scenario = dataclasses.replace(FAST, wind_direction=0.0, burn_duration=40.0)
    ignition = (8, 13)                                              # in the meadow, room to the south
    for cls in (PyretechnicsSimulator, TravelTimeSimulator):
        burned = cls(meadow, scenario).burn_maps([ignition])[0]
        rows = np.nonzero(burned)[0]
        assert burned.sum() > 5 and rows.mean() > ignition[0] + 1, cls.name


def test_simulators_pickle_for_worker_processes(meadow):
    import pickle

    for cls in (PyretechnicsSimulator, TravelTimeSimulator):
        sim = cls(meadow, dataclasses.replace(FAST, burn_duration=10.0))
        clone = pickle.loads(pickle.dumps(sim))
        np.testing.assert_array_equal(clone.burn_maps([MEADOW_IGNITION]), sim.burn_maps([MEADOW_IGNITION]))


def test_invalid_inputs_are_rejected(meadow):
    sim = TravelTimeSimulator(meadow, FAST)
    with pytest.raises(ValueError):
        sim.burn_maps([(25, 0)])
    with pytest.raises(ValueError):
        sim.burn_maps([(0, 0)], np.zeros((3, 3), dtype=bool))
    with pytest.raises(ValueError):
        dataclasses.replace(FAST, burn_duration=0.0)
    with pytest.raises(ValueError):
        TravelTimeSimulator(meadow, FAST, neighbours=4)


def test_registry_and_defaults():
    assert SIMULATORS == {"pyretechnics": PyretechnicsSimulator, "travel_time": TravelTimeSimulator}
    assert PyretechnicsSimulator.name == "pyretechnics" and TravelTimeSimulator.name == "travel_time"
    assert 0.8 < TRAVEL_TIME_RATE_FACTOR < 1.2
    with pytest.raises(TypeError):
        Scenario()                 # the weather comes from the config (conf/scenario/), not from defaults here
    scenario = DRY_SUMMER
    assert scenario.wind_direction == 270.0 and scenario.burn_duration == 840.0
    weather = scenario.pyretechnics_weather()
    assert weather["upwind_direction"] == 270.0 and weather["wind_speed_10m"] == scenario.wind_speed
