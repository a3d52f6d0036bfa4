"""Property-based bad input: odd config values and random byte corruptions of the rasters.

Each case runs ``python -m firebreak_exp experiment=smoke`` in a subprocess: it either trains (exit 0) or
stops with exactly one line ``firebreak_exp: error: ...`` naming what is wrong and exit status 2 (a value
of the wrong type for its key or an unknown key too, which Hydra finds while composing the config); never a
traceback, and never a hang (the subprocess timeout fails the case). A third property sends values of the
wrong type, unknown keys and unknown options to every command (train, evaluate, plan, benchmark).
``FUZZ_EXAMPLES`` (an environment variable) sets the number of cases per property; the default keeps the
suite fast (``pytest --hypothesis-show-statistics`` reports how many ran). The cases come from a fixed seed
(``derandomize``), so every run of the suite, CI's included, tries the same ones.
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firebreak_exp.landscape import write_synthetic_landscape

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))
CASE_TIMEOUT_SECONDS = 300
QUICK = ["experiment=smoke", "trainer.episodes=1", "trainer.eval_episodes=1"]

#: Keys of every kind of value: counts, sizes, fractions, physical quantities in stated units.
KEYS = ["seed", "landscape.grid_size", "landscape.num_landscapes", "landscape.heldout_fraction",
        "landscape.synthetic_rows", "scenario.wind_speed", "scenario.wind_direction",
        "scenario.fuel_moisture_dead_1hr", "scenario.fuel_moisture_live_woody", "scenario.foliar_moisture",
        "scenario.burn_duration", "env.num_ignitions", "env.budget_percent", "env.percentage_increment",
        "env.reward_ignitions", "parallel.num_envs", "parallel.max_workers", "parallel.step_timeout_s",
        "agent.channels", "agent.num_layers", "agent.lr", "agent.gamma", "agent.epsilon_start",
        "agent.epsilon_decay_steps", "replay.capacity", "agent.batch_size", "agent.n_step",
        "agent.reward_scale", "agent.num_threads", "trainer.steps_per_collection", "trainer.train_frequency",
        "trainer.learning_starts", "trainer.checkpoint_frequency", "trainer.memory_simulations",
        "landscape.synthetic_cols", "trainer.total_episodes"]
#: NaN, infinities, negative, zero, huge, fractions where counts are expected, numbers with units, words.
VALUES = ["nan", "inf", "-inf", "-1", "-0.5", "0", "0.0", "1e-12", "0.5", "1.5", "3", "100", "1e12",
          "1000000000000000000", "30km/h", "5%", "840min", "0.03kg/kg", "''", "true", "null", "abc", "[1,2]"]
#: The commands, and command-line mistakes that every one of them must refuse while composing its config.
COMMANDS = ["firebreak_exp", "firebreak_exp.evaluate", "firebreak_exp.plan", "firebreak_exp.benchmark"]
INTEGER_KEYS = ["seed", "landscape.grid_size", "env.num_ignitions", "agent.batch_size", "trainer.episodes",
                "replay.capacity"]
NUMBER_KEYS = ["agent.lr", "scenario.wind_speed", "scenario.burn_duration", "env.budget_percent"]
NOT_INTEGERS = ["nan", "inf", "abc", "1.5", "1e12", "30km/h", "5%", "[1,2]", "null", "''"]
NOT_NUMBERS = ["abc", "30km/h", "5%", "840min", "0.03kg/kg", "[1,2]", "null", "''"]
UNKNOWN_KEYS = ["trainer.total_episodes", "agent.lrr", "parallel.num_env", "landscape.rows", "scenario.wind"]
UNKNOWN_OPTIONS = ["parallel=gpu", "simulator=fast", "landscape=nowhere", "agent=ppo"]


def run_case(*overrides: str, module: str = "firebreak_exp") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *QUICK, *overrides], cwd=ROOT,
                          capture_output=True, text=True, timeout=CASE_TIMEOUT_SECONDS)


def assert_runs_or_one_line(result: subprocess.CompletedProcess, names: list) -> None:
    report = f"exit {result.returncode}\n--- stderr\n{result.stderr[-3000:]}\n--- stdout\n{result.stdout[-1500:]}"
    assert "Traceback" not in result.stderr + result.stdout, report
    if result.returncode == 0:
        return
    assert result.returncode == 2, report
    lines = [line for line in result.stderr.splitlines() if line.startswith("firebreak_exp: ")]
    assert len(lines) == 1 and lines[0].startswith("firebreak_exp: error: "), report
    assert any(name in lines[0] for name in names), (names, report)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(choices=st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(VALUES)), min_size=1, max_size=2,
                        unique_by=lambda choice: choice[0]))
def test_fuzzed_config_values_run_or_stop_with_one_line(scratch, choices):
    work = Path(tempfile.mkdtemp(dir=scratch))
    overrides = [f"{key}={value}" for key, value in choices]
    result = run_case(*overrides, f"tracking.uri=sqlite:///{work / 'mlflow.db'}", f"hydra.run.dir={work / 'run'}",
                      f"landscape.cache_dir={scratch / 'landscapes'}")
    assert_runs_or_one_line(result, [key for key, _ in choices] + [key.split(".")[-1] for key, _ in choices])
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def clean_rasters(scratch) -> Path:
    return write_synthetic_landscape(scratch / "clean", 40, 40, seed=11)


@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_byte_corruptions_of_rasters_run_or_stop_with_one_line(scratch, clean_rasters, data):
    work = Path(tempfile.mkdtemp(dir=scratch))
    rasters = Path(shutil.copytree(clean_rasters, work / "rasters"))
    target = data.draw(st.sampled_from(sorted(rasters.rglob("*.tif"))), label="raster")
    content = bytearray(target.read_bytes())
    how = data.draw(st.sampled_from(["overwrite", "truncate", "insert"]), label="corruption")
    start = data.draw(st.integers(0, len(content) - 1), label="offset")
    if how == "truncate":
        content = content[:start]
    else:
        junk = data.draw(st.binary(min_size=1, max_size=64), label="bytes")
        content[start:start + (len(junk) if how == "overwrite" else 0)] = junk
    target.write_bytes(bytes(content))
    result = run_case("landscape=landfire", f"landscape.raster_dir={rasters}", "landscape.grid_size=12",
                      f"tracking.uri=sqlite:///{work / 'mlflow.db'}", f"hydra.run.dir={work / 'run'}")
    assert_runs_or_one_line(result, [str(rasters)])
    shutil.rmtree(work, ignore_errors=True)



@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(module=st.sampled_from(COMMANDS),
       override=st.one_of(st.builds("{}={}".format, st.sampled_from(INTEGER_KEYS), st.sampled_from(NOT_INTEGERS)),
                          st.builds("{}={}".format, st.sampled_from(NUMBER_KEYS), st.sampled_from(NOT_NUMBERS)),
                          st.builds("{}={}".format, st.sampled_from(UNKNOWN_KEYS), st.sampled_from(VALUES)),
                          st.sampled_from(UNKNOWN_OPTIONS)))
def test_fuzzed_command_line_mistakes_stop_every_command_with_one_line(scratch, module, override):
    work = Path(tempfile.mkdtemp(dir=scratch))
    result = run_case(override, f"tracking.uri=sqlite:///{work / 'mlflow.db'}", f"hydra.run.dir={work / 'run'}",
                      module=module)
    report = f"{module} {override}: exit {result.returncode}\n--- stderr\n{result.stderr[-3000:]}"
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout, report
    assert result.stderr.startswith(f"firebreak_exp: error: {override}: ") and result.stderr.count("\n") == 1, report
    assert not (work / "mlflow.db").exists(), report
    shutil.rmtree(work, ignore_errors=True)
