"""Disk faults: a checkpoint that cannot be written, caches that are corrupt."""
import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from firebreak_exp.rl.checkpoint import CheckpointError, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _mount_small_tmpfs(folder: Path) -> bool:
    """Mount a 4 MiB tmpfs on ``folder`` (root only); whether it worked."""
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def _fill(folder: Path) -> None:
    """Write into ``folder`` until its file system refuses more."""
    with open(folder / "filler", "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            assert error.errno == errno.ENOSPC, error


def _readable(path: Path):
    try:
        return load_checkpoint(path)
    except CheckpointError:
        return None


@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_written_stops_the_run_and_keeps_the_previous_one(tmp_path):
    """On a full disk (a small tmpfs when root may mount one) or else a read-only folder, the next checkpoint
    fails: one line naming the file, exit 1, the MLflow run FAILED, last.pt still loads as it was."""
    run_dir, uri = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(parents=True)
    full_disk = _mount_small_tmpfs(checkpoints)
    try:
        run = subprocess.Popen(
            [sys.executable, "-m", "firebreak_exp", "experiment=smoke", "trainer.episodes=40",
             "trainer.checkpoint_frequency=4", "trainer.eval_episodes=1", f"tracking.uri={uri}",
             f"hydra.run.dir={run_dir}", f"landscape.cache_dir={tmp_path / 'landscapes'}"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        while _readable(checkpoints / "last.pt") is None:
            assert run.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
            time.sleep(0.02)
        if full_disk:
            _fill(checkpoints)
        else:
            checkpoints.chmod(0o555)
        before = load_checkpoint(checkpoints / "last.pt")   # no later checkpoint can be written from here on
        out, err = run.communicate(timeout=300)
        report = f"exit {run.returncode}\n--- stderr\n{err[-3000:]}\n--- stdout\n{out[-3000:]}"
        assert run.returncode == 1, report
        lines = [line for line in err.splitlines() if line.startswith("firebreak_exp: ")]
        assert len(lines) == 1 and "Traceback" not in err + out and "Exception ignored" not in err, report
        assert lines[0].startswith(f"firebreak_exp: error: CheckpointWriteError: checkpoint {checkpoints}/"), report
        reason = "No space left on device" if full_disk else "Permission denied"
        assert reason in lines[0], report
        after = load_checkpoint(checkpoints / "last.pt")
        assert after["counters"] == before["counters"] and after["counters"]["episodes"] < 40
        for key, value in before["agent"]["q_network"].items():
            assert torch.equal(value, after["agent"]["q_network"][key]), key
        for key, value in before["replay"].items():
            assert np.array_equal(value, after["replay"][key]), key
        assert not list(checkpoints.glob(".*.tmp")), "a temporary file was left behind"
        client = MlflowClient(tracking_uri=uri)
        (record,) = client.search_runs([client.get_experiment_by_name("firebreak_exp").experiment_id])
        assert record.info.status == "FAILED"
    finally:
        checkpoints.chmod(0o755)
        if full_disk:
            subprocess.run(["umount", str(checkpoints)], check=True)


def _flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xA5 for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "truncated": lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
    "flipped_bytes": _flip_middle,
    "empty": lambda path: path.write_bytes(b""),
    "not_the_format": lambda path: path.write_bytes(b"<html>proxy error</html>\n" * 40),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupt_expert_memory_cache_is_reported_and_rebuilt(make_cfg, tmp_path, caplog, corruption):
    from firebreak_exp.rl.memories import load_or_generate_expert_memories, memory_path
    cfg = make_cfg("trainer.expert_memories=2", "trainer.memory_simulations=2", "trainer.expert_planner=domirank")
    cache = tmp_path / "memories"
    original = load_or_generate_expert_memories(cfg, cache_dir=cache)
    path = memory_path(cfg, 2, cache)
    CORRUPTIONS[corruption](path)
    with caplog.at_level("WARNING", logger="firebreak_exp.rl.memories"):
        rebuilt = load_or_generate_expert_memories(cfg, cache_dir=cache)
    warnings = [r.getMessage() for r in caplog.records if r.name == "firebreak_exp.rl.memories"]
    assert len(warnings) == 1 and str(path) in warnings[0] and "regenerating" in warnings[0], warnings
    assert set(rebuilt) == set(original) and all(np.array_equal(rebuilt[k], original[k]) for k in original)
    with np.load(path, allow_pickle=False) as data:                    # the cache holds the rebuilt arrays
        assert np.array_equal(data["actions"], original["actions"])


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@pytest.mark.parametrize("layer_file", ["SYN_F40/SYN_F40_000.tif", "synthetic.json"])
def test_a_corrupt_landscape_cache_is_reported_and_rebuilt(tmp_path, caplog, corruption, layer_file):
    from firebreak_exp.landscape import _load_landscapes_cached, load_landscapes
    args = dict(source="synthetic", grid_size=10, num_landscapes=None, heldout_fraction=0.25, raster_dir=None,
                layer_patterns=None, synthetic_rows=30, synthetic_cols=30, seed=3, cache_dir=str(tmp_path))
    original = load_landscapes(**args)
    folder = tmp_path / "synthetic_30x30_seed3"
    damaged = folder / layer_file
    assert damaged.is_file(), sorted(p.relative_to(folder) for p in folder.rglob("*"))
    CORRUPTIONS[corruption](damaged)
    _load_landscapes_cached.cache_clear()                             # a new process: read from disk again
    with caplog.at_level("WARNING", logger="firebreak_exp.landscape"):
        rebuilt = load_landscapes(**args)
    warnings = [r.getMessage() for r in caplog.records if r.name == "firebreak_exp.landscape"]
    assert len(warnings) == 1 and str(folder) in warnings[0] and "rebuilding" in warnings[0], warnings
    if layer_file.endswith(".tif"):
        assert "SYN_F40_000.tif" in warnings[0], warnings       # the message names the damaged raster
    assert len(rebuilt.train) == len(original.train) and len(rebuilt.heldout) == len(original.heldout)
    for a, b in zip(rebuilt.train + rebuilt.heldout, original.train + original.heldout):
        assert np.array_equal(a.fuel_model, b.fuel_model) and np.array_equal(a.elevation, b.elevation)
    assert [p.name for p in tmp_path.iterdir()] == [folder.name], "the damaged copy was left behind"
