"""Decision-time search: sample several plans through the FuelBreakEnv MDP and keep the best on the shown fires.

A *guide* scores every cell of an observation (higher: break it sooner). The search runs ``rollouts``
episodes side by side on the tile with the planning ignitions: the first takes the guide's best cell at every
step, the others draw each cell from a softmax over the guide's scores (Kool et al. 2019; POMO, Kwon et al.
2020). It returns the plan whose final expected burned fraction over the planning fires is the lowest. The
fresh scoring fires stay unseen, as for every planner.

* :class:`PolicyGuide` - the trained Q-network's values (in % of burnable cells): the learned planner.
* :class:`FlowGuide` - the fire-flow channel of the observation (ha): the same search
  with the hand-made fire-flow rule as proposal, so what learning adds to the search stays visible.

With one rollout the policy search is :class:`~firebreak_exp.planning.planners.PolicyPlanner` and the flow
search is the fire-flow planner run through the environment. :class:`LocalSearchPlanner` is the slow quality
ceiling the evaluation compares them with.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from firebreak_exp.environment import SharedTiles
from firebreak_exp.fire.flows import fire_flow
from firebreak_exp.observation import FIRE_FLOW_CHANNEL
from firebreak_exp.planning.planners import Planner, _burnable, _validated, environment_class

__all__ = ["PolicyGuide", "FlowGuide", "sample_cells", "SearchPlanner", "PolicySearchPlanner", "FlowSearchPlanner",
           "LocalSearchPlanner"]


class PolicyGuide:
    """Scores cells by the agent's Q-values (one forward pass for all rollouts)."""

    def __init__(self, agent):
        self.agent = agent

    def scores(self, obs: np.ndarray) -> np.ndarray:
        """float64 (N, H*W) of (N, C, H, W) observations."""
        return self.agent.q_values(obs)


class FlowGuide:
    """Scores cells by the observation's fire-flow channel."""

    def scores(self, obs: np.ndarray) -> np.ndarray:
        return obs[:, FIRE_FLOW_CHANNEL].reshape(len(obs), -1).astype(np.float64)


def sample_cells(scores: np.ndarray, masks: np.ndarray, temperature: float, greedy: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """One cell per row: the masked argmax where ``greedy``, else a draw from ``softmax(scores / (temperature *
    spread))`` over the valid cells, ``spread`` being the row's range of valid scores (so ``temperature`` is a
    fraction of it, whatever the guide's units). Rows without a valid cell get cell 0."""
    masked = np.where(masks, scores, -np.inf)
    cells = np.argmax(masked, axis=1)
    for i in np.flatnonzero(~greedy & masks.any(axis=1)):
        valid = masked[i][masks[i]]
        spread = max(float(valid.max() - valid.min()), 1e-12)
        logits = (masked[i] - valid.max()) / (max(temperature, 1e-6) * spread)
        gumbel = -np.log(-np.log(rng.random(len(logits)).clip(1e-300, 1.0)))
        cells[i] = int(np.argmax(np.where(masks[i], logits + gumbel, -np.inf)))
    return cells


class SearchPlanner(Planner):
    """``rollouts`` episodes guided by ``guide`` (see the module docstring); the plan best on the planning fires.

    ``temperature`` (a fraction of each step's range of valid scores) sets how far the sampled rollouts stray
    from the guide's choice; the burn-probability and fire-flow channels are refreshed after every break.
    ``last_search`` holds the shown
    fires' burned fraction of every rollout's plan and the index of the one kept.
    """

    name = "search"
    nested = False
    stochastic = False     # draws from ``rng``, seeded per tile by the evaluation: one plan per tile

    def __init__(self, guide, rollouts: int, temperature: float, env_class: str):
        super().__init__()
        if int(rollouts) < 1:
            raise ValueError(f"rollouts={rollouts}: expected a positive integer")
        if not temperature > 0:
            raise ValueError(f"temperature={temperature}: expected a positive fraction of the score range")
        self.guide, self.rollouts = guide, int(rollouts)
        self.temperature = float(temperature)
        self.env_class = environment_class(env_class)
        self.last_search: Optional[dict] = None

    def plan(self, tile, simulator, scenario, num_breaks, ignitions, rng):
        self.cumulative_seconds = None
        if num_breaks <= 0 or not _burnable(tile).any():
            return np.zeros(0, dtype=np.int64)
        start = time.perf_counter()
        shared = SharedTiles()
        episodes = [self.env_class.planning_episode(tile, simulator, scenario, num_breaks, ignitions, shared=shared)
                    for _ in range(self.rollouts)]
        envs = [env for env, _, _ in episodes]
        obs = np.stack([o for _, o, _ in episodes])
        masks = np.stack([info["action_mask"] for _, _, info in episodes])
        greedy = np.arange(self.rollouts) == 0
        orders = [[] for _ in envs]
        running = np.ones(self.rollouts, dtype=bool)
        while running.any():
            live = np.flatnonzero(running)
            cells = sample_cells(self.guide.scores(obs[live]), masks[live], self.temperature, greedy[live], rng)
            for i, cell in zip(live, cells):
                o, _, terminated, _, info = envs[i].step(int(cell))
                if not info.get("invalid_action", False):
                    orders[i].append(int(cell))
                obs[i], masks[i], running[i] = o, info["action_mask"], not terminated
        burned = np.array([env.burned_fraction for env in envs])
        best = int(np.argmin(burned))          # ties: the earliest rollout, the guide's own plan first
        self.last_search = {"burned_fraction": burned, "chosen": best, "seconds": time.perf_counter() - start}
        return _validated(orders[best], tile, num_breaks)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rollouts={self.rollouts}, temperature={self.temperature})"


class PolicySearchPlanner(SearchPlanner):
    """The learned planner: the search guided by a trained agent's Q-values."""

    name = "policy_search"

    def __init__(self, agent, rollouts: int, temperature: float, env_class: str):
        super().__init__(PolicyGuide(agent), rollouts, temperature, env_class)


class FlowSearchPlanner(SearchPlanner):
    """The same search guided by the fire-flow channel: the baseline that needs no training."""

    name = "flow_search"

    def __init__(self, rollouts: int, temperature: float, env_class: str):
        super().__init__(FlowGuide(), rollouts, temperature, env_class)


class LocalSearchPlanner(Planner):
    """The quality ceiling: a planner's plan, then swaps of breaks while the planning fires burn less (slow).

    ``start`` is the planner whose plan is improved (fire flow or greedy). A pass visits every break
    of the plan: it takes the break out and tries in its place each of the ``candidates`` unbroken cells
    with the most fire flow under the other breaks, keeping the swap (or the cell taken out) that burns the
    fewest cells over the planning fires (each candidate costs one simulation of every fire). Passes repeat
    until one changes nothing or ``max_passes`` is reached. Planning ignition cells are never candidates (a
    break there would only delete a known fire).
    """

    name = "local_search"
    nested = False

    def __init__(self, start: Planner, candidates: int, max_passes: int):
        super().__init__()
        self.start, self.candidates, self.max_passes = start, int(candidates), int(max_passes)
        self.last_search: Optional[dict] = None

    def plan(self, tile, simulator, scenario, num_breaks, ignitions, rng):
        self.cumulative_seconds = None
        ignitions = np.asarray(ignitions, dtype=np.int64).reshape(-1, 2)
        plan = list(self.start.plan(tile, simulator, scenario, num_breaks, ignitions, rng))
        burnable = _burnable(tile)
        allowed = burnable.ravel().copy()
        allowed[ignitions[:, 0] * burnable.shape[1] + ignitions[:, 1]] = False
        breaks = np.zeros(burnable.shape, dtype=bool)
        breaks.flat[plan] = True

        def burned(mask):
            return int(simulator.burn_maps(ignitions, mask).sum())

        best, passes, swaps = burned(breaks), 0, 0
        initial = best
        while passes < self.max_passes:
            passes += 1
            changed = False
            for position in range(len(plan)):
                out = plan[position]
                breaks.flat[out] = False
                flow = fire_flow(simulator.arrival_times(ignitions, breaks), simulator.spread_graph()).ravel()
                score = np.where(allowed & ~breaks.ravel(), flow, -np.inf)
                options = np.argsort(-score, kind="stable")[:self.candidates]
                options = [int(c) for c in options if np.isfinite(score[c]) and c != out]
                choice, choice_burned = out, best
                for cell in options:
                    breaks.flat[cell] = True
                    value = burned(breaks)
                    breaks.flat[cell] = False
                    if value < choice_burned:
                        choice, choice_burned = cell, value
                breaks.flat[choice] = True
                if choice != out:
                    plan[position], best, changed = choice, choice_burned, True
                    swaps += 1
            if not changed:
                break
        self.last_search = {"initial_burned_cells": initial, "burned_cells": best, "passes": passes, "swaps": swaps}
        return _validated(plan, tile, num_breaks)

    def __repr__(self) -> str:
        return f"LocalSearchPlanner(start={self.start!r}, candidates={self.candidates}, max_passes={self.max_passes})"

