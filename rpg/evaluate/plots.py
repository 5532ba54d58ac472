"""PNG plots of an evaluation (matplotlib, Agg canvas: no display and no pyplot state).

Each plot has a caption in :data:`CAPTIONS` (shared with the HTML report and the
``workflow/report/*.rst`` files of ``snakemake --report``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from rpg.io import atomic_path

log = logging.getLogger(__name__)

CAPTIONS = {
    "accuracy_vs_similarity": (
        "Accuracy against similarity (paper Fig. 3). Each point is one model: x is its similarity, the largest "
        "IoU between the set of validation samples it gets wrong and that of any original checkpoint (for an "
        "original: any OTHER original); y is its validation accuracy. Points up and left are accurate and "
        "novel. A generator that copies its training checkpoints sits at the right, next to the originals. "
        "Noise baselines (growing std) and interpolations show how accuracy falls as a model moves away from "
        "the originals; generated models should sit above and left of them. Where the zoo has the p-diff "
        "baseline (a flat autoencoder + latent diffusion), its models are the blue crosses."
    ),
    "loss": (
        "Generator training loss (denoising MSE on non-padding token entries) against step, log scale: raw "
        "values faint, smoothed curve solid; learning rate dashed on the right axis. The smoothed curve should "
        "fall and flatten; a curve still falling at the end means more steps would help."
    ),
    "distances": (
        "Distance from each model to its nearest original checkpoint: RMS difference of the normalised "
        "parameters (per-layer standardised tokens, padding excluded); for originals, to the nearest OTHER "
        "original. Generated models far closer to an original than originals are to each other are copies "
        "(memorisation); noise baselines sit at about their noise std."
    ),
    "table": (
        "Summary of the evaluation: accuracy (best/mean/min) of the original checkpoints, the generated "
        "models and each baseline group, their similarity (max IoU of wrong sets against the originals) and "
        "nearest distance to an original, and the two checks: generated models are not copies, and they beat "
        "the noise baselines at equal similarity."
    ),
}

STYLE = {
    "original": {"marker": "o", "color": "black", "label": "original"},
    "generated": {"marker": "*", "color": "tab:red", "label": "generated"},
    "pdiff": {"marker": "P", "color": "tab:blue", "label": "p-diff"},
    "average": {"marker": "D", "color": "tab:brown", "label": "average"},
}


def _figure(width: float = 6.4, height: float = 4.8):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_accuracy_vs_similarity(table: pd.DataFrame, path: str | Path, *, title: str = "") -> Path:
    """Scatter of accuracy (y) against max IoU similarity (x) for every model kind."""
    from matplotlib import colormaps

    fig = _figure()
    ax = fig.add_subplot()
    for kind, cmap, marker in (("noise", "viridis", "x"), ("interpolated", "plasma", "s")):
        rows = table[table["kind"] == kind]
        groups = list(dict.fromkeys(rows["group"]))
        colors = colormaps[cmap](np.linspace(0.0, 0.85, max(len(groups), 1)))
        for color, group in zip(colors, groups):
            g = rows[rows["group"] == group]
            ax.scatter(g["max_iou"], g["accuracy"], marker=marker, color=color, alpha=0.8, s=28, label=group)
    for kind in ("average", "original", "pdiff", "generated"):
        g = table[table["kind"] == kind]
        if len(g):
            st = STYLE[kind]
            size = {"generated": 110, "pdiff": 70}.get(kind, 36)
            ax.scatter(
                g["max_iou"],
                g["accuracy"],
                marker=st["marker"],
                color=st["color"],
                s=size,
                label=f"{st['label']} ({len(g)})",
                zorder=3,
                edgecolors="white",
                linewidths=0.5,
            )
    ax.set_xlabel("similarity: max IoU of wrong validation samples vs originals")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title or "accuracy vs similarity (up-left: accurate and novel)")
    ax.grid(alpha=0.3)
    if len(table):
        ax.legend(fontsize=7, loc="best", ncol=2)
    return _save(fig, path)


def smooth(values: np.ndarray, *, window: int | None = None) -> np.ndarray:
    """Trailing rolling mean (window ~ 2% of the points, at least 1)."""
    values = np.asarray(values, dtype=np.float64)
    if window is None:
        window = max(1, len(values) // 50)
    return pd.Series(values).rolling(window, min_periods=1).mean().to_numpy()


def read_train_log(path: str | Path) -> pd.DataFrame | None:
    """The generator's train_log.csv (step, loss, lr), or None when absent/unreadable."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path)
    except Exception as exc:  # a log is informative only: never fail the evaluation on it
        log.warning("cannot read %s: %s", path, exc)
        return None
    if not {"step", "loss"} <= set(df.columns):
        log.warning("%s lacks step/loss columns", path)
        return None
    return df


def plot_training_loss(train_log: pd.DataFrame | None, path: str | Path, *, title: str = "") -> Path:
    """Raw and smoothed loss (log y) against step, learning rate on a second axis."""
    fig = _figure()
    ax = fig.add_subplot()
    if train_log is None or len(train_log) == 0:
        ax.text(0.5, 0.5, "no generator training log", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _save(fig, path)
    df = train_log.sort_values("step")
    step, loss = df["step"].to_numpy(), df["loss"].to_numpy(dtype=np.float64)
    ax.plot(step, loss, color="tab:blue", alpha=0.25, linewidth=0.8, label="loss")
    ax.plot(step, smooth(loss), color="tab:blue", linewidth=1.8, label="loss (smoothed)")
    if np.all(loss[np.isfinite(loss)] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("denoising loss")
    ax.grid(alpha=0.3, which="both")
    handles, labels = ax.get_legend_handles_labels()
    if "lr" in df.columns:
        ax2 = ax.twinx()
        ax2.plot(step, df["lr"].to_numpy(dtype=np.float64), color="tab:gray", linestyle="--", label="lr")
        ax2.set_ylabel("learning rate")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, loc="upper right")
    ax.set_title(title or "generator training loss")
    return _save(fig, path)


def plot_distances(table: pd.DataFrame, path: str | Path, *, title: str = "") -> Path:
    """Histograms of nearest-original distances for each model kind."""
    fig = _figure()
    ax = fig.add_subplot()
    series = {
        "original -> nearest other original": table.loc[table["kind"] == "original", "nearest_distance"],
        "generated -> nearest original": table.loc[table["kind"] == "generated", "nearest_distance"],
        "p-diff -> nearest original": table.loc[table["kind"] == "pdiff", "nearest_distance"],
        "noise -> nearest original": table.loc[table["kind"] == "noise", "nearest_distance"],
        "interpolated/average -> nearest original": table.loc[
            table["kind"].isin(["interpolated", "average"]), "nearest_distance"
        ],
    }
    colors = ["black", "tab:red", "tab:blue", "tab:green", "tab:purple"]
    values = {k: v.to_numpy(dtype=np.float64) for k, v in series.items()}
    values = {k: v[np.isfinite(v)] for k, v in values.items()}
    everything = np.concatenate([v for v in values.values()]) if values else np.zeros(0)
    if everything.size == 0:
        ax.text(0.5, 0.5, "no distances", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _save(fig, path)
    lo, hi = everything.min(), everything.max()
    log_x = lo > 0 and hi / lo > 20
    if log_x:
        bins = np.geomspace(lo * 0.9, hi * 1.1, 40)
        ax.set_xscale("log")
    else:
        bins = np.linspace(lo - 1e-12, hi + 1e-12, 40) if hi > lo else 10
    for (label, v), color in zip(values.items(), colors):
        if v.size:
            ax.hist(v, bins=bins, histtype="stepfilled", alpha=0.35, color=color, label=f"{label} ({v.size})")
            ax.hist(v, bins=bins, histtype="step", color=color)
    ax.set_xlabel("RMS distance in normalised parameter space")
    ax.set_ylabel("models")
    ax.set_title(title or "distance to the nearest original")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)
