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
        "Score against similarity (paper Fig. 3). Each point is one model: x is its similarity, the largest IoU "
        "between its failure set on the probe split (test plus seeded corruptions) and that of any original "
        "checkpoint (for an original: any OTHER original); y is its score on the test split. Points up and left are "
        "accurate and novel. A generator that copies its training checkpoints sits at the right, next to the "
        "originals. Three baseline families show how the score falls as a model moves away from the originals: "
        "noise of growing std, interpolation of two originals over a sweep of weights (a curve across runs, a dashed "
        "one within a run) and a per-run diagonal Gaussian with its std scaled up; each family's frontier joins its "
        "groups' mean points. Generated models should sit above every frontier. The right panel zooms on the band "
        "where the originals, the generated models and the frontiers near them lie, with 95% intervals of the "
        "frontier points (bands) and of the generated mean (bar), models and test samples resampled; the checks use "
        "the interval of the margin itself, paired over the same resampled test samples and narrower than these "
        "bands (summary.json, frontiers). Originals of the equal-n "
        "subsample are filled, the others hollow; p-diff models are the blue crosses."
    ),
    "loss": (
        "Generator training loss (denoising MSE on non-padding token entries) against step, log scale: raw "
        "values faint, smoothed curve solid; learning rate dashed on the right axis. The smoothed curve should "
        "fall and flatten; a curve still falling at the end means more steps would help."
    ),
    "distances": (
        "Distance from each model to its nearest original checkpoint: RMS difference of the normalised "
        "parameters (per-layer standardised tokens, padding excluded); for originals, to the nearest OTHER "
        "original. Dashed: the same leaving out the nearest original's run (leave-one-run-out), which tells a model "
        "near one run's basin from a new one. The grey line is the copy radius: generated models left of it are "
        "copies. Noise baselines sit at about their noise std."
    ),
    "table": (
        "Summary of the evaluation on the test split: score best/mean/min (95% bootstrap intervals) of the originals "
        "(a subsample of as many models as were generated, spread over runs) and of the generated models, how many "
        "generated models are distinct, their similarity (max IoU of probe failure sets against the originals), "
        "distance to the nearest original and leave-one-run-out distance, each baseline group, and the checks."
    ),
}

STYLE = {
    "original": {"marker": "o", "color": "black", "label": "original"},
    "generated": {"marker": "*", "color": "tab:red", "label": "generated"},
    "pdiff": {"marker": "P", "color": "tab:blue", "label": "p-diff"},
    "generated_bn": {"marker": "*", "color": "tab:orange", "label": "generated, BN re-estimated"},
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


FAMILY_STYLE = {  # baseline kind: marker, colour map of its levels, frontier line colour, label
    "noise": ("x", "viridis", "tab:green", "noise"),
    "interpolated": ("s", "plasma", "tab:purple", "interpolation"),
    "gaussian": ("^", "cividis", "tab:cyan", "per-run Gaussian"),
}
FRONTIER_KIND = {"noise": "noise", "interpolation": "interpolated", "gaussian": "gaussian"}


def _scatter_models(ax, table: pd.DataFrame) -> None:
    """Every model of the table: baselines by family (colour by level), then averages, originals and generated."""
    from matplotlib import colormaps

    for kind, (marker, cmap, _, label) in FAMILY_STYLE.items():
        rows = table[table["kind"] == kind]
        groups = list(dict.fromkeys(rows["group"]))
        colors = colormaps[cmap](np.linspace(0.0, 0.85, max(len(groups), 1)))
        for i, (color, group) in enumerate(zip(colors, groups)):
            g = rows[rows["group"] == group]
            ax.scatter(g["max_iou"], g["score"], marker=marker, color=color, alpha=0.6, s=22,
                       label=f"{label} ({len(rows)})" if i == 0 else None)  # fmt: skip
    for kind in ("average", "original", "pdiff", "generated_bn", "generated"):
        g = table[table["kind"] == kind]
        if not len(g):
            continue
        st = STYLE[kind]
        size = {"generated": 110, "generated_bn": 80, "pdiff": 70}.get(kind, 36)
        if kind == "original" and "in_summary" in g:
            rest = g[~g["in_summary"].astype(bool)]
            if len(rest):
                ax.scatter(rest["max_iou"], rest["score"], marker="o", facecolors="none", edgecolors="black", s=20,
                           alpha=0.5, label=f"original ({len(rest)})", zorder=2)  # fmt: skip
            g = g[g["in_summary"].astype(bool)]
        ax.scatter(g["max_iou"], g["score"], marker=st["marker"], color=st["color"], s=size, zorder=3,
                   label=f"{st['label']} ({len(g)})", edgecolors="white", linewidths=0.5)  # fmt: skip


def _draw_frontiers(ax, table: pd.DataFrame, frontiers: dict | None, *, intervals: bool) -> None:
    """Each family's frontier: per curve, its groups' mean points joined (95% intervals of the means as a band)."""
    for family, kind in FRONTIER_KIND.items():
        _, _, color, label = FAMILY_STYLE[kind]
        points = ((frontiers or {}).get(family) or {}).get("points")
        if points is None:  # no summary: the table's group means
            rows = table[table["kind"] == kind]
            key = "weight" if kind == "interpolated" else "level"
            curve = rows["pair_type"] if kind == "interpolated" else pd.Series("", index=rows.index)
            means = rows.groupby([curve, rows[key]])[["max_iou", "score"]].mean().reset_index()
            points = [{"curve": c, "similarity": x, "score": y} for c, x, y in
                      zip(means.iloc[:, 0], means["max_iou"], means["score"])]  # fmt: skip
        for i, curve in enumerate(dict.fromkeys(p.get("curve", "") for p in points)):
            pts = sorted((p for p in points if p.get("curve", "") == curve), key=lambda p: p["similarity"])
            x, y = [p["similarity"] for p in pts], [p["score"] for p in pts]
            style = "-" if i == 0 else "--"
            ax.plot(x, y, style, color=color, lw=1.3, alpha=0.9, label=f"{label} frontier {curve}".rstrip())
            ci = [p.get("score_ci95") for p in pts]
            if intervals and all(c and None not in c for c in ci):  # the 95% band of the frontier's points
                ax.fill_between(x, [c[0] for c in ci], [c[1] for c in ci], color=color, alpha=0.1, linewidth=0)
    gen = (frontiers or {}).get("generated") or {}
    if intervals and gen.get("score") is not None and gen.get("score_ci95"):
        lo, hi = gen["score_ci95"]
        ax.errorbar([gen["similarity"]], [gen["score"]], yerr=[[gen["score"] - lo], [hi - gen["score"]]], fmt="P",
                    color="darkred", ms=9, capsize=4, zorder=4, label="generated mean (95% interval)")  # fmt: skip


def _zoom_limits(table: pd.DataFrame, frontiers: dict | None) -> tuple[tuple[float, float], tuple[float, float]]:
    """The band where originals, generated models and the frontiers near the generated similarity lie."""
    focus = table[table["kind"].isin(["original", "generated"])]
    xs, ys = list(focus["max_iou"].dropna()), list(focus["score"].dropna())
    ys += [v for v in ((frontiers or {}).get("generated") or {}).get("score_ci95") or [] if v is not None]
    gen = table[table["kind"] == "generated"]["max_iou"].dropna()
    x_lo = (gen.min() if len(gen) else min(xs, default=0.0)) - 0.1
    for block in (frontiers or {}).values():
        for p in (block or {}).get("points", []) if isinstance(block, dict) else []:
            if p["similarity"] >= x_lo:
                xs.append(p["similarity"])
                ys.append(p["score"])
    if not ys:
        return (0.0, 1.0), (0.0, 1.0)
    y_lo, y_hi = float(np.min(ys)), float(np.max(ys))
    pad = max(0.1 * (y_hi - y_lo), 0.002)
    return (max(0.0, x_lo), min(1.0, float(np.max(xs)) + 0.02)), (y_lo - pad, y_hi + pad)


def plot_accuracy_vs_similarity(
    table: pd.DataFrame, path: str | Path, *, title: str = "", metric: str = "score", frontiers: dict | None = None
) -> Path:
    """Test score (y) against probe similarity (x) for every model kind, with every baseline family's frontier: the
    full range on the left, zoomed on the band of the originals, the generated models and the frontiers near them on
    the right (95% intervals of the frontier points and of the generated mean, from ``frontiers``: the summary's
    block of that name)."""
    fig = _figure(12.8, 5.2)
    full, zoom = fig.subplots(1, 2)
    for ax, intervals in ((full, False), (zoom, True)):
        _scatter_models(ax, table)
        _draw_frontiers(ax, table, frontiers, intervals=intervals)
        ax.set_xlabel("similarity: max IoU of probe failure sets vs originals")
        ax.set_ylabel(f"test {metric}")
        ax.grid(alpha=0.3)
    if len(table):
        (x0, x1), (y0, y1) = _zoom_limits(table, frontiers)
        zoom.set_xlim(x0, x1)
        zoom.set_ylim(y0, y1)
        full.legend(fontsize=6, loc="lower right", ncol=2)
    full.set_title(title or f"{metric} vs similarity (up-left: accurate and novel)", fontsize=10)
    zoom.set_title("zoomed on the originals, the generated models and the frontiers near them", fontsize=9)
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
    """Raw and smoothed loss (log y) against step; on a second axis the sampled models' validation score and the
    originals' (train.validate_every), or else the learning rate."""
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
    val = df[["step", "val_score", "val_target"]].dropna() if {"val_score", "val_target"} <= set(df.columns) else None
    if val is not None and len(val):
        ax2 = ax.twinx()
        ax2.plot(val["step"], val["val_score"], color="tab:red", marker="o", markersize=3, label="sampled models (val)")
        ax2.axhline(float(val["val_target"].iloc[-1]), color="tab:red", linestyle=":", label="originals (val)")
        ax2.set_ylabel("validation score")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    elif "lr" in df.columns:
        ax2 = ax.twinx()
        ax2.plot(step, df["lr"].to_numpy(dtype=np.float64), color="tab:gray", linestyle="--", label="lr")
        ax2.set_ylabel("learning rate")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, loc="upper right")
    ax.set_title(title or "generator training loss")
    return _save(fig, path)


def plot_distances(table: pd.DataFrame, path: str | Path, *, title: str = "", copy_radius: float | None = None) -> Path:
    """Histograms of nearest-original distances per model kind (dashed: leave-one-run-out distances)."""
    fig = _figure()
    ax = fig.add_subplot()
    kinds = {
        "original": ("original -> nearest other", ["original"], "black"),
        "generated": ("generated", ["generated"], "tab:red"),
        "pdiff": ("p-diff", ["pdiff"], "tab:blue"),
        "noise": ("noise", ["noise"], "tab:green"),
        "mixed": ("interpolated/average", ["interpolated", "average"], "tab:purple"),
        "gaussian": ("per-run Gaussian", ["gaussian"], "tab:cyan"),
    }
    values, loro = {}, {}
    for key, (_, members, _) in kinds.items():
        rows = table[table["kind"].isin(members)]
        v = rows["nearest_distance"].to_numpy(dtype=np.float64)
        values[key] = v[np.isfinite(v)]
        w = rows["loro_distance"].to_numpy(dtype=np.float64) if "loro_distance" in rows else np.zeros(0)
        loro[key] = w[np.isfinite(w)]
    everything = np.concatenate([*values.values(), *loro.values()])
    if everything.size == 0:
        ax.text(0.5, 0.5, "no distances", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _save(fig, path)
    lo, hi = everything.min(), everything.max()
    if lo > 0 and hi / lo > 20:
        bins = np.geomspace(lo * 0.9, hi * 1.1, 40)
        ax.set_xscale("log")
    else:
        bins = np.linspace(lo - 1e-12, hi + 1e-12, 40) if hi > lo else 10
    for key, (label, _, color) in kinds.items():
        if values[key].size:
            ax.hist(values[key], bins=bins, histtype="stepfilled", alpha=0.3, color=color,
                    label=f"{label} ({values[key].size})")  # fmt: skip
        if key in ("original", "generated", "pdiff") and loro[key].size:
            ax.hist(loro[key], bins=bins, histtype="step", linestyle="--", color=color, label=f"{label}, other runs")
    if copy_radius:
        ax.axvline(copy_radius, color="gray", lw=1, label="copy radius")
    ax.set_xlabel("RMS distance in normalised parameter space")
    ax.set_ylabel("models")
    ax.set_title(title or "distance to the nearest original")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)
