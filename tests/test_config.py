"""The config tree: every option of every group and every experiment composes and validates, every value is
set in conf/ (the schemas hold types only), and each ``_target_``'s signature takes exactly the keys its YAML
sets, none of them with a default of its own."""
import inspect
import re
from pathlib import Path

import pytest
from conftest import CONF_DIR
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf

import firebreak_exp as fx

ROOTS = ("config", "evaluate", "benchmark")
GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in ("hydra", "benchmark"))
#: required constructor arguments that the code passes when it builds the object (not config values)
BUILD_ARGUMENTS = {
    "firebreak_exp.fire.reference.PyretechnicsSimulator": {"tile", "scenario"},
    "firebreak_exp.fire.travel_time.TravelTimeSimulator": {"tile", "scenario"},
    "firebreak_exp.environment.FuelBreakEnv": {"landscapes", "simulator_factory", "scenario"},
    "firebreak_exp.factory.vector_env": {"landscapes", "env_factory"},
    "firebreak_exp.rl.dqn.DQNAgent": {"obs_shape"},
    "firebreak_exp.rl.replay.ReplayBuffer": {"obs_shape"},
    "firebreak_exp.planning.planners.PolicyPlanner": {"agent"},
    "firebreak_exp.planning.search.PolicySearchPlanner": {"agent"},
}
#: what a user must give on the command line (``???`` in the YAML)
REQUIRED_ON_COMMAND_LINE = {"landscape.raster_dir"}


def options(group: str) -> list:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def cases() -> list:
    found = [(root, []) for root in ROOTS]
    found += [("config", [f"{group}={option}"]) for group in GROUPS for option in options(group)]
    found += [(root, [f"experiment={option}"]) for root in ROOTS for option in options("experiment")]
    found += [("benchmark", [f"benchmark={option}"]) for option in options("benchmark")]
    found += [("config", [f"hydra/launcher={option}"]) for option in options("hydra/launcher")]
    return found


@pytest.mark.parametrize("root, overrides", cases(), ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_every_option_composes_with_every_value_set(root, overrides):
    """firebreak_exp.compose validates against the command's schema; every value is set in conf/."""
    cfg = fx.compose(overrides, config_name=root)
    missing = set(OmegaConf.missing_keys(cfg)) - REQUIRED_ON_COMMAND_LINE
    assert not missing, f"{root} {overrides}: no value in conf/ for {sorted(missing)}"


def target_nodes() -> list:
    """(file, dotted path, node) of every mapping with a ``_target_`` in conf/."""
    found = []

    def walk(node, path, file):
        if isinstance(node, dict):
            if "_target_" in node:
                found.append((file, path, node))
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key), file)

    for file in sorted(CONF_DIR.rglob("*.yaml")):
        walk(OmegaConf.to_container(OmegaConf.load(file)), "", str(file.relative_to(CONF_DIR)))
    return found


@pytest.mark.parametrize("file, path, node", target_nodes(), ids=lambda v: v if isinstance(v, str) else "")
def test_yaml_keys_are_the_targets_config_parameters(file, path, node):
    """No key the target does not take, no config parameter the YAML leaves out, and no parameter that the
    YAML sets with a default of its own (so the two cannot disagree)."""
    target = node["_target_"]
    parameters = inspect.signature(get_method(target)).parameters
    keys = {k for k in node if k not in ("_target_", "_partial_")}
    extra = keys - set(parameters)
    assert not extra, f"{file} {path}: {target} takes no {sorted(extra)}"
    required = {name for name, p in parameters.items() if p.default is inspect.Parameter.empty
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    missing = required - keys - BUILD_ARGUMENTS.get(target, set())
    assert not missing, f"{file} {path}: {target} needs {sorted(missing)}, which the YAML does not set"
    with_defaults = {k for k in keys if parameters[k].default is not inspect.Parameter.empty}
    assert not with_defaults, f"{file} {path}: {target} has defaults of its own for {sorted(with_defaults)}"


def test_the_cheap_groups_build_their_objects(make_cfg, tmp_path):
    from firebreak_exp.environment import FuelBreakEnv
    from firebreak_exp.factory import build_landscapes, env_factory, make_agent, make_replay, make_vector_env
    from firebreak_exp.fire.scenario import Scenario
    cfg = make_cfg()
    scenario = instantiate(cfg.scenario)
    assert isinstance(scenario, Scenario) and scenario.burn_duration == 60.0
    tiles = build_landscapes(cfg).train
    env = env_factory(cfg)(tiles)
    assert isinstance(env, FuelBreakEnv) and env.num_ignitions == 3 and env.percentage_increment == 2.5
    assert type(env.simulator(0)).__name__ == "TravelTimeSimulator"
    with make_vector_env(cfg) as vec_env:
        assert vec_env.num_envs == 1 and vec_env.backend == "sequential"
        shape = vec_env.single_observation_space.shape
    agent, replay = make_agent(cfg, shape), make_replay(cfg, shape)
    assert agent.batch_size == 16 and agent.q_network.channels == 8 and agent.n_step is None
    assert replay.capacity == 2000 and replay.obs_shape == shape
    tracker = instantiate(cfg.tracking)
    assert Path(tracker.uri[len("sqlite:///"):]).parent == tmp_path


def test_planners_build_from_config(make_cfg):
    from firebreak_exp.factory import make_agent
    from firebreak_exp.observation import CHANNELS
    from firebreak_exp.planning.evaluation import build_planners
    cfg = fx.compose(["experiment=smoke"], config_name="evaluate")
    without_agent = build_planners(cfg.planners, cfg.methods, None)
    assert sorted(without_agent) == sorted(set(cfg.methods) - {"policy"})
    assert without_agent["domirank"].sigma_fraction == 0.5 and without_agent["greedy"].exclude_ignitions
    agent = make_agent(make_cfg(), (len(CHANNELS), 12, 12))
    policy = build_planners(cfg.planners, ["policy"], agent)["policy"]
    assert policy.agent is agent


@pytest.mark.parametrize("key", ["trainer.steps_per_collection", "parallel.num_envs", "env.num_ignitions",
                                 "replay.capacity", "agent.channels", "agent.num_layers", "trainer.memory_simulations"])
def test_absurd_counts_stop_at_start_naming_the_key(key, tmp_path, monkeypatch):
    """A count of 10**18 would run for ever or exhaust memory: it is refused before anything starts."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=rf"^{re.escape(key)}=1000000000000000000: expected at most"):
        fx.compose(["experiment=smoke", f"{key}=1000000000000000000"])


@pytest.mark.parametrize("override, message", [
    ("landscape.synthetic_rows=1000000000000000000", "landscape.synthetic_rows=1000000000000000000: expected an "
                                                      "integer in [2, 5,000] (a side of the generated raster, cells)"),
    ("landscape.synthetic_cols=1000000", "landscape.synthetic_cols=1000000: expected an integer in [2, 5,000]"),
    ("landscape.synthetic_rows=null", "landscape.synthetic_rows=null: expected an integer in [2, 5,000]"),
    ("landscape.synthetic_cols=1", "landscape.synthetic_cols=1: expected an integer in [2, 5,000]"),
    ("landscape.grid_size=61", "landscape.grid_size=61: expected at most 60 cells, the shorter side of the generated "
                               "raster (landscape.synthetic_rows=60, landscape.synthetic_cols=60)"),
    ("landscape.grid_size=1", "landscape.grid_size=1: expected at least 2 (tile side, cells)"),
])
def test_absurd_sizes_of_the_synthetic_landscape_stop_at_start_naming_the_key(override, message, tmp_path,
                                                                             monkeypatch):
    """Sizes that would exhaust memory or that no tile fits are refused before the raster is generated."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=rf"^{re.escape(message)}"):
        fx.compose(["experiment=smoke", override])


def test_the_largest_accepted_sizes_pass_and_landfire_ignores_the_synthetic_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = fx.compose(["experiment=smoke", "landscape.synthetic_rows=5000", "landscape.synthetic_cols=60",
                      "landscape.grid_size=60", "agent.num_layers=16", "replay.capacity=10000000"])
    assert (cfg.landscape.synthetic_rows, cfg.landscape.grid_size, cfg.replay.capacity) == (5000, 60, 10_000_000)
    cfg = fx.compose(["landscape=landfire", "landscape.raster_dir=anywhere", "landscape.synthetic_rows=1000000"])
    assert cfg.landscape.synthetic_rows == 1_000_000
