"""Evaluation of a policy on held-out tiles, with ignitions never drawn in training."""
import numpy as np

from firebreak_exp.environment import FuelBreakEnv
from firebreak_exp.factory import build_landscapes, env_kwargs

EVALUATION_SEED_OFFSET = 1_000_003  # evaluation episodes use seeds far from training's


def run_greedy_episode(env: FuelBreakEnv, agent, seed: int, tile_index: int) -> dict:
    """One episode with the agent's greedy (masked argmax) policy; returns its stats and maps."""
    obs, info = env.reset(seed=seed, options={"tile_index": tile_index})
    before = env.burn_probability.copy()
    terminated = False
    while not terminated:
        action = agent.act(obs[None], info["action_mask"][None], epsilon=0.0)[0]
        obs, _, terminated, _, info = env.step(action)
    stats = env.episode_stats()
    stats.update(tile=env.landscapes[tile_index], fuel_breaks=env.fuel_breaks.copy(),
                 burn_probability_before=before, burn_probability_after=env.burn_probability.copy())
    return stats


def evaluate_policy(cfg, agent, episodes: int = 8) -> dict:
    """Greedy episodes cycling over the held-out tiles.

    Returns ``summary`` (mean burned fractions before/after, burned-area reduction, and
    R = 1 - BA/BA0 over all episodes) and ``example`` (the first episode's maps).
    """
    landscapes = build_landscapes(cfg)
    env = FuelBreakEnv(landscapes.heldout, **env_kwargs(cfg))
    results = [run_greedy_episode(env, agent, int(cfg.seed) + EVALUATION_SEED_OFFSET + i,
                                  i % len(landscapes.heldout)) for i in range(max(1, episodes))]
    before = np.mean([r["initial_burned_fraction"] for r in results])
    after = np.mean([r["final_burned_fraction"] for r in results])
    summary = {"burned_fraction_untreated": float(before), "burned_fraction_treated": float(after),
               "burned_area_reduction": float(before - after),
               "R": float(1 - after / before) if before > 0 else 0.0, "episodes": len(results)}
    return {"summary": summary, "example": results[0]}
