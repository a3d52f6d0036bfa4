"""The seed's JSON configs (e.g. ``parallel_config.json``) in this project's config.

Two ways in::

    python -m firebreak_exp +seed_config=parallel_config.json              # train with its settings
    python -m firebreak_exp.convert_seed_config parallel_config.json       # print them as Hydra overrides

Every key the seed documents has a home (:data:`SEED_KEYS`); a key without one is dropped with a warning
naming it. Overrides given on the command line win over the file's values. The run's archived config
(``.hydra/config.yaml``) holds the converted values, not the file's name.
"""
import json
import logging
import sys
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf, open_dict

from firebreak_exp.commands.errors import exit_with_error

log = logging.getLogger("firebreak_exp")

#: seed key -> its key here
SEED_KEYS = {
    "num_parallel_envs": "parallel.num_envs",
    "parallel_method": "parallel.backend",          # the seed's "threading" / "multiprocessing" are aliases
    "percentage_increment": "env.percentage_increment",
    "memory_simulations": "trainer.memory_simulations",
    "pretrain_steps": "trainer.pretrain_steps",
    "regenerate_memories": "trainer.regenerate_memories",
    "checkpoint_frequency": "trainer.checkpoint_frequency",
}
CONFIG_KEY = "seed_config"


def read_seed_config(path: Path) -> dict:
    """``{key here: value}`` of the seed JSON file at ``path``; keys without a home are dropped with a warning.

    Raises FileNotFoundError or ValueError (naming the file) when it is missing, not JSON, or not an object.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"seed_config={path}: no such file")
    try:
        seed = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"seed_config={path}: not a JSON file ({error})") from None
    if not isinstance(seed, dict):
        raise ValueError(f"seed_config={path}: expected a JSON object of settings, got {type(seed).__name__}")
    dropped = sorted(set(seed) - set(SEED_KEYS))
    if dropped:
        log.warning("seed_config=%s: dropped %s (no setting here; known keys: %s)", path, ", ".join(dropped),
                    ", ".join(SEED_KEYS))
    return {SEED_KEYS[key]: value for key, value in seed.items() if key in SEED_KEYS}


def to_overrides(settings: dict) -> list:
    """Hydra command-line overrides (``key=value``) of ``settings``."""
    def text(value) -> str:
        return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return [f"{key}={text(value)}" for key, value in settings.items()]


def apply_seed_config(cfg: DictConfig, command_line: Optional[list] = None) -> DictConfig:
    """``cfg`` with its ``seed_config`` file's settings set and the ``seed_config`` key removed; keys that
    ``command_line`` (the job's overrides; default: Hydra's) sets keep their values. A relative file name is
    read from the folder the command was started in."""
    if CONFIG_KEY not in cfg:
        return cfg
    from hydra.core.hydra_config import HydraConfig
    path = Path(str(cfg[CONFIG_KEY])).expanduser()
    if not path.is_absolute() and HydraConfig.initialized():
        path = Path(HydraConfig.get().runtime.cwd) / path
    if command_line is None:
        command_line = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    given = {override.lstrip("+~").split("=", 1)[0] for override in command_line}
    settings = read_seed_config(path)
    cfg = cfg.copy()
    with open_dict(cfg):
        del cfg[CONFIG_KEY]
    for key, value in settings.items():
        if key in given:
            log.info("seed_config: %s=%s on the command line wins over the file's %r", key,
                     OmegaConf.select(cfg, key), value)
            continue
        OmegaConf.update(cfg, key, value, merge=False)
    log.info("seed_config=%s: %s", path, " ".join(to_overrides(settings)) or "no settings")
    return cfg


def main(argv: Optional[list] = None) -> int:
    """``python -m firebreak_exp.convert_seed_config FILE``: the file's settings as overrides on stdout."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python -m firebreak_exp.convert_seed_config FILE.json\n"
              "prints the seed config's settings as overrides of python -m firebreak_exp", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        settings = read_seed_config(Path(argv[0]))
    except (FileNotFoundError, ValueError) as error:
        exit_with_error(error)
    print(" ".join(to_overrides(settings)))
    return 0
