"""The pyretechnics reference simulator on a real Worcester, VT LANDFIRE tile."""
import dataclasses

from conftest import FAST

from firebreak_exp.fire.reference import PyretechnicsSimulator


def test_reference_fire_lit_against_a_nonburnable_cell_keeps_burning(meadow):
    # Grass cell with non-burnable ground right downwind: pyretechnics' raw level set lets the lone
    # ignited cell's phi climb back above 0 and the fire goes out; the monotone-phi check keeps it alive.
    ignition = (12, 6)
    assert meadow.burnable[ignition] and not meadow.burnable[12, 7]
    scenario = dataclasses.replace(FAST, burn_duration=120.0)
    raw = PyretechnicsSimulator(meadow, scenario, phi_check_interval=None).burn_maps([ignition])[0]
    checked = PyretechnicsSimulator(meadow, scenario).burn_maps([ignition])[0]
    assert checked[ignition] and checked.sum() >= 10 and checked.sum() >= raw.sum()
