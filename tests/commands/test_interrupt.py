"""Graceful stop on SIGINT/SIGTERM, resume=auto, and submitit's checkpoint-and-requeue."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from mlflow.tracking import MlflowClient

from firebreak_exp.rl.checkpoint import load_checkpoint
from conftest import metric_histories

ROOT = Path(__file__).resolve().parents[2]


def start(*args: str) -> subprocess.Popen:
    """``python -m firebreak_exp`` in its own process group (as a shell starts a command: Ctrl-C reaches
    the whole group, environment workers included)."""
    return subprocess.Popen([sys.executable, "-m", "firebreak_exp", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.02)


def workers_of(process: subprocess.Popen) -> list:
    return [p for p in psutil.Process(process.pid).children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]


def only_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("firebreak_exp: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def the_run(uri: str, run_dir: Path):
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("firebreak_exp").experiment_id])
    (run,) = [r for r in runs if r.data.tags.get("run_dir") == str(run_dir)]
    return client, run


@pytest.mark.slow
def test_sigterm_then_the_same_command_with_resume_auto_equals_an_uninterrupted_run(tmp_path):
    """SIGTERM lands inside a collection of 64 vector steps: the run stops after the step in flight, keeps
    the collection's first part in its checkpoint, and the same command finishes the collection and the run
    exactly as an uninterrupted run does."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["experiment=smoke", "parallel=process", "parallel.num_envs=2", "trainer.deterministic=true",
              "trainer.episodes=60", "trainer.steps_per_collection=64", "trainer.checkpoint_frequency=8",
              "trainer.eval_episodes=1", "resume=auto", f"tracking.uri={uri}",
              f"landscape.cache_dir={tmp_path / 'landscapes'}"]
    whole = start(*common, f"hydra.run.dir={tmp_path / 'whole'}")
    assert whole.wait(timeout=600) == 0, whole.communicate()

    run_dir = tmp_path / "pinned"
    command = [*common, f"hydra.run.dir={run_dir}"]
    killed = start(*command)
    last = run_dir / "checkpoints" / "last.pt"
    wait_for(last, killed)                           # the first periodic checkpoint, after one collection
    workers = workers_of(killed)
    assert len(workers) == 2
    time.sleep(0.1)          # inside the second collection (a collection lasts about a second here)
    killed.send_signal(signal.SIGTERM)
    out, err = killed.communicate(timeout=120)
    assert killed.returncode == 143, (out[-2000:], err)
    stopped = load_checkpoint(last)
    episode = stopped["counters"]["episodes"]
    assert only_line(err) == (f"firebreak_exp: interrupted at episode {episode} (SIGTERM); checkpoint {last}; "
                              f"resume with: python -m firebreak_exp resume={run_dir}")
    partial = stopped["loop"]["partial_collection"]
    assert partial is not None and 0 < partial["steps"] < 64, "the stop did not land inside a collection"
    (periodic,) = sorted((run_dir / "checkpoints").glob("episode_*.pt"))
    assert stopped["counters"]["experiences"] > load_checkpoint(periodic)["counters"]["experiences"]
    assert episode < 60
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers), "workers left"
    client, run = the_run(uri, run_dir)
    assert run.info.status == "KILLED" and run.data.tags["interrupted_by"] == "SIGTERM"
    assert client.get_metric_history(run.info.run_id, "episodes")[-1].value <= episode  # none recorded twice

    again = start(*command)                         # the very same command
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, (out[-3000:], err[-3000:])
    assert f"resumed from {last} at episode {episode}" in out
    client, run = the_run(uri, run_dir)
    _, reference = the_run(uri, tmp_path / "whole")
    assert run.info.status == "FINISHED" and len(client.search_runs([run.info.experiment_id])) == 2
    assert metric_histories(client, run.info.run_id) == metric_histories(client, reference.info.run_id)
    resumed, uninterrupted = (load_checkpoint(d / "checkpoints" / "last.pt") for d in (run_dir, tmp_path / "whole"))
    for key, value in uninterrupted["agent"]["q_network"].items():
        assert torch.equal(value, resumed["agent"]["q_network"][key]), key


@pytest.mark.slow
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_stops_with_a_checkpoint_and_a_second_one_at_once(tmp_path, presses):
    """Ctrl-C reaches the whole process group (workers too): one press stops at the next safe point with a
    checkpoint (exit 130); a second press stops at once, still with one line and no traceback."""
    uri, run_dir = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "run"
    run = start("experiment=smoke", "parallel=process", "parallel.num_envs=2", "trainer.episodes=100000",
                "trainer.checkpoint_frequency=4", f"tracking.uri={uri}", f"hydra.run.dir={run_dir}",
                f"landscape.cache_dir={tmp_path / 'landscapes'}")
    wait_for(run_dir / "checkpoints" / "episode_000004.pt", run)
    workers = workers_of(run)
    for _ in range(presses):
        os.killpg(run.pid, signal.SIGINT)
        time.sleep(0.01)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130, (out[-2000:], err)
    line = only_line(err)
    if presses == 1:
        assert re.fullmatch(rf"firebreak_exp: interrupted at episode \d+ \(SIGINT\); checkpoint {run_dir}/checkpoints/"
                            rf"last\.pt; resume with: python -m firebreak_exp resume={run_dir}", line), line
    else:
        assert "second SIGINT" in line and "stopped at once" in line, line
    named = re.search(r"; checkpoint (\S+); resume with: ", line)
    assert named, line
    assert load_checkpoint(named.group(1))["counters"]["episodes"] >= 4      # the one named loads
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers), "workers left"
    _, record = the_run(uri, run_dir)
    if presses == 1:
        assert record.info.status == "KILLED" and record.data.tags["interrupted_by"] == "SIGINT"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_sweep_and_leaves_its_parent_run_killed(tmp_path, signum):
    """A basic-launcher sweep (jobs in the sweep's own process): the job in progress checkpoints and its run
    is KILLED, no later job starts, and the parent run is KILLED with the signal's name, not FAILED."""
    uri, sweep_dir = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "sweep"
    sweep = start("-m", "experiment=smoke", "seed=0,1", "trainer.episodes=100000", "trainer.checkpoint_frequency=4",
                  "hydra/launcher=basic", f"tracking.uri={uri}", f"hydra.sweep.dir={sweep_dir}",
                  f"landscape.cache_dir={tmp_path / 'landscapes'}")
    wait_for(sweep_dir / "0" / "checkpoints" / "episode_000004.pt", sweep)
    os.killpg(sweep.pid, signum)
    out, err = sweep.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert sweep.returncode == 128 + signum, (out[-2000:], err)
    last = sweep_dir / "0" / "checkpoints" / "last.pt"
    assert re.fullmatch(rf"firebreak_exp: interrupted at episode \d+ \({name}\); checkpoint {last}; resume with: "
                        rf"python -m firebreak_exp resume={sweep_dir / '0'}", only_line(err))
    assert load_checkpoint(last)["counters"]["episodes"] >= 4
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("firebreak_exp").experiment_id])
    (parent,) = [r for r in runs if r.data.tags["run_kind"] == "sweep"]
    (job,) = [r for r in runs if r.data.tags["run_kind"] == "train"]       # the second job never started
    assert (parent.info.status, parent.data.tags.get("interrupted_by")) == ("KILLED", name)
    assert (job.info.status, job.data.tags["interrupted_by"], job.data.tags["mlflow.parentRunId"]) == \
        ("KILLED", name, parent.info.run_id)
    assert not (sweep_dir / "1").exists()


@pytest.mark.slow
def test_resume_auto_leaves_a_finished_run_alone_and_refuses_another_config(tmp_path):
    uri, run_dir = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "run"
    common = ["experiment=smoke", "trainer.episodes=2", "trainer.eval_episodes=1", "resume=auto", f"tracking.uri={uri}",
              f"hydra.run.dir={run_dir}", f"landscape.cache_dir={tmp_path / 'landscapes'}"]
    first = start(*common)
    assert first.wait(timeout=300) == 0, first.communicate()
    same = start(*common)                                  # a finished run: nothing to continue, nothing redone
    out, err = same.communicate(timeout=300)
    assert same.returncode == 0 and f"resume=auto: {run_dir} holds the finished MLflow run" in out, (out, err)
    client = MlflowClient(tracking_uri=uri)
    assert len(client.search_runs([client.get_experiment_by_name("firebreak_exp").experiment_id])) == 1
    changed = start(*common, "agent.lr=0.01")
    out, err = changed.communicate(timeout=300)
    assert changed.returncode == 2, (out[-2000:], err)
    assert only_line(err) == (f"firebreak_exp: error: resume=auto: {run_dir} holds a run with agent.lr=0.001, but "
                              f"this command sets agent.lr=0.01; choose another hydra.run.dir, or resume={run_dir} "
                              f"to continue that run with its own config")


@pytest.mark.slow
def test_submitit_pre_timeout_signal_checkpoints_requeues_and_continues_the_same_run(tmp_path):
    """submitit's local executor requeues a job that exits through submitit's handler, as SLURM does: the
    pre-timeout signal (sent here as the cluster would) checkpoints, the job is requeued, and the new
    process continues the same MLflow run from that checkpoint (resume=auto is a submitit job's default),
    ending with the metrics of an uninterrupted run (trainer.deterministic=true)."""
    uri, sweep_dir = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "sweep"
    common = ["experiment=smoke", "trainer.episodes=40", "trainer.checkpoint_frequency=8", "trainer.eval_episodes=1",
              "trainer.deterministic=true", "seed=0", f"tracking.uri={uri}", f"landscape.cache_dir={tmp_path / 'ls'}"]
    whole = start(*common, f"hydra.run.dir={tmp_path / 'whole'}")
    assert whole.wait(timeout=600) == 0, whole.communicate()
    sweep = start("-m", *common, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20",
                  f"hydra.sweep.dir={sweep_dir}")
    wait_for(sweep_dir / "0" / "checkpoints" / "episode_000008.pt", sweep)
    (job,) = [p for p in psutil.Process(sweep.pid).children(recursive=True)
              if "submitit.core._submit" in " ".join(p.cmdline())]
    job.send_signal(signal.SIGUSR2)
    out, err = sweep.communicate(timeout=600)
    job_logs = "".join(p.read_text() for p in sweep_dir.glob(".submitit/*/*_log.*"))
    assert sweep.returncode == 0, (out[-2000:], err[-2000:], job_logs[-4000:])
    assert "Traceback" not in job_logs + err, job_logs
    (line,) = [line for line in job_logs.splitlines() if line.startswith("firebreak_exp: ")]
    last = sweep_dir / "0" / "checkpoints" / "last.pt"
    assert re.fullmatch(rf"firebreak_exp: interrupted at episode \d+ \(SIGUSR2\); checkpoint {last}; the job is "
                        rf"requeued and continues from it", line), line
    assert "Requeued job" in job_logs and f"resumed from {last}" in job_logs
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("firebreak_exp").experiment_id])
    (train,) = [r for r in runs if r.data.tags["run_kind"] == "train" and "sweep_id" in r.data.tags]
    (parent,) = [r for r in runs if r.data.tags["run_kind"] == "sweep"]
    _, reference = the_run(uri, tmp_path / "whole")
    assert train.info.status == "FINISHED" and train.data.tags["interrupted_by"] == "SIGUSR2"
    assert train.data.tags["mlflow.parentRunId"] == parent.info.run_id and parent.info.status == "FINISHED"
    requeued = metric_histories(client, train.info.run_id)               # no step logged twice
    assert requeued["episodes"][-1][1] == 40
    assert requeued == metric_histories(client, reference.info.run_id)
