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
