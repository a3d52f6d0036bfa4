"""A run's archived config (``<run>/.hydra/config.yaml``) as the run used it, so that

    python -m firebreak_exp --config-path <run>/.hydra --config-name config

re-runs it exactly from any folder: ``parallel.num_envs=auto`` replaced by the number of environments it
resolved to (and ``max_workers`` when the recommendation set it), ``${hydra:...}`` values resolved, and the
relative paths (``tracking.uri``, ``landscape.raster_dir``, ``landscape.cache_dir``,
``tracking.artifact_location``) made absolute against the folder the command was started in.
"""
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from firebreak_exp.atomic import write_text_atomically
from firebreak_exp.config import resolve_hydra_values

SQLITE_PREFIX = "sqlite:///"


def absolute_path(path: str, base: Path) -> str:
    """``path`` (``~`` expanded) against ``base`` when it is relative; a URI (``scheme://``) unchanged."""
    if "://" in path:
        return path
    return str((base / Path(path).expanduser()).resolve())


def absolute_uri(uri: str, base: Path) -> str:
    """A relative SQLite URI made absolute against ``base``; other URIs unchanged."""
    if uri.startswith(SQLITE_PREFIX) and not uri[len(SQLITE_PREFIX):].startswith("/"):
        return SQLITE_PREFIX + absolute_path(uri[len(SQLITE_PREFIX):], base)
    return uri


def resolved_for_archive(cfg: DictConfig) -> DictConfig:
    """A copy of the validated training config ``cfg`` with everything that depends on where and when it
    ran fixed (see the module docstring)."""
    from firebreak_exp.factory import resolve_parallel
    cfg = cfg.copy()
    base = Path(HydraConfig.get().runtime.cwd) if HydraConfig.initialized() else Path.cwd()
    if cfg.parallel.num_envs == "auto":
        sizes = resolve_parallel(cfg)
        cfg.parallel.num_envs, cfg.parallel.max_workers = sizes["num_envs"], sizes["max_workers"]
    resolve_hydra_values(cfg)
    cfg.tracking.uri = absolute_uri(cfg.tracking.uri, base)
    if cfg.tracking.artifact_location:
        cfg.tracking.artifact_location = absolute_path(cfg.tracking.artifact_location, base)
    for key in ("raster_dir", "cache_dir"):
        value = cfg.landscape[key]
        if value is not None:
            cfg.landscape[key] = absolute_path(str(value), base)
    return cfg


def write_archive(cfg: DictConfig, run_dir: Path) -> Path:
    """Write ``cfg`` as ``<run_dir>/.hydra/config.yaml`` (atomically, replacing Hydra's copy)."""
    return write_text_atomically(Path(run_dir) / ".hydra" / "config.yaml", OmegaConf.to_yaml(cfg))
