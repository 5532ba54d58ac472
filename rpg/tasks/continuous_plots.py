"""PNG plots of a continuous task-zoo evaluation (matplotlib Agg canvas, no pyplot state) and their captions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rpg.evaluate.plots import _figure, _save

CONTINUOUS_CAPTIONS = {
    "accuracy_vs_value": (
        "Test accuracy against the task value (rotation angle, degrees). Red stars: mean of the generated models "
        "for the value, the bar spanning their min..max; black circles: the model trained for the value; grey "
        "squares: the nearest seen value's model; green triangles: linear interpolation of the two nearest seen "
        "models; blue crosses: the average of all seen models; dotted: the shared initialisation. Grey ticks at the "
        "bottom: the seen values (the generator's training tasks); every other value is held out."
    ),
    "finetune": (
        "Fine-tuning from each start (mean over the held-out values inside the seen range, left; beyond it, right): "
        "test accuracy after k steps of AdamW at a constant learning rate, the same batches for every start. "
        "Dashed: the references' mean accuracy."
    ),
    "loss": "Training loss of the task-conditioned generator (denoising MSE on non-padding token entries).",
}

_STYLE = {
    "generated": {"color": "tab:red", "marker": "*", "ms": 10},
    "reference": {"color": "black", "marker": "o", "ms": 6},
    "nearest": {"color": "tab:gray", "marker": "s", "ms": 6},
    "interpolation": {"color": "tab:green", "marker": "^", "ms": 6},
    "average": {"color": "tab:blue", "marker": "x", "ms": 6},
}
_INIT_STYLE = {"generated": "tab:red", "nearest": "tab:gray", "interpolation": "tab:green", "scratch": "tab:purple"}


def plot_accuracy_vs_value(table: pd.DataFrame, seen_values: Sequence[float], path: str | Path) -> Path:
    fig = _figure(8.0, 4.6)
    ax = fig.subplots()
    per = table.groupby(["task_value", "kind"])["accuracy"].agg(["mean", "min", "max"]).unstack("kind")
    x = per.index.to_numpy(dtype=float)
    if "backbone" in per["mean"]:
        ax.plot(x, per["mean"]["backbone"].to_numpy(), ":", color="tab:brown", label="shared initialisation")
    for kind, st in _STYLE.items():
        if kind not in per["mean"]:
            continue
        mean = per["mean"][kind].to_numpy()
        ax.plot(x, mean, linestyle="none", marker=st["marker"], color=st["color"], ms=st["ms"], label=kind)
        if kind == "generated":
            lo, hi = per["min"][kind].to_numpy(), per["max"][kind].to_numpy()
            ax.vlines(x, lo, hi, color=st["color"], lw=1.5)
    for v in seen_values:
        ax.axvline(float(v), ymin=0, ymax=0.03, color="0.5", lw=2)
    ax.set_xlabel("task value (rotation, degrees)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def plot_finetune(ft: pd.DataFrame, summary: Mapping[str, Any], path: str | Path) -> Path:
    fig = _figure(10.0, 4.2)
    axes = fig.subplots(1, 2)
    refs = {(v["task_value"]): v["accuracy"]["reference"]["mean"] for v in summary.get("values", [])}
    for ax, inside, title in zip(axes, (True, False), ("inside the seen range", "beyond the seen range")):
        part = ft[ft["inside"] == inside] if len(ft) else ft
        if len(part) == 0:
            ax.set_axis_off()
            continue
        for init, color in _INIT_STYLE.items():
            sub = part[part["init"] == init]
            if len(sub) == 0:
                continue
            curve = sub.groupby("steps")["accuracy"].mean()
            steps = curve.index.to_numpy(dtype=float)
            ax.plot(np.maximum(steps, 0.5), curve.to_numpy(), marker="o", color=color, label=init)
        ref = np.mean([refs[v] for v in part["task_value"].unique() if v in refs])
        ax.axhline(ref, ls="--", color="black", lw=1, label="reference")
        ax.set_xscale("log")
        ax.set_xlabel("fine-tuning steps (0 drawn at 0.5)")
        ax.set_ylabel("test accuracy")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)
