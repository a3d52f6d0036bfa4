"""The observation layout of the fuel-break MDP, in one place: the channels, how the landscape channels are
computed, and how an observation is built from its parts and split into them (the environment builds
observations; the replay buffer and the expert memories store their parts and rebuild them).

An observation is float32 (C, H, W): the normalized landscape channels (``STATIC_CHANNELS``, with
pyretechnics' spread rates under the scenario), then the burn probability under the current breaks, the fire
flow (ha, :func:`~firebreak_exp.fire.flows.fire_flow`), the fuel-break mask and the
remaining budget (a fraction, the same in every cell).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from firebreak_exp.fire.cubes import directional_spread_rates
from firebreak_exp.fire.scenario import Scenario
from firebreak_exp.fire.simulator import FireSimulator
from firebreak_exp.landscape import FUEL_GROUPS, Tile, fuel_group_index

STATIC_CHANNELS = (
    "elevation", "slope", "aspect_sin", "aspect_cos", "canopy_cover", "canopy_height",
    "canopy_base_height", "canopy_bulk_density", *(f"fuel_{g}" for g in FUEL_GROUPS),
    "spread_rate_heading", "spread_rate_mean",
)
DYNAMIC_CHANNELS = ("burn_probability", "fire_flow", "fuel_break", "budget_remaining")
CHANNELS = STATIC_CHANNELS + DYNAMIC_CHANNELS
NUM_STATIC_CHANNELS = len(STATIC_CHANNELS)
NON_BURNABLE_CHANNEL = CHANNELS.index("fuel_NB")
BURN_PROBABILITY_CHANNEL = CHANNELS.index("burn_probability")
FIRE_FLOW_CHANNEL = CHANNELS.index("fire_flow")
FUEL_BREAK_CHANNEL = CHANNELS.index("fuel_break")
BUDGET_CHANNEL = CHANNELS.index("budget_remaining")
OBSERVATION_BOUND = 10.0

SPREAD_AZIMUTHS = tuple(range(0, 360, 45))   # degrees clockwise from north


def spread_rate_channels(tile: Tile, scenario: Scenario, simulator: Optional[FireSimulator] = None) -> np.ndarray:
    """float32 (2, H, W): pyretechnics' spread rate of a front heading with the wind, and its mean over 8
    directions, as log10(1 + m/min) / 2 (0 for a standing fire, 1 at 99 m/min). They tell the network
    how the weather drives fire through each cell, which the fuel groups only hint at. A ``simulator`` of
    this tile and scenario lends the rates it has already computed (:meth:`FireSimulator.spread_rates`)."""
    heading = (scenario.wind_direction + 180.0) % 360.0
    azimuths = [heading, *SPREAD_AZIMUTHS]
    if simulator is not None and simulator.tile is tile and simulator.scenario == scenario:
        rates = simulator.spread_rates(azimuths)
    else:
        rates = directional_spread_rates(tile, scenario, azimuths)
    scaled = np.log10(1.0 + np.maximum(rates, 0.0)) / 2.0
    return np.stack([scaled[0], scaled[1:].mean(axis=0)]).astype(np.float32)


def static_channels(tile: Tile, scenario: Scenario, simulator: Optional[FireSimulator] = None) -> np.ndarray:
    """The tile's landscape and its fire behaviour under ``scenario`` as float32 (NUM_STATIC_CHANNELS, H, W),
    each channel scaled to about [-3, 3] (``simulator``: see :func:`spread_rate_channels`)."""
    elevation = tile.elevation - tile.elevation.mean()
    elevation = elevation / max(float(elevation.std()), 1.0)
    flat = tile.aspect < 0
    aspect = np.deg2rad(tile.aspect)
    fuel_one_hot = np.eye(len(FUEL_GROUPS), dtype=np.float32)[fuel_group_index(tile.fuel_model)]
    channels = [
        elevation,
        tile.slope,                           # rise/run
        np.where(flat, 0.0, np.sin(aspect)),
        np.where(flat, 0.0, np.cos(aspect)),
        tile.canopy_cover,                    # fraction
        tile.canopy_height / 30.0,            # m / 30
        tile.canopy_base_height / 10.0,       # m / 10
        tile.canopy_bulk_density / 0.3,       # kg/m³ / 0.3
        *np.moveaxis(fuel_one_hot, -1, 0),
        *spread_rate_channels(tile, scenario, simulator),
    ]
    stacked = np.stack(channels).astype(np.float32)
    return np.clip(stacked, -OBSERVATION_BOUND, OBSERVATION_BOUND)


class ObservationParts(NamedTuple):
    """The parts of (..., C, H, W) observations: ``static`` (..., S, H, W) landscape channels,
    ``burn_probability`` and ``fire_flow`` (..., H, W), ``fuel_breaks`` bool (..., H, W) and ``budget`` (...)
    the remaining fraction."""

    static: np.ndarray
    burn_probability: np.ndarray
    fire_flow: np.ndarray
    fuel_breaks: np.ndarray
    budget: np.ndarray


def build_observation(static, burn_probability, fire_flow, fuel_breaks, budget) -> np.ndarray:
    """float32 (..., C, H, W) observations from their parts (see :class:`ObservationParts`)."""
    burn_probability = np.asarray(burn_probability, np.float32)
    budget = np.broadcast_to(np.asarray(budget, np.float32)[..., None, None], burn_probability.shape)
    dynamic = np.stack([burn_probability, np.asarray(fire_flow, np.float32),
                        np.asarray(fuel_breaks, np.float32), budget], axis=-3)
    return np.concatenate([np.asarray(static, np.float32), dynamic], axis=-3)


def split_observation(obs: np.ndarray) -> ObservationParts:
    """The parts of (..., C, H, W) observations (views where they can be)."""
    obs = np.asarray(obs)
    return ObservationParts(obs[..., :NUM_STATIC_CHANNELS, :, :], obs[..., BURN_PROBABILITY_CHANNEL, :, :],
                            obs[..., FIRE_FLOW_CHANNEL, :, :], obs[..., FUEL_BREAK_CHANNEL, :, :] > 0,
                            obs[..., BUDGET_CHANNEL, 0, 0])


def action_mask_from_observation(obs: np.ndarray) -> np.ndarray:
    """Valid actions of a (..., C, H, W) observation: burnable cells not yet broken, flattened to (..., H*W)."""
    valid = (obs[..., NON_BURNABLE_CHANNEL, :, :] == 0) & (obs[..., FUEL_BREAK_CHANNEL, :, :] == 0)
    return valid.reshape(*valid.shape[:-2], -1)
