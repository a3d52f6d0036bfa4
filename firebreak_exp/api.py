"""The config of a command, composed from Python (a notebook, a script) exactly as the command line composes it.

    import firebreak_exp as fx
    cfg = fx.compose(["experiment=smoke", "env.budget_percent=10"])
    env = fx.make_env(cfg)
"""
from importlib import import_module
from typing import Optional, Sequence

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from firebreak_exp.config import resolve_hydra_values

#: config name -> (module that registers its schema, its validator)
COMMANDS = {"config": ("firebreak_exp.config", "validate"),
            "evaluate": ("firebreak_exp.commands.evaluate", "validate_evaluation"),
            "benchmark": ("firebreak_exp.commands.benchmark", "validate_benchmark")}


def compose(overrides: Optional[Sequence[str]] = None, config_name: str = "config") -> DictConfig:
    """The validated config of ``python -m firebreak_exp`` (``config_name`` "evaluate" or "benchmark": of
    that command) with ``overrides``, from any working directory.

    It registers the typed schemas, composes ``conf/``, makes Hydra's runtime config current (what
    ``parallel.num_envs=auto`` and the caches under ``outputs/`` read) and replaces ``${hydra:...}`` values
    (``outputs/`` paths, the tracking URI) by what they resolve to: the current working directory's
    ``outputs/``, as when the command is run here. A wrong key or type raises with its name.
    """
    from firebreak_exp.commands.conf import CONF_DIR
    if config_name not in COMMANDS:
        raise ValueError(f"config_name={config_name!r}: expected one of {sorted(COMMANDS)}")
    module, validator = COMMANDS[config_name]
    module = import_module(module)
    if config_name == "config":
        module.register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
            cfg = hydra_compose(config_name, overrides=list(overrides or []), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    HydraConfig.instance().set_config(cfg)
    cfg = getattr(module, validator)(cfg)
    resolve_hydra_values(cfg)
    return cfg
