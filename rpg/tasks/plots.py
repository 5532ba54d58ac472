"""PNG plots of a task-zoo evaluation (matplotlib Agg canvas, no pyplot state) and their captions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rpg.evaluate.plots import _figure, _save

TASK_CAPTIONS = {
    "task_accuracy": (
        "Balanced accuracy per task (held-out tasks left, evaluated seen tasks right), tasks sorted by the "
        "reference models' accuracy. Red stars: mean of the generated models for the task, the bar spanning "
        "their min..max; black circles: reference models trained for the task; grey: nearest seen task's "
        "checkpoints; blue crosses: shared backbone with an untrained head; dashed: a constant (majority) "
        "predictor (0.5). Generated models on held-out tasks should sit with the references, far above the "
        "baselines."
    ),
    "init_finetune": (
        "Generated weights as initialisation (paper Table 15): balanced accuracy (left) and accuracy (right) "
        "on held-out tasks after fine-tuning the whole network for 0, 1, ... epochs from the generated weights, "
        "from the shared backbone with a new head, and from random weights; mean over tasks, band = min..max."
    ),
    "loss": "Training loss of the task-conditioned generator (denoising MSE on non-padding token entries).",
    "table": (
        "A row per (evaluated task, model) on the task's relabelled validation split: split (held_out or seen), "
        "task_id and task (bit c = 1: class c is positive), positive_fraction, kind (generated, reference, "
        "majority, untrained_head, nearest_seen), accuracy and balanced_accuracy (mean recall of the two "
        "classes); nearest_seen rows name the seen task they come from (source_task) and its Hamming distance. "
        "summary.json beside it averages per-task best/mean/min over the tasks of each split."
    ),
}

_STYLE = {
    "generated": {"color": "tab:red", "marker": "*"},
    "reference": {"color": "black", "marker": "o"},
    "nearest_seen": {"color": "tab:gray", "marker": "s"},
    "untrained_head": {"color": "tab:blue", "marker": "x"},
}


def plot_task_accuracy(table: pd.DataFrame, path: str | Path) -> Path:
    """Per-task balanced accuracy of generated, reference and baseline models, one panel per split."""
    splits = [s for s in ("held_out", "seen") if (table["split"] == s).any()] or ["held_out"]
    fig = _figure(5.0 * len(splits) + 1.0, 4.6)
    axes = fig.subplots(1, len(splits), squeeze=False)[0]
    for ax, split in zip(axes, splits):
        part = table[table["split"] == split]
        per = part.groupby(["task_id", "kind"])["balanced_accuracy"].agg(["mean", "min", "max"]).unstack("kind")
        if len(per) == 0:
            ax.set_axis_off()
            continue
        order = per["mean"]["reference"].sort_values().index if "reference" in per["mean"] else per.index
        x = np.arange(len(order))
        for kind, st in _STYLE.items():
            if kind not in per["mean"]:
                continue
            mean = per["mean"][kind].reindex(order).to_numpy()
            if kind == "generated":
                lo = mean - per["min"][kind].reindex(order).to_numpy()
                hi = per["max"][kind].reindex(order).to_numpy() - mean
                ax.errorbar(x, mean, yerr=[lo, hi], fmt="none", ecolor=st["color"], alpha=0.6, capsize=2)
            size = 90 if kind == "generated" else 30
            ax.scatter(x, mean, marker=st["marker"], color=st["color"], s=size, zorder=3, label=kind.replace("_", " "))
        ax.axhline(0.5, color="tab:green", linestyle="--", linewidth=1, label="majority class")
        ax.set_xticks(x)
        ax.set_xticklabels([str(t) for t in order], rotation=90, fontsize=6)
        ax.set_xlabel("task id (sorted by reference accuracy)")
        ax.set_ylabel("balanced accuracy")
        ax.set_ylim(0.0, 1.02)
        ax.set_title(f"{split.replace('_', '-')} tasks ({len(order)})")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_init_finetune(finetune_table: pd.DataFrame, path: str | Path) -> Path:
    """Accuracy against fine-tuning epochs for each initialisation (mean over tasks, min..max band)."""
    fig = _figure(10.0, 4.2)
    axes = fig.subplots(1, 2)
    if len(finetune_table) == 0:
        for ax in axes:
            ax.text(0.5, 0.5, "no fine-tuning experiment", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        return _save(fig, path)
    colors = {"generated": "tab:red", "backbone": "tab:blue", "scratch": "tab:gray"}
    for ax, metric in zip(axes, ("balanced_accuracy", "accuracy")):
        for init, color in colors.items():
            sub = finetune_table[finetune_table["init"] == init]
            if len(sub) == 0:
                continue
            g = sub.groupby("epochs")[metric].agg(["mean", "min", "max"]).sort_index()
            ax.plot(g.index, g["mean"], marker="o", color=color, label=init)
            ax.fill_between(g.index, g["min"], g["max"], color=color, alpha=0.15)
        ax.set_xlabel("fine-tuning epochs")
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_ylim(0.0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    n = finetune_table["task_id"].nunique()
    fig.suptitle(f"fine-tuning on {n} held-out tasks from three initialisations")
    return _save(fig, path)


__all__ = ["TASK_CAPTIONS", "plot_init_finetune", "plot_task_accuracy"]
