"""The Q-network: Q-values on receptive cones equal the dense network's."""

import pytest


@pytest.mark.parametrize("height,width,layers,channels", [(25, 25, 5, 8), (12, 12, 3, 4), (7, 9, 4, 4),
                                                          (50, 50, 6, 4), (1, 3, 1, 4)])
def test_q_values_on_receptive_cones_equal_the_dense_network(height, width, layers, channels):
    import torch
    from firebreak_exp.rl.network import QNetwork
    from firebreak_exp.observation import CHANNELS

    torch.manual_seed(0)
    network = QNetwork(len(CHANNELS), channels, layers)
    obs = torch.randn(12, len(CHANNELS), height, width)
    cells = torch.randint(0, height * width, (12,))
    cells[0], cells[1] = 0, height * width - 1                      # corners read the zero padding
    dense = network(obs).gather(1, cells[:, None]).squeeze(1)
    for layout in (torch.contiguous_format, torch.channels_last):
        cone = network.q_at(obs.contiguous(memory_format=layout), cells)
        torch.testing.assert_close(cone, dense, atol=1e-5, rtol=1e-4)
    dense_grads = torch.autograd.grad(dense.square().sum(), list(network.parameters()))
    cone_grads = torch.autograd.grad(network.q_at(obs, cells).square().sum(), list(network.parameters()))
    for cone_grad, dense_grad in zip(cone_grads, dense_grads):
        torch.testing.assert_close(cone_grad, dense_grad, atol=1e-4, rtol=1e-3)


def test_cone_plans_from_the_every_cell_table_equal_the_direct_ones(monkeypatch):
    import numpy as np
    from firebreak_exp.rl import network

    cells = np.array([0, 624, 312, 312, 30, 599])                   # corners, a repeat, edges
    cached = network.cone_plan(cells, 25, 25, [2, 4, 8, 16])
    monkeypatch.setattr(network, "CACHED_CONES_MAX_CELLS", 0)          # grids above it plan per batch
    direct = network.cone_plan(cells, 25, 25, [2, 4, 8, 16])
    below, direct_below = 625, 625                                  # rows per batch entry of the table below
    for (taps, inside), (direct_taps, direct_inside) in zip(cached, direct):
        rows = direct_taps.shape[1]                                 # the table pads every cell to the widest cone
        assert not inside[:, rows:].any()
        np.testing.assert_array_equal(inside[:, :rows], direct_inside)
        for plan_taps, own_below in ((taps[:, :rows], below), (direct_taps, direct_below)):
            assert (np.where(direct_inside, plan_taps // own_below, np.arange(len(cells))[:, None, None])
                    == np.arange(len(cells))[:, None, None]).all()  # each cell reads its own batch entry
        np.testing.assert_array_equal(np.where(direct_inside, taps[:, :rows] % below, 0),
                                      np.where(direct_inside, direct_taps % direct_below, 0))
        below, direct_below = taps.shape[1], rows
