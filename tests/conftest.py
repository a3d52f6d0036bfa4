"""Shared fixtures and helpers: Hydra-composed configs, the Worcester LANDFIRE sample and its meadow tile,
fire simulators on it, scratch MLflow stores, vector-env rollouts."""
import dataclasses
import os
import socket
from collections import Counter
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict, read_write

from firebreak_exp.config import register_configs, validate
from firebreak_exp.fire import FireSimulator, PyretechnicsSimulator, Scenario, TravelTimeSimulator
from firebreak_exp.landscape import cut_tiles, read_layers, Tile
from firebreak_exp.observation import (BUDGET_CHANNEL, BURN_PROBABILITY_CHANNEL, CHANNELS, FIRE_FLOW_CHANNEL,
                                       FUEL_BREAK_CHANNEL, NON_BURNABLE_CHANNEL)

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
WORCESTER = ROOT.parent / "shared" / "data" / "landfire" / "worcester_vt"

# A western (training-side) tile with a large grass meadow east of a timber stand: fires from the meadow
# run east with the default westerly wind and reach the tile's eastern edge within an hour.
MEADOW_TILE = "worcester_vt/r0350_c0325"
MEADOW_IGNITION = (16, 13)
BREAK_COLUMN = 19          # a full north-south line of breaks, downwind (east) of the ignition


def conf_values(option: str) -> dict:
    """The values a ``conf/<group>/<option>.yaml`` sets, without ``_target_``/``_partial_``."""
    values = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{option}.yaml"))
    return {k: v for k, v in values.items() if k not in ("_target_", "_partial_")}


DRY_SUMMER = Scenario(**conf_values("scenario/dry_summer"))
FAST = dataclasses.replace(DRY_SUMMER, burn_duration=60.0)   # short burns keep the reference cheap
#: DQNAgent's settings in conf/agent/dqn.yaml
AGENT = conf_values("agent/dqn")


def make_agent(obs_shape, **settings):
    """A DQNAgent with conf/agent/dqn.yaml's settings, ``settings`` on top (seed 0 unless given)."""
    from firebreak_exp.rl.dqn import DQNAgent
    return DQNAgent(tuple(obs_shape), **{**AGENT, "seed": 0, **settings})


def require_shared(path: Path) -> Path:
    """``path`` from ../shared if present; skipped in a user's clone, a failure in CI (FIREBREAK_REQUIRE_SHARED=1)."""
    if path.is_dir():
        return path
    reason = f"the shared LANDFIRE sample {path} is absent (it lives in ../shared beside the project)"
    if os.environ.get("FIREBREAK_REQUIRE_SHARED") == "1":
        pytest.fail(reason + "; FIREBREAK_REQUIRE_SHARED=1 makes this a failure")
    pytest.skip(reason)


def metric_histories(client, run_id: str) -> dict:
    """Metric -> sorted (step, value) of an MLflow run, throughput (``perf/``) left out; asserts that no
    metric was logged twice at one step."""
    histories = {}
    for key in client.get_run(run_id).data.metrics:
        if key.startswith("perf/"):
            continue
        history = client.get_metric_history(run_id, key)
        steps = Counter(m.step for m in history)
        assert all(n == 1 for n in steps.values()), f"metric {key} logged twice at a step"
        histories[key] = sorted((m.step, m.value) for m in history)
    return histories


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


@pytest.fixture(scope="session")
def stack():
    return read_layers(require_worcester())


@pytest.fixture(scope="session")
def tiles25(stack):
    return cut_tiles(stack, 25)


@pytest.fixture(scope="session")
def meadow(tiles25) -> Tile:
    return next(t for t in tiles25 if t.name == MEADOW_TILE)


@pytest.fixture(scope="module", params=[PyretechnicsSimulator, TravelTimeSimulator], ids=lambda c: c.name)
def sim(request, meadow) -> FireSimulator:
    return request.param(meadow, FAST)


@pytest.fixture(scope="module")
def untreated(sim):
    """Maps of the meadow fire plus a fire lit on a non-burnable cell, computed once per simulator."""
    nonburnable = np.argwhere(~sim.burnable)[0]
    ignitions = np.array([MEADOW_IGNITION, nonburnable])
    return ignitions, sim.burn_maps(ignitions)


def line_breaks(shape, column):
    """A full north-south line of breaks in ``column``."""
    breaks = np.zeros(shape, dtype=bool)
    breaks[:, column] = True
    return breaks


def random_observations(batch: int, rng, height: int = 4, width: int = 4) -> np.ndarray:
    """float32 (batch, C, H, W) observations with random channels, masks and budgets."""
    obs = rng.normal(size=(batch, len(CHANNELS), height, width)).astype(np.float32)
    obs[:, NON_BURNABLE_CHANNEL] = rng.random((batch, height, width)) < 0.3
    obs[:, FUEL_BREAK_CHANNEL] = rng.random((batch, height, width)) < 0.3
    obs[:, BURN_PROBABILITY_CHANNEL] = rng.random((batch, height, width)).astype(np.float16)
    obs[:, FIRE_FLOW_CHANNEL] = rng.random((batch, height, width)).astype(np.float16)
    obs[:, BUDGET_CHANNEL] = rng.random((batch, 1, 1))
    return obs


def rollout(vec_env, seed: int, steps: int):
    """Seeded random valid actions for ``steps`` steps: the observations, rewards, terminations and final
    observations in order, and the episode stats."""
    obs, infos = vec_env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    trace = [obs.copy()]
    for _ in range(steps):
        actions = [rng.choice(np.flatnonzero(mask)) for mask in infos["action_mask"]]
        obs, rewards, terminations, truncations, infos = vec_env.step(actions)
        trace += [obs.copy(), rewards.copy(), terminations.copy(), infos["final_obs"].copy()]
    return trace, vec_env.get_episode_stats()


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m firebreak_exp ARGS`` in a subprocess (exit status not checked)."""
    return subprocess.run([sys.executable, "-m", "firebreak_exp", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def describe(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_same_rollouts(a, b) -> None:
    (trace_a, stats_a), (trace_b, stats_b) = a, b
    assert len(trace_a) == len(trace_b)
    for x, y in zip(trace_a, trace_b):
        np.testing.assert_array_equal(x, y)
    assert stats_a == stats_b


def spawned_children(process: psutil.Process) -> list:
    """Worker processes of the process backend below ``process`` (multiprocessing 'spawn' children)."""
    found = []
    for child in process.children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found
