"""Fire flow: the cells each fire reaches through a cell, on its king tree and its path tree."""
import dataclasses

import numpy as np
from conftest import DRY_SUMMER, MEADOW_IGNITION

from firebreak_exp.fire.flows import fire_flow
from firebreak_exp.fire.flows import fire_flows, king_tree_flows, PATH_TIE_MINUTES, path_tree_flows
from firebreak_exp.fire.simulator import SpreadGraph
from firebreak_exp.fire.travel_time import TravelTimeSimulator


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
    sim = TravelTimeSimulator(meadow, dataclasses.replace(DRY_SUMMER, burn_duration=120.0))
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


def test_fire_flow_counts_the_cells_reached_through_each_cell():
    inf = np.inf
    corridor = np.array([[[0.0, 1.0, 2.0, 3.0, 4.0]]])              # one fire running east along a row
    assert fire_flow(corridor).tolist() == [[0.0, 4.0, 3.0, 2.0, 1.0]]
    fork = np.array([[[inf, inf, inf, 3.0],                             # east, then forking north and south
                      [0.0, 1.0, 2.0, inf],
                      [inf, inf, inf, 3.0]]])
    assert fire_flow(fork).tolist() == [[0, 0, 0, 1], [0, 4, 3, 0], [0, 0, 0, 1]]
    # the mean over fires; an unburned map adds nothing
    both = np.concatenate([corridor, np.full_like(corridor, inf)])
    assert fire_flow(both).tolist() == [[0.0, 2.0, 1.5, 1.0, 0.5]]
