"""The installable package: a wheel holds every module and every config, and its commands run from any
folder on the configs inside the package."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built (``pip wheel --no-deps --no-build-isolation``) from a copy of the source tree."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("conf", "firebreak_exp"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(work / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (built,) = (work / "dist").glob("firebreak_exp-*.whl")
    return built


@pytest.mark.slow
def test_wheel_holds_every_module_and_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"firebreak_exp/conf/{path.relative_to(ROOT / 'conf').as_posix()}"
               for path in (ROOT / "conf").rglob("*.yaml")}
    modules = {path.relative_to(ROOT).as_posix() for path in (ROOT / "firebreak_exp").rglob("*.py")}
    assert "firebreak_exp/conf/config.yaml" in configs and "firebreak_exp/conf/parallel/joblib.yaml" in configs
    assert configs <= names, sorted(configs - names)
    assert modules <= names, sorted(modules - names)   # every package is listed in pyproject.toml


@pytest.mark.slow
def test_installed_package_runs_from_another_folder(wheel, tmp_path):
    """The wheel installed on its own (no source tree on the path) finds its configs inside the package and
    trains the smoke experiment from an unrelated folder."""
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=600)

    where = run("-c", "import firebreak_exp.commands.conf as c; print(c.__file__); print(c.CONF_DIR)")
    assert where.returncode == 0, where.stderr[-3000:]
    module_file, conf_dir = where.stdout.split()
    assert Path(module_file).is_relative_to(site) and Path(conf_dir) == site / "firebreak_exp" / "conf"
    train = run("-m", "firebreak_exp", "experiment=smoke", "trainer.episodes=2", "trainer.eval_episodes=1")
    assert train.returncode == 0, train.stderr[-3000:]
    (run_dir,) = (elsewhere / "outputs" / "runs").iterdir()
    assert (run_dir / "checkpoints" / "last.pt").is_file() and (elsewhere / "outputs" / "mlflow.db").is_file()
