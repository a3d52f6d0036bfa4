"""Where the commands' Hydra configs are, and the listing of config groups that their ``--help`` shows.

The configs live in the top-level ``conf/`` folder of the source tree, the one users edit; an installed
package carries a copy inside it (``firebreak_exp/conf``, mapped from ``conf/`` by ``pyproject.toml``).
"""
from pathlib import Path

from omegaconf import OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: Resolver of the ``--help`` templates (``conf/hydra/help``): ``${firebreak.options:landscape,parallel}``.
OPTIONS_RESOLVER = "firebreak.options"


def config_dir() -> Path:
    """The config folder: the copy inside an installed package, else ``conf/`` beside the package."""
    installed = PACKAGE_DIR / "conf"
    return installed if (installed / "config.yaml").is_file() else PACKAGE_DIR.parent / "conf"


#: The Hydra config folder of every command (absolute).
CONF_DIR = str(config_dir())


def group_options(*groups: str) -> str:
    """One line per config group: its options (the files of ``conf/<group>/``), the chosen one starred."""
    from hydra.core.hydra_config import HydraConfig
    chosen = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    width = max(map(len, groups))
    lines = []
    for group in groups:
        options = sorted(path.stem for path in (Path(CONF_DIR) / group).glob("*.yaml"))
        marked = [f"{option}*" if option == chosen.get(group) else option for option in options]
        lines.append(f"  {group + ':':<{width + 1}}  {', '.join(marked)}")
    return "\n".join(lines)


def register_help_resolver() -> None:
    """Make :func:`group_options` available to the help templates (once per process)."""
    if not OmegaConf.has_resolver(OPTIONS_RESOLVER):
        OmegaConf.register_new_resolver(OPTIONS_RESOLVER, group_options)
