"""Summary numbers of an evaluation table (one row per model) and the pass/fail checks.

Checks (values are True/False, or None when a side is missing):

* ``generated_not_copies``: the generated models' mean similarity (max IoU of wrong sets
  against the originals) is <= the originals' mean similarity to the OTHER originals.
  A generator that copies checkpoints gets IoU near 1 and fails.
* ``generated_beats_noise_at_equal_similarity``: the noise baselines give one point per
  noise level (mean similarity, mean accuracy). Sorted by similarity, these points are
  linearly interpolated at the generated models' mean similarity (``numpy.interp``:
  outside the covered range the nearest end point is used). The check passes when the
  generated mean accuracy is >= that interpolated noise accuracy. The interpolated
  value is reported as ``noise_accuracy_at_generated_similarity``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

KINDS = ("original", "generated", "pdiff", "noise", "interpolated", "average")

RULES = {
    "generated_not_copies": "mean max-IoU of generated models <= mean max-IoU of originals vs other originals",
    "generated_beats_noise_at_equal_similarity": (
        "generated mean accuracy >= noise-baseline accuracy interpolated (numpy.interp over the per-level "
        "(mean similarity, mean accuracy) points, clamped at the ends) at the generated mean similarity"
    ),
}


def _num(x: Any) -> float | None:
    """A JSON-safe float: NaN/inf/None -> None."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def _finite(values) -> np.ndarray:
    arr = np.asarray(pd.Series(values, dtype="float64"), dtype=np.float64)
    return arr[np.isfinite(arr)]


def accuracy_stats(values) -> dict[str, float | None]:
    """{best, mean, min} of accuracies (None when empty)."""
    v = _finite(values)
    if v.size == 0:
        return {"best": None, "mean": None, "min": None}
    return {"best": _num(v.max()), "mean": _num(v.mean()), "min": _num(v.min())}


def similarity_stats(values) -> dict[str, float | None]:
    """{mean, max} of similarities (None when empty)."""
    v = _finite(values)
    if v.size == 0:
        return {"mean": None, "max": None}
    return {"mean": _num(v.mean()), "max": _num(v.max())}


def distance_stats(values) -> dict[str, float | None]:
    """{mean, min} of nearest distances (None when empty)."""
    v = _finite(values)
    if v.size == 0:
        return {"mean": None, "min": None}
    return {"mean": _num(v.mean()), "min": _num(v.min())}


def accuracy_at_similarity(similarity: np.ndarray, accuracy: np.ndarray, target: float) -> float | None:
    """Accuracy of a baseline curve at ``target`` similarity (linear, clamped at the ends)."""
    s = np.asarray(similarity, dtype=np.float64)
    a = np.asarray(accuracy, dtype=np.float64)
    ok = np.isfinite(s) & np.isfinite(a)
    if not ok.any() or target is None or not np.isfinite(target):
        return None
    order = np.argsort(s[ok], kind="stable")
    return float(np.interp(target, s[ok][order], a[ok][order]))


def summarize(table: pd.DataFrame) -> dict[str, Any]:
    """The summary dict of an evaluation table (see module docstring for the checks)."""
    by_kind = {k: table[table["kind"] == k] for k in KINDS}
    orig, gen = by_kind["original"], by_kind["generated"]
    summary: dict[str, Any] = {
        "num_models": {k: int(len(v)) for k, v in by_kind.items() if k != "pdiff" or len(v)},
        "original_accuracy": accuracy_stats(orig["accuracy"]),
        "generated_accuracy": accuracy_stats(gen["accuracy"]),
        "original_similarity": similarity_stats(orig["max_iou"]),
        "generated_similarity": similarity_stats(gen["max_iou"]),
    }
    if len(by_kind["pdiff"]):  # the p-diff baseline (rpg.pdiff), when the zoo has it
        rows = by_kind["pdiff"]
        summary["pdiff"] = {
            "n": int(len(rows)),
            "accuracy": accuracy_stats(rows["accuracy"]),
            "similarity": similarity_stats(rows["max_iou"]),
            "distance": distance_stats(rows["nearest_distance"]),
        }
    baselines: dict[str, Any] = {}
    for kind in ("noise", "interpolated", "average"):
        for group, rows in by_kind[kind].groupby("group", sort=False):
            baselines[str(group)] = {
                "kind": kind,
                "level": _num(rows["level"].iloc[0]),
                "weight": _num(rows["weight"].iloc[0]),
                "n": int(len(rows)),
                "accuracy": accuracy_stats(rows["accuracy"]),
                "similarity": similarity_stats(rows["max_iou"]),
                "distance": distance_stats(rows["nearest_distance"]),
            }
    summary["baselines"] = baselines
    summary["distances"] = {
        "generated_nearest": distance_stats(gen["nearest_distance"]),
        "original_nearest_other": distance_stats(orig["nearest_distance"]),
        **{f"{k}_nearest": distance_stats(by_kind[k]["nearest_distance"]) for k in ("noise", "interpolated")},
    }

    gen_sim = summary["generated_similarity"]["mean"]
    orig_sim = summary["original_similarity"]["mean"]
    not_copies = None if gen_sim is None or orig_sim is None else bool(gen_sim <= orig_sim + 1e-12)

    noise_points = [
        (b["similarity"]["mean"], b["accuracy"]["mean"]) for b in baselines.values() if b["kind"] == "noise"
    ]
    noise_points = [(s, a) for s, a in noise_points if s is not None and a is not None]
    noise_acc = None
    if noise_points and gen_sim is not None:
        s, a = zip(*noise_points)
        noise_acc = accuracy_at_similarity(np.array(s), np.array(a), gen_sim)
    gen_acc = summary["generated_accuracy"]["mean"]
    beats = None if noise_acc is None or gen_acc is None else bool(gen_acc >= noise_acc - 1e-12)
    summary["checks"] = {
        "generated_not_copies": not_copies,
        "generated_beats_noise_at_equal_similarity": beats,
        "noise_accuracy_at_generated_similarity": _num(noise_acc),
        "rules": dict(RULES),
    }
    return summary


def group_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (kind, group): count and mean/min/max accuracy, mean similarity and distance."""
    if table.empty:
        return pd.DataFrame(columns=["kind", "group", "n", "accuracy_mean", "accuracy_min", "accuracy_max"])
    order = {k: i for i, k in enumerate(KINDS)}
    g = table.groupby(["kind", "group"], sort=False)
    out = g.agg(
        n=("accuracy", "size"),
        accuracy_mean=("accuracy", "mean"),
        accuracy_min=("accuracy", "min"),
        accuracy_max=("accuracy", "max"),
        max_iou_mean=("max_iou", "mean"),
        nearest_distance_mean=("nearest_distance", "mean"),
    ).reset_index()
    return out.sort_values("kind", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
