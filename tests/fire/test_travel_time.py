"""Travel-time simulator internals: ray spread rates and shortest paths."""
import numpy as np
from conftest import DRY_SUMMER

from firebreak_exp.fire.travel_time import ray_spread_rates, TravelTimeSimulator


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


def test_travel_times_equal_scipy_dijkstra_on_the_same_graph(tiles25):
    """The compiled Dijkstra gives scipy's distances exactly, with and without breaks."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    rng = np.random.default_rng(3)
    for tile in tiles25[::60]:
        sim = TravelTimeSimulator(tile, DRY_SUMMER)
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
