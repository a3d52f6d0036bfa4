"""`python -m firebreak_exp.evaluate` end to end in subprocesses, on a real smoke training run's checkpoints,
a real SQLite MLflow store and real simulations."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF_DIR
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf


ROOT = Path(__file__).resolve().parents[2]
METRIC_KEYS = {"R", "R_ci", "burned_fraction", "plan_seconds"}
PLOTS = ("r_against_budget.png", "fuel_breaks_by_method.png", "burn_probability_by_method.png")


def run_module(module: str, *args: str, expect: int = 0, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == expect, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke training run: its folder, store URI and MLflow run id."""
    work = tmp_path_factory.mktemp("evaluate")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    run_module("firebreak_exp", "experiment=smoke", "simulator=pyretechnics", f"tracking.uri={uri}",
               f"hydra.run.dir={work / 'run'}", f"landscape.cache_dir={work / 'landscapes'}")
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("firebreak_exp").experiment_id])
    return {"work": work, "uri": uri, "run_dir": work / "run", "run_id": run.info.run_id, "client": client}


def check_evaluation(folder: Path, methods: list, budgets: list) -> dict:
    result = json.loads((folder / "evaluation.json").read_text())
    assert result["budgets"] == budgets
    assert list(result["methods"]) == methods
    for name, method in result["methods"].items():
        assert set(method) == METRIC_KEYS, name
        assert all(len(method[k]) == len(budgets) for k in METRIC_KEYS)
        for r, (lo, hi) in zip(method["R"], method["R_ci"]):
            assert lo <= r + 1e-12 and r <= hi + 1e-12
        assert all(0 <= ba <= 1 for ba in method["burned_fraction"])
        assert all(s >= 0 for s in method["plan_seconds"])
    if "no_treatment" in methods:
        assert result["methods"]["no_treatment"]["R"] == [0.0] * len(budgets)
        assert result["methods"]["no_treatment"]["R_ci"] == [[0.0, 0.0]] * len(budgets)
    for plot in PLOTS:
        assert (folder / "plots" / plot).stat().st_size > 0, plot
    return result


def evaluation_run(client: MlflowClient):
    experiment = client.get_experiment_by_name("firebreak_exp").experiment_id
    runs = client.search_runs([experiment], "tags.run_kind = 'evaluation'", order_by=["attributes.start_time DESC"])
    return runs[0]


@pytest.mark.slow
def test_evaluate_a_checkpoint_path(trained):
    out = trained["work"] / "eval_path"
    result = run_module("firebreak_exp.evaluate", f"checkpoint={trained['run_dir'] / 'checkpoints' / 'best.pt'}",
                        f"tracking.uri={trained['uri']}", f"hydra.run.dir={out}", "budgets=[2,5]",
                        "num_ignitions=4", "random_seeds=2", "simulator=travel_time")
    methods = ["no_treatment", "random", "domirank", "greedy", "flow", "policy"]
    evaluation = check_evaluation(out, methods, [2.0, 5.0])
    assert evaluation["simulator"].endswith("TravelTimeSimulator")      # the override applies on the archive
    assert evaluation["training_run_id"] == trained["run_id"]
    assert evaluation["num_tiles"] == len(evaluation["tiles"]) >= 2
    assert "policy" in result.stdout and "R" in result.stdout
    run = evaluation_run(trained["client"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["training_run_id"] == trained["run_id"]
    assert run.data.metrics["no_treatment/R_budget_5"] == 0.0 and "policy/R_budget_2" in run.data.metrics
    files = {a.path for a in trained["client"].list_artifacts(run.info.run_id)}
    files |= {a.path for a in trained["client"].list_artifacts(run.info.run_id, "plots")}
    assert {"evaluation.json", *(f"plots/{p}" for p in PLOTS)} <= files


@pytest.mark.slow
def test_evaluate_an_mlflow_run_id(trained):
    out = trained["work"] / "eval_run_id"
    run_module("firebreak_exp.evaluate", f"checkpoint={trained['run_id']}", "checkpoint_file=last.pt",
               f"tracking.uri={trained['uri']}", f"hydra.run.dir={out}", "budgets=[5]", "num_ignitions=3",
               "methods=[no_treatment,domirank,policy]", "max_tiles=2")
    evaluation = check_evaluation(out, ["no_treatment", "domirank", "policy"], [5.0])
    assert evaluation["training_run_id"] == trained["run_id"] and evaluation["num_tiles"] == 2
    assert evaluation["simulator"].endswith("PyretechnicsSimulator")    # the training run's simulator
    run = evaluation_run(trained["client"])
    assert run.info.status == "FINISHED" and run.data.tags["training_run_id"] == trained["run_id"]


@pytest.mark.slow
def test_baselines_without_a_checkpoint(tmp_path):
    out = tmp_path / "eval"
    result = run_module("firebreak_exp.evaluate", "experiment=smoke", f"tracking.uri=sqlite:///{tmp_path / 'db.sqlite'}",
                        f"hydra.run.dir={out}", f"landscape.cache_dir={tmp_path / 'landscapes'}", "budgets=[5]",
                        "num_ignitions=3", "random_seeds=2", "max_tiles=2", "simulator=travel_time",
                        "methods=[no_treatment,random,domirank]")
    check_evaluation(out, ["no_treatment", "random", "domirank"], [5.0])
    assert "domirank" in result.stdout
    run = evaluation_run(MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'db.sqlite'}"))
    assert run.info.status == "FINISHED" and "training_run_id" not in run.data.tags


def test_a_missing_checkpoint_exits_2_with_one_line(tmp_path):
    result = run_module("firebreak_exp.evaluate", "experiment=smoke", "checkpoint=/no/such/checkpoint.pt",
                        f"tracking.uri=sqlite:///{tmp_path / 'db.sqlite'}", f"hydra.run.dir={tmp_path / 'eval'}",
                        expect=2, timeout=300)
    assert "/no/such/checkpoint.pt" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("key, value, expected", [
    ("methods", ["no_treatment", "oracle"], "oracle"),
    ("budgets", [0.0], "budgets"),
    ("num_ignitions", 0, "num_ignitions"),
    ("planners.domirank.sigma_fraction", 1.5, r"planners.domirank.sigma_fraction=1.5: expected a value in \(0, 1\)"),
    ("planners.policy_search.rollouts", 0, "planners.policy_search.rollouts=0: expected a positive integer"),
    ("planners.flow_search.temperature", 0.0, "planners.flow_search.temperature=0.0: expected a positive"),
    ("planners.policy_search.swap_candidates", -1, r"planners.policy_search.swap_candidates=-1: expected an integer >= 0"),
    ("planners.flow_search.swap_passes", -2, r"planners.flow_search.swap_passes=-2: expected an integer >= 0")])
def test_bad_evaluation_settings_name_the_key(key, value, expected):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from firebreak_exp.commands.evaluate import check_evaluation_values
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("evaluate")
    OmegaConf.update(cfg, key, value)
    with pytest.raises(ValueError, match=expected):
        check_evaluation_values(cfg)


def test_an_unknown_run_id_is_a_clear_error(tmp_path):
    from firebreak_exp.commands.evaluate import resolve_checkpoint
    with pytest.raises(FileNotFoundError, match="no such run"):
        resolve_checkpoint("0" * 32, "best.pt", f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "dl")
    with pytest.raises(FileNotFoundError, match="not an MLflow run id"):
        resolve_checkpoint("not-a-run", "best.pt", f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "dl")
