"""Scoring fuel-break plans on held-out tiles: one code path for the trainer's end-of-run check and for
``python -m firebreak_exp.evaluate``.

Per tile, two ignition sets are drawn from streams that training never uses (training seeds its
environments with the integers ``cfg.seed + i``; these streams are ``SeedSequence([EVALUATION_SEED_OFFSET,
seed, stream, tile])``): the *planning* ignitions a planner is shown (as many as the environment shows,
``env.num_ignitions``), and fresh *scoring* ignitions. Every plan of every method is scored on the
same scoring ignitions with the same simulator: the burned fraction BA (burned cells / burnable cells of
the untreated tile, mean over scoring fires), and ``R = 1 - mean_t BA_t / mean_t BA0_t`` over tiles ``t``
against no treatment (the ratio of means, so tiles that burn more weigh more and a tile that barely burns
cannot blow R up), with a percentile bootstrap confidence interval over tiles.
"""
from __future__ import annotations

import functools
import logging
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
from hydra.utils import instantiate

from firebreak_exp.factory import build_landscapes, env_factory
from firebreak_exp.planning.planners import NoTreatmentPlanner, Planner

log = logging.getLogger(__name__)

EVALUATION_SEED_OFFSET = 1_000_003  # evaluation streams are keyed far from training's seeds
PLANNING_STREAM, SCORING_STREAM, PLANNER_STREAM = 1, 2, 3


def evaluation_rng(seed: int, stream: int, *keys: int) -> np.random.Generator:
    """A generator of one evaluation stream (planning ignitions, scoring ignitions, planner randomness)."""
    return np.random.default_rng(np.random.SeedSequence([EVALUATION_SEED_OFFSET, int(seed), int(stream),
                                                         *(int(k) for k in keys)]))


def build_planners(planners, names: Sequence[str], agent) -> dict:
    """``instantiate(planners[name])`` for each of ``names`` (the ``planners`` config group), given the agent
    by :func:`bind_agent`."""
    return bind_agent({name: instantiate(planners[name]) for name in names}, agent)


def check_planner_settings(planners) -> None:
    """Range checks of the ``planners`` config group (a mapping, or None) before anything runs; ValueError
    names the key, e.g. ``planners.flow_search.rollouts=0``."""
    from firebreak_exp.planning.search import check_search_settings
    if planners is None:
        return
    sigma_fraction = (planners.get("domirank") or {}).get("sigma_fraction")
    if sigma_fraction is not None and not 0 < sigma_fraction < 1:
        raise ValueError(f"planners.domirank.sigma_fraction={sigma_fraction}: expected a value in (0, 1)")
    for name in ("policy_search", "flow_search"):
        search = planners.get(name)
        if search is not None:
            check_search_settings(search.rollouts, search.temperature, search.swap_candidates, search.swap_passes,
                                  f"planners.{name}.")


def bind_agent(planners: Mapping[str, Any], agent) -> dict:
    """``planners`` with each partial one (the policy) given the trained ``agent``, or left out with a warning
    when there is no agent."""
    bound = {}
    for name, planner in planners.items():
        if isinstance(planner, functools.partial):
            if agent is None:
                log.warning("no trained agent: the %r method is skipped", name)
                continue
            planner = planner(agent=agent)
        bound[name] = planner
    return bound


def draw_ignitions(tile, count: int, rng: np.random.Generator) -> np.ndarray:
    """int (count, 2) (row, col) of burnable cells, without replacement while there are enough (as the
    environment draws them at reset)."""
    burnable = np.flatnonzero(np.asarray(tile.burnable))
    if len(burnable) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    cells = rng.choice(burnable, size=int(count), replace=int(count) > len(burnable))
    return np.column_stack(np.unravel_index(cells, tile.shape)).astype(np.int64)


def num_breaks_for(budget_percent: float, num_burnable: int) -> int:
    """Breaks of a budget in % of burnable cells, rounded as the environment does (at least 1)."""
    if num_burnable == 0:
        return 0
    return min(num_burnable, max(1, int(round(budget_percent / 100.0 * num_burnable))))


def breaks_map(cells: np.ndarray, shape: tuple) -> np.ndarray:
    breaks = np.zeros(shape, dtype=bool)
    breaks.flat[np.asarray(cells, dtype=np.int64)] = True
    return breaks


def score_plan(simulator, ignitions: np.ndarray, cells: np.ndarray) -> tuple:
    """(BA, burn probability map) of the breaks ``cells`` over ``ignitions``: BA is the mean over fires of
    burned cells / burnable cells of the untreated tile."""
    maps = simulator.burn_maps(ignitions, breaks_map(cells, simulator.shape))
    num_burnable = max(int(np.asarray(simulator.burnable).sum()), 1)
    burned = float(maps.reshape(len(maps), -1).sum(axis=1).mean() / num_burnable) if len(maps) else 0.0
    return burned, maps.mean(axis=0, dtype=np.float32) if len(maps) else np.zeros(simulator.shape, np.float32)


def ratio_r(burned: np.ndarray, untreated: np.ndarray) -> float:
    """R = 1 - mean(BA) / mean(BA0) (0 when nothing burns untreated)."""
    base = float(np.mean(untreated))
    return float(1.0 - np.mean(burned) / base) if base > 0 else 0.0


def bootstrap_ci(burned: np.ndarray, untreated: np.ndarray, confidence: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> tuple:
    """Percentile bootstrap interval of :func:`ratio_r` resampling tiles (paired BA, BA0)."""
    burned, untreated = np.asarray(burned, float), np.asarray(untreated, float)
    if len(burned) < 2:
        r = ratio_r(burned, untreated)
        return r, r
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(burned), size=(resamples, len(burned)))
    base = untreated[idx].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where(base > 0, 1.0 - burned[idx].mean(axis=1) / base, 0.0)
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha))


def compare_planners(tiles: Sequence, planners: Mapping[str, Planner], simulator_factory: Callable,
                     scenario, budgets: Sequence[float], *, seed: int, num_scoring_ignitions: int,
                     num_planning_ignitions: int, random_seeds: int = 1,
                     planner_simulators: Optional[Mapping[str, Callable]] = None,
                     planner_ignitions: Optional[Mapping[str, int]] = None,
                     example_budget: Optional[float] = None, tile_keys: Optional[Sequence[int]] = None,
                     scoring_factory: Optional[Callable] = None, progress: bool = False) -> dict:
    """Plan with every planner on every tile at every budget (% of burnable cells) and score the plans.

    ``simulator_factory(tile=..., scenario=...)`` builds the scoring simulator, which planners also get
    unless ``planner_simulators[name]`` names another factory (e.g. a fast one for the greedy search);
    ``scoring_factory`` scores with another simulator than the planners plan with (e.g. the reference
    physics, pyretechnics, for plans made on the fast one). ``progress`` shows a progress bar over the plans
    scored.
    Planners see ``num_planning_ignitions`` (as many as the environment shows; ``planner_ignitions[name]``
    overrides it), drawn from the tile's planning stream (a planner with ``sees_scoring_fires`` is shown the
    scoring ignitions instead: the hindsight reference); stochastic planners are run
    with ``random_seeds`` seeds and their BA averaged per tile. Nested planners plan once at the largest
    budget and are scored on prefixes. ``tile_keys`` (default 0, 1, ...) key the tiles' ignition streams.

    Returns raw results: ``budgets``, ``tiles`` (names), ``num_breaks`` (T, B), ``untreated`` (T,) BA0,
    ``burned_fraction`` and ``plan_seconds`` (method -> (T, B)), and ``example`` (maps at
    ``example_budget`` on the tile that burns most untreated).
    """
    budgets = [float(b) for b in budgets]
    if not budgets:
        raise ValueError("budgets must not be empty")
    for b in budgets:
        if not 0 < b <= 100:
            raise ValueError(f"budget {b}: expected a percentage of burnable cells in (0, 100]")
    planner_simulators = dict(planner_simulators or {})
    planner_ignitions = dict(planner_ignitions or {})
    num_planning = int(num_planning_ignitions)
    example_budget = budgets[int(np.argmin([abs(b - (example_budget or 5.0)) for b in budgets]))]
    tile_keys = list(range(len(tiles))) if tile_keys is None else list(tile_keys)
    T, B = len(tiles), len(budgets)
    out = {"budgets": budgets, "tiles": [getattr(t, "name", str(i)) for i, t in enumerate(tiles)],
           "num_breaks": np.zeros((T, B), dtype=np.int64), "untreated": np.zeros(T),
           "burned_fraction": {m: np.zeros((T, B)) for m in planners},
           "plan_seconds": {m: np.zeros((T, B)) for m in planners}}
    examples = []
    from tqdm.auto import tqdm
    bar = tqdm(total=T * len(planners), unit="plan", desc="planning and scoring", disable=not progress)
    for t, tile in enumerate(tiles):
        key = tile_keys[t]
        simulator = simulator_factory(tile=tile, scenario=scenario)
        scorer = simulator if scoring_factory is None else scoring_factory(tile=tile, scenario=scenario)
        burnable = int(np.asarray(tile.burnable).sum())
        counts = [num_breaks_for(b, burnable) for b in budgets]
        out["num_breaks"][t] = counts
        most = max(counts)
        scoring = draw_ignitions(tile, num_scoring_ignitions, evaluation_rng(seed, SCORING_STREAM, key))
        untreated, before = score_plan(scorer, scoring, np.zeros(0, np.int64))
        out["untreated"][t] = untreated
        example = {"tile": tile, "burned_fraction_untreated": untreated, "burn_probability_before": before,
                   "methods": {}}
        for name, planner in planners.items():
            if planner.sees_scoring_fires:    # a hindsight reference, not a planner (search.HindsightPlanner)
                planning = scoring
            else:
                count = int(planner_ignitions.get(name) or num_planning)
                planning = draw_ignitions(tile, count, evaluation_rng(seed, PLANNING_STREAM, key))
            plan_sim = simulator
            if planner_simulators.get(name) is not None:
                plan_sim = planner_simulators[name](tile=tile, scenario=scenario)
            seeds = range(max(1, int(random_seeds))) if planner.stochastic else range(1)
            burned = np.zeros((len(seeds), B))
            seconds = np.zeros((len(seeds), B))
            for s in seeds:
                rng = evaluation_rng(seed, PLANNER_STREAM, key, s)
                plans = {}
                if isinstance(planner, NoTreatmentPlanner):
                    plans = {j: (np.zeros(0, np.int64), 0.0) for j in range(B)}
                elif planner.nested:
                    start = time.perf_counter()
                    full = planner.plan(tile, plan_sim, scenario, most, planning, rng)
                    total = time.perf_counter() - start
                    stamps = planner.cumulative_seconds
                    for j, k in enumerate(counts):
                        spent = float(stamps[min(k, len(stamps)) - 1]) if stamps is not None and len(stamps) and k else total
                        plans[j] = (full[:k], spent)
                else:
                    for j, k in enumerate(counts):
                        start = time.perf_counter()
                        cells = planner.plan(tile, plan_sim, scenario, k, planning, rng)
                        plans[j] = (cells, time.perf_counter() - start)
                for j, (cells, spent) in plans.items():
                    if isinstance(planner, NoTreatmentPlanner):
                        burned[s, j], after = untreated, before
                    else:
                        burned[s, j], after = score_plan(scorer, scoring, cells)
                    seconds[s, j] = spent
                    if s == 0 and budgets[j] == example_budget:
                        example["methods"][name] = {"fuel_breaks": breaks_map(cells, tile.shape),
                                                    "burn_probability": after, "burned_fraction": burned[s, j]}
            out["burned_fraction"][name][t] = burned.mean(axis=0)
            out["plan_seconds"][name][t] = seconds.mean(axis=0)
            log.info("tile %s %s: BA %s (untreated %.4f)", out["tiles"][t], name,
                     np.round(burned.mean(axis=0), 4).tolist(), untreated)
            bar.update(1)
        examples.append(example)
    bar.close()
    chosen = int(np.argmax(out["untreated"])) if T else 0
    out["example"] = {"budget": example_budget, **examples[chosen]} if examples else {}
    return out


def summarize(raw: dict, confidence: float = 0.95, resamples: int = 2000) -> dict:
    """``{"budgets", "methods": {name: {"R", "R_ci", "burned_fraction", "plan_seconds"}}}`` from
    :func:`compare_planners` (R and its bootstrap CI per budget, BA and planning seconds averaged over tiles)."""
    methods = {}
    for name, burned in raw["burned_fraction"].items():
        r, ci = [], []
        for j in range(len(raw["budgets"])):
            r.append(ratio_r(burned[:, j], raw["untreated"]))
            lo, hi = bootstrap_ci(burned[:, j], raw["untreated"], confidence, resamples, seed=j)
            ci.append([lo, hi])
        methods[name] = {"R": r, "R_ci": ci, "burned_fraction": burned.mean(axis=0).tolist(),
                         "plan_seconds": raw["plan_seconds"][name].mean(axis=0).tolist()}
    return {"budgets": list(raw["budgets"]), "methods": methods}


def format_table(summary: dict) -> str:
    """A plain-text table: one row per method and budget."""
    lines = [f"{'method':<14}{'budget %':>9}{'R':>9}{'95% CI':>20}{'BA':>9}{'plan s':>10}"]
    for name, m in summary["methods"].items():
        for j, b in enumerate(summary["budgets"]):
            lo, hi = m["R_ci"][j]
            lines.append(f"{name:<14}{b:>9g}{m['R'][j]:>9.4f}{f'[{lo:.4f}, {hi:.4f}]':>20}"
                         f"{m['burned_fraction'][j]:>9.4f}{m['plan_seconds'][j]:>10.3f}")
    return "\n".join(lines)


def heldout_tiles(cfg, max_tiles: Optional[int] = None, split: str = "heldout") -> list:
    """The held-out tiles of ``cfg.landscape`` (``split="train"``: the training tiles, for tuning), at most
    ``max_tiles`` spread evenly over the list."""
    if split not in ("heldout", "train"):
        raise ValueError(f"split={split}: expected heldout or train")
    tiles = list(getattr(build_landscapes(cfg), split))
    if max_tiles is not None and 0 < max_tiles < len(tiles):
        tiles = [tiles[i * len(tiles) // max_tiles] for i in range(max_tiles)]
    return tiles


class HeldoutEvaluation:
    """The end-of-training check on held-out tiles, with the evaluation command's scoring code.

    Called with the trained agent, it scores the greedy policy, no treatment, one random plan, DomiRank and
    fire flow (``planners``: these built from the ``planners`` group, the policy a partial that receives the
    agent) at ``budget_percent`` (% of burnable cells) on ``tiles``, every plan on the same
    ``num_scoring_ignitions`` fresh scoring ignitions per tile burned by ``simulator_factory``'s simulator;
    planners see ``num_planning_ignitions``. It returns ``summary`` (burned fractions before/after,
    burned-area reduction, ``R`` with ``R_ci_low``/``R_ci_high``, ``R_random``, ``R_domirank``, ``R_flow``,
    ``plan_seconds``, ``episodes`` = tiles scored) and ``example`` (the policy's maps on the tile that burns
    most).
    """

    METHODS = ("policy", "random", "domirank", "flow")

    def __init__(self, tiles: Sequence, planners: Mapping[str, Any], simulator_factory: Callable, scenario, *,
                 budget_percent: float, seed: int, num_scoring_ignitions: int,
                 num_planning_ignitions: int):
        self.tiles, self.planners = list(tiles), dict(planners)
        self.simulator_factory, self.scenario = simulator_factory, scenario
        self.budget_percent = float(budget_percent)
        self.seed = int(seed)
        self.num_scoring_ignitions, self.num_planning_ignitions = int(num_scoring_ignitions), int(num_planning_ignitions)

    @classmethod
    def from_config(cls, cfg, episodes: int = 8) -> "HeldoutEvaluation":
        """The check of a training config: ``episodes`` held-out tiles (spread over the list), the environment's
        budget and simulator, ``env.reward_ignitions`` (else ``env.num_ignitions``) scoring ignitions and
        ``env.num_ignitions`` planning ignitions per tile."""
        kwargs = env_factory(cfg).keywords
        planners = {name: instantiate(cfg.planners[name]) for name in cls.METHODS}
        return cls(heldout_tiles(cfg, max(1, int(episodes))), planners, kwargs["simulator_factory"],
                   kwargs["scenario"], budget_percent=kwargs["budget_percent"], seed=int(cfg.seed),
                   num_scoring_ignitions=kwargs["reward_ignitions"] or kwargs["num_ignitions"],
                   num_planning_ignitions=kwargs["num_ignitions"])

    def __call__(self, agent) -> dict:
        budget = self.budget_percent
        raw = compare_planners(self.tiles, bind_agent(self.planners, agent),
                               self.simulator_factory, self.scenario, [budget], seed=self.seed,
                               num_scoring_ignitions=self.num_scoring_ignitions,
                               num_planning_ignitions=self.num_planning_ignitions, example_budget=budget)
        table = summarize(raw)["methods"]
        policy = raw["burned_fraction"]["policy"][:, 0]
        before, after = float(raw["untreated"].mean()), float(policy.mean())
        lo, hi = bootstrap_ci(policy, raw["untreated"])
        summary = {"burned_fraction_untreated": before, "burned_fraction_treated": after,
                   "burned_area_reduction": before - after, "R": table["policy"]["R"][0],
                   "R_ci_low": lo, "R_ci_high": hi, "R_random": table["random"]["R"][0],
                   "R_domirank": table["domirank"]["R"][0], "R_flow": table["flow"]["R"][0],
                   "plan_seconds": table["policy"]["plan_seconds"][0],
                   "episodes": len(self.tiles)}
        ex = raw["example"]
        chosen = ex["methods"]["policy"]
        example = {"tile": ex["tile"], "fuel_breaks": chosen["fuel_breaks"],
                   "burn_probability_before": ex["burn_probability_before"],
                   "burn_probability_after": chosen["burn_probability"],
                   "initial_burned_fraction": ex["burned_fraction_untreated"],
                   "final_burned_fraction": chosen["burned_fraction"], "budget_percent": budget}
        return {"summary": summary, "example": example}
