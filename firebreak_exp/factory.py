"""Build the objects of a composed config: landscapes, environments, the vectorized environment, the agent and
its replay, each with ``hydra.utils.instantiate`` from its group's ``_target_`` (objects that one group needs
from another, e.g. the environment's simulator factory and scenario, are bound here).

``parallel.num_envs=auto`` takes the number of environments (and ``max_workers`` when it is null) from the
latest ``python -m firebreak_exp.benchmark`` recommendation: the file named by the environment variable
``FIREBREAK_RECOMMENDATION_FILE``, else ``<project>/outputs/benchmark/recommended.json`` (the project is
Hydra's original working directory). Without one it falls back to ``min(4, cores)`` with a warning.
"""
import functools
import json
import logging
import os
from pathlib import Path
from typing import Any, Optional

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


def env_factory(cfg) -> functools.partial:
    """``cfg.env``'s environment class with its settings, ``cfg.simulator``'s per-tile simulator factory and
    ``cfg.scenario`` bound: call it with tiles (and keywords that win, e.g. ``num_ignitions``)."""
    env = instantiate(_plain(cfg.env))   # objects are bound here: instantiate would turn them into configs
    return functools.partial(env.func, *env.args, **env.keywords, simulator_factory=instantiate(_plain(cfg.simulator)),
                             scenario=instantiate(_plain(cfg.scenario)))


def make_env(cfg, index: int = 0, split: str = "train") -> FuelBreakEnv:
    """One FuelBreakEnv over the ``split`` ("train" or "heldout") tiles of ``cfg``; seeded with seed + index."""
    env = env_factory(cfg)(getattr(build_landscapes(cfg), split))
    env.reset(seed=int(cfg.seed) + index)
    return env


def make_agent(cfg, obs_shape: tuple, **overrides):
    """The DQNAgent of ``cfg.agent`` (keyword overrides win) for observations of ``obs_shape``, seeded ``cfg.seed``."""
    return instantiate({**_plain(cfg.agent), **overrides})(tuple(obs_shape), seed=int(cfg.seed))


def make_replay(cfg, obs_shape: tuple, **overrides):
    """The ReplayBuffer of ``cfg.replay`` (keyword overrides win) for observations of ``obs_shape``."""
    return instantiate({**_plain(cfg.replay), **overrides})(obs_shape=tuple(obs_shape), seed=int(cfg.seed))


def vector_env(landscapes, env_factory: functools.partial, *, backend: str, num_envs: int,
               max_workers: Optional[int], address: Optional[str], share_fires: bool,
               step_timeout_s: Optional[float]) -> VectorizedFireEnv:
    """The ``parallel`` group's target: ``num_envs`` environments of ``env_factory`` (the ``env`` group's class,
    ``_target_``, with its bound keywords) over ``landscapes`` on ``backend``; ``step_timeout_s`` (seconds)
    bounds a worker's start and steps (see VectorizedFireEnv for the other settings)."""
    return VectorizedFireEnv(landscapes, num_envs, method=backend, max_workers=max_workers,
                             env_kwargs=env_factory.keywords, address=address, share_fires=share_fires,
                             step_timeout_s=step_timeout_s, env_class=env_factory.func)


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


def make_vector_env(cfg, split: str = "train", **overrides) -> VectorizedFireEnv:
    """The vector env of ``cfg.parallel`` over the ``split`` tiles (keyword overrides of ``cfg.parallel``'s
    keys win); ``parallel.num_envs=auto`` is resolved by :func:`resolve_parallel`."""
    sizes = {} if "num_envs" in overrides else resolve_parallel(cfg)
    parallel = {**_plain(cfg.parallel), **sizes, **overrides}
    return instantiate(parallel)(getattr(build_landscapes(cfg), split), env_factory(cfg))
