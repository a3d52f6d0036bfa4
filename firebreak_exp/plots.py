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
