"""The observation layout: the landscape channels reuse the simulator's spread rates."""
import numpy as np

from firebreak_exp import make_env


def test_static_channels_reuse_the_simulators_spread_rates(make_cfg):
    from firebreak_exp.observation import static_channels
    from firebreak_exp.fire.cubes import directional_spread_rates
    from firebreak_exp.fire.travel_time import TravelTimeSimulator

    env = make_env(make_cfg())
    tile, scenario = env.landscapes[0], env.scenario
    simulator = TravelTimeSimulator(tile, scenario)             # computed 32 azimuths for its graph
    assert set(simulator._spread_rates) >= {(90.0, "behave"), (45.0, "behave")}
    np.testing.assert_array_equal(simulator.spread_rates([90.0, 45.0]),
                                  directional_spread_rates(tile, scenario, [90.0, 45.0]))
    np.testing.assert_array_equal(static_channels(tile, scenario, simulator), static_channels(tile, scenario))
    other = TravelTimeSimulator(env.landscapes[1], scenario)    # another tile's rates are never borrowed
    np.testing.assert_array_equal(static_channels(tile, scenario, other), static_channels(tile, scenario))
