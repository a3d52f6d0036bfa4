"""docs/results/plan.json: the plan command's figures on the Worcester sample (docs/plan.md, Measured on the
Worcester sample).

    python docs/results/collect_plan.py --run   # runs every plan below into outputs/plans/<name>, then collects
    python docs/results/collect_plan.py --run worcester_default   # runs that plan again, then collects
    python docs/results/collect_plan.py         # collects the run folders already there

Needs the policy trained on the sample in outputs/runs/worcester_policy (the command is in CHECKPOINT), and
the policies of training seeds 1 and 2 in outputs/multirun/worcester/{1,2} (docs/learning.md, Worcester).
Each run records the machine's 1-minute load average when it started, as the times depend on it.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

RUNS = Path("outputs/plans")
CHECKPOINT = ("python -m firebreak_exp landscape=landfire landscape.raster_dir=../shared/data/landfire/worcester_vt "
              "hydra.run.dir=outputs/runs/worcester_policy")
POLICY = "checkpoint=outputs/runs/worcester_policy"
SAMPLE = ["landscape=landfire",
          "landscape.raster_dir=../shared/data/landfire/worcester_vt", "budget_percent=5"]
SIZES = [("150,200,100,100", "100 x 100"), ("100,150,200,200", "200 x 200"), ("60,120,300,400", "300 x 400")]
#: name: (overrides after SAMPLE, note)
PLANS = {
    "worcester_default": (["method=[policy,policy_search,flow,flow_search,random,domirank]"],
                          "the defaults: plan_window=25, window_budget=risk"),
    "worcester_window25_burnable": (["method=[policy,flow]", "window_budget=burnable"],
                                    "plan_window=25, window_budget=burnable"),
    "worcester_whole_grid": (["method=[policy,flow]", "plan_window=null"], "plan_window=null: the whole grid at once"),
    **{f"worcester_window_{w.replace(',', '_')}": (["method=[policy,policy_search,flow,flow_search]",
                                                    f"window=[{w}]"], size)
       for w, size in SIZES},
    "worcester_tile_25": (["method=[policy,flow,random]", "window=[150,200,25,25]", "plan_window=null",
                           "num_ignitions=32"], "25 x 25, num_ignitions=32"),
    "worcester_tile_50": (["method=[policy,flow,random]", "window=[150,200,50,50]", "plan_window=null",
                           "num_ignitions=32"], "50 x 50, num_ignitions=32"),
    **{f"worcester_seed{seed}": (["method=[policy,policy_search,flow,flow_search]",
                                  f"checkpoint=outputs/multirun/worcester/{seed}"],
                                 f"the policy of training seed {seed} (its config's seed draws the fires)")
       for seed in (1, 2)},
}


def run(name: str) -> None:
    overrides, _ = PLANS[name]
    folder = RUNS / name
    load = os.getloadavg()[0]
    checkpoint = [] if any(o.startswith("checkpoint=") for o in overrides) else [POLICY]
    subprocess.run([sys.executable, "-m", "firebreak_exp.plan", *checkpoint, *overrides, *SAMPLE,
                    f"hydra.run.dir={folder}"], check=True)
    (folder / "load_average.json").write_text(json.dumps({"load_average_1min": load}) + "\n")


def load(name: str) -> dict:
    folder = RUNS / name
    path = folder / "comparison.json"
    if path.exists():
        return json.loads(path.read_text())
    record = json.loads((folder / "plan.json").read_text())
    return {**record, "methods": {record["method"]: record}}


def summary(name: str) -> dict:
    c, note = load(name), PLANS[name][1]
    load_path = RUNS / name / "load_average.json"
    return {"run": name, "note": note, "shape": c["landscape"]["shape"], "window": c["landscape"]["window"],
            "burnable_cells": c["landscape"]["burnable_cells"], "planning": {k: c["planning"].get(k) for k in
            ("ignitions", "batch_percent", "batch_cells", "plan_window", "ignitions_per_window", "window_budget",
             "risk_ignitions")},
            "windows": max(v["planning"]["windows"] for v in c["methods"].values()),
            "scoring_ignitions": c["scoring"]["ignitions"], "setup_seconds": round(c["setup_seconds"], 1),
            "peak_rss_mb": round(c["peak_rss_mb"]),
            "load_average_1min": json.loads(load_path.read_text())["load_average_1min"] if load_path.exists() else None,
            "methods": {m: {"R": round(v["R"], 4), "R_ci": [round(x, 4) for x in v["R_ci"]],
                            "break_cells": v["break_cells"], "break_hectares": round(v["break_hectares"], 1),
                            "burned_hectares_untreated": round(v["burned_area_untreated"]["hectares"], 2),
                            "burned_hectares_treated": round(v["burned_area_treated"]["hectares"], 2),
                            "plan_seconds": round(v["plan_seconds"], 1),
                            "scoring_seconds": round(v["scoring_seconds"], 1)} for m, v in c["methods"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs="*", metavar="NAME", choices=list(PLANS),
                        help="run these plans first (none named: all of them, about 15 minutes on 2 cores)")
    names = parser.parse_args().run
    for name in (PLANS if names == [] else names or []):
        run(name)
    result = {
        "machine": f"{os.cpu_count()} CPU cores shared with other jobs (load average per run), no GPU",
        "checkpoint": f"outputs/runs/worcester_policy: {CHECKPOINT}",
        "default": summary("worcester_default"),
        "windows_25_burnable": summary("worcester_window25_burnable"),
        "whole_grid": summary("worcester_whole_grid"),
        "scaling": [summary(f"worcester_window_{w.replace(',', '_')}") for w, _ in SIZES]
                   + [{**summary("worcester_default"), "note": "400 x 549"}],
        "training_tile_size": [summary("worcester_tile_25"), summary("worcester_tile_50")],
        "training_seeds": [{**summary("worcester_default"), "note": "the policy of training seed 0"}]
                          + [summary(f"worcester_seed{seed}") for seed in (1, 2)],
    }
    Path("docs/results/plan.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
