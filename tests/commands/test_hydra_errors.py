"""Hydra's composition errors (wrong type, unknown key or option, unparsable override) as one line."""
import subprocess
import sys

import pytest
from conftest import CONF_DIR, ROOT
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, OverrideParseException

from firebreak_exp.commands.hydra_errors import describe
from firebreak_exp.config import register_configs


def composition_error(override: str) -> BaseException:
    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        with pytest.raises((ConfigCompositionException, OverrideParseException)) as raised:
            compose("config", overrides=["experiment=smoke", override])
    return raised.value


@pytest.mark.parametrize("override, line", [
    ("seed=nan", "seed=nan: expected an integer"),
    ("scenario.wind_speed=30km/h", "scenario.wind_speed=30km/h: expected a number"),
    ("trainer.deterministic=maybe", "trainer.deterministic=maybe: expected true or false"),
    ("agent.num_threads=[1,2]", "agent.num_threads=[1,2]: expected an integer"),
    ("landscape.layer_patterns=5", "landscape.layer_patterns=5: expected a mapping ({key: value, ...})"),
    ("trainer.episodes=null", "trainer.episodes=null: expected an integer, not null"),
    ("trainer.episods=3", "trainer.episods=3: unknown key trainer.episods; did you mean trainer.episodes or "
                          "trainer.eval_episodes?"),
    ("trainer.total_episodes=3", "trainer.total_episodes=3: unknown key trainer.total_episodes; did you mean "
                                 "trainer.episodes or trainer.eval_episodes?"),
    ("env.ignitions=3", "env.ignitions=3: unknown key env.ignitions; did you mean env.num_ignitions or "
                        "env.reward_ignitions?"),
    ("parallel=gpu", "parallel=gpu: config group parallel has no option 'gpu'; expected one of dask, joblib, "
                     "process, sequential, thread"),
    ("seed=[", "seed=[: cannot parse this override (no viable alternative at input '['); see "
               "https://hydra.cc/docs/1.2/advanced/override_grammar/basic"),
    ("seed=0,1", "Ambiguous value for argument 'seed=0,1'; 1. To use it as a list, use key=[value1,value2]; 2. To use "
                 "it as string, quote the value: key='value1,value2'; 3. To sweep over it, add --multirun to your "
                 "command line"),
])
def test_a_composition_error_becomes_one_line_naming_the_override(override, line):
    assert describe(composition_error(override)) == line


def test_an_unknown_key_unlike_any_lists_the_keys_of_its_group():
    line = describe(composition_error("env.zzz=1"))
    assert line == ("env.zzz=1: unknown key env.zzz; env has the keys _target_, _partial_, budget_percent, "
                    "percentage_increment, num_ignitions, reward_ignitions")


def test_the_command_exits_2_with_the_line_and_nothing_else(tmp_path):
    result = subprocess.run([sys.executable, "-m", "firebreak_exp", "seed=nan", f"hydra.run.dir={tmp_path / 'run'}",
                             f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert (result.returncode, result.stderr, result.stdout) == (2, "firebreak_exp: error: seed=nan: expected an "
                                                                    "integer\n", "")
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "run").exists()
