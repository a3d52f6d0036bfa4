"""Resume after SIGKILL, atomic checkpoints, and checkpoints that must be refused."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from firebreak_exp.observation import CHANNELS
from firebreak_exp.rl.checkpoint import CheckpointError, load_checkpoint
from conftest import make_agent
from firebreak_exp.rl.trainer import check_network_shape
from conftest import metric_histories

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "firebreak_exp", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # trainer.deterministic: oneDNN convolutions round differently in a resumed process
    common = ["experiment=smoke", "trainer.deterministic=true", "trainer.episodes=24", "trainer.checkpoint_frequency=4",
              f"tracking.uri={uri}",
              f"landscape.cache_dir={tmp_path / 'landscapes'}", "trainer.eval_episodes=1"]
    whole = _cli(*common, f"hydra.run.dir={tmp_path / 'whole'}")
    assert whole.wait(timeout=600) == 0, whole.stdout.read()

    killed_dir = tmp_path / "killed"
    killed = _cli(*common, f"hydra.run.dir={killed_dir}")
    deadline = time.time() + 300
    while not (killed_dir / "checkpoints" / "episode_000004.pt").exists():
        assert killed.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (killed_dir / "checkpoints" / "episode_000024.pt").exists(), "killed too late to test resume"

    resumed = _cli(f"resume={killed_dir}", f"tracking.uri={uri}", f"hydra.run.dir={tmp_path / 'resume'}")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert "resumed from" in out

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("firebreak_exp").experiment_id],
                              order_by=["attributes.start_time ASC"])
    assert len(runs) == 2, "resume must continue the same MLflow run"
    assert all(r.info.status == "FINISHED" for r in runs)
    reference, continued = (metric_histories(client, r.info.run_id) for r in runs)
    assert continued == reference


def test_truncated_last_checkpoint_falls_back_to_the_previous_one(tmp_path):
    state_dir = tmp_path / "run" / "checkpoints"
    from firebreak_exp.rl.checkpoint import save_checkpoint
    replay = {"tile_index": torch.zeros(4).numpy(), "actions": torch.zeros(4).numpy(), "rewards": torch.zeros(4).numpy(),
              "dones": torch.zeros(4).bool().numpy(), "expert": torch.zeros(4).bool().numpy(),
              "burn_probability": torch.zeros(4, 2, 3, 3).half().numpy(),
              "fire_flow": torch.zeros(4, 2, 3, 3).half().numpy(),
              "fuel_breaks": torch.zeros(4, 2, 3, 3).bool().numpy(), "budget": torch.zeros(4, 2).numpy(),
              "position": 0, "size": 0}
    for name, episodes in (("episode_000004.pt", 4), ("last.pt", 8)):
        save_checkpoint({"replay": replay, "counters": {"episodes": episodes}}, state_dir / name)
    assert load_checkpoint(state_dir / "last.pt")["counters"]["episodes"] == 8
    data = (state_dir / "last.pt").read_bytes()
    (state_dir / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="last.pt"):
        load_checkpoint(state_dir / "last.pt")
    assert load_checkpoint(state_dir / "episode_000004.pt")["counters"]["episodes"] == 4
    assert not list(state_dir.glob("*.tmp")), "atomic writes leave no temporary files"


def test_not_a_checkpoint_and_wrong_network_shape_are_refused(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pt"):
        load_checkpoint(text)
    pickled = tmp_path / "object.pt"
    torch.save({"payload": Path("/tmp")}, pickled)  # arbitrary objects are never unpickled
    with pytest.raises(CheckpointError, match="object.pt"):
        load_checkpoint(pickled)
    older = tmp_path / "older.pt"
    torch.save({"format": "firebreak_exp/1", "replay_path": "older.replay.npz"}, older)
    with pytest.raises(CheckpointError, match=r"older.pt .*fire flow in % .*train it again"):
        load_checkpoint(older)
    agent = make_agent((len(CHANNELS), 5, 5), channels=8, num_layers=2)
    state = {"network": {"in_channels": len(CHANNELS), "channels": 16, "num_layers": 2}}
    with pytest.raises(CheckpointError, match="channels"):
        check_network_shape(state, agent, tmp_path / "x.pt")
