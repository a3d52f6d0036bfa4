"""Build landscapes, environments and vectorized environments from a composed config."""
from typing import Any, Mapping

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from firebreak_exp.environment import FuelBreakEnv
from firebreak_exp.vectorization import VectorizedFireEnv


def _plain(cfg: Any) -> Any:
    """A resolved plain-dict copy of a config node (picklable, safe to send to workers)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def build_landscapes(cfg):
    """The LandscapeSet (train and held-out tiles) of ``cfg.landscape``."""
    return instantiate(_plain(cfg.landscape))


def env_kwargs(cfg) -> dict:
    """Keyword arguments of FuelBreakEnv besides the tiles: simulator factory, scenario, budget."""
    env = _plain(cfg.env)
    return {"simulator_factory": instantiate(_plain(cfg.simulator)),
            "scenario": instantiate(_plain(cfg.scenario)),
            "budget_percent": env["budget_percent"], "percentage_increment": env["percentage_increment"]}


def make_env(cfg, index: int = 0, split: str = "train") -> FuelBreakEnv:
    """One FuelBreakEnv over the ``split`` ("train" or "heldout") tiles of ``cfg``; seeded with seed + index."""
    landscapes = build_landscapes(cfg)
    env = FuelBreakEnv(getattr(landscapes, split), **env_kwargs(cfg))
    env.reset(seed=int(cfg.seed) + index)
    return env


def make_vector_env(cfg, split: str = "train", **overrides: Mapping) -> VectorizedFireEnv:
    """The VectorizedFireEnv of ``cfg.parallel`` over the ``split`` tiles (keyword overrides win)."""
    landscapes = build_landscapes(cfg)
    parallel = {"num_envs": cfg.parallel.num_envs, "method": cfg.parallel.backend,
                "max_workers": cfg.parallel.max_workers, **overrides}
    return VectorizedFireEnv(getattr(landscapes, split), env_kwargs=env_kwargs(cfg), **parallel)
