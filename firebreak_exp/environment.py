"""The fuel-break Markov decision process as a Gymnasium environment.

State: normalized landscape channels (with pyretechnics' spread rates under the scenario), the burn
probability under the current breaks (over this episode's ignitions), the fire flow (per cell, the
hectares the fires burn beyond it, :func:`~firebreak_exp.fire.flows.fire_flow`: what a break there saves
at most, in units that do not change with the tile's size, so that a network trained on small tiles
reads large ones on the same scale), the fuel-break mask and the remaining budget (the layout:
:mod:`firebreak_exp.observation`). Action: one cell; broken and non-burnable cells are masked out
(``info["action_mask"]``). Reward: the drop in expected burned fraction since the last evaluation, over
ignitions drawn once at reset, so an episode's return is the total reduction. The episode ends when the
budget is spent. A break placed on a shown fire's ignition point does not stop that fire (it would only
delete a known ignition) but blocks the other fires.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import gymnasium as gym
import numpy as np

from firebreak_exp.fire.scenario import Scenario
from firebreak_exp.fire.simulator import FireSimulator
from firebreak_exp.fire.tracked import TrackedFires
from firebreak_exp.landscape import Tile
from firebreak_exp.observation import (CHANNELS, FIRE_FLOW_CHANNEL, OBSERVATION_BOUND, build_observation,
                                       static_channels)

SimulatorFactory = Callable[..., FireSimulator]


class SharedTiles:
    """Per tile index, the fire simulator and static channels that environments of one process over the same
    tiles, simulator factory and scenario build once between them (a tile's simulator takes ~0.3 s to build;
    simulators keep no episode state)."""

    def __init__(self):
        self.simulators: dict[int, FireSimulator] = {}
        self.static: dict[int, np.ndarray] = {}


class FuelBreakEnv(gym.Env):
    """Place fuel breaks, one cell per step, on tiles drawn from ``landscapes``.

    ``simulator_factory(tile=..., scenario=...)`` builds a fire simulator; one is
    built per tile, once, and reused (by every environment given the same ``shared``
    tiles). Each episode shows ``num_ignitions`` fires; the reward is measured on
    ``reward_ignitions`` unseen fires (None: the shown ones). ``budget_percent`` and
    ``percentage_increment`` are % of the tile's burnable cells. An action on a masked
    cell places no break but still spends budget (``info["invalid_action"]``).
    """

    metadata = {"render_modes": []}

    def __init__(self, landscapes: Sequence[Tile], simulator_factory: SimulatorFactory, scenario: Scenario, *,
                 budget_percent: float, percentage_increment: float, num_ignitions: int,
                 reward_ignitions: Optional[int], shared: Optional[SharedTiles] = None):
        if not landscapes:
            raise ValueError("FuelBreakEnv needs at least one landscape tile")
        shapes = {tile.shape for tile in landscapes}
        if len(shapes) != 1:
            raise ValueError(f"all tiles must share one shape, got {sorted(shapes)}")
        if not 0 < budget_percent <= 100:
            raise ValueError(f"budget_percent must be in (0, 100], got {budget_percent}")
        if not 0 < percentage_increment <= 100:
            raise ValueError(f"percentage_increment must be in (0, 100], got {percentage_increment}")
        if isinstance(num_ignitions, bool) or int(num_ignitions) != num_ignitions or num_ignitions < 1:
            raise ValueError(f"num_ignitions must be a positive integer, got {num_ignitions!r}")
        if reward_ignitions is not None and reward_ignitions < 1:
            raise ValueError(f"reward_ignitions must be a positive integer or None, got {reward_ignitions}")
        self.landscapes = list(landscapes)
        self.simulator_factory = simulator_factory
        self.scenario = scenario
        self.budget_percent = budget_percent
        self.percentage_increment = percentage_increment
        self.num_ignitions = int(num_ignitions)
        self.reward_ignitions = reward_ignitions
        self.grid_shape = shapes.pop()
        height, width = self.grid_shape
        high = np.full((len(CHANNELS), height, width), OBSERVATION_BOUND, np.float32)
        # ha: a fire reaches at most every cell of its tile through one cell
        high[FIRE_FLOW_CHANNEL] = height * width * max(tile.cell_hectares for tile in self.landscapes)
        self.observation_space = gym.spaces.Box(-high, high, dtype=np.float32)
        self.action_space = gym.spaces.Discrete(height * width)
        shared = SharedTiles() if shared is None else shared
        self._simulators, self._static = shared.simulators, shared.static
        self.tile_index = -1

    @classmethod
    def planning_episode(cls, tile: Tile, simulator: FireSimulator, scenario: Scenario, num_breaks: int,
                         ignitions: np.ndarray, breaks_per_evaluation: int = 1,
                         shared: Optional[SharedTiles] = None):
        """A planner's episode: an environment over ``tile`` alone whose budget is exactly ``num_breaks`` cells,
        reset with the planning ``ignitions`` (shown, and scored by the rewards: no unseen fires), fires
        evaluated on ``simulator`` after every ``breaks_per_evaluation`` breaks (by default after each, as
        training on 25 x 25 tiles does, so the network reads the fires under all its breaks on any tile
        size). Returns ``(env, obs, info)``."""
        num_burnable = max(int(np.asarray(tile.burnable).sum()), 1)
        env = cls([tile], lambda tile, scenario: simulator, scenario,
                  budget_percent=min(100.0, 100.0 * num_breaks / num_burnable),
                  percentage_increment=min(100.0, 100.0 * max(1, int(breaks_per_evaluation)) / num_burnable),
                  num_ignitions=max(1, len(ignitions)),
                  reward_ignitions=None, shared=shared)
        obs, info = env.reset(seed=0, options={"tile_index": 0, "ignitions": ignitions})
        return env, obs, info

    # -- episode ---------------------------------------------------------------------------
    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        """Options: ``tile_index`` (default: drawn), ``ignitions`` (int (N, 2) rows and columns of the fires
        shown and scored, instead of drawn ones; no unseen reward fires then)."""
        super().reset(seed=seed)
        options = options or {}
        self.tile_index = int(options.get("tile_index", self.np_random.integers(len(self.landscapes))))
        tile = self.landscapes[self.tile_index]
        num_burnable = int(tile.burnable.sum())
        if options.get("ignitions") is not None:
            self.ignitions = np.asarray(options["ignitions"], dtype=np.int64).reshape(-1, 2)
            self.hidden_ignitions = None
        else:
            self.ignitions = self._draw_ignitions(self.num_ignitions)
            self.hidden_ignitions = (None if self.reward_ignitions is None
                                     else self._draw_ignitions(self.reward_ignitions))
        self.budget = max(1, round(self.budget_percent / 100 * num_burnable))
        self.evaluation_interval = max(1, round(self.percentage_increment / 100 * num_burnable))
        self.fuel_breaks = np.zeros(self.grid_shape, dtype=bool)
        self.steps_taken = 0
        self.episode_return = 0.0
        self._track_fires()
        self._evaluate()
        self.initial_burned_fraction = self.burned_fraction
        return self._observation(), self._info()

    def step(self, action):
        return self._take([int(action)], evaluate=False)

    def step_batch(self, actions):
        """Take ``actions`` (cells) in turn as :meth:`step` does, then evaluate the fires once: one reward for
        the batch (a whole landscape is planned in batches of breaks between fire updates). Returns what
        :meth:`step` returns; ``info["invalid_action"]`` tells whether any of them was masked."""
        return self._take([int(action) for action in actions], evaluate=True)

    def _take(self, actions: list, evaluate: bool):
        """Place the breaks of ``actions`` (masked ones place none but spend budget) and evaluate the fires when
        ``evaluate``, at the end of the episode or at the evaluation interval."""
        live = self.landscapes[self.tile_index].burnable.ravel()
        breaks = self.fuel_breaks.ravel()
        valid = True
        for action in actions:
            if live[action] and not breaks[action]:
                breaks[action] = True
            else:
                valid = False
        self.steps_taken += len(actions)
        terminated = self.steps_taken >= self.budget or not self._action_mask().any()
        reward = 0.0
        evaluated = evaluate or terminated or self.steps_taken % self.evaluation_interval == 0
        if evaluated:
            previous = self.burned_fraction
            self._evaluate()
            reward = previous - self.burned_fraction
        self.episode_return += reward
        info = self._info()
        info.update(invalid_action=not valid, evaluated=evaluated)
        if terminated:
            info["episode"] = self.episode_stats()
        return self._observation(), reward, terminated, False, info

    def _draw_ignitions(self, count: int) -> np.ndarray:
        """int (count, 2) burnable cells of the current tile, without replacement while there are enough."""
        burnable = np.flatnonzero(self.landscapes[self.tile_index].burnable)
        cells = self.np_random.choice(burnable, size=count, replace=count > len(burnable))
        return np.column_stack(np.unravel_index(cells, self.grid_shape))

    def episode_stats(self) -> dict:
        """Return, length and burned-area reduction of the current episode (fractions of burnable cells)."""
        reduction = self.initial_burned_fraction - self.burned_fraction
        relative = reduction / self.initial_burned_fraction if self.initial_burned_fraction > 0 else 0.0
        return {"return": self.episode_return, "length": self.steps_taken,
                "burned_area_reduction": reduction, "relative_reduction": relative,
                "initial_burned_fraction": self.initial_burned_fraction,
                "final_burned_fraction": self.burned_fraction, "tile_index": self.tile_index}

    def get_state(self) -> dict:
        """Everything needed to continue this episode exactly (for checkpoints): RNG, tile, fires, breaks."""
        return {"rng": self.np_random.bit_generator.state, "tile_index": self.tile_index,
                "ignitions": self.ignitions.copy(),
                "hidden_ignitions": np.zeros((0, 2), np.int64) if self.hidden_ignitions is None
                else self.hidden_ignitions.copy(), "fuel_breaks": self.fuel_breaks.copy(),
                "burn_probability": self.burn_probability.copy(), "fire_flow": self.fire_flow.copy(),
                "counters": np.array([self.steps_taken, self.budget, self.evaluation_interval]),
                "fractions": np.array([self.burned_fraction, self.initial_burned_fraction, self.episode_return])}

    def set_state(self, state: dict):
        """Continue from ``get_state()``'s result; returns the observation and info of that moment."""
        if self._np_random is None:
            super().reset()
        self.np_random.bit_generator.state = state["rng"]
        self.tile_index = int(state["tile_index"])
        self.ignitions = np.asarray(state["ignitions"]).copy()
        hidden = np.asarray(state["hidden_ignitions"]).reshape(-1, 2)
        self.hidden_ignitions = hidden.copy() if len(hidden) else None
        self.fuel_breaks = np.asarray(state["fuel_breaks"], dtype=bool).copy()
        self.burn_probability = np.asarray(state["burn_probability"], dtype=np.float32).copy()
        self.fire_flow = np.asarray(state["fire_flow"], dtype=np.float32).copy()
        self.steps_taken, self.budget, self.evaluation_interval = (int(v) for v in state["counters"])
        self.burned_fraction, self.initial_burned_fraction, self.episode_return = (
            float(v) for v in state["fractions"])
        self._track_fires()
        return self._observation(), self._info()

    # -- internals ---------------------------------------------------------------------------
    def simulator(self, tile_index: int) -> FireSimulator:
        """The fire simulator of one tile, built on first use."""
        if tile_index not in self._simulators:
            self._simulators[tile_index] = self.simulator_factory(
                tile=self.landscapes[tile_index], scenario=self.scenario)
        return self._simulators[tile_index]

    def _track_fires(self) -> None:
        """Follow this episode's shown and reward fires from scratch (at reset and after set_state)."""
        simulator = self.simulator(self.tile_index)
        # A break on a shown fire's ignition point does not stop that fire (it blocks the others): the
        # rewards must come from blocking spread, not from deleting known ignitions, which fresh fires would
        # not share. The unseen reward fires burn as the evaluation scores fresh fires: one lit on a break
        # burns nothing.
        self._shown = TrackedFires(simulator, self.ignitions, own_ignition_burns=True)
        self._hidden = None if self.hidden_ignitions is None else TrackedFires(simulator, self.hidden_ignitions,
                                                                                with_flows=False)

    def _evaluate(self) -> None:
        shown = self._shown.update(self.fuel_breaks)
        maps = np.isfinite(shown.arrival)
        num_burnable = self.landscapes[self.tile_index].burnable.sum()
        self.burn_probability = maps.mean(axis=0, dtype=np.float32)
        flow = shown.flows.mean(axis=0)   # cells: fire_flow(arrival, spread graph), kept per fire
        self.fire_flow = (flow * self.landscapes[self.tile_index].cell_hectares).astype(np.float32)
        if self._hidden is not None:
            maps = np.isfinite(self._hidden.update(self.fuel_breaks).arrival)
        self.burned_fraction = float(maps.sum(axis=(1, 2)).mean() / num_burnable)

    def _action_mask(self) -> np.ndarray:
        return (self.landscapes[self.tile_index].burnable & ~self.fuel_breaks).ravel()

    def _observation(self) -> np.ndarray:
        if self.tile_index not in self._static:
            self._static[self.tile_index] = static_channels(self.landscapes[self.tile_index], self.scenario,
                                                            self.simulator(self.tile_index))
        return build_observation(self._static[self.tile_index], self.burn_probability, self.fire_flow,
                                 self.fuel_breaks, 1.0 - self.steps_taken / self.budget)

    def _info(self) -> dict:
        return {"action_mask": self._action_mask(), "tile_index": self.tile_index,
                "burned_fraction": self.burned_fraction}
