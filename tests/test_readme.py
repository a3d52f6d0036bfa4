"""The README's Python API example runs as written, from a folder other than the project's."""
import re

import gymnasium as gym
import numpy as np
from conftest import ROOT

from firebreak_exp.observation import CHANNELS


def readme_block(section: str) -> str:
    """The first ```python block under the README's ``## <section>`` heading."""
    text = (ROOT / "README.md").read_text()
    body = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert body, f"README.md has no '## {section}' section"
    block = re.search(r"```python\n(.*?)```", body.group(1), re.S)
    assert block, f"README.md's '{section}' section has no python block"
    return block.group(1)


def test_python_api_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(readme_block("Python API"), "README.md (Python API)", "exec"), namespace)
    cfg, env, vec_env = namespace["cfg"], namespace["env"], namespace["vec_env"]
    assert isinstance(env, gym.Env) and isinstance(vec_env, gym.vector.VectorEnv)
    assert cfg.experiment_name == "smoke" and cfg.landscape.cache_dir == str(tmp_path / "outputs" / "landscapes")
    assert namespace["obs"].shape == (vec_env.num_envs, len(CHANNELS), 12, 12)
    assert namespace["rewards"].shape == (vec_env.num_envs,) and np.isfinite(namespace["reward"])
    assert (tmp_path / "outputs" / "landscapes").is_dir()
