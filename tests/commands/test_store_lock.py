"""Sweeps that share one new SQLite MLflow store: every run recorded, each child under its own parent."""
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]


def start_sweep(tmp_path: Path, name: str, uri: str, launcher: str) -> subprocess.Popen:
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    return subprocess.Popen(
        [sys.executable, "-m", "firebreak_exp", "-m", "experiment=smoke", "trainer.episodes=1", "trainer.eval_episodes=1",
         "seed=0,1", f"hydra/launcher={launcher}", *extra, f"tracking.uri={uri}",
         f"hydra.sweep.dir={tmp_path / name}", f"landscape.cache_dir={tmp_path / 'landscapes'}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_two_sweeps_started_at_once_on_a_new_store_keep_every_parent(tmp_path, launcher):
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"      # neither the file nor its folder exists yet
    sweeps = [start_sweep(tmp_path, name, uri, launcher) for name in ("a", "b")]
    outputs = [sweep.communicate(timeout=600)[0] for sweep in sweeps]
    report = "\n=====\n".join(out[-4000:] for out in outputs)
    assert [sweep.returncode for sweep in sweeps] == [0, 0], report
    for text in ("database is locked", "Traceback", "migration", "raised"):
        assert text not in report, (text, report)
    client = MlflowClient(tracking_uri=uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "firebreak_exp"]
    runs = client.search_runs([experiment.experiment_id])
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("run_kind") == "sweep"}
    children = [r for r in runs if r.data.tags.get("run_kind") == "train"]
    assert len(runs) == 6 and len(parents) == 2 and len(children) == 4, [r.data.tags for r in runs]
    sweep_ids = {parent.data.tags["sweep_id"]: run_id for run_id, parent in parents.items()}
    assert sorted(Path(s).name for s in sweep_ids) == ["a", "b"]
    for child in children:
        assert child.data.tags.get("mlflow.parentRunId") == sweep_ids[child.data.tags["sweep_id"]], child.data.tags
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]


def test_a_parent_run_that_cannot_be_created_stops_the_sweep_in_one_line(tmp_path):
    store = tmp_path / "mlflow.db"
    store.write_bytes(b"this file is not a SQLite database\n" * 100)
    sweep = start_sweep(tmp_path, "sweep", f"sqlite:///{store}", "basic")
    out, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 1, out
    assert "Traceback" not in out and "warn" not in out.lower(), out
    lines = [line for line in out.splitlines() if line.startswith("firebreak_exp: error: ")]
    assert len(lines) == 1, out
    assert "ParentRunError: the sweep's parent run could not be created in" in lines[0], out
    assert str(store) in lines[0] and "no job was started" in lines[0], out
    assert not any((tmp_path / "sweep").glob("*/.hydra")), "a job ran without a parent run"
