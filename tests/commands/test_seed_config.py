"""The seed's JSON configs: every documented key lands at its home, a key without one is dropped with a
warning naming it, from a real JSON file through the converter and the training command."""
import json
import logging
import subprocess
import sys

import pytest
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from firebreak_exp.commands.seed_config import apply_seed_config, read_seed_config, SEED_KEYS
from firebreak_exp.config import register_configs, validate

SEED = {"num_parallel_envs": 2, "parallel_method": "multiprocessing", "percentage_increment": 2.0,
        "memory_simulations": 6, "pretrain_steps": 7, "regenerate_memories": True, "checkpoint_frequency": 3,
        "render_every": 10}
EXPECTED = {"parallel.num_envs": 2, "parallel.backend": "multiprocessing", "env.percentage_increment": 2.0,
            "trainer.memory_simulations": 6, "trainer.pretrain_steps": 7, "trainer.regenerate_memories": True,
            "trainer.checkpoint_frequency": 3}


@pytest.fixture
def seed_file(tmp_path):
    path = tmp_path / "parallel_config.json"
    path.write_text(json.dumps(SEED, indent=2))
    return path


def test_every_documented_key_has_a_home_and_others_are_dropped_by_name(seed_file, caplog):
    with caplog.at_level(logging.WARNING, logger="firebreak_exp"):
        assert read_seed_config(seed_file) == EXPECTED
    assert set(SEED_KEYS) == set(SEED) - {"render_every"}
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "render_every" in warning and str(seed_file) in warning


def test_the_file_sets_the_config_and_the_command_line_wins(seed_file):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        composed = compose("config", overrides=["experiment=smoke", f"+seed_config={seed_file}",
                                                "trainer.pretrain_steps=11"])
    cfg = validate(apply_seed_config(composed, command_line=["trainer.pretrain_steps=11"]))
    assert "seed_config" not in cfg
    for key, value in EXPECTED.items():
        assert OmegaConf.select(cfg, key) == (11 if key == "trainer.pretrain_steps" else value), key


def test_bad_files_are_one_line_errors(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{num_parallel_envs: 2")
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    for path, expected in ((tmp_path / "absent.json", "no such file"), (broken, "not a JSON file"),
                           (listed, "expected a JSON object")):
        result = subprocess.run([sys.executable, "-m", "firebreak_exp.convert_seed_config", str(path)],
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and expected in result.stderr and str(path) in result.stderr
        assert "Traceback" not in result.stderr


def test_converter_prints_the_overrides(seed_file):
    result = subprocess.run([sys.executable, "-m", "firebreak_exp.convert_seed_config", str(seed_file)],
                            cwd=seed_file.parent, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["parallel.num_envs=2", "parallel.backend=multiprocessing",
                                     "env.percentage_increment=2.0", "trainer.memory_simulations=6",
                                     "trainer.pretrain_steps=7", "trainer.regenerate_memories=true",
                                     "trainer.checkpoint_frequency=3"]
    assert "render_every" in result.stderr


@pytest.mark.slow
def test_training_with_a_seed_config_archives_the_converted_values(tmp_path):
    seed = tmp_path / "parallel_config.json"
    seed.write_text(json.dumps({"num_parallel_envs": 2, "parallel_method": "threading", "checkpoint_frequency": 4,
                                "render_every": 10}))
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "firebreak_exp", "experiment=smoke", "trainer.episodes=4",
                             f"+seed_config={seed.name}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                             f"hydra.run.dir={run_dir}", f"landscape.cache_dir={tmp_path / 'landscapes'}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dropped render_every" in result.stdout        # Hydra's job log goes to stdout
    archived = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert "seed_config" not in archived
    assert (archived.parallel.num_envs, archived.parallel.backend, archived.trainer.checkpoint_frequency) == \
        (2, "threading", 4)
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("firebreak_exp").experiment_id])
    params = run.data.params
    assert (params["parallel.num_envs"], params["parallel.backend"], params["trainer.checkpoint_frequency"]) == \
        ("2", "threading", "4")
