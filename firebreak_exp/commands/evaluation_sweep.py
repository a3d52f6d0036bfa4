"""An evaluation across checkpoints (seeds): ``python -m firebreak_exp.evaluate -m checkpoint=<a>,<b>,<c>``.

Each job of the multirun writes its ``evaluation.json`` into ``<sweep dir>/<job>/``; at the end of the sweep
:class:`EvaluationSweepCallback` gathers them into ``<sweep dir>/summary.json`` and logs it, with its
metrics, to the sweep's MLflow parent run. Per method and budget (% of burnable cells) the summary holds
R = 1 - BA/BA0 of every checkpoint, their mean, the worst (smallest) and a 95 % interval of the mean
(:func:`mean_interval`); the ratio of R to the best baseline of the same checkpoint (the larger R of fire
flow and greedy, among the methods evaluated), its mean and worst; the same against the search guided by
fire flow (``flow_search``) when it was evaluated, which shows what learning adds to a search; and the
planning seconds per tile.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from firebreak_exp.atomic import write_text_atomically
from firebreak_exp.commands.tracking import MultirunParentCallback

__all__ = ["BASELINES", "mean_interval", "summarize_checkpoints", "EvaluationSweepCallback", "format_summary"]

#: The planners needing no training whose larger R is "the best baseline".
BASELINES = ("flow", "greedy")
#: The search guided by fire flow, the baseline of the searches guided by a network.
SEARCH_BASELINE = "flow_search"


def _ratios(r: np.ndarray, reference: Optional[np.ndarray]) -> dict:
    """Per checkpoint and budget R / reference's R, with its mean and worst over checkpoints (None without one)."""
    if reference is None:
        return {"per_checkpoint": None, "mean": None, "worst": None}
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(reference > 0, r / np.where(reference > 0, reference, 1.0), np.nan)
    return {"per_checkpoint": ratio.tolist(), "mean": np.nanmean(ratio, axis=0).tolist(),
            "worst": np.nanmin(ratio, axis=0).tolist()}


def mean_interval(burned: Sequence[np.ndarray], untreated: Sequence[np.ndarray], confidence: float = 0.95,
                  resamples: int = 2000, seed: int = 0) -> tuple:
    """Percentile bootstrap interval of the mean over checkpoints of R = 1 - mean(BA)/mean(BA0), resampling
    each checkpoint's tiles (paired BA, BA0; one array of fractions per checkpoint)."""
    rng = np.random.default_rng(seed)
    values = np.zeros(resamples)
    for b, u in zip(burned, untreated):
        b, u = np.asarray(b, float), np.asarray(u, float)
        idx = rng.integers(0, len(b), size=(resamples, len(b)))
        base = u[idx].mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            values += np.where(base > 0, 1.0 - b[idx].mean(axis=1) / base, 0.0)
    values /= max(len(burned), 1)
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha))


def summarize_checkpoints(evaluations: Sequence[dict], labels: Optional[Sequence[str]] = None) -> dict:
    """The summary across checkpoints of several ``evaluation.json`` results (same budgets and methods).

    Returns ``{"budgets", "checkpoints", "baselines", "methods": {name: {"R": [per checkpoint][per budget],
    "R_mean", "R_worst", "R_mean_ci", "ratio_to_best_baseline", "ratio_mean", "ratio_worst",
    "ratio_to_flow_search", "plan_seconds"}}}`` (lists over budgets; ratios are null without a baseline;
    ``ratio_to_flow_search`` holds ``per_checkpoint``, ``mean`` and ``worst``).
    """
    if not evaluations:
        raise ValueError("no evaluation.json to summarize")
    budgets = list(evaluations[0]["budgets"])
    for e in evaluations:
        if list(e["budgets"]) != budgets:
            raise ValueError(f"evaluations disagree on budgets: {budgets} and {e['budgets']}")
    names = [m for m in evaluations[0]["methods"] if all(m in e["methods"] for e in evaluations)]
    baselines = [b for b in BASELINES if b in names]
    methods = {}
    for name in names:
        r = np.array([e["methods"][name]["R"] for e in evaluations])                   # (K, B)
        best = (np.max([[e["methods"][b]["R"] for b in baselines] for e in evaluations], axis=1)
                if baselines else None)                                                  # (K, B)
        ci = []
        for j in range(len(budgets)):
            if all("burned_fraction_per_tile" in e for e in evaluations):
                burned = [np.asarray(e["burned_fraction_per_tile"][name])[:, j] for e in evaluations]
                ci.append(list(mean_interval(burned, [e["burned_fraction_untreated"] for e in evaluations],
                                             seed=j)))
            else:
                ci.append(None)
        ratio = _ratios(r, best)
        search = (np.array([e["methods"][SEARCH_BASELINE]["R"] for e in evaluations])
                  if SEARCH_BASELINE in names else None)
        methods[name] = {
            "R": r.tolist(), "R_mean": r.mean(axis=0).tolist(), "R_worst": r.min(axis=0).tolist(), "R_mean_ci": ci,
            "ratio_to_best_baseline": ratio["per_checkpoint"], "ratio_mean": ratio["mean"],
            "ratio_worst": ratio["worst"], "ratio_to_flow_search": _ratios(r, search),
            "plan_seconds": np.mean([e["methods"][name]["plan_seconds"] for e in evaluations], axis=0).tolist()}
    labels = list(labels) if labels is not None else [str(e.get("checkpoint")) for e in evaluations]
    if labels and len(set(labels)) < len(labels):
        labels = [f"{label} (job {i})" for i, label in enumerate(labels)]
    return {"budgets": budgets, "checkpoints": labels, "baselines": baselines, "methods": methods}


def format_summary(summary: dict) -> str:
    """A plain-text table: one row per method and budget."""
    lines = [f"{'method':<20}{'budget %':>9}{'R mean':>9}{'95% CI':>20}{'worst':>8}{'÷ best':>8}"
             f"{'worst ÷':>9}{'÷ f.search':>11}{'plan s':>9}"]
    for name, m in summary["methods"].items():
        for j, b in enumerate(summary["budgets"]):
            ci = m["R_mean_ci"][j]
            interval = f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "-"
            ratio = "-" if m["ratio_mean"] is None else f"{m['ratio_mean'][j]:.3f}"
            worst = "-" if m["ratio_worst"] is None else f"{m['ratio_worst'][j]:.3f}"
            search = m.get("ratio_to_flow_search", {}).get("mean")
            search = "-" if search is None else f"{search[j]:.3f}"
            lines.append(f"{name:<20}{b:>9g}{m['R_mean'][j]:>9.4f}{interval:>20}{m['R_worst'][j]:>8.4f}"
                         f"{ratio:>8}{worst:>9}{search:>11}{m['plan_seconds'][j]:>9.3f}")
    return "\n".join(lines)


def summary_metrics(summary: dict) -> dict:
    """MLflow metrics of a summary: ``<method>/R_mean_budget_<b>`` and the like."""
    metrics = {}
    for name, m in summary["methods"].items():
        for j, b in enumerate(summary["budgets"]):
            suffix = f"budget_{b:g}"
            metrics[f"{name}/R_mean_{suffix}"] = m["R_mean"][j]
            metrics[f"{name}/R_worst_{suffix}"] = m["R_worst"][j]
            if m["R_mean_ci"][j]:
                metrics[f"{name}/R_mean_ci_low_{suffix}"], metrics[f"{name}/R_mean_ci_high_{suffix}"] = \
                    m["R_mean_ci"][j]
            if m["ratio_mean"] is not None:
                metrics[f"{name}/ratio_to_best_baseline_mean_{suffix}"] = m["ratio_mean"][j]
                metrics[f"{name}/ratio_to_best_baseline_worst_{suffix}"] = m["ratio_worst"][j]
            if m["ratio_to_flow_search"]["mean"] is not None:
                metrics[f"{name}/ratio_to_flow_search_mean_{suffix}"] = m["ratio_to_flow_search"]["mean"][j]
            metrics[f"{name}/plan_seconds_{suffix}"] = m["plan_seconds"][j]
    return metrics


class EvaluationSweepCallback(MultirunParentCallback):
    """The parent run of an evaluation multirun, which also writes and logs the summary across its jobs."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        found = sorted(sweep_dir.glob("*/evaluation.json"), key=lambda p: (len(p.parent.name), p.parent.name))
        tracker = getattr(self, "_tracker", None)
        if found:
            evaluations = [json.loads(p.read_text()) for p in found]
            summary = summarize_checkpoints(evaluations)
            summary["jobs"] = [p.parent.name for p in found]
            path = sweep_dir / "summary.json"
            write_text_atomically(path, json.dumps(summary, indent=2))
            if tracker is not None:
                tracker.log_metrics(summary_metrics(summary), 0)
                tracker.log_artifact(path)
            print(f"Across {len(found)} checkpoints (R mean, its bootstrap 95% CI over tiles, the worst "
                  f"checkpoint, R ÷ best of {'/'.join(summary['baselines']) or 'no baseline'}):")
            print(format_summary(summary))
            print(f"summary.json in {sweep_dir}")
        super().on_multirun_end(config, **kwargs)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m firebreak_exp.commands.evaluation_sweep <summary.json | evaluation.json ...>``: print the table of a
    summary, or summarize the given evaluations (one per checkpoint) and print it."""
    import sys
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    if not paths or any(not p.is_file() for p in paths):
        print("usage: python -m firebreak_exp.commands.evaluation_sweep <summary.json | evaluation.json ...> "
              "(existing files)", file=sys.stderr)
        return 2
    loaded = [json.loads(p.read_text()) for p in paths]
    summary = loaded[0] if len(loaded) == 1 and "R_mean" in next(iter(loaded[0]["methods"].values())) \
        else summarize_checkpoints(loaded, [str(p) for p in paths])
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
