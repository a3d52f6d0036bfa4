"""The Q-network: Q-values on receptive cones equal the dense network's."""

import pytest


@pytest.mark.parametrize("height,width,layers,channels,state_value", [(25, 25, 5, 8, False), (12, 12, 3, 4, False),
                                                                      (7, 9, 4, 4, False), (50, 50, 6, 4, False),
                                                                      (1, 3, 1, 4, False), (25, 25, 5, 8, True),
                                                                      (1, 3, 1, 4, True)])
def test_q_values_on_receptive_cones_equal_the_dense_network(height, width, layers, channels, state_value):
    import torch
    from firebreak_exp.rl.network import QNetwork
    from firebreak_exp.observation import CHANNELS

    torch.manual_seed(0)
    network = QNetwork(len(CHANNELS), channels, layers, state_value=state_value)
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


def test_flow_init_starts_the_network_as_the_fire_flow_rule():
    """With ``flow_init`` the untrained Q-values are that multiple of the fire-flow channel, so the masked argmax
    is fire flow's cell; the head's other weights start at 0 and learn from the first update."""
    import torch
    from firebreak_exp.rl.network import QNetwork
    from firebreak_exp.observation import CHANNELS, FIRE_FLOW_CHANNEL

    torch.manual_seed(0)
    network = QNetwork(len(CHANNELS), 8, 4, flow_init=0.5)
    obs = torch.rand(3, len(CHANNELS), 9, 7) * 10
    expected = 0.5 * obs[:, FIRE_FLOW_CHANNEL].flatten(1)
    torch.testing.assert_close(network(obs), expected, atol=0, rtol=0)
    torch.testing.assert_close(network.q_at(obs, torch.tensor([0, 30, 62])), expected[[0, 1, 2], [0, 30, 62]])
    network(obs).sum().backward()
    assert network.head.weight.grad.abs().sum() > 0
    default = QNetwork(len(CHANNELS), 8, 4)
    assert not torch.allclose(default(obs), 0.5 * obs[:, FIRE_FLOW_CHANNEL].flatten(1))
