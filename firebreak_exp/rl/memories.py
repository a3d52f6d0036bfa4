"""Expert memories: an expert planner's plans played through the fuel-break MDP as replay transitions,
cached on disk. The expert is ``trainer.expert_planner``, a planner of ``conf/planners/`` that needs no trained
agent: ``flow`` (:class:`~firebreak_exp.planning.planners.FireFlowPlanner`, which plans from the fires the episode
shows), ``domirank`` (the seed's), or a search that improves on fire flow with simulations of those fires
(``flow_search``, ``local_search``: expert iteration's stronger demonstrator, at more seconds per episode).

Episode ``i`` runs FuelBreakEnv from reset on training tile ``i % len(train)`` (seed
``cfg.seed + MEMORY_SEED_OFFSET + i``, so its ignitions differ from the training environments', which are
seeded ``cfg.seed + j``) with a scenario of ``trainer.memory_simulations`` ignitions, and takes the
expert's plan for the tile (and those ignitions) as its actions until the budget is spent. Rewards are the environment's own.
A search's plan is a set of breaks improved by swaps, not built break by break, so it is played in fire-flow
order: at each step, the plan's cell with the most fire flow under the breaks so far. Each demonstrated step is
then a choice that the step's observation shows; played in the search's own order, swapped-in cells sat at
steps whose fires did not call for them, and the policy imitating them planned worse than fire flow's.

Transitions are stored compactly, like :class:`~firebreak_exp.rl.replay.ReplayBuffer`: static landscape
channels once per tile (``tile_keys``, ``tile_channels``) and, per transition, the burn probability
and fire flow (float16), break mask and remaining budget of the state and the next state (axis 1: 0 = state, 1 = next).
:func:`memory_observations` rebuilds full observations and :func:`fill_replay` adds everything to a
replay buffer. The arrays are cached as ``<project>/outputs/memories/<hash>.npz`` where the hash covers
everything that shapes them (landscape, scenario, simulator, env, seed, episodes, memory_simulations,
the expert and its settings, and the format version); the file is written atomically.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import zipfile
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
from hydra.utils import instantiate

from firebreak_exp.atomic import write_atomically
from firebreak_exp.config import EXPERT_PLANNERS
from firebreak_exp.factory import build_landscapes, env_factory
from firebreak_exp.observation import build_observation, split_observation
from firebreak_exp.rl.replay import NStepReturns

log = logging.getLogger(__name__)

MEMORY_FORMAT = 7
MEMORY_SEED_OFFSET = 2_000_033
ARRAY_KEYS = ("tile_keys", "tile_channels", "tile_index", "actions", "rewards", "dones", "burn_probability", "fire_flow",
              "fuel_breaks", "budget", "episode", "episode_tile", "episode_return", "initial_burned_fraction",
              "final_burned_fraction")


def _plain(node) -> dict:
    from omegaconf import OmegaConf
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)


def memory_config(cfg, episodes: int) -> dict:
    """Everything that determines the memories of ``cfg`` (the cache key's content)."""
    landscape = _plain(cfg.landscape)
    landscape.pop("cache_dir", None)                 # where rasters are cached, not what they hold
    if landscape.get("raster_dir"):
        landscape["raster_dir"] = str(Path(landscape["raster_dir"]).expanduser().resolve())
    env = _plain(cfg.env)
    env.pop("num_ignitions")                         # memories show trainer.memory_simulations fires instead
    return {"format": MEMORY_FORMAT, "landscape": landscape, "scenario": _plain(cfg.scenario),
            "simulator": _plain(cfg.simulator), "env": env, "seed": int(cfg.seed),
            "episodes": int(episodes), "memory_simulations": int(cfg.trainer.memory_simulations),
            "planner": expert_settings(cfg)}


def expert_settings(cfg) -> dict:
    """The expert planner's name (``trainer.expert_planner``) and its config (``planners.<name>``)."""
    name = str(cfg.trainer.expert_planner)
    if name not in EXPERT_PLANNERS:
        raise ValueError(f"trainer.expert_planner={name}: expected one of {EXPERT_PLANNERS}")
    return {"name": name, **_plain(cfg.planners[name])}


def memory_key(cfg, episodes: int) -> str:
    """sha256 (first 20 hex digits) of :func:`memory_config`."""
    text = json.dumps(memory_config(cfg, episodes), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def default_memory_dir() -> Path:
    """``<project>/outputs/memories``: the Hydra launch folder's ``outputs/`` when in a Hydra app, else
    the current folder's."""
    from hydra.core.hydra_config import HydraConfig
    root = Path(HydraConfig.get().runtime.cwd) if HydraConfig.initialized() else Path.cwd()
    return root / "outputs" / "memories"


def memory_path(cfg, episodes: int, cache_dir: Optional[os.PathLike] = None) -> Path:
    return Path(cache_dir or default_memory_dir()) / f"{memory_key(cfg, episodes)}.npz"


def generate_expert_memories(cfg, episodes: int) -> dict:
    """Play ``episodes`` episodes of the expert planner on the training tiles; returns the memory arrays."""

    if episodes < 1:
        raise ValueError(f"expert memories need at least one episode, got {episodes}")
    train = build_landscapes(cfg).train
    env = env_factory(cfg)(train, num_ignitions=int(cfg.trainer.memory_simulations))
    expert = expert_settings(cfg)
    planner = instantiate(cfg.planners[expert["name"]])
    static, rows = {}, {k: [] for k in ("tile_index", "actions", "rewards", "dones", "burn_probability",
                                        "fire_flow", "fuel_breaks", "budget", "episode")}
    episode_rows = {k: [] for k in ("episode_tile", "episode_return", "initial_burned_fraction",
                                    "final_burned_fraction")}

    start = time.perf_counter()
    for i in range(int(episodes)):
        tile_index = i % len(train)
        obs, info = env.reset(seed=int(cfg.seed) + MEMORY_SEED_OFFSET + i, options={"tile_index": tile_index})
        static.setdefault(tile_index, split_observation(obs).static.copy())
        plan = planner.plan(train[tile_index], env.simulator(tile_index), env.scenario, env.budget,
                            env.ignitions, np.random.default_rng(i))
        remaining = [int(c) for c in plan]
        total, terminated = 0.0, False
        while remaining and not terminated:
            action = remaining.pop(0 if planner.nested else _most_fire_flow(remaining, obs))
            next_obs, reward, terminated, _, info = env.step(action)
            (_, bp0, ff0, fb0, b0), (_, bp1, ff1, fb1, b1) = split_observation(obs), split_observation(next_obs)
            rows["tile_index"].append(tile_index); rows["actions"].append(int(action))
            rows["rewards"].append(reward); rows["dones"].append(terminated); rows["episode"].append(i)
            rows["burn_probability"].append(np.stack([bp0, bp1])); rows["fuel_breaks"].append(np.stack([fb0, fb1]))
            rows["fire_flow"].append(np.stack([ff0, ff1]))
            rows["budget"].append((b0, b1))
            total += reward
            obs = next_obs
        if not terminated:
            raise RuntimeError(f"{expert['name']} plan of {len(plan)} cells did not finish the episode "
                               f"(budget {env.budget})")
        stats = env.episode_stats()
        episode_rows["episode_tile"].append(tile_index); episode_rows["episode_return"].append(total)
        episode_rows["initial_burned_fraction"].append(stats["initial_burned_fraction"])
        episode_rows["final_burned_fraction"].append(stats["final_burned_fraction"])
    keys = sorted(static)
    memories = {
        "tile_keys": np.array(keys, np.int64),
        "tile_channels": np.stack([static[k] for k in keys]).astype(np.float32),
        "tile_index": np.array(rows["tile_index"], np.int32),
        "actions": np.array(rows["actions"], np.int64),
        "rewards": np.array(rows["rewards"], np.float32),
        "dones": np.array(rows["dones"], bool),
        "burn_probability": np.stack(rows["burn_probability"]).astype(np.float16),
        "fire_flow": np.stack(rows["fire_flow"]).astype(np.float16),
        "fuel_breaks": np.stack(rows["fuel_breaks"]).astype(bool),
        "budget": np.array(rows["budget"], np.float32),
        "episode": np.array(rows["episode"], np.int32),
        "episode_tile": np.array(episode_rows["episode_tile"], np.int32),
        "episode_return": np.array(episode_rows["episode_return"], np.float64),
        "initial_burned_fraction": np.array(episode_rows["initial_burned_fraction"], np.float64),
        "final_burned_fraction": np.array(episode_rows["final_burned_fraction"], np.float64),
    }
    log.info("generated %d expert transitions from %d %s episodes in %.1f s (mean return %.4f)",
             len(memories["actions"]), episodes, expert["name"], time.perf_counter() - start, memories["episode_return"].mean())
    return memories


def _most_fire_flow(cells: list, obs: np.ndarray) -> int:
    """Index in ``cells`` (flat cells) of the one with the most fire flow in ``obs`` (the first of ties)."""
    flow = split_observation(obs).fire_flow.ravel()
    return int(np.argmax(flow[cells]))


def _save_arrays(path: str, arrays: dict) -> None:
    with open(path, "wb") as handle:   # a handle: given a file name, numpy would append ".npz" to it
        np.savez_compressed(handle, **arrays)


def load_or_generate_expert_memories(cfg, episodes: Optional[int] = None, regenerate: Optional[bool] = None,
                                     cache_dir: Optional[os.PathLike] = None) -> dict:
    """The expert memories of ``cfg``: read from the cache, or generated and cached.

    ``episodes`` defaults to ``trainer.expert_memories`` and ``regenerate`` to ``trainer.regenerate_memories``
    (True rebuilds and overwrites the cached file); ``cache_dir`` to ``<project>/outputs/memories``.
    An unreadable cached file is rebuilt with a warning.
    """
    episodes = int(cfg.trainer.expert_memories if episodes is None else episodes)
    regenerate = bool(cfg.trainer.regenerate_memories if regenerate is None else regenerate)
    path = memory_path(cfg, episodes, cache_dir)
    if path.is_file() and not regenerate:
        try:
            with np.load(path, allow_pickle=False) as data:
                memories = {k: data[k] for k in data.files}
            if set(ARRAY_KEYS) <= set(memories):
                log.info("expert memories: %d transitions from %s", len(memories["actions"]), path)
                return memories
            log.warning("expert memories %s lack %s; regenerating", path, sorted(set(ARRAY_KEYS) - set(memories)))
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            log.warning("expert memories %s are unreadable (%s); regenerating", path, error)
    memories = generate_expert_memories(cfg, episodes)
    write_atomically(path, lambda tmp: _save_arrays(tmp, memories))
    log.info("expert memories cached in %s", path)
    return memories


def memory_observations(memories: dict, which: int = 0, slots: Optional[np.ndarray] = None) -> np.ndarray:
    """float32 (N, C, H, W) observations of the transitions ``slots`` (all by default): ``which`` 0 = the
    states, 1 = the next states."""
    slots = np.arange(len(memories["actions"])) if slots is None else np.asarray(slots)
    lookup = {int(k): i for i, k in enumerate(memories["tile_keys"])}
    static = memories["tile_channels"][[lookup[int(t)] for t in memories["tile_index"][slots]]]
    return build_observation(static, memories["burn_probability"][slots, which], memories["fire_flow"][slots, which],
                             memories["fuel_breaks"][slots, which], memories["budget"][slots, which])


def fill_replay(replay, memories: dict, chunk_size: int = 256, n_step: int = 1, gamma: float = 0.99) -> int:
    """Add every memory transition to ``replay`` (``ReplayBuffer.add``), as ``n_step``-step transitions
    (:class:`~firebreak_exp.rl.replay.NStepReturns`, the memories' episodes being stored in order) when
    ``n_step`` > 1; returns how many were added."""
    count = len(memories["actions"])
    if count > replay.capacity:
        log.warning("%d expert transitions exceed the replay capacity %d: the oldest are overwritten",
                    count, replay.capacity)
    n_step_returns = NStepReturns(1, n_step, gamma)
    for start in range(0, count, chunk_size):
        slots = np.arange(start, min(count, start + chunk_size))
        columns = (memory_observations(memories, 0, slots), memories["tile_index"][slots], memories["actions"][slots],
                   memories["rewards"][slots], memory_observations(memories, 1, slots), memories["dones"][slots])
        if n_step == 1:
            replay.add(*columns, expert=True)
            continue
        for k in range(len(slots)):
            replay.add(*n_step_returns.push(*(column[k:k + 1] for column in columns)), expert=True)
    return count


def memory_stats(memories: dict) -> dict:
    """Episodes, transitions and mean return / relative reduction of the memories (for logging)."""
    initial = memories["initial_burned_fraction"]
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(initial > 0, memories["episode_return"] / initial, 0.0)
    return {"expert/episodes": int(len(memories["episode_return"])), "expert/transitions": int(len(memories["actions"])),
            "expert/mean_return": float(np.mean(memories["episode_return"])),
            "expert/mean_relative_reduction": float(np.mean(relative))}
