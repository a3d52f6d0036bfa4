"""Shared fixtures: Hydra-composed configs, the Worcester LANDFIRE sample, scratch MLflow stores."""
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict, read_write

from firebreak_exp.config import register_configs, validate

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
WORCESTER = ROOT.parent / "shared" / "data" / "landfire" / "worcester_vt"


def require_shared(path: Path) -> Path:
    """``path`` from ../shared if present; skipped in a user's clone, a failure in CI (FIREBREAK_REQUIRE_SHARED=1)."""
    if path.is_dir():
        return path
    reason = f"the shared LANDFIRE sample {path} is absent (it lives in ../shared beside the project)"
    if os.environ.get("FIREBREAK_REQUIRE_SHARED") == "1":
        pytest.fail(reason + "; FIREBREAK_REQUIRE_SHARED=1 makes this a failure")
    pytest.skip(reason)


def require_worcester() -> Path:
    return require_shared(WORCESTER)


@pytest.fixture
def worcester_dir() -> Path:
    return require_worcester()


@pytest.fixture(scope="session")
def landscape_cache(tmp_path_factory) -> Path:
    """One folder of generated synthetic rasters shared by the session's tests."""
    return tmp_path_factory.mktemp("landscapes")


@pytest.fixture
def make_cfg(tmp_path, landscape_cache):
    """Compose ``conf/`` with overrides, as ``python -m firebreak_exp`` would, into scratch folders."""
    register_configs()

    def _compose(*overrides: str, experiment: str = "smoke"):
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            cfg = compose("config", overrides=[f"experiment={experiment}", *overrides],
                          return_hydra_config=True)
        with read_write(cfg.hydra.runtime):
            cfg.hydra.runtime.output_dir = str(tmp_path / "run")
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            if cfg.landscape.source == "synthetic":
                cfg.landscape.cache_dir = str(landscape_cache)
            if "tracking.uri" not in " ".join(overrides):
                cfg.tracking.uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        return validate(cfg)

    yield _compose
    GlobalHydra.instance().clear()
