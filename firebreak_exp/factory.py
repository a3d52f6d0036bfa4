"""Build landscapes, environments and vectorized environments from a composed config.

``parallel.num_envs=auto`` takes the number of environments (and ``max_workers`` when it is null) from the
latest ``python -m firebreak_exp.benchmark`` recommendation: the file named by the environment variable
``FIREBREAK_RECOMMENDATION_FILE``, else ``<project>/outputs/benchmark/recommended.json`` (the project is
Hydra's original working directory). Without one it falls back to ``min(4, cores)`` with a warning.
"""
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Optional

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from firebreak_exp.environment import FuelBreakEnv
from firebreak_exp.fire import SIMULATORS
from firebreak_exp.vector.backend import resolve_backend
from firebreak_exp.vector.env import VectorizedFireEnv

log = logging.getLogger(__name__)

RECOMMENDATION_ENV = "FIREBREAK_RECOMMENDATION_FILE"
AUTO_FALLBACK_NUM_ENVS = 4


def _plain(cfg: Any) -> Any:
    """A resolved plain-dict copy of a config node (picklable, safe to send to workers)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def build_landscapes(cfg):
    """The LandscapeSet (train and held-out tiles) of ``cfg.landscape``."""
    return instantiate(_plain(cfg.landscape))


def env_kwargs(cfg) -> dict:
    """Keyword arguments of FuelBreakEnv besides the tiles: simulator factory, scenario, budget, reward."""
    env = _plain(cfg.env)
    return {"simulator_factory": instantiate(_plain(cfg.simulator)),
            "scenario": instantiate(_plain(cfg.scenario)),
            "budget_percent": env["budget_percent"], "percentage_increment": env["percentage_increment"],
            "reward_ignitions": env.get("reward_ignitions")}


def make_env(cfg, index: int = 0, split: str = "train") -> FuelBreakEnv:
    """One FuelBreakEnv over the ``split`` ("train" or "heldout") tiles of ``cfg``; seeded with seed + index."""
    landscapes = build_landscapes(cfg)
    env = FuelBreakEnv(getattr(landscapes, split), **env_kwargs(cfg))
    env.reset(seed=int(cfg.seed) + index)
    return env


def simulator_name(cfg) -> str:
    """The name of ``cfg.simulator`` as the benchmark records it (``pyretechnics``, ``travel_time``, ...)."""
    target = str(cfg.simulator.get("_target_", ""))
    for name, cls in SIMULATORS.items():
        if target == f"{cls.__module__}.{cls.__name__}":
            return name
    return target.rsplit(".", 1)[-1]


def recommendation_path() -> Path:
    """Where ``parallel.num_envs=auto`` looks for the benchmark's recommendation."""
    if os.environ.get(RECOMMENDATION_ENV):
        return Path(os.environ[RECOMMENDATION_ENV])
    from hydra.core.hydra_config import HydraConfig
    base = HydraConfig.get().runtime.cwd if HydraConfig.initialized() else os.getcwd()
    return Path(base) / "outputs" / "benchmark" / "recommended.json"


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resolve_parallel(cfg, recommendation_file: Optional[os.PathLike] = None) -> dict:
    """``{"num_envs", "max_workers"}`` of ``cfg.parallel``; ``num_envs=auto`` reads the benchmark's recommendation.

    The recommendation for the configured backend and simulator is used when the benchmark measured that
    pair, else its overall recommendation; ``max_workers`` is taken from it only when the config leaves
    it null. Without a readable recommendation: ``min(4, cores)`` environments and a warning.
    """
    num_envs, max_workers = cfg.parallel.num_envs, cfg.parallel.max_workers
    if num_envs != "auto":
        return {"num_envs": int(num_envs), "max_workers": max_workers}
    path = Path(recommendation_file) if recommendation_file is not None else recommendation_path()
    try:
        record = json.loads(path.read_text())
        backend, simulator = resolve_backend(cfg.parallel.backend), simulator_name(cfg)
        entry = record.get("by_simulator", {}).get(simulator, record)
        choice = entry.get("by_backend", {}).get(backend)
        source = f"{backend} x {simulator}" if choice is not None else \
            f"overall ({entry.get('backend', record.get('backend'))} x {record.get('simulator')})"
        choice = choice if choice is not None else entry
        resolved = int(choice["num_envs"])
        if resolved <= 0:
            raise ValueError(f"num_envs={resolved}")
    except FileNotFoundError:
        fallback = min(AUTO_FALLBACK_NUM_ENVS, _available_cores())
        log.warning("parallel.num_envs=auto: no benchmark recommendation at %s (run python -m "
                    "firebreak_exp.benchmark); using min(%d, cores) = %d", path, AUTO_FALLBACK_NUM_ENVS, fallback)
        return {"num_envs": fallback, "max_workers": max_workers}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        fallback = min(AUTO_FALLBACK_NUM_ENVS, _available_cores())
        log.warning("parallel.num_envs=auto: the recommendation %s is unreadable (%s: %s); using min(%d, cores) "
                    "= %d", path, type(error).__name__, error, AUTO_FALLBACK_NUM_ENVS, fallback)
        return {"num_envs": fallback, "max_workers": max_workers}
    if max_workers is None and choice.get("max_workers"):
        max_workers = int(choice["max_workers"])
    log.info("parallel.num_envs=auto -> %d (max_workers %s), the benchmark's recommendation for %s in %s",
             resolved, max_workers, source, path)
    return {"num_envs": resolved, "max_workers": max_workers}


def make_vector_env(cfg, split: str = "train", **overrides: Mapping) -> VectorizedFireEnv:
    """The VectorizedFireEnv of ``cfg.parallel`` over the ``split`` tiles (keyword overrides win);
    ``parallel.num_envs=auto`` is resolved by :func:`resolve_parallel`."""
    landscapes = build_landscapes(cfg)
    sizes = {"num_envs": overrides["num_envs"], "max_workers": cfg.parallel.max_workers} \
        if "num_envs" in overrides else resolve_parallel(cfg)
    parallel = {**sizes, "method": cfg.parallel.backend, "address": cfg.parallel.get("address"),
                "share_fires": cfg.parallel.get("share_fires", True),
                "step_timeout_s": cfg.parallel.get("step_timeout_s"), **overrides}
    return VectorizedFireEnv(getattr(landscapes, split), env_kwargs=env_kwargs(cfg), **parallel)
