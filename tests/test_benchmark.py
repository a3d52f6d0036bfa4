"""`python -m firebreak_exp.benchmark benchmark=quick` in a subprocess: benchmark.json, the plot, the MLflow
run, and `parallel.num_envs=auto` resolving to the recommendation it writes. No wall-clock assertions."""
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from firebreak_exp.environment import CHANNELS
from firebreak_exp.factory import AUTO_FALLBACK_NUM_ENVS, RECOMMENDATION_ENV, make_vector_env, resolve_parallel

ROOT = Path(__file__).resolve().parents[1]
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
    from firebreak_exp.agent import DQNAgent, ReplayBuffer
    from firebreak_exp.benchmark import top_up_replay
    from firebreak_exp.factory import build_landscapes, env_kwargs
    cfg = make_cfg()
    tiles = build_landscapes(cfg).train[:2]
    kwargs = env_kwargs(cfg)
    shape = (len(CHANNELS),) + tiles[0].shape
    replay = ReplayBuffer(500, shape)
    top_up_replay(tiles, kwargs, DQNAgent(shape, **cfg.agent), replay, batch_size=40, seed=0)
    assert 40 <= len(replay) < 500 and replay.dones[:len(replay)].any()


@pytest.mark.parametrize("simulator", ["travel_time", "pyretechnics"])
def test_fire_counts_agree_across_backends_with_several_environments_per_worker(make_cfg, simulator):
    """The fires burned for each process's environments, wherever they burned: 3 environments on 2 workers
    (one holds 2) count in all what the sequential backend counts for the same actions."""
    from firebreak_exp.benchmark import counting_vector_env_class
    from firebreak_exp.factory import build_landscapes, env_kwargs
    cfg = make_cfg(f"simulator={simulator}")
    tiles, kwargs = build_landscapes(cfg).train[:2], env_kwargs(cfg)
    counts = {}
    for backend in ("sequential", "process"):
        with counting_vector_env_class()(tiles, 3, method=backend, max_workers=2, env_kwargs=kwargs) as vec_env:
            _, infos = vec_env.reset(seed=0)
            for step in range(5):
                actions = [int(np.flatnonzero(mask)[step]) for mask in infos["action_mask"]]
                _, _, _, _, infos = vec_env.step(actions)
            counts[backend] = vec_env.simulation_counts()
    assert len(counts["process"]) == 2 and len(counts["sequential"]) == 1
    assert sum(counts["process"]) == sum(counts["sequential"]) > 0


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
    assert run.data.metrics["travel_time/process/n2/sims_per_s"] > 0
    assert "fidelity/12/plan_spearman" in run.data.metrics
    files = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"benchmark.json", "speedup.png", "recommended.json", ".hydra"} <= files
    assert ".hydra/config.yaml" in {item.path for item in client.list_artifacts(run.info.run_id, ".hydra")}


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


def test_num_envs_auto_without_a_recommendation_falls_back_with_a_warning(make_cfg, tmp_path, caplog):
    cfg = make_cfg("parallel.num_envs=auto")
    with caplog.at_level(logging.WARNING, logger="firebreak_exp.factory"):
        resolved = resolve_parallel(cfg, tmp_path / "absent.json")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert resolved["num_envs"] == min(AUTO_FALLBACK_NUM_ENVS, cores)
    assert "no benchmark recommendation" in caplog.text
    (tmp_path / "broken.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="firebreak_exp.factory"):
        assert resolve_parallel(cfg, tmp_path / "broken.json")["num_envs"] >= 1
    assert "unreadable" in caplog.text
    assert resolve_parallel(make_cfg("parallel.num_envs=3"), tmp_path / "absent.json")["num_envs"] == 3


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

@pytest.mark.parametrize("height,width,layers,channels", [(25, 25, 5, 8), (12, 12, 3, 4), (7, 9, 4, 4),
                                                          (50, 50, 6, 4), (1, 3, 1, 4)])
def test_q_values_on_receptive_cones_equal_the_dense_network(height, width, layers, channels):
    import torch
    from firebreak_exp.agent import QNetwork
    from firebreak_exp.environment import CHANNELS

    torch.manual_seed(0)
    network = QNetwork(len(CHANNELS), channels, layers)
    obs = torch.randn(12, len(CHANNELS), height, width)
    cells = torch.randint(0, height * width, (12,))
    cells[0], cells[1] = 0, height * width - 1                      # corners read the zero padding
    dense = network(obs).gather(1, cells[:, None]).squeeze(1)
    for layout in (torch.contiguous_format, torch.channels_last):
        cone = network.q_at(obs.contiguous(memory_format=layout), cells)
        torch.testing.assert_close(cone, dense, atol=1e-5, rtol=1e-4)
    dense_grads = torch.autograd.grad(dense.square().sum(), list(network.parameters()))
    cone_grads = torch.autograd.grad(network.q_at(obs, cells).square().sum(), list(network.parameters()))
    for cone_grad, dense_grad in zip(cone_grads, dense_grads):
        torch.testing.assert_close(cone_grad, dense_grad, atol=1e-4, rtol=1e-3)


def test_cone_plans_from_the_every_cell_table_equal_the_direct_ones(monkeypatch):
    import numpy as np
    from firebreak_exp import agent

    cells = np.array([0, 624, 312, 312, 30, 599])                   # corners, a repeat, edges
    cached = agent.cone_plan(cells, 25, 25, [2, 4, 8, 16])
    monkeypatch.setattr(agent, "CACHED_CONES_MAX_CELLS", 0)          # grids above it plan per batch
    direct = agent.cone_plan(cells, 25, 25, [2, 4, 8, 16])
    below, direct_below = 625, 625                                  # rows per batch entry of the table below
    for (taps, inside), (direct_taps, direct_inside) in zip(cached, direct):
        rows = direct_taps.shape[1]                                 # the table pads every cell to the widest cone
        assert not inside[:, rows:].any()
        np.testing.assert_array_equal(inside[:, :rows], direct_inside)
        for plan_taps, own_below in ((taps[:, :rows], below), (direct_taps, direct_below)):
            assert (np.where(direct_inside, plan_taps // own_below, np.arange(len(cells))[:, None, None])
                    == np.arange(len(cells))[:, None, None]).all()  # each cell reads its own batch entry
        np.testing.assert_array_equal(np.where(direct_inside, taps[:, :rows] % below, 0),
                                      np.where(direct_inside, direct_taps % direct_below, 0))
        below, direct_below = taps.shape[1], rows


def test_update_loss_matches_the_dense_double_dqn_computation():
    import numpy as np
    import torch
    import torch.nn.functional as F
    from firebreak_exp.agent import DQNAgent, ReplayBuffer, action_mask, masked_argmax
    from firebreak_exp.environment import CHANNELS, FUEL_BREAK_CHANNEL, NON_BURNABLE_CHANNEL

    rng = np.random.default_rng(0)
    shape = (len(CHANNELS), 10, 10)
    obs = rng.normal(size=(40, *shape)).astype(np.float32)
    obs[:, NON_BURNABLE_CHANNEL] = rng.random((40, 10, 10)) < 0.2
    obs[:, FUEL_BREAK_CHANNEL] = rng.random((40, 10, 10)) < 0.2
    replay = ReplayBuffer(64, shape, seed=0)
    replay.add(obs[:20], np.arange(20) % 3, rng.integers(0, 100, 20), rng.normal(size=20), obs[20:],
               rng.random(20) < 0.3)
    agent = DQNAgent(shape, channels=8, num_layers=4, gamma=0.9, seed=0, num_threads=1)
    agent.target_network.net[0].weight.data.mul_(1.5)               # online and target differ
    batch = replay.sample(16, agent.device)
    with torch.no_grad():
        q_taken = agent.q_network(batch["obs"]).gather(1, batch["actions"][:, None]).squeeze(1)
        mask = action_mask(batch["next_obs"])
        best = masked_argmax(agent.q_network(batch["next_obs"]), mask)
        value = agent.target_network(batch["next_obs"]).gather(1, best[:, None]).squeeze(1)
        value = torch.where(mask.any(dim=1), value, torch.zeros_like(value))
        expected = F.smooth_l1_loss(q_taken, batch["rewards"] + 0.9 * (1 - batch["dones"]) * value).item()
    assert agent.update(batch) == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_margin_loss_on_cones_has_the_dense_loss_and_gradients():
    """The update finds each demonstration's rival cell without autograd and differentiates Q only at the
    rival and the expert's cell: the loss and every parameter's gradient equal the dense computation's."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from firebreak_exp.agent import DQNAgent, action_mask
    from firebreak_exp.environment import CHANNELS, FUEL_BREAK_CHANNEL, NON_BURNABLE_CHANNEL

    rng = np.random.default_rng(1)
    shape = (len(CHANNELS), 12, 12)
    obs = rng.normal(size=(16, *shape)).astype(np.float32)
    obs[:, NON_BURNABLE_CHANNEL] = rng.random((16, 12, 12)) < 0.2
    obs[:, FUEL_BREAK_CHANNEL] = rng.random((16, 12, 12)) < 0.2
    obs = torch.as_tensor(obs).contiguous(memory_format=torch.channels_last)
    actions = torch.as_tensor([int(rng.choice(np.flatnonzero(m))) for m in action_mask(obs).numpy()])
    batch = {"obs": obs, "actions": actions, "rewards": torch.as_tensor(rng.normal(size=16), dtype=torch.float32),
             "next_obs": obs, "dones": torch.ones(16), "expert": torch.as_tensor(rng.random(16) < 0.5)}
    agent = DQNAgent(shape, channels=8, num_layers=4, n_step=None, reward_scale=10.0, expert_loss_weight=0.7,
                     expert_margin=0.8, seed=0, num_threads=1)
    agent.optimizer = torch.optim.SGD(agent.q_network.parameters(), lr=0.0)   # keep the weights, read the grads

    q_all = agent.q_network(obs)                                            # the dense computation
    q_taken = q_all.gather(1, actions[:, None]).squeeze(1)
    expert = batch["expert"]
    margins = torch.full_like(q_all, 0.8).scatter_(1, actions[:, None], 0.0)[expert]
    best = (q_all[expert] + margins).masked_fill(~action_mask(obs[expert]), -torch.inf).max(dim=1).values
    loss = F.smooth_l1_loss(q_taken, 10.0 * batch["rewards"]) + 0.7 * (best - q_taken[expert]).mean()
    dense_grads = torch.autograd.grad(loss, list(agent.q_network.parameters()))
    assert int(expert.sum()) >= 4 and float((best - q_taken[expert]).mean().detach()) > 0   # the margin loss is active

    assert agent.update(batch) == pytest.approx(loss.item(), rel=1e-5)
    for parameter, dense_grad in zip(agent.q_network.parameters(), dense_grads):
        torch.testing.assert_close(parameter.grad, dense_grad, atol=1e-5, rtol=1e-4)
