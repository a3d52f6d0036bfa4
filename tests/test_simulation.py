"""Fire simulators on real Worcester, VT LANDFIRE tiles: the pyretechnics reference and the travel-time backend."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import require_worcester

from firebreak_exp.landscape import Tile, cut_tiles, read_layers, split_tiles
from firebreak_exp.simulation import (
    SIMULATORS,
    TRAVEL_TIME_RATE_FACTOR,
    FireSimulator,
    PyretechnicsSimulator,
    Scenario,
    TrackedFires,
    TravelTimeSimulator,
    PATH_TIE_MINUTES,
    SpreadGraph,
    compare_details,
    compare_simulators,
    fire_flows,
    king_tree_flows,
    path_tree_flows,
    fit_rate_factor,
    ray_spread_rates,
)


# A western (training-side) tile with a large grass meadow east of a timber stand: fires from the meadow
# run east with the default westerly wind and reach the tile's eastern edge within an hour.
MEADOW_TILE = "worcester_vt/r0350_c0325"
MEADOW_IGNITION = (16, 13)
BREAK_COLUMN = 19          # a full north-south line of breaks, downwind (east) of the ignition
FAST = Scenario(burn_duration=60.0)   # short burns keep the reference cheap for the behaviour checks


@pytest.fixture(scope="module")
def stack():
    return read_layers(require_worcester())


@pytest.fixture(scope="module")
def tiles25(stack):
    return cut_tiles(stack, 25)


@pytest.fixture(scope="module")
def meadow(tiles25) -> Tile:
    return next(t for t in tiles25 if t.name == MEADOW_TILE)


@pytest.fixture(scope="module", params=[PyretechnicsSimulator, TravelTimeSimulator], ids=lambda c: c.name)
def sim(request, meadow) -> FireSimulator:
    return request.param(meadow, FAST)


@pytest.fixture(scope="module")
def untreated(sim):
    """Maps of the meadow fire plus a fire lit on a non-burnable cell, computed once per simulator."""
    nonburnable = np.argwhere(~sim.burnable)[0]
    ignitions = np.array([MEADOW_IGNITION, nonburnable])
    return ignitions, sim.burn_maps(ignitions)


def _line_breaks(shape, column):
    breaks = np.zeros(shape, dtype=bool)
    breaks[:, column] = True
    return breaks


# --------------------------------------------------------------------------------------------------
# Behaviour shared by both simulators
# --------------------------------------------------------------------------------------------------

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
    treated = sim.burn_maps([MEADOW_IGNITION], _line_breaks(sim.shape, BREAK_COLUMN))[0]
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
    breaks = _line_breaks(sim.shape, BREAK_COLUMN)
    breaks_before = breaks.copy()
    sim.burn_maps(ignitions[:1], breaks)
    np.testing.assert_array_equal(meadow.fuel_model, fuel_before)
    np.testing.assert_array_equal(breaks, breaks_before)
    np.testing.assert_array_equal(sim.burn_maps(ignitions), maps)   # identical after a treated run too


def test_tracked_fires_equal_all_fires_simulated_again_after_every_new_break(tiles25):
    """Travel time: breaks added one at a time (on burned cells, beside them, on ignition points) and several
    at once: the tracked fires' arrival times and flows equal all fires simulated again, exactly; add_breaks
    names exactly the fires whose arrival changed."""
    rng = np.random.default_rng(5)
    for tile in tiles25[::90]:
        sim = TravelTimeSimulator(tile)
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


def test_path_tree_hangs_a_cell_reached_by_tied_paths_from_their_common_ancestor():
    # cells 0-1-2 / 3-4-5 on a 2 x 3 grid; the fire starts at 0; cell 5 is reached as fast from 2 as from 4
    moves = [(0, 1, 1.0), (1, 2, 1.0), (0, 3, 1.0), (3, 4, 1.0), (2, 5, 1.0), (4, 5, 1.0), (1, 4, 5.0)]
    src, dst, minutes = (np.array(column) for column in zip(*moves))
    graph = SpreadGraph.from_moves(src, dst, minutes, 6)
    arrival = np.array([[[0.0, 1.0, 2.0], [1.0, 2.0, 3.0]]])
    # 1 carries 2 alone, 3 carries 4 alone; 5 hangs from the ignition, as neither branch alone stops it
    assert path_tree_flows(arrival, graph).tolist() == [[[0.0, 2.0, 1.0], [2.0, 1.0, 1.0]]]
    # without the tie (4 -> 5 slower) 5 hangs from 2; the fire flow averages this tree with the king tree
    graph = SpreadGraph.from_moves(src, dst, np.where(src == 4, 1.5, minutes), 6)
    assert path_tree_flows(arrival, graph).tolist() == [[[0.0, 3.0, 2.0], [2.0, 1.0, 1.0]]]
    np.testing.assert_array_equal(fire_flows(arrival, graph),
                                  0.5 * (king_tree_flows(arrival) + path_tree_flows(arrival, graph)))


def test_path_tree_counts_the_cells_every_fastest_path_reaches_through_the_cell(meadow):
    """On the travel-time graph, a cell's path-tree count is the number of burned cells (itself included)
    that no chain of fastest moves reaches from the ignition once the cell is taken out."""
    sim = TravelTimeSimulator(meadow, Scenario(burn_duration=120.0))
    graph = sim.spread_graph()
    rng = np.random.default_rng(2)
    ignitions = np.vstack([MEADOW_IGNITION, np.column_stack(np.unravel_index(
        rng.choice(np.flatnonzero(sim.burnable), 2, replace=False), sim.shape))])
    arrival = sim.arrival_times(ignitions)
    flows = path_tree_flows(arrival, graph)
    for fire, (row, col) in enumerate(ignitions):
        times = arrival[fire].ravel()
        burned = set(np.flatnonzero(np.isfinite(times)).tolist())
        children = {v: [] for v in burned}
        for v in burned:
            for k in range(graph.start[v], graph.start[v + 1]):
                u = int(graph.source[k])
                if u in burned and abs(times[u] + graph.minutes[k] - times[v]) <= PATH_TIE_MINUTES:
                    children[u].append(v)
        root = int(row) * sim.shape[1] + int(col)
        explained = {v for kids in children.values() for v in kids}
        children[root] += [v for v in burned if v not in explained and v != root]   # reached from the ignition

        def reached(without):
            seen, stack = {root}, [root]
            while stack:
                for v in children[stack.pop()]:
                    if v != without and v not in seen:
                        seen.add(v)
                        stack.append(v)
            return seen

        assert reached(None) == burned
        for cell in rng.choice(sorted(burned - {root}), min(25, len(burned) - 1), replace=False):
            assert flows[fire].flat[cell] == len(burned) - len(reached(int(cell)))
        assert flows[fire].flat[root] == 0.0
    assert flows[0].max() > 20                          # the meadow fire runs far through a few cells


def test_wind_from_the_north_pushes_the_fire_south(meadow):
    # Orientation check: tile row 0 is north, pyretechnics' y axis points north.
    scenario = dataclasses.replace(FAST, wind_direction=0.0, burn_duration=40.0)
    ignition = (8, 13)                                              # in the meadow, room to the south
    for cls in (PyretechnicsSimulator, TravelTimeSimulator):
        burned = cls(meadow, scenario).burn_maps([ignition])[0]
        rows = np.nonzero(burned)[0]
        assert burned.sum() > 5 and rows.mean() > ignition[0] + 1, cls.name


def test_reference_fire_lit_against_a_nonburnable_cell_keeps_burning(meadow):
    # Grass cell with non-burnable ground right downwind: pyretechnics' raw level set lets the lone
    # ignited cell's phi climb back above 0 and the fire goes out; the monotone-phi check keeps it alive.
    ignition = (12, 6)
    assert meadow.burnable[ignition] and not meadow.burnable[12, 7]
    scenario = dataclasses.replace(FAST, burn_duration=120.0)
    raw = PyretechnicsSimulator(meadow, scenario, phi_check_interval=None).burn_maps([ignition])[0]
    checked = PyretechnicsSimulator(meadow, scenario).burn_maps([ignition])[0]
    assert checked[ignition] and checked.sum() >= 10 and checked.sum() >= raw.sum()


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
        Scenario(burn_duration=0.0)
    with pytest.raises(ValueError):
        TravelTimeSimulator(meadow, FAST, neighbours=4)


def test_registry_and_defaults():
    assert SIMULATORS == {"pyretechnics": PyretechnicsSimulator, "travel_time": TravelTimeSimulator}
    assert PyretechnicsSimulator.name == "pyretechnics" and TravelTimeSimulator.name == "travel_time"
    assert 0.8 < TRAVEL_TIME_RATE_FACTOR < 1.2
    scenario = Scenario()
    assert scenario.wind_direction == 270.0 and scenario.num_ignitions == 8
    weather = scenario.pyretechnics_weather()
    assert weather["upwind_direction"] == 270.0 and weather["wind_speed_10m"] == scenario.wind_speed


# --------------------------------------------------------------------------------------------------
# Travel-time internals
# --------------------------------------------------------------------------------------------------

def test_ray_rates_recover_the_elliptical_wavelet():
    """Front-normal rates of a focus-centred ellipse (what pyretechnics returns) -> its ray radii."""
    head, ecc, heading = 10.0, 0.8, 90.0                            # m/min, eccentricity, fire runs east
    samples = np.arange(720) * 0.5
    w = np.radians(samples - heading)
    support = head / (1 + ecc) * (ecc * np.cos(w) + np.sqrt(1 - ecc ** 2 * np.sin(w) ** 2))
    normal = support[:, None, None] * np.ones((1, 1, 1))
    flat = np.zeros((1, 1))
    rays = np.array([90.0, 270.0, 0.0, 135.0])
    got = ray_spread_rates(normal, samples, flat, flat, rays)[:, 0, 0]
    phi = np.radians(rays - heading)
    expected = head * (1 - ecc) / (1 - ecc * np.cos(phi))            # polar equation from the focus
    np.testing.assert_allclose(got, expected, rtol=2e-3)
    # On a slope the rates are projected to the horizontal: a circle on a 100% slope is an ellipse
    # whose up/down-slope radius shrinks by cos(45 deg) while the across-slope radius stays.
    circle = np.full((len(samples), 1, 1), 5.0)
    slope, aspect = np.ones((1, 1)), np.full((1, 1), 180.0)          # faces south: uphill is north
    got = ray_spread_rates(circle, samples, slope, aspect, [0.0, 90.0])[:, 0, 0]
    np.testing.assert_allclose(got, [5.0 / np.sqrt(2.0), 5.0], rtol=2e-3)


# --------------------------------------------------------------------------------------------------
# Fidelity of the travel-time backend against the reference, on held-out tiles
# --------------------------------------------------------------------------------------------------

def test_travel_time_agrees_with_reference_on_heldout_tiles(tiles25):
    _, heldout = split_tiles(tiles25, 0.2)                          # eastern tiles, never used for fitting
    picked = [heldout[i] for i in np.linspace(0, len(heldout) - 1, 3).round().astype(int)]
    report = compare_simulators(PyretechnicsSimulator, TravelTimeSimulator, picked, Scenario(),
                                ignitions_per_tile=4, num_plans=12, budget_fraction=0.05, seed=11)
    assert set(report) == {"reference", "simulator", "speedup", "burned_fraction_mae", "iou_mean",
                           "plan_spearman", "num_tiles", "num_ignitions", "num_plans"}
    assert report["reference"] == "pyretechnics" and report["simulator"] == "travel_time"
    assert report["num_tiles"] == 3 and report["num_ignitions"] == 12 and report["num_plans"] >= 12
    assert report["burned_fraction_mae"] <= 0.03, report
    assert report["plan_spearman"] >= 0.9, report
    assert report["iou_mean"] >= 0.75, report
    assert report["speedup"] >= 30, report


def test_plans_are_scored_on_the_first_plan_ignitions(meadow):
    def details(plan_ignitions):
        return compare_details(TravelTimeSimulator, TravelTimeSimulator, [meadow], FAST, ignitions_per_tile=4,
                               num_plans=4, seed=5, plan_ignitions=plan_ignitions)
    every, first, one = details(None), details(4), details(1)
    assert every["sims"] == first["sims"] == [4 + 4 * 4] * 2 and one["sims"] == [4 + 4 * 1] * 2
    np.testing.assert_array_equal(one["fractions"], every["fractions"])      # the same fires without breaks
    np.testing.assert_array_equal(first["plan_scores"], every["plan_scores"])
    assert not np.array_equal(one["plan_scores"], every["plan_scores"])


def test_fit_rate_factor_runs_on_a_tile(meadow):
    result = fit_rate_factor([meadow], FAST, ignitions_per_tile=2, seed=0, factors=[0.9, 1.0, 1.1])
    assert result["rate_factor"] in (0.9, 1.0, 1.1) and result["num_pairs"] == 2
    assert result["mae"] == min(result["mae_by_factor"].values()) >= 0.0


def test_travel_times_equal_scipy_dijkstra_on_the_same_graph(tiles25):
    """The compiled Dijkstra gives scipy's distances exactly, with and without breaks."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    rng = np.random.default_rng(3)
    for tile in tiles25[::60]:
        sim = TravelTimeSimulator(tile)
        n_cells = tile.shape[0] * tile.shape[1]
        burnable = np.flatnonzero(sim.burnable.ravel())
        if len(burnable) == 0:
            continue
        for fraction in (0.0, 0.05, 0.3):
            breaks = (rng.random(sim.shape) < fraction) if fraction else None
            flat = np.zeros(n_cells, bool) if breaks is None else breaks.ravel()
            cells = rng.choice(burnable[~flat[burnable]], 5)
            keep = ~(flat[sim._src] | flat[sim._dst] | flat[sim._via1] | flat[sim._via2])
            graph = csr_matrix((sim._weight[keep], (sim._node_src[keep], sim._dst[keep])),
                               shape=(2 * n_cells, 2 * n_cells))
            limit = float(sim.scenario.burn_duration) * sim.rate_factor
            expected = dijkstra(graph, directed=True, indices=cells + n_cells, limit=limit)[:, :n_cells]
            expected[np.arange(len(cells)), cells] = 0.0
            got = sim.arrival_times(np.stack(np.divmod(cells, tile.shape[1]), axis=1), breaks)
            assert np.isfinite(got).sum() > len(cells)                 # the fires spread
            np.testing.assert_array_equal(got, expected.reshape(got.shape) / sim.rate_factor)
