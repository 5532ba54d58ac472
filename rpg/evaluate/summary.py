"""summary.json of an evaluation: the numbers that are reported, and the checks.

Everything is on the **test** split (scores) and the **probe** split (similarity). Originals are summarised over
the same number of models as the generated set (a subsample spread over runs, table column ``in_summary``), each
best/mean/min with a 95% bootstrap interval; all originals are summarised too (``original_all``). With
``evaluate.bn_recalibrate_generated`` the same generated weights with re-estimated BatchNorm statistics are
summarised as ``generated_bn``, beside (never instead of) the models as generated; the checks use the latter.

Checks (``generated_not_copies`` and ``resolution_ok``: True/False, or None when they cannot be decided; the frontier
checks: a verdict string):

* ``generated_not_copies``: no generated model lies within the copy radius (``2 * evaluate.copy_noise``, RMS in the
  normalised space) of an original. An exact copy and a copy plus noise of std ``copy_noise`` fail; a model trained
  from a new seed passes.
* ``generated_beats_noise_at_equal_similarity``, ``generated_beats_interpolation_at_equal_similarity``,
  ``generated_beats_gaussian_at_equal_similarity``: the margin of the generated mean score over each baseline
  family's frontier at the generated mean similarity, decided by its 95% bootstrap interval
  (:mod:`rpg.evaluate.frontier`): ``pass`` (interval above 0), ``fail`` (below), ``undecided``; and where no claim
  can be made: ``not covered`` (the frontier does not reach the generated similarity; never clamped), ``no
  baseline``, ``not applicable`` (the generated mean lies more than ``evaluate.frontier_max_gap`` below the
  originals': a frontier claim about broken models says nothing; it takes precedence over the others) or ``no
  resolution`` (``resolution_ok`` is False: similarity cannot tell models apart). The margins and intervals are in
  ``frontiers`` either way.
* ``resolution_ok``: every original and generated model fails at least ``evaluate.min_probe_failures`` times on the
  probe split, so failure-set IoU has resolution.

``dominance``: how many generated models no baseline model dominates (is at least as accurate and less similar).
``diagnosis``: when the generated models are far below the originals, why and what to change
(:mod:`rpg.evaluate.diagnosis`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from rpg.config import EvaluateConfig
from rpg.evaluate.diagnosis import diagnose
from rpg.evaluate.frontier import FAMILIES, dominance, frontiers
from rpg.evaluate.frontier import json_number as _num

OPTIONAL_KINDS = ("pdiff", "generated_bn")  # in num_models only when the zoo has them
KINDS = ("original", "generated", "pdiff", "generated_bn", "noise", "interpolated", "gaussian", "average")
RULES = {
    "generated_not_copies": "no generated model within 2 x evaluate.copy_noise (RMS, normalised space) of an original",
    **{
        f.check: (
            f"the 95% bootstrap interval of (generated mean test score - the {f.name} frontier's score at the "
            "generated mean probe similarity; generated models, baseline models and test samples resampled) lies above "
            "0: pass; below 0: fail; else undecided (not applicable when the generated mean is more than "
            "evaluate.frontier_max_gap below the originals'; no resolution when resolution_ok is False)"
        )
        for f in FAMILIES
    },
    "resolution_ok": "every original and generated model fails >= evaluate.min_probe_failures probe samples",
}


def _finite(values) -> np.ndarray:
    arr = np.asarray(pd.Series(values, dtype="float64"), dtype=np.float64)
    return arr[np.isfinite(arr)]


def score_stats(values, *, bootstrap: int = 0, seed: int = 0) -> dict[str, Any]:
    """{best, mean, min} of scores, with 95% percentile-bootstrap intervals of each when ``bootstrap`` > 0."""
    v = _finite(values)
    if v.size == 0:
        return {"best": None, "mean": None, "min": None, "ci95": None}
    out: dict[str, Any] = {"best": _num(v.max()), "mean": _num(v.mean()), "min": _num(v.min()), "ci95": None}
    if bootstrap > 0 and v.size > 1:
        rng = np.random.default_rng(seed)
        samples = v[rng.integers(0, v.size, size=(bootstrap, v.size))]
        stats = {"best": samples.max(1), "mean": samples.mean(1), "min": samples.min(1)}
        out["ci95"] = {k: [_num(np.percentile(s, 2.5)), _num(np.percentile(s, 97.5))] for k, s in stats.items()}
    return out


def accuracy_stats(values) -> dict[str, float | None]:
    """{best, mean, min} without intervals (used by the task-zoo summary)."""
    s = score_stats(values)
    return {"best": s["best"], "mean": s["mean"], "min": s["min"]}


def similarity_stats(values) -> dict[str, float | None]:
    """{mean, max, min} of similarities."""
    v = _finite(values)
    if v.size == 0:
        return {"mean": None, "max": None, "min": None}
    return {"mean": _num(v.mean()), "max": _num(v.max()), "min": _num(v.min())}


def distance_stats(values) -> dict[str, float | None]:
    """{mean, min, max} of distances."""
    v = _finite(values)
    if v.size == 0:
        return {"mean": None, "min": None, "max": None}
    return {"mean": _num(v.mean()), "min": _num(v.min()), "max": _num(v.max())}


def model_block(rows: pd.DataFrame, *, bootstrap: int = 0, seed: int = 0) -> dict[str, Any]:
    """Score, similarity, distances (nearest and leave-one-run-out) and copies of a set of models."""
    copies = rows["copy"].dropna() if "copy" in rows else pd.Series([], dtype=bool)
    return {
        "n": int(len(rows)),
        "score": score_stats(rows["score"], bootstrap=bootstrap, seed=seed),
        "similarity": similarity_stats(rows["max_iou"]),
        "loro_similarity": similarity_stats(rows["loro_max_iou"]),
        "functional_distance": distance_stats(rows["functional_distance"]),
        "distance": distance_stats(rows["nearest_distance"]),
        "loro_distance": distance_stats(rows["loro_distance"]),
        "copies": int(copies.astype(bool).sum()),
        "failures_probe_min": _num(rows["failures_probe"].min()) if len(rows) else None,
    }


def diversity(pairs: Mapping[str, Any], spacing: float | None) -> dict[str, Any]:
    """How many of a generated set are distinct models.

    Two models are duplicates when their failure sets are equal (``pairs["same_failures"]``: on the probe split in
    the evaluation, on val in training's validation) or their RMS distance is at most ``spacing`` (the median
    distance between consecutive checkpoints of one run). ``distinct``: models with no duplicate among
    the others; ``clusters``: groups of duplicates (connected). Pairwise means over all pairs, and the same per
    permutation state.
    """
    names = list(pairs.get("names", []))
    n = len(names)
    if n == 0:
        return {"n": 0, "distinct": 0, "clusters": 0, "spacing": _num(spacing)}
    dist = np.array([[np.nan if v is None else v for v in row] for row in pairs["distance"]], dtype=np.float64)
    dist = dist.reshape(n, n)
    iou = np.array(pairs["iou"], dtype=np.float64).reshape(n, n)
    same = np.array(pairs["same_failures"], dtype=bool).reshape(n, n)
    dup = same | (dist <= spacing if spacing is not None else np.zeros_like(same))
    np.fill_diagonal(dup, False)

    def block(idx: list[int]) -> dict[str, Any]:
        sub_dup = dup[np.ix_(idx, idx)]
        off = ~np.eye(len(idx), dtype=bool)
        return {
            "n": len(idx),
            "distinct": int((~sub_dup.any(1)).sum()),
            "clusters": _components(sub_dup),
            "pairwise_similarity_mean": _num(iou[np.ix_(idx, idx)][off].mean()) if len(idx) > 1 else None,
            "pairwise_distance_mean": _num(np.nanmean(dist[np.ix_(idx, idx)][off])) if len(idx) > 1 else None,
        }

    out = {**block(list(range(n))), "spacing": _num(spacing)}
    states = pairs.get("states", [None] * n)
    out["per_state"] = {
        str(s): block([i for i in range(n) if states[i] == s]) for s in sorted({s for s in states if s is not None})
    }
    return out


def _components(adj: np.ndarray) -> int:
    n, seen, count = len(adj), set(), 0
    for start in range(n):
        if start in seen:
            continue
        count += 1
        stack = [start]
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            stack += [j for j in np.flatnonzero(adj[i]) if j not in seen]
    return count


def summarize(
    table: pd.DataFrame, *, pairs: Mapping[str, Any] | None = None, cfg: EvaluateConfig | None = None,
    metric: str = "score", test_failures: np.ndarray | None = None, train_log: pd.DataFrame | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The summary dict of an evaluation table (module docstring). ``pairs``: pairwise relations of the generated
    (and p-diff) models and the zoo's consecutive-checkpoint ``spacing`` (:func:`rpg.evaluate.evaluate`).
    ``test_failures``: bool [len(table), N], every model's failures on the test split, row-aligned with ``table``
    (the frontier intervals then resample the test samples too, where the score is a per-sample mean).
    ``train_log``: the generator's training log, for the diagnosis of models far below the originals."""
    cfg = cfg or EvaluateConfig()
    pairs = pairs or {}
    by_kind = {k: table[table["kind"] == k] for k in KINDS}
    orig, gen = by_kind["original"], by_kind["generated"]
    subsample = orig[orig["in_summary"].astype(bool)] if "in_summary" in orig and orig["in_summary"].any() else orig
    boot = {"bootstrap": cfg.bootstrap, "seed": cfg.seed}
    summary: dict[str, Any] = {
        "split": "test",
        "similarity_split": "probe",
        "metric": metric,
        "num_models": {k: int(len(v)) for k, v in by_kind.items() if k not in OPTIONAL_KINDS or len(v)},
        "original": model_block(subsample, **boot),
        "original_all": model_block(orig),
        "generated": model_block(gen, **boot),
    }
    spacing = pairs.get("spacing")
    summary["generated_diversity"] = diversity(pairs.get("generated", {}), spacing)
    if len(by_kind["pdiff"]):  # the p-diff baseline (rpg.pdiff), when the zoo has it
        summary["pdiff"] = {**model_block(by_kind["pdiff"], **boot), "diversity": diversity(pairs.get("pdiff", {}),
                                                                                             spacing)}  # fmt: skip
    if len(by_kind["generated_bn"]):  # the generated weights with re-estimated BatchNorm statistics (not the models
        summary["generated_bn"] = model_block(by_kind["generated_bn"], **boot)  # as generated: never in the checks)
    baselines: dict[str, Any] = {}
    for kind in ("noise", "interpolated", "gaussian", "average"):
        for group, rows in by_kind[kind].groupby("group", sort=False):
            baselines[str(group)] = {"kind": kind, "level": _num(rows["level"].iloc[0]),
                                     "weight": _num(rows["weight"].iloc[0]), **model_block(rows)}  # fmt: skip
    summary["baselines"] = baselines
    summary["novelty"] = {
        "copy_radius": 2.0 * cfg.copy_noise,
        "spacing": _num(spacing),
        "generated_copies": summary["generated"]["copies"],
        "generated_nearest_distance": summary["generated"]["distance"],
        "generated_loro_distance": summary["generated"]["loro_distance"],
        "original_nearest_other_distance": summary["original_all"]["distance"],
        "original_loro_distance": summary["original_all"]["loro_distance"],
    }
    measured = pd.concat([orig, gen])
    fails = _finite(measured["failures_probe"])
    summary["resolution"] = {
        "required": cfg.min_probe_failures,
        "wrong_per_model_min": _num(fails.min()) if fails.size else None,
        "wrong_per_model_median": _num(np.median(fails)) if fails.size else None,
    }

    resolution_ok = None if not fails.size else bool(fails.min() >= cfg.min_probe_failures)
    summary["frontiers"] = frontiers(table, test_failures, resamples=cfg.bootstrap, seed=cfg.seed)
    gap = None
    if summary["original"]["score"]["mean"] is not None and summary["generated"]["score"]["mean"] is not None:
        gap = summary["original"]["score"]["mean"] - summary["generated"]["score"]["mean"]
    summary["frontiers"]["applicable"] = {"originals_minus_generated": _num(gap), "max_gap": cfg.frontier_max_gap,
                                          "applicable": gap is not None and gap <= cfg.frontier_max_gap}  # fmt: skip
    summary["dominance"] = dominance(table)
    means = {k: summary.get(k, {}).get("score", {}).get("mean") for k in ("generated", "generated_bn")}
    summary["diagnosis"] = diagnose(gap=_num(gap), tolerance=cfg.frontier_max_gap, train_log=train_log,
                                    generated=means["generated"], recalibrated=means["generated_bn"])  # fmt: skip
    not_copies = None if not len(gen) else summary["generated"]["copies"] == 0
    checks: dict[str, Any] = {"generated_not_copies": not_copies}
    for family in FAMILIES:
        verdict = summary["frontiers"][family.name]["verdict"]
        if not len(gen):
            verdict = "no generated models"
        elif gap is not None and gap > cfg.frontier_max_gap:  # before coverage: no frontier speaks for broken models
            verdict = "not applicable"
        elif verdict in ("pass", "fail", "undecided") and resolution_ok is False:
            verdict = "no resolution"
        checks[family.check] = verdict
    checks["resolution_ok"] = resolution_ok
    checks["rules"] = dict(RULES)
    summary["checks"] = checks
    return summary


def group_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (kind, group): count and mean/min/max score, mean similarity and distance."""
    if table.empty:
        return pd.DataFrame(columns=["kind", "group", "n", "score_mean", "score_min", "score_max"])
    order = {k: i for i, k in enumerate(KINDS)}
    g = table.groupby(["kind", "group"], sort=False)
    out = g.agg(
        n=("score", "size"),
        score_mean=("score", "mean"),
        score_min=("score", "min"),
        score_max=("score", "max"),
        max_iou_mean=("max_iou", "mean"),
        nearest_distance_mean=("nearest_distance", "mean"),
    ).reset_index()
    return out.sort_values("kind", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
