"""``python -m firebreak_exp.evaluate`` across checkpoints, with another scoring simulator and at another tile
size, end to end in subprocesses on real smoke training runs, a real SQLite MLflow store and real simulations."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]


def run_module(module: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two smoke training runs (seeds 0 and 1) on the travel-time simulator, and their store."""
    work = tmp_path_factory.mktemp("seeds")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    run_module("firebreak_exp", "-m", "seed=0,1", "experiment=smoke", "simulator=travel_time",
               f"tracking.uri={uri}", f"hydra.sweep.dir={work / 'train'}",
               f"landscape.cache_dir={work / 'landscapes'}")
    return {"work": work, "uri": uri, "runs": [work / "train" / "0", work / "train" / "1"],
            "client": MlflowClient(tracking_uri=uri)}


@pytest.mark.slow
def test_a_multirun_over_checkpoints_writes_a_summary_and_a_parent_run(trained):
    sweep = trained["work"] / "evaluate"
    checkpoints = ",".join(str(r / "checkpoints" / "last.pt") for r in trained["runs"])
    result = run_module("firebreak_exp.evaluate", "-m", f"checkpoint={checkpoints}", f"tracking.uri={trained['uri']}",
                        f"hydra.sweep.dir={sweep}", "budgets=[5]", "num_ignitions=4", "max_tiles=2",
                        "methods=[no_treatment,flow,policy,flow_search,policy_search]", "planners.policy_search.rollouts=3",
                        "planners.flow_search.rollouts=3")
    evaluations = [json.loads((sweep / str(i) / "evaluation.json").read_text()) for i in (0, 1)]
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["budgets"] == [5.0] and len(summary["checkpoints"]) == 2 and summary["baselines"] == ["flow"]
    for name in ("policy", "policy_search", "flow_search"):
        r = [e["methods"][name]["R"][0] for e in evaluations]
        method = summary["methods"][name]
        assert method["R"] == [[v] for v in r]
        assert method["R_mean"][0] == pytest.approx(np.mean(r)) and method["R_worst"][0] == pytest.approx(min(r))
        lo, hi = method["R_mean_ci"][0]
        assert lo <= method["R_mean"][0] + 1e-12 and method["R_mean"][0] <= hi + 1e-12
        flow = [e["methods"]["flow"]["R"][0] for e in evaluations]
        assert method["ratio_worst"][0] == pytest.approx(min(a / b for a, b in zip(r, flow)))
    searched = [e["methods"]["policy_search"]["R"][0] / e["methods"]["flow_search"]["R"][0] for e in evaluations]
    assert summary["methods"]["policy_search"]["ratio_to_flow_search"]["worst"][0] == pytest.approx(min(searched))
    for e in evaluations:
        per_tile = np.asarray(e["burned_fraction_per_tile"]["policy"])
        assert per_tile.shape == (2, 1)
        assert per_tile.mean() == pytest.approx(e["methods"]["policy"]["burned_fraction"][0])
    assert "R mean" in result.stdout and "policy_search" in result.stdout
    client = trained["client"]
    experiment = client.get_experiment_by_name("firebreak_exp").experiment_id
    (parent,) = client.search_runs([experiment], "tags.run_kind = 'sweep'", order_by=["attributes.start_time DESC"],
                                   max_results=1)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["policy/R_mean_budget_5"] == pytest.approx(summary["methods"]["policy"]["R_mean"][0])
    assert parent.data.metrics["policy/R_worst_budget_5"] == pytest.approx(summary["methods"]["policy"]["R_worst"][0])
    assert "summary.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 2 and all(c.data.tags["run_kind"] == "evaluation" for c in children)


@pytest.mark.slow
def test_plans_scored_by_pyretechnics_at_another_tile_size(trained):
    from firebreak_exp.config import validate
    from firebreak_exp.planning.evaluation import (SCORING_STREAM, draw_ignitions, evaluation_rng, heldout_tiles,
                                          num_breaks_for, score_plan)
    from firebreak_exp.factory import env_factory
    from firebreak_exp.fire.reference import PyretechnicsSimulator

    out = trained["work"] / "pyretechnics"
    run = trained["runs"][0]
    result = run_module("firebreak_exp.evaluate", f"checkpoint={run / 'checkpoints' / 'last.pt'}",
                        f"tracking.uri={trained['uri']}", f"hydra.run.dir={out}", "budgets=[5]", "num_ignitions=2",
                        "max_tiles=1", "methods=[no_treatment,flow,policy]", "scoring_simulator=pyretechnics",
                        "landscape.grid_size=16")
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["scoring_simulator"] == "pyretechnics" and evaluation["grid_size"] == [16, 16]
    assert evaluation["simulator"].endswith("TravelTimeSimulator")       # the planners' simulator
    assert "scored by pyretechnics" in result.stdout
    assert "planning and scoring" in result.stderr                       # the progress bar
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    cfg.landscape.grid_size = 16
    cfg = validate(cfg)
    (tile,) = heldout_tiles(cfg, 1)
    assert tile.shape == (16, 16)
    scenario = env_factory(cfg).keywords["scenario"]
    fires = draw_ignitions(tile, 2, evaluation_rng(int(cfg.seed), SCORING_STREAM, 0))
    untreated, _ = score_plan(PyretechnicsSimulator(tile, scenario), fires, np.zeros(0, np.int64))
    assert evaluation["burned_fraction_untreated"] == [pytest.approx(untreated)]
    assert evaluation["num_breaks"] == [[num_breaks_for(5.0, int(tile.burnable.sum()))]]
