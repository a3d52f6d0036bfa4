"""Tracked fires: fires followed while breaks are added equal fires simulated again."""
import dataclasses

import numpy as np
from conftest import DRY_SUMMER

from firebreak_exp.fire.flows import fire_flows
from firebreak_exp.fire.tracked import TrackedFires
from firebreak_exp.fire.travel_time import TravelTimeSimulator


def test_tracked_fires_equal_all_fires_simulated_again_after_every_new_break(tiles25):
    """Travel time: breaks added one at a time (on burned cells, beside them, on ignition points) and several
    at once: the tracked fires' arrival times and flows equal all fires simulated again, exactly; add_breaks
    names exactly the fires whose arrival changed."""
    rng = np.random.default_rng(5)
    for tile in tiles25[::90]:
        sim = TravelTimeSimulator(tile, DRY_SUMMER)
        burnable = np.flatnonzero(sim.burnable)
        if len(burnable) < 50:
            continue
        ignitions = np.column_stack(np.unravel_index(rng.choice(burnable, 12, replace=False), sim.shape))
        tracked = TrackedFires(sim, ignitions)
        breaks = np.zeros(sim.shape, bool)
        tracked.update(breaks)
        burned = np.isfinite(tracked.arrival).any(axis=0).ravel()
        additions = [[c] for c in rng.choice(np.flatnonzero(burned & sim.burnable.ravel()), 25, replace=False)]
        additions += [[ignitions[0, 0] * sim.shape[1] + ignitions[0, 1]], list(rng.choice(burnable, 6))]
        changes = []
        for cells in additions:
            before = tracked.arrival.copy()
            breaks.flat[cells] = True
            changed = sim.add_breaks(dataclasses.replace(tracked._search, arrival=before.copy(),
                                                         keep=tracked._search.keep.copy(),
                                                         distance=tracked._search.distance.copy(),
                                                         parent=tracked._search.parent.copy()), breaks)
            tracked.update(breaks)
            expected = sim.arrival_times(ignitions, breaks)
            assert np.array_equal(tracked.arrival, expected)
            assert np.array_equal(tracked._search.keep, sim._keep(breaks))
            assert np.array_equal(tracked.flows, fire_flows(expected, sim.spread_graph()))
            moved = np.flatnonzero((expected != before).any(axis=(1, 2)))
            np.testing.assert_array_equal(changed, moved)
            changes.append(len(moved))
        assert not np.isfinite(tracked.arrival[0]).any()       # its ignition point broken: fire 0 burns nothing
        assert 0 < sum(changes) < len(additions) * len(ignitions)
        tracked.update(np.zeros(sim.shape, bool))            # breaks taken away: every fire searched anew
        assert np.array_equal(tracked.arrival, sim.arrival_times(ignitions))


def test_a_break_on_a_fires_own_ignition_blocks_only_the_others(tiles25):
    """own_ignition_burns: a fire whose ignition point is broken burns as if that cell were unbroken, while the
    break blocks the other fires; its flows follow that fire. Without it, the fire burns nothing."""
    rng = np.random.default_rng(7)
    tile = next(t for t in tiles25 if t.burnable.sum() > 300)
    sim = TravelTimeSimulator(tile, DRY_SUMMER)
    ignitions = np.column_stack(np.unravel_index(rng.choice(np.flatnonzero(sim.burnable), 10, replace=False),
                                                 sim.shape))
    own, plain = TrackedFires(sim, ignitions, own_ignition_burns=True), TrackedFires(sim, ignitions)
    breaks = np.zeros(sim.shape, bool)
    own.update(breaks)
    plain.update(breaks)
    ignition_cells = ignitions[:, 0] * sim.shape[1] + ignitions[:, 1]
    others = np.setdiff1d(np.flatnonzero(sim.burnable), ignition_cells)
    for cells in ([ignition_cells[0]], list(rng.choice(others, 8, replace=False))):
        breaks.flat[cells] = True
        own.update(breaks)
        plain.update(breaks)
        expected = sim.arrival_times(ignitions, breaks)
        unbroken = breaks.copy()
        unbroken[tuple(ignitions[0])] = False
        expected[0] = sim.arrival_times(ignitions[:1], unbroken)[0]
        assert np.array_equal(own.arrival, expected)
        assert np.array_equal(own.flows, fire_flows(expected, sim.spread_graph()))
        assert np.isfinite(own.arrival[0]).sum() > 1 and not np.isfinite(plain.arrival[0]).any()
        assert np.array_equal(plain.arrival[1:], own.arrival[1:])
