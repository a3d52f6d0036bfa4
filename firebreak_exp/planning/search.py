"""Decision-time search: sample several plans through the FuelBreakEnv MDP and keep the best on the shown fires.

A *guide* scores every cell of an observation (higher: break it sooner). The search runs ``rollouts``
episodes side by side on the tile with the planning ignitions: the first takes the guide's best cell at every
step, the others draw each cell from a softmax over the guide's scores (Kool et al. 2019; POMO, Kwon et al.
2020). It keeps the plan whose final expected burned fraction over the planning fires is the lowest, then
swaps its breaks while those fires burn less (:func:`improve_by_swaps`). The fresh scoring fires stay unseen,
as for every planner.

* :class:`PolicyGuide` - the trained Q-network's values (in % of burnable cells): the learned planner.
* :class:`FlowGuide` - the fire-flow channel of the observation (ha): the same search
  with the hand-made fire-flow rule as proposal, so what learning adds to the search stays visible.

With one rollout and no swaps the policy search is :class:`~firebreak_exp.planning.planners.PolicyPlanner` and
the flow search is the fire-flow planner run through the environment. :class:`LocalSearchPlanner` (the same swaps,
more of them, from a hand-made planner's plan on more fires) is the slow quality ceiling the evaluation compares
them with; :class:`HindsightPlanner` runs it on the scoring fires themselves: the plan it finds when it knows
the fires it is scored on.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from firebreak_exp.environment import SharedTiles
from firebreak_exp.fire.flows import fire_flow
from firebreak_exp.fire.simulator import IncrementalFireSimulator
from firebreak_exp.observation import FIRE_FLOW_CHANNEL
from firebreak_exp.planning.planners import Planner, _burnable, _validated, environment_class

__all__ = ["PolicyGuide", "FlowGuide", "sample_cells", "check_search_settings", "SearchPlanner",
           "PolicySearchPlanner", "FlowSearchPlanner", "LocalSearchPlanner", "HindsightPlanner",
           "improve_by_swaps"]


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


def check_search_settings(rollouts, temperature, swap_candidates, swap_passes, key: str = "") -> None:
    """ValueError naming ``key`` + the setting (e.g. ``planners.flow_search.rollouts=0``) when a search setting is
    out of range: ``rollouts`` >= 1, ``temperature`` > 0, ``swap_candidates`` and ``swap_passes`` >= 0."""
    for name, value, valid, expected in (
            ("rollouts", rollouts, int(rollouts) >= 1, "a positive integer"),
            ("temperature", temperature, temperature > 0, "a positive fraction of the score range"),
            ("swap_candidates", swap_candidates, int(swap_candidates) >= 0, "an integer >= 0"),
            ("swap_passes", swap_passes, int(swap_passes) >= 0, "an integer >= 0")):
        if not valid:
            raise ValueError(f"{key}{name}={value}: expected {expected}")


class SearchPlanner(Planner):
    """``rollouts`` episodes guided by ``guide`` (see the module docstring); the plan best on the planning fires.

    ``temperature`` (a fraction of each step's range of valid scores) sets how far the sampled rollouts stray
    from the guide's choice; the burn-probability and fire-flow channels are refreshed after every break.
    The plan kept is then improved by :func:`improve_by_swaps` on the planning fires (``swap_candidates``
    cells tried per break, at most ``swap_passes`` passes; 0 passes: kept as sampled). ``last_search`` holds
    the shown fires' burned fraction of every rollout's plan, the index of the one kept and the swaps made.
    """

    name = "search"
    nested = False
    stochastic = False     # draws from ``rng``, seeded per tile by the evaluation: one plan per tile

    def __init__(self, guide, rollouts: int, temperature: float, swap_candidates: int, swap_passes: int,
                 env_class: str):
        super().__init__()
        check_search_settings(rollouts, temperature, swap_candidates, swap_passes)
        self.guide, self.rollouts = guide, int(rollouts)
        self.temperature = float(temperature)
        self.swap_candidates, self.swap_passes = int(swap_candidates), int(swap_passes)
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
        plan, swaps = improve_by_swaps(orders[best], tile, simulator, ignitions, self.swap_candidates,
                                       self.swap_passes)
        self.last_search = {"burned_fraction": burned, "chosen": best, "swaps": swaps,
                            "seconds": time.perf_counter() - start}
        return _validated(plan, tile, num_breaks)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(rollouts={self.rollouts}, temperature={self.temperature}, "
                f"swap_candidates={self.swap_candidates}, swap_passes={self.swap_passes})")


class PolicySearchPlanner(SearchPlanner):
    """The learned planner: the search guided by a trained agent's Q-values."""

    name = "policy_search"

    def __init__(self, agent, rollouts: int, temperature: float, swap_candidates: int, swap_passes: int,
                 env_class: str):
        super().__init__(PolicyGuide(agent), rollouts, temperature, swap_candidates, swap_passes, env_class)


class FlowSearchPlanner(SearchPlanner):
    """The same search guided by the fire-flow channel: the baseline that needs no training."""

    name = "flow_search"

    def __init__(self, rollouts: int, temperature: float, swap_candidates: int, swap_passes: int, env_class: str):
        super().__init__(FlowGuide(), rollouts, temperature, swap_candidates, swap_passes, env_class)


def improve_by_swaps(plan, tile, simulator, ignitions: np.ndarray, candidates: int, max_passes: int):
    """``plan`` (flat cells of ``tile``) improved by swapping breaks while the fires of ``ignitions`` (int (k, 2)
    rows and columns, burned by ``simulator``) burn fewer cells.

    A pass visits every break of the plan: it takes the break out and tries in its place each of the
    ``candidates`` unbroken burnable cells with the most fire flow under the other breaks, keeping the cell
    (the one taken out, or a candidate) under which the fires burn the fewest cells. Three rules keep the
    swaps from fitting these fires rather than fires in general: ignition cells are never tried (a break
    there would only delete a known fire); a break whose removal lets no fire burn more stays (the fires
    cannot tell its worth); and a candidate is kept only when it lowers the burned cells of both halves
    of the fires (the even and the odd ones), so a break that contains one fire near its ignition does
    not count (with a single fire no swap is kept). A candidate is scored by burning again only the fires
    that reach it (a break elsewhere cannot change the others); on an
    :class:`~firebreak_exp.fire.simulator.IncrementalFireSimulator` their searches continue past the one new
    break. The counts are those of burning every fire. Passes repeat until one changes nothing or
    ``max_passes`` is reached.

    Returns the improved plan (list of flat cells, the same length) and ``{"initial_burned_cells",
    "burned_cells", "passes", "swaps"}`` (cells burned summed over the fires).
    """
    ignitions = np.asarray(ignitions, dtype=np.int64).reshape(-1, 2)
    plan = [int(c) for c in plan]
    burnable = _burnable(tile)
    allowed = burnable.ravel().copy()
    allowed[ignitions[:, 0] * burnable.shape[1] + ignitions[:, 1]] = False
    breaks = np.zeros(burnable.shape, dtype=bool)
    breaks.flat[plan] = True
    incremental = isinstance(simulator, IncrementalFireSimulator)
    half = np.arange(len(ignitions)) % 2 == 0          # the even fires; the odd ones are the other half
    current = simulator.burn_maps(ignitions, breaks).reshape(len(ignitions), -1).sum(axis=1)   # cells per fire
    initial, passes, swaps = int(current.sum()), 0, 0
    while passes < max_passes and plan and candidates > 0:
        passes += 1
        changed = False
        for position, out in enumerate(plan):
            breaks.flat[out] = False
            fires = simulator.search(ignitions, breaks) if incremental else None
            arrival = simulator.arrival_times(ignitions, breaks) if fires is None else fires.arrival
            reached = np.isfinite(arrival).reshape(len(ignitions), -1)
            per_fire = reached.sum(axis=1)
            if per_fire.sum() == current.sum():     # no planning fire needs it: its worth is unseen here
                breaks.flat[out] = True
                continue
            flow = fire_flow(arrival, simulator.spread_graph()).ravel()
            score = np.where(allowed & ~breaks.ravel(), flow, -np.inf)
            options = [int(c) for c in np.argsort(-score, kind="stable")[:candidates]
                       if np.isfinite(score[c]) and c != out]
            choice, choice_fires = out, current
            current_halves = current[half].sum(), current[~half].sum()
            for cell in options:
                which = np.flatnonzero(reached[:, cell])
                breaks.flat[cell] = True
                if incremental:    # those fires' searches continued past the one new break
                    branch = simulator.select(fires, which)
                    simulator.add_breaks(branch, breaks)
                    after = np.isfinite(branch.arrival).sum(axis=(1, 2))
                else:
                    after = simulator.burn_maps(ignitions[which], breaks).sum(axis=(1, 2))
                breaks.flat[cell] = False
                value = per_fire.copy()
                value[which] = after
                both = value[half].sum() < current_halves[0] and value[~half].sum() < current_halves[1]
                if both and value.sum() < choice_fires.sum():
                    choice, choice_fires = cell, value
            breaks.flat[choice] = True
            if choice != out:
                plan[position], current, changed = choice, choice_fires, True
                swaps += 1
        if not changed:
            break
    return plan, {"initial_burned_cells": initial, "burned_cells": int(current.sum()), "passes": passes,
                  "swaps": swaps}


class LocalSearchPlanner(Planner):
    """The quality ceiling: a planner's plan, then :func:`improve_by_swaps` on the planning fires (slow).

    ``start`` is the planner whose plan is improved (fire flow or greedy); ``candidates`` cells are tried in
    place of each break, for at most ``max_passes`` passes.
    """

    name = "local_search"
    nested = False

    def __init__(self, start: Planner, candidates: int, max_passes: int):
        super().__init__()
        self.start, self.candidates, self.max_passes = start, int(candidates), int(max_passes)
        self.last_search: Optional[dict] = None

    def plan(self, tile, simulator, scenario, num_breaks, ignitions, rng):
        self.cumulative_seconds = None
        plan = self.start.plan(tile, simulator, scenario, num_breaks, ignitions, rng)
        plan, self.last_search = improve_by_swaps(plan, tile, simulator, ignitions, self.candidates, self.max_passes)
        return _validated(plan, tile, num_breaks)

    def __repr__(self) -> str:
        return f"LocalSearchPlanner(start={self.start!r}, candidates={self.candidates}, max_passes={self.max_passes})"


class HindsightPlanner(Planner):
    """A planner that the evaluation shows the scoring fires themselves instead of the planning ones.

    Its plan is the best that ``planner`` finds for the very fires it is scored on, which no real planner
    knows in advance: R of a planner ÷ R of the hindsight local search splits the distance to the best plans
    known into what better optimization could gain and what only knowing the fires could. It is a reference,
    not a bound: the local search is a local optimum of its start, and on more planning fires it can end
    higher.
    """

    name = "hindsight"
    nested = False
    sees_scoring_fires = True

    def __init__(self, planner: Planner):
        super().__init__()
        self.planner = planner

    def plan(self, tile, simulator, scenario, num_breaks, ignitions, rng):
        cells = self.planner.plan(tile, simulator, scenario, num_breaks, ignitions, rng)
        self.cumulative_seconds = None
        return cells

    def __repr__(self) -> str:
        return f"HindsightPlanner(planner={self.planner!r})"
