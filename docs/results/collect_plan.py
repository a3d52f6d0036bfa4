"""docs/results/plan.json from the run folders of the commands in docs/plan.md (Measured on the Worcester sample)."""
import json
from pathlib import Path

runs = Path("outputs/plans")
def load(name):
    folder = runs / name
    path = folder / "comparison.json"
    if path.exists():
        return json.loads(path.read_text())
    record = json.loads((folder / "plan.json").read_text())
    return {**record, "methods": {record["method"]: record}}

def summary(name, note):
    c = load(name)
    return {"run": name, "note": note, "shape": c["landscape"]["shape"], "window": c["landscape"]["window"],
            "burnable_cells": c["landscape"]["burnable_cells"], "planning": {k: c["planning"].get(k) for k in
            ("ignitions", "batch_percent", "batch_cells", "plan_window", "ignitions_per_window")},
            "scoring_ignitions": c["scoring"]["ignitions"], "setup_seconds": round(c["setup_seconds"], 1),
            "peak_rss_mb": round(c["peak_rss_mb"]),
            "methods": {m: {"R": round(v["R"], 4), "R_ci": [round(x, 4) for x in v["R_ci"]],
                            "break_cells": v["break_cells"], "break_hectares": round(v["break_hectares"], 1),
                            "burned_hectares_untreated": round(v["burned_area_untreated"]["hectares"], 2),
                            "burned_hectares_treated": round(v["burned_area_treated"]["hectares"], 2),
                            "plan_seconds": round(v["plan_seconds"], 1),
                            "scoring_seconds": round(v["scoring_seconds"], 1)} for m, v in c["methods"].items()}}

sizes = [("150_200_100_100", "100 x 100"), ("100_150_200_200", "200 x 200"), ("60_120_300_400", "300 x 400")]
result = {
    "machine": "2 CPU cores shared with other jobs (load average 10-15 during the runs), no GPU",
    "checkpoint": "outputs/runs/worcester_policy: python -m firebreak_exp landscape=landfire "
                  "landscape.raster_dir=../shared/data/landfire/worcester_vt hydra.run.dir=outputs/runs/worcester_policy",
    "whole_grid": summary("worcester_whole", "method=[policy,flow,random,domirank], the whole grid at once"),
    "windows_25": summary("worcester_whole_window25", "the same with plan_window=25"),
    "windows_25_batch_1": summary("worcester_whole_window25_batch1", "policy, plan_window=25 batch_percent=1"),
    "scaling_whole_grid": [summary(f"worcester_window_{w}", size) for w, size in sizes]
                          + [summary("worcester_whole", "400 x 549")],
    "scaling_windows_25": [summary(f"worcester_window25_{w}", size) for w, size in sizes]
                          + [summary("worcester_whole_window25", "400 x 549")],
    "training_tile_size": [summary("worcester_tile_150_200_25_25", "25 x 25, num_ignitions=32"),
                           summary("worcester_tile_150_200_50_50", "50 x 50, num_ignitions=32")],
}
Path("docs/results/plan.json").write_text(json.dumps(result, indent=1) + "\n")
