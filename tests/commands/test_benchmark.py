"""`python -m firebreak_exp.benchmark benchmark=quick` in a subprocess: benchmark.json, the plot, the MLflow
run, and `parallel.num_envs=auto` resolving to the recommendation it writes. No wall-clock assertions."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from firebreak_exp.factory import make_vector_env, RECOMMENDATION_ENV, resolve_parallel
from firebreak_exp.observation import CHANNELS

ROOT = Path(__file__).resolve().parents[2]
RESULT_KEYS = {"backend", "num_envs", "simulator", "sims_per_s", "experiences_per_s", "updates_per_s",
               "speedup_vs_sequential", "efficiency", "repeats", "spread", "max_workers"}


def run_benchmark(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != RECOMMENDATION_ENV}
    return subprocess.run([sys.executable, "-m", "firebreak_exp.benchmark", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One quick benchmark (tiny landscape of the smoke experiment) into scratch folders."""
    work = tmp_path_factory.mktemp("benchmark")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    result = run_benchmark("benchmark=quick", "experiment=smoke", "trainer.expert_memories=4", f"tracking.uri={uri}",
                           f"hydra.run.dir={work / 'bench'}", f"landscape.cache_dir={work / 'landscapes'}",
                           f"benchmark.recommendation_file={work / 'recommended.json'}")
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    report = json.loads((work / "bench" / "benchmark.json").read_text())
    return {"work": work, "uri": uri, "stdout": result.stdout, "report": report}


@pytest.mark.slow
def test_benchmark_json_holds_every_required_key_with_sane_values(quick):
    report = quick["report"]
    assert {"machine", "results", "recommended", "fidelity", "learner"} <= set(report)
    machine = report["machine"]
    for key in ("cores", "cpu_model", "memory_gib", "python", "torch", "numpy"):
        assert machine[key], key
    assert machine["cores"] >= 1

    results = report["results"]
    assert {(r["backend"], r["num_envs"]) for r in results} == {("sequential", 1), ("sequential", 2),
                                                               ("process", 1), ("process", 2)}
    for row in results:
        assert RESULT_KEYS <= set(row), RESULT_KEYS - set(row)
        assert row["simulator"] == "travel_time" and row["repeats"] == 1
        assert row["sims_per_s"] > 0 and row["experiences_per_s"] > 0 and row["updates_per_s"] > 0
        assert row["simulations_timed"] > 0 and row["spread"] >= 0
        assert row["speedup_vs_sequential"] > 0
        assert 0 < row["efficiency"] <= 1.2
        # travel-time fires stay with their environment's search: no process worker burns another's
        assert row["fires_shared"] == (0.0 if row["backend"] == "process" else None)
        if row["backend"] == "sequential":
            assert row["speedup_vs_sequential"] == pytest.approx(1.0)
            assert row["efficiency"] == pytest.approx(1.0 / min(row["num_envs"], machine["cores"]))
    # the same seeds and actions on every backend: the same fires are simulated
    for n in (1, 2):
        counts = {r["simulations_timed"] for r in results if r["num_envs"] == n}
        assert len(counts) == 1, (n, counts)

    learner = report["learner"]
    assert learner["updates_per_s"] > 0 and learner["batch_size"] == 16
    # updates are also timed with training's share of demonstrations: 4 expert episodes of 4 + 12 in the buffer
    assert learner["demonstration_share"] == pytest.approx(4 / 16) and learner["updates_per_s_with_demonstrations"] > 0
    assert sum(key.endswith("/demonstrations") for key in learner["updates_per_s_by_setting"]) == \
        len(learner["updates_per_s_by_setting"]) // 2

    recommended = report["recommended"]
    assert recommended["backend"] in ("sequential", "process") and recommended["num_envs"] in (1, 2)
    assert recommended["max_workers"] >= 1 and recommended["simulator"] == "travel_time"
    assert set(recommended["by_simulator"]["travel_time"]["by_backend"]) == {"sequential", "process"}

    fidelity = report["fidelity"]
    assert fidelity["reference"] == "pyretechnics" and fidelity["simulator"] == "travel_time"
    assert fidelity["speedup"] > 0
    assert 0 <= fidelity["burned_fraction_mae"] <= 1 and 0 <= fidelity["iou_mean"] <= 1
    assert math.isfinite(fidelity["plan_spearman"]) and -1 <= fidelity["plan_spearman"] <= 1
    assert fidelity["num_plans"] >= 6 and fidelity["grid_size"] == 12

    assert "sims/s" in quick["stdout"] and "GIL" not in quick["stdout"]  # no thread backend in the quick preset


@pytest.mark.slow
def test_learner_timing_tops_up_a_replay_no_episode_filled(make_cfg):
    """Monte Carlo returns store transitions when episodes end: a timing window shorter than an episode leaves
    the replay empty, and the benchmark then collects until it holds a batch."""
    from firebreak_exp.commands.benchmark_measure import top_up_replay
    from firebreak_exp.factory import build_landscapes, env_factory, make_agent, make_replay
    cfg = make_cfg()
    tiles = build_landscapes(cfg).train[:2]
    kwargs = env_factory(cfg).keywords
    shape = (len(CHANNELS),) + tiles[0].shape
    replay = make_replay(cfg, shape, capacity=500)
    top_up_replay(tiles, kwargs, make_agent(cfg, shape), replay, batch_size=40, seed=0)
    assert 40 <= len(replay) < 500 and replay.dones[:len(replay)].any()


@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["travel_time", "pyretechnics"])
def test_fire_counts_agree_across_backends_with_several_environments_per_worker(make_cfg, simulator):
    """The fires burned for each process's environments, wherever they burned: 3 environments on 2 workers
    (one holds 2) count in all what the sequential backend counts for the same actions, on the process and
    joblib backends."""
    from firebreak_exp.commands.benchmark_measure import CountingVectorEnv
    from firebreak_exp.factory import build_landscapes, env_factory
    cfg = make_cfg(f"simulator={simulator}")
    tiles, kwargs = build_landscapes(cfg).train[:2], env_factory(cfg).keywords
    counts = {}
    for backend in ("sequential", "process", "joblib"):
        with CountingVectorEnv(tiles, 3, method=backend, max_workers=2, env_kwargs=kwargs) as vec_env:
            _, infos = vec_env.reset(seed=0)
            for step in range(5):
                actions = [int(np.flatnonzero(mask)[step]) for mask in infos["action_mask"]]
                _, _, _, _, infos = vec_env.step(actions)
            counts[backend] = vec_env.simulation_counts()
    assert len(counts["process"]) == len(counts["joblib"]) == 2 and len(counts["sequential"]) == 1
    assert sum(counts["process"]) == sum(counts["sequential"]) > 0
    assert counts["joblib"] == counts["process"]   # the same split; joblib workers burn only their own fires


@pytest.mark.slow
def test_plot_and_one_finished_mlflow_run_with_the_artifacts(quick):
    bench = quick["work"] / "bench"
    assert (bench / "speedup.png").stat().st_size > 1000
    record = json.loads((bench / "recommended.json").read_text())
    assert record["num_envs"] == quick["report"]["recommended"]["num_envs"]
    client = MlflowClient(tracking_uri=quick["uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("firebreak_exp").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["run_kind"] == "benchmark"
    assert run.data.params["benchmark.num_envs"] == "[1, 2]" and run.data.params["parallel.backend"] == "sequential"
    assert run.data.metrics["learner/updates_per_s"] > 0
    assert run.data.metrics["travel_time/process/n2/w2/sims_per_s"] > 0
    assert "fidelity/12/plan_spearman" in run.data.metrics
    files = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"benchmark.json", "speedup.png", "recommended.json", ".hydra"} <= files
    assert ".hydra/config.yaml" in {item.path for item in client.list_artifacts(run.info.run_id, ".hydra")}


def test_benchmark_metric_names_are_unique_per_row():
    """Oversubscribed process rows (same simulator, backend and num_envs, more workers) keep their own
    metrics, and the joblib row is compared with the process row of as many workers."""
    from firebreak_exp.commands.benchmark_report import benchmark_metrics, joblib_notes

    def row(backend, workers, rate):
        return {"simulator": "travel_time", "backend": backend, "num_envs": 4, "max_workers": workers,
                "sims_per_s": rate, "experiences_per_s": rate * 10, "speedup_vs_sequential": rate / 2,
                "efficiency": rate / 4, "spread": 0.1}

    rows = [row("sequential", 1, 2.0), row("process", 2, 3.0), row("process", 4, 3.5), row("joblib", 2, 2.7)]
    report = {"results": rows, "learner": {"updates_per_s": 50.0, "updates_per_s_by_setting": {}},
              "recommended": {"num_envs": 4, "max_workers": 2}}
    metrics = benchmark_metrics(report)
    assert metrics["travel_time/process/n4/w2/sims_per_s"] == 3.0
    assert metrics["travel_time/process/n4/w4/sims_per_s"] == 3.5
    assert metrics["travel_time/joblib/n4/w2/experiences_per_s"] == 27.0
    assert len([k for k in metrics if k.startswith("travel_time/")]) == 5 * len(rows)
    (note,) = joblib_notes(rows)
    assert "num_envs=4, 2 workers: 0.90x the process backend's experiences/s (1.35x sequential)" in note


@pytest.mark.slow
def test_num_envs_auto_resolves_to_the_benchmark_recommendation(quick, make_cfg, monkeypatch):
    record = quick["work"] / "recommended.json"
    recommended = json.loads(record.read_text())["by_simulator"]["travel_time"]["by_backend"]
    for backend in ("sequential", "process"):
        cfg = make_cfg(f"parallel={backend}", "parallel.num_envs=auto", "simulator=travel_time")
        resolved = resolve_parallel(cfg, record)
        assert resolved["num_envs"] == recommended[backend]["num_envs"]
        assert resolved["max_workers"] == recommended[backend]["max_workers"]
    # make_vector_env (what training uses) finds it through FIREBREAK_RECOMMENDATION_FILE
    monkeypatch.setenv(RECOMMENDATION_ENV, str(record))
    cfg = make_cfg("parallel=sequential", "parallel.num_envs=auto", "simulator=travel_time")
    with make_vector_env(cfg) as vec_env:
        assert vec_env.num_envs == recommended["sequential"]["num_envs"]


def test_bad_benchmark_settings_fail_at_start_with_their_name(tmp_path):
    result = run_benchmark("benchmark=quick", "benchmark.backends=[sequential,warp]",
                           f"tracking.uri=sqlite:///{tmp_path / 'db.sqlite'}", f"hydra.run.dir={tmp_path / 'run'}",
                           f"benchmark.recommendation_file={tmp_path / 'recommended.json'}", timeout=300)
    assert result.returncode == 2
    assert "benchmark.backends" in result.stderr and "warp" in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "db.sqlite").exists()
    result = run_benchmark("benchmark=quick", "benchmark.end_to_end.simulators=[pyretechnics]",
                           f"tracking.uri=sqlite:///{tmp_path / 'db.sqlite'}", f"hydra.run.dir={tmp_path / 'run'}",
                           f"benchmark.recommendation_file={tmp_path / 'recommended.json'}", timeout=300)
    assert result.returncode == 2      # the quick preset benchmarks travel_time alone
    assert "benchmark.end_to_end.simulators" in result.stderr and "pyretechnics" in result.stderr, \
        result.stderr[-2000:]


# -- the learner's fast path: Q-values on receptive cones equal the dense network's --------------------------
