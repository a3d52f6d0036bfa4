"""The benchmark's report: the table, notes, the speed-up plot, MLflow metrics and JSON files."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import List

import numpy as np

from firebreak_exp.atomic import write_text_atomically
from firebreak_exp.commands.benchmark_measure import FIDELITY_TARGETS, PROCESS_SPEEDUP_TARGET


# Report
# ---------------------------------------------------------------------------------------------------------

def _fmt(value, pattern: str = "{:.2f}") -> str:
    return "-" if value is None else pattern.format(value)


def format_table(report: dict) -> str:
    """The results as a fixed-width text table, with the learner, recommendation, fidelity and notes."""
    machine, learner = report["machine"], report["learner"]
    lines = [f"machine: {machine['cores']} cores ({machine['cpu_model']}), {machine['memory_gib']} GiB, "
             f"python {machine['python']}, torch {machine['torch']}, numpy {machine['numpy']}; "
             f"load average {machine.get('load_average_start')} -> {machine.get('load_average_end')}",
             f"landscape: {report['landscape']}",
             "",
             f"{'simulator':<13}{'backend':<11}{'envs':>5}{'workers':>8}{'sims/s':>10}{'exp/s':>10}"
             f"{'updates/s':>10}{'speedup':>9}{'effic.':>8}{'spread':>8}{'reps':>5}{'bound':>7}{'outside':>8}"
             f"{'cpu':>6}{'shared':>8}"]
    for r in report["results"]:
        lines.append(f"{r['simulator']:<13}{r['backend']:<11}{r['num_envs']:>5}{r['max_workers']:>8}"
                     f"{r['sims_per_s']:>10.1f}{r['experiences_per_s']:>10.1f}{r['updates_per_s']:>10.1f}"
                     f"{_fmt(r['speedup_vs_sequential']):>9}{_fmt(r['efficiency']):>8}"
                     f"{r['spread']:>8.2f}{r['repeats']:>5}{_fmt(r.get('balance_bound')):>7}"
                     f"{_fmt(r.get('outside_env_fraction'), '{:.0%}'):>8}"
                     f"{_fmt(r.get('env_cpu_share'), '{:.0%}'):>6}"
                     f"{_fmt(r.get('fires_shared'), '{:.0%}'):>8}")
    def setting_label(key: str) -> str:     # "threads_2/onednn_on/demonstrations" -> "threads 2, oneDNN on, ..."
        return ", ".join(part.replace("onednn", "oneDNN").replace("_", " ") for part in key.split("/"))
    settings = ", ".join(f"{v:.1f} ({setting_label(k)})" for k, v in learner["updates_per_s_by_setting"].items())
    with_demos = learner.get("updates_per_s_with_demonstrations")
    demos = "" if with_demos is None else (f", {with_demos:.1f} with {learner['demonstration_share']:.0%} expert "
                                           f"demonstrations in the buffer (the margin loss), as a training run ends")
    lines += ["", f"learner: {learner['updates_per_s']:.1f} updates/s with {learner['threads']} thread(s) and oneDNN "
                  f"{'on' if learner['onednn'] else 'off'} as training runs (trainer.deterministic turns it off){demos}; "
                  f"batch {learner['batch_size']}, grid {'x'.join(map(str, learner['grid']))}, {learner['channels']} "
                  f"channels x {learner['num_layers']} layers, {learner['parameters']} parameters, {learner['device']}, "
                  f"spread {learner['spread']:.2f}; all settings: {settings}"]
    for simulator, entry in report["recommended"]["by_simulator"].items():
        lines.append(f"recommended for {simulator}: backend={entry['backend']} num_envs={entry['num_envs']} "
                     f"max_workers={entry['max_workers']} ({entry['experiences_per_s']:.1f} experiences/s)")
    for e2e in report.get("end_to_end", []):
        lines.append(f"end to end with learning ({e2e['simulator']}, {e2e['backend']} x {e2e['num_envs']}, "
                     f"train_frequency {e2e['train_frequency']}, {e2e['learner_threads']} learner thread(s)): "
                     f"{e2e['experiences_per_s']:.1f} experiences/s, "
                     f"{e2e['updates_per_s']:.1f} updates/s")
    for f in report.get("fidelity_by_grid_size", []):
        lines.append(f"fidelity {f['grid_size']}x{f['grid_size']} ({f['simulator']} vs {f['reference']}, "
                     f"{f['num_tiles']} held-out tiles, {f['num_ignitions']} fires, {f['num_plans']} plans): "
                     f"speedup {f['speedup']:.1f}x (target >= {FIDELITY_TARGETS['speedup']:.0f}), "
                     f"burned_fraction_mae {f['burned_fraction_mae']:.4f} "
                     f"(<= {FIDELITY_TARGETS['burned_fraction_mae']}), "
                     f"iou_mean {f['iou_mean']:.3f}, plan_spearman {f['plan_spearman']:.3f} "
                     f"(>= {FIDELITY_TARGETS['plan_spearman']})")
    lines += ["", "bound: the speedup the slowest worker of each step allows (environment step times measured in the "
                  "workers; - where workers burned each other's fires, which their steps then include); shared: "
                  "share of the fires a process worker burned for another worker's environment; outside: share of "
                  "wall time outside the busiest worker's environment steps (acting, replay, pipes, waiting for a "
                  "core); cpu: CPU time / wall time of the processes running the "
                  "environments while they step (100% = a core each; less = the cores were shared)"]
    lines += [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines)


def joblib_notes(results: List[dict]) -> List[str]:
    """Per simulator and num_envs >= 2: the joblib backend's experiences/s over the process backend's with as
    many workers (the process backend's workers also burn each other's fires)."""
    notes = []
    process = {(r["simulator"], r["num_envs"], r["max_workers"]): r for r in results if r["backend"] == "process"}
    for row in results:
        other = process.get((row["simulator"], row["num_envs"], row["max_workers"]))
        if row["backend"] != "joblib" or row["num_envs"] < 2 or other is None or other["experiences_per_s"] <= 0:
            continue
        speedup = row["speedup_vs_sequential"]
        notes.append(f"joblib backend, {row['simulator']}, num_envs={row['num_envs']}, {row['max_workers']} workers: "
                     f"{row['experiences_per_s'] / other['experiences_per_s']:.2f}x the process backend's "
                     f"experiences/s" + (f" ({speedup:.2f}x sequential)" if speedup is not None else "") + ".")
    return notes


def notes_for(results: List[dict], cores: int) -> List[str]:
    """Plain statements about what the numbers mean on this machine (GIL, the process target)."""
    notes = []
    thread = [r["efficiency"] for r in results if r["backend"] == "thread" and r["num_envs"] > 1
              and r["efficiency"] is not None]
    if thread:
        notes.append(f"thread backend: Python threads share one interpreter lock (GIL); only code that releases "
                     f"it (parts of numpy/scipy and compiled simulator loops) runs in parallel, and the Python "
                     f"part of every step never does, so threads scale at most as far as that part allows; "
                     f"measured efficiency {min(thread):.2f}-{max(thread):.2f} (1.0 = perfect scaling over "
                     f"min(num_envs, {cores}) cores).")
    for simulator in dict.fromkeys(r["simulator"] for r in results):
        process = [r for r in results if r["backend"] == "process" and r["simulator"] == simulator
                   and r["num_envs"] >= 2 and r["speedup_vs_sequential"] is not None]
        if process:
            best = max(process, key=lambda r: r["speedup_vs_sequential"])
            target = min(PROCESS_SPEEDUP_TARGET, 0.9 * cores)
            why = ""
            if best.get("balance_bound") is not None:
                why = (f"; there the slowest worker of each step allowed {best['balance_bound']:.2f}x and "
                       f"{best['outside_env_fraction']:.0%} of the time went outside environment steps")
            elif best.get("fires_shared"):
                why = f"; there workers burned {best['fires_shared']:.0%} of the fires for each other's environments"
            notes.append(f"process backend, {simulator}: best speedup {best['speedup_vs_sequential']:.2f}x "
                         f"sequential at num_envs={best['num_envs']} with {best['max_workers']} workers (target >= "
                         f"{target:.1f}x at num_envs >= 2, limit {min(cores, max(r['num_envs'] for r in process))}x "
                         f"on {cores} cores){why}.")
    notes += joblib_notes(results)
    shares = [r["env_cpu_share"] for r in results if r["backend"] == "process" and r["num_envs"] >= 2
              and r["max_workers"] <= cores and r.get("env_cpu_share") is not None]
    if shares and statistics.median(shares) < 0.85:
        notes.append(f"the machine was busy: process workers got only {statistics.median(shares):.0%} of a core "
                     f"while stepping (CPU time / wall time, median over the process rows with at most {cores} "
                     f"workers); other jobs "
                     f"shared the cores (Linux shares CPU time per session), so parallel speedups are understated. "
                     f"Re-run on an idle machine before trusting speedups and the recommendation.")
    notes.append("rates are wall-clock on a machine that may be shared: the load averages above show how busy "
                 "it was; compare ratios from one run.")
    return notes


def plot_speedup(report: dict, path: Path) -> Path:
    """Speedup over sequential and experiences/s against num_envs, one line per backend, per simulator."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    results, cores = report["results"], report["machine"]["cores"]
    simulators = list(dict.fromkeys(r["simulator"] for r in results))
    fig, axes = plt.subplots(2, len(simulators), figsize=(5.5 * len(simulators), 8), squeeze=False)
    for column, simulator in enumerate(simulators):
        rows = [r for r in results if r["simulator"] == simulator]
        envs = sorted({r["num_envs"] for r in rows})
        speed_ax, rate_ax = axes[0][column], axes[1][column]
        speed_ax.plot(envs, [min(n, cores) for n in envs], "k--", linewidth=1, label=f"ideal (min(n, {cores} cores))")
        def series(row):
            return row["backend"] + (", a worker per env" if row["backend"] != "sequential"
                                     and row["max_workers"] == row["num_envs"] > min(row["num_envs"], cores) else "")
        for label in dict.fromkeys(series(r) for r in rows):
            mine = sorted((r for r in rows if series(r) == label), key=lambda r: r["num_envs"])
            xs = [r["num_envs"] for r in mine]
            speed_ax.plot(xs, [r["speedup_vs_sequential"] or np.nan for r in mine], "o-", label=label)
            rate_ax.plot(xs, [r["experiences_per_s"] for r in mine], "o-", label=label)
        speed_ax.set(title=f"{simulator}: speedup vs sequential (simulations/s)", xlabel="num_envs",
                     ylabel="speedup")
        rate_ax.set(title=f"{simulator}: experience collection", xlabel="num_envs", ylabel="experiences/s")
        for ax in (speed_ax, rate_ax):
            ax.set_xscale("log", base=2)
            ax.set_xticks(envs, [str(n) for n in envs])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"{report['machine']['cores']} cores, {report['machine']['cpu_model']}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def benchmark_metrics(report: dict) -> dict:
    """Flat MLflow metrics: per result row (named simulator/backend/n<num_envs>/w<max_workers>), the learner,
    end to end, fidelity and the recommendation."""
    metrics = {}
    for r in report["results"]:
        prefix = f"{r['simulator']}/{r['backend']}/n{r['num_envs']}/w{r['max_workers']}"
        for key in ("sims_per_s", "experiences_per_s", "speedup_vs_sequential", "efficiency", "spread"):
            if r.get(key) is not None:
                metrics[f"{prefix}/{key}"] = r[key]
    metrics["learner/updates_per_s"] = report["learner"]["updates_per_s"]
    if report["learner"].get("updates_per_s_with_demonstrations") is not None:
        metrics["learner/updates_per_s_with_demonstrations"] = report["learner"]["updates_per_s_with_demonstrations"]
    for setting, value in report["learner"]["updates_per_s_by_setting"].items():
        metrics[f"learner/updates_per_s/{setting}"] = value
    for e2e in report.get("end_to_end", []):
        metrics[f"end_to_end/{e2e['simulator']}/experiences_per_s"] = e2e["experiences_per_s"]
        metrics[f"end_to_end/{e2e['simulator']}/updates_per_s"] = e2e["updates_per_s"]
    for f in report.get("fidelity_by_grid_size", []):
        for key in ("speedup", "burned_fraction_mae", "iou_mean", "plan_spearman"):
            if f[key] is not None and np.isfinite(f[key]):
                metrics[f"fidelity/{f['grid_size']}/{key}"] = f[key]
    metrics["recommended/num_envs"] = report["recommended"]["num_envs"]
    metrics["recommended/max_workers"] = report["recommended"]["max_workers"]
    return metrics


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_json(data: dict, path: Path) -> Path:
    return write_text_atomically(path, json.dumps(data, indent=2, default=_json_default))
