"""A run's archived config (``<run>/.hydra/config.yaml``) as the run used it, so that

    python -m firebreak_exp --config-path <run>/.hydra --config-name config

re-runs it exactly from any folder: ``parallel.num_envs=auto`` replaced by the number of environments it
resolved to (and ``max_workers`` when the recommendation set it), ``${hydra:...}`` values resolved, and the
relative paths (``tracking.uri``, ``landscape.raster_dir``, ``landscape.cache_dir``,
``tracking.artifact_location``) made absolute against the folder the command was started in.

An archive that this version cannot build (a key it no longer has, a value it lacks, a ``_target_`` that
moved) is refused by :func:`load_archive` with one line naming the file, the key and what is expected.
"""
import os
import pkgutil
from pathlib import Path
from typing import Iterator

import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from firebreak_exp.atomic import write_text_atomically
from firebreak_exp.commands.conf import CONF_DIR
from firebreak_exp.commands.errors import one_line
from firebreak_exp.config import check_values, resolve_hydra_values, validate

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


def load_archive(path: os.PathLike) -> DictConfig:
    """The training config archived at ``path`` (a run's ``.hydra/config.yaml``), validated and checked by
    :func:`check_buildable` (before the ranges, which resolve interpolations such as ``${env._target_}``);
    ValueError names the file, the key and what this version expects there."""
    try:
        cfg = validate(OmegaConf.load(path), check_ranges=False)
        check_buildable(cfg)
        check_values(cfg)
    except (OmegaConfBaseException, ValueError, yaml.YAMLError) as error:
        raise ValueError(f"archived config {path}: {one_line(error)}") from None
    return cfg


def check_buildable(cfg: DictConfig) -> None:
    """ValueError for the first key of ``cfg`` without a value, or the first ``_target_`` that does not
    import, naming it and the values the options of ``conf/`` give it."""
    missing = sorted(_missing_keys(cfg))
    if missing:
        raise ValueError(f"{missing[0]} has no value; expected {conf_values(missing[0])}")
    for key, target in _targets(cfg):
        try:
            pkgutil.resolve_name(target)
        except Exception as error:   # ImportError, AttributeError, ValueError: a module or name that moved
            raise ValueError(f"{key}={target} does not import ({error}); expected {conf_values(key)}") from None


def _missing_keys(node, prefix: str = "") -> Iterator[str]:
    """Dotted keys of ``node`` whose value is missing (``???``), found without resolving interpolations (which
    would fail on the first that leads to a missing value, naming the interpolation instead of the key)."""
    keys = node if OmegaConf.is_dict(node) else range(len(node))
    for key in keys:
        child = node._get_node(key)
        if OmegaConf.is_dict(child) or OmegaConf.is_list(child):
            yield from _missing_keys(child, f"{prefix}{key}.")
        elif child._is_missing():
            yield f"{prefix}{key}"


def _targets(node: DictConfig, prefix: str = "") -> Iterator[tuple]:
    """``(dotted key, value)`` of every ``_target_`` in ``node``."""
    for key in node:
        value = node._get_node(key)
        if OmegaConf.is_dict(value):
            yield from _targets(value, f"{prefix}{key}.")
        elif key == "_target_" and isinstance(node[key], str):
            yield f"{prefix}{key}", node[key]


def conf_values(key: str) -> str:
    """What the option files of ``key``'s group in ``conf/`` set it to: "one of V (conf/group/option.yaml),
    ..." (or "a value")."""
    group, _, rest = key.partition(".")
    files = sorted((Path(CONF_DIR) / group).glob("*.yaml")) if rest else [Path(CONF_DIR) / "config.yaml"]
    found = {}
    for file in files:
        value = OmegaConf.to_container(OmegaConf.load(file), resolve=False)
        for part in (rest or key).split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None and str(value) not in found:
            found[str(value)] = f"conf/{file.relative_to(CONF_DIR).as_posix()}"
    return "one of " + ", ".join(f"{value} ({where})" for value, where in found.items()) if found else "a value"
