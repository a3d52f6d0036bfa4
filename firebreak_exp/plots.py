"""Plots logged with runs: training curves and fuel-break maps (matplotlib, no display needed)."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_training_curves(history: dict, path: Path) -> Path:
    """Episode return (with a moving average) and learner loss."""
    fig, (ax_return, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.5))
    returns = np.asarray(history["return"], float)
    if len(returns):
        ax_return.plot(history["episode"], returns, ".", alpha=0.3, label="episode")
        window = max(1, min(20, len(returns) // 5))
        smooth = np.convolve(returns, np.ones(window) / window, mode="valid")
        ax_return.plot(history["episode"][window - 1:], smooth, label=f"mean of {window}")
        ax_return.legend()
    ax_return.set(xlabel="episode", ylabel="return (burned fraction reduction)", title="Return")
    if history["loss"]:
        ax_loss.plot(history["loss_step"], history["loss"])
        ax_loss.set_yscale("log")
    ax_loss.set(xlabel="experiences", ylabel="Huber loss", title="Loss")
    return _save(fig, path)


def plot_fuel_breaks(example: dict, path: Path) -> Path:
    """Fuel model with the placed breaks, and burn probability before and after treatment."""
    tile, breaks = example["tile"], example["fuel_breaks"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    axes[0].imshow(tile.fuel_model, cmap="tab20", interpolation="nearest")
    rows, cols = np.nonzero(breaks)
    axes[0].scatter(cols, rows, marker="s", s=12, c="black", label="fuel break")
    axes[0].legend(loc="lower right", fontsize=7)
    axes[0].set_title(f"{tile.name}: fuel model and breaks")
    for ax, key, title in ((axes[1], "burn_probability_before", "untreated"),
                           (axes[2], "burn_probability_after", "with breaks")):
        image = ax.imshow(example[key], vmin=0, vmax=1, cmap="hot_r", interpolation="nearest")
        ax.set_title(f"burn probability, {title}")
        fig.colorbar(image, ax=ax, fraction=0.046)
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    return _save(fig, path)


def plot_r_against_budget(summary: dict, path: Path) -> Path:
    """R = 1 - BA/BA0 against the budget (% of burnable cells), one line per method, with CI error bars."""
    budgets = np.asarray(summary["budgets"], float)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, method in summary["methods"].items():
        r = np.asarray(method["R"], float)
        ci = np.asarray(method["R_ci"], float).reshape(-1, 2)
        yerr = np.clip(np.stack([r - ci[:, 0], ci[:, 1] - r]), 0, None)
        ax.errorbar(budgets, r, yerr=yerr, marker="o", capsize=3, label=name)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="budget (% of burnable cells)", ylabel="R = 1 - BA / BA0",
           title="Burned-area reduction on held-out tiles (95% CI)")
    if len(budgets) > 1 and budgets.min() > 0 and budgets.max() / budgets.min() >= 8:
        ax.set_xscale("log")
        ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
    ax.legend(fontsize=8)
    return _save(fig, path)


def _method_grid(count: int, extra: int = 0):
    panels = count + extra
    cols = min(panels, 4)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.ravel()[panels:]:
        ax.axis("off")
    return fig, list(axes.ravel()[:panels])


def plot_method_fuel_breaks(example: dict, path: Path) -> Path:
    """One panel per method: the tile's fuel model with that method's breaks (``example`` from
    firebreak_exp.planning.evaluation.compare_planners)."""
    tile = example["tile"]
    methods = {k: v for k, v in example["methods"].items() if k != "no_treatment"} or example["methods"]
    fig, axes = _method_grid(len(methods))
    for ax, (name, method) in zip(axes, methods.items()):
        ax.imshow(tile.fuel_model, cmap="tab20", interpolation="nearest")
        rows, cols = np.nonzero(method["fuel_breaks"])
        ax.scatter(cols, rows, marker="s", s=10, c="black")
        ax.set_title(f"{name}: {len(rows)} breaks", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"{tile.name}: fuel breaks at {example['budget']:g}% of burnable cells", fontsize=10)
    return _save(fig, path)


def plot_method_burn_probability(example: dict, path: Path) -> Path:
    """Burn probability over the scoring ignitions: untreated, then after each method's breaks (blue squares)."""
    methods = {k: v for k, v in example["methods"].items() if k != "no_treatment"}
    fig, axes = _method_grid(len(methods), extra=1)
    panels = [("untreated", example["burn_probability_before"], example["burned_fraction_untreated"], None)]
    panels += [(name, m["burn_probability"], m["burned_fraction"], m["fuel_breaks"]) for name, m in methods.items()]
    image = None
    for ax, (name, probability, burned, breaks) in zip(axes, panels):
        image = ax.imshow(probability, vmin=0, vmax=1, cmap="hot_r", interpolation="nearest")
        if breaks is not None:
            rows, cols = np.nonzero(breaks)
            ax.scatter(cols, rows, marker="s", s=8, facecolors="none", edgecolors="tab:blue", linewidths=0.8)
        ax.set_title(f"{name}: BA {burned:.3f}", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    if image is not None:
        fig.colorbar(image, ax=axes, fraction=0.03, label="burn probability")
    fig.suptitle(f"{example['tile'].name}: burn probability before and after "
                 f"({example['budget']:g}% budget)", fontsize=10)
    return _save(fig, path)
