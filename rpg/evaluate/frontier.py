"""Frontiers of the baselines, and whether generated models beat them: decided by an interval, not by a point.

A **family** of baseline models (:data:`FAMILIES`) is a set of groups, one per level of its knob (noise std,
interpolation weight, Gaussian std scale), each group a few models with a mean probe similarity and a mean test
score. A family may have several **curves** (interpolation: one per pair type, across and within runs). A curve
joins its groups' (mean similarity, mean score) points linearly (groups with equal similarity averaged) and counts
only inside the similarity range its points span; the family's **frontier** at similarity x is the best score any
curve reaches at x: what the baseline gets at that similarity.

**Margin**: the generated mean test score minus the frontier at the generated mean similarity. Its 95% interval is
a bootstrap that, in every replicate, resamples the generated models, the models of every baseline group (each
group on its own) and, when the score is a per-sample mean (accuracy: 1 - the share of test failures), the test
samples too, the same resampled samples for every model of the replicate (a paired bootstrap). The verdict is
three-valued: ``pass`` when the interval lies above 0, ``fail`` when it lies below, ``undecided`` otherwise.
:mod:`rpg.evaluate.summary` overrides the verdict where no claim can be made (far-off generated models, no
resolution).

**Dominance**: a generated model is dominated when some baseline model is at least as accurate and less similar.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

PASS, FAIL, UNDECIDED = "pass", "fail", "undecided"
BASELINE_KINDS = ("noise", "interpolated", "gaussian", "average")


@dataclass(frozen=True)
class Family:
    """A baseline family: its table kind, the column holding its knob, the column telling its curves apart."""

    name: str
    kind: str
    level: str
    curve: str | None
    check: str
    describe: str


FAMILIES = (
    Family("noise", "noise", "level", None, "generated_beats_noise_at_equal_similarity",
           "originals plus Gaussian noise of growing std in the normalised space"),
    Family("interpolation", "interpolated", "weight", "pair_type",
           "generated_beats_interpolation_at_equal_similarity",
           "(1 - w) a + w b of two originals over a sweep of w, one curve across runs and one within a run"),
    Family("gaussian", "gaussian", "level", None, "generated_beats_gaussian_at_equal_similarity",
           "a diagonal Gaussian per run (per-parameter mean and std of the run's checkpoints, normalised space), "
           "sampled with the std scaled by growing factors"),
)  # fmt: skip


def json_number(x: Any) -> float | None:
    """A JSON-safe float: NaN/inf/None -> None."""
    if x is None:
        return None
    x = float(x)
    return None if not np.isfinite(x) else x


def _groups(table: pd.DataFrame, family: Family) -> list[tuple[str, float, np.ndarray]]:
    """(curve, level, row positions) of every group of ``family`` with a finite similarity and score."""
    rows = table[(table["kind"] == family.kind) & table["max_iou"].notna() & table["score"].notna()]
    out = []
    curves = (
        rows[family.curve].astype(object).fillna("").astype(str) if family.curve else pd.Series("", index=rows.index)
    )
    for (curve, level), g in rows.groupby([curves, rows[family.level]], sort=True):
        out.append((str(curve), float(level), table.index.get_indexer(g.index)))
    return out


def points(table: pd.DataFrame, family: Family, groups: list | None = None) -> list[dict[str, Any]]:
    """Per group of ``family`` (``groups``: :func:`_groups` of it, when already made): curve, level, mean similarity,
    mean score and n (sorted by curve and level)."""
    sims, scores = table["max_iou"].to_numpy(np.float64), table["score"].to_numpy(np.float64)
    return [{"curve": c, "level": lv, "similarity": float(sims[i].mean()), "score": float(scores[i].mean()),
             "n": int(len(i))} for c, lv, i in (_groups(table, family) if groups is None else groups)]  # fmt: skip


def frontier_value(curves: Sequence[str], sims: np.ndarray, scores: np.ndarray, target: float) -> float:
    """The best score any curve reaches at similarity ``target`` (NaN where no curve spans it)."""
    best = np.nan
    curves = np.asarray(curves)
    for c in dict.fromkeys(curves.tolist()):
        m = curves == c
        x, inverse = np.unique(np.round(sims[m], 12), return_inverse=True)  # ties: averaged
        y = np.bincount(inverse, weights=scores[m]) / np.bincount(inverse)
        if x[0] - 1e-12 <= target <= x[-1] + 1e-12:
            v = float(np.interp(target, x, y))
            best = v if np.isnan(best) else max(best, v)
    return best


def frontier_score(pts: Sequence[Mapping[str, Any]], target: float | None) -> tuple[float | None, str]:
    """The frontier's score at similarity ``target`` and its status (covered / not covered / no points)."""
    if target is None or not np.isfinite(target):
        return None, "no generated similarity"
    if not pts:
        return None, "no baseline"
    curves = [str(p.get("curve", "")) for p in pts]
    sims = np.array([p["similarity"] for p in pts], dtype=np.float64)
    value = frontier_value(curves, sims, np.array([p["score"] for p in pts], dtype=np.float64), target)
    if np.isnan(value):
        return None, f"not covered: the frontier spans similarity {sims.min():.4f}..{sims.max():.4f}"
    return float(value), "covered"


def levels_needed(
    rows: Sequence[Mapping[str, Any]], kind: str, levels: Sequence[float], *, cap: float, floor: float = 1e-4,
    key: str = "level",
) -> list[float]:  # fmt: skip
    """One more level of a baseline whose knob (row column ``key``) moves models away from the originals (noise std,
    Gaussian scale, interpolation weight) while its frontier does not reach the generated models' similarities:
    twice the largest level while its models
    are still more similar than the least similar generated model (up to ``cap``; further at once when the largest
    level's models are much nearer the originals than the farthest generated model: distances grow in proportion
    to the level), half the smallest while they are less similar than the most similar one (down to ``floor``)."""
    gen = [r for r in rows if r["kind"] == "generated" and r["max_iou"] is not None]
    if not gen or not levels:
        return []
    by_level: dict[float, list[Mapping[str, Any]]] = {}
    for r in rows:
        if r["kind"] == kind and r["max_iou"] is not None:
            by_level.setdefault(float(r[key]), []).append(r)
    if not by_level:
        return []
    lo, hi = min(by_level), max(by_level)
    if np.mean([r["max_iou"] for r in by_level[hi]]) > min(r["max_iou"] for r in gen) and 2 * hi <= cap:
        far = max((r.get("nearest_distance") or 0.0) for r in gen)
        near = np.mean([r.get("nearest_distance") or 0.0 for r in by_level[hi]])
        factor = 2.0
        if near > 0 and far / near > 8:  # e.g. a Gaussian of a run's tiny spread: jump to half the distance
            factor = 2.0 ** np.floor(np.log2(far / near / 2))
        while hi * factor > cap:
            factor /= 2
        return [hi * factor]
    if np.mean([r["max_iou"] for r in by_level[lo]]) < max(r["max_iou"] for r in gen) and lo / 2 >= floor:
        if lo / 2 not in by_level:
            return [lo / 2]
    return []


def per_sample_scores(table: pd.DataFrame, test_failures: np.ndarray | None) -> bool:
    """Whether every score is 1 - the share of its test failures (accuracy-like), so test samples can be
    resampled."""
    if test_failures is None or len(test_failures) != len(table) or test_failures.shape[1] == 0:
        return False
    scores = table["score"].to_numpy(np.float64)
    ok = np.isfinite(scores)
    return bool(np.allclose(scores[ok], 1.0 - test_failures[ok].mean(1), rtol=0, atol=1e-9))


@dataclass
class _Replicates:
    """Bootstrap replicates of every model's test score (``scores`` [M, B]) and the generated means."""

    scores: np.ndarray
    resampled: str
    rng: np.random.Generator

    def mean_of(self, members: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per replicate: the mean score and mean of ``values`` over ``members`` resampled with replacement."""
        b = self.scores.shape[1]
        rows = members[self.rng.integers(0, len(members), size=(b, len(members)))]
        return self.scores[rows, np.arange(b)[:, None]].mean(1), values[rows].mean(1)


def _replicates(table: pd.DataFrame, test_failures: np.ndarray | None, resamples: int, seed: int) -> _Replicates:
    rng = np.random.default_rng(seed)
    scores = table["score"].to_numpy(np.float64)
    if per_sample_scores(table, test_failures):
        n = test_failures.shape[1]
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float32)  # [B, N]
        wrong = test_failures.astype(np.float32) @ counts.T  # [M, B]
        return _Replicates(1.0 - wrong.astype(np.float64) / n, "models and test samples", rng)
    return _Replicates(np.repeat(scores[:, None], resamples, axis=1), "models (the score is not a per-sample mean)",
                       rng)  # fmt: skip


def _ci(values: np.ndarray) -> list[float | None] | None:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return None
    return [json_number(np.percentile(v, 2.5)), json_number(np.percentile(v, 97.5))]


def decide(ci: Sequence[float | None] | None) -> str:
    """pass when the interval lies above 0, fail when below, undecided otherwise (or without an interval)."""
    if not ci or ci[0] is None or ci[1] is None:
        return UNDECIDED
    if ci[0] > 0:
        return PASS
    if ci[1] < 0:
        return FAIL
    return UNDECIDED


def frontiers(
    table: pd.DataFrame, test_failures: np.ndarray | None = None, *, resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Every family's frontier points (with intervals of their mean scores), its score at the generated mean
    similarity, the margin with its 95% interval, and the verdict (module docstring). ``test_failures``: bool
    [len(table), N test samples], row-aligned with ``table``; without it only models are resampled."""
    table = table.reset_index(drop=True)
    sims = table["max_iou"].to_numpy(np.float64)
    scores = table["score"].to_numpy(np.float64)
    gen = np.flatnonzero(((table["kind"] == "generated") & np.isfinite(sims) & np.isfinite(scores)).to_numpy())
    out: dict[str, Any] = {}
    rep = _replicates(table, test_failures, resamples, seed) if len(gen) else None
    gen_sim = float(sims[gen].mean()) if len(gen) else None
    gen_score = float(scores[gen].mean()) if len(gen) else None
    if rep is not None:
        g_score, g_sim = rep.mean_of(gen, sims)
        out["generated"] = {"n": int(len(gen)), "similarity": json_number(gen_sim), "score": json_number(gen_score),
                            "score_ci95": _ci(g_score), "resampled": rep.resampled, "resamples": resamples}  # fmt: skip
    for fam in FAMILIES:
        groups = _groups(table, fam)
        pts = points(table, fam, groups)
        at_gen, status = frontier_score(pts, gen_sim)
        block: dict[str, Any] = {"describe": fam.describe, "points": pts, "status": status,
                                 "score_at_generated_similarity": json_number(at_gen), "margin": None, "ci95": None,
                                 "covered_share": None}  # fmt: skip
        if rep is not None and groups and at_gen is not None:
            curves = [c for c, _, _ in groups]
            reps = [rep.mean_of(members, sims) for _, _, members in groups]  # per group: (score [B], sim [B])
            for p, (s, _) in zip(pts, reps):
                p["score_ci95"] = _ci(s)
            g_sc = np.stack([s for s, _ in reps], 1)  # [B, groups]
            g_si = np.stack([x for _, x in reps], 1)
            front = np.array([frontier_value(curves, g_si[b], g_sc[b], g_sim[b]) for b in range(resamples)])
            margins = g_score - front
            block.update(margin=json_number(gen_score - at_gen), ci95=_ci(margins),
                         covered_share=json_number(np.isfinite(front).mean()))  # fmt: skip
        block["verdict"] = decide(block["ci95"]) if block["margin"] is not None else status.split(":")[0]
        out[fam.name] = block
    return out


def dominated_by(table: pd.DataFrame) -> list[str]:
    """For every row: the name of the baseline model that dominates it (at least as accurate and less similar; the
    most accurate such model, then the least similar), '' when none does or the row is not a generated model."""
    base = table[table["kind"].isin(BASELINE_KINDS) & table["max_iou"].notna() & table["score"].notna()]
    b_score, b_sim = base["score"].to_numpy(np.float64), base["max_iou"].to_numpy(np.float64)
    order = np.lexsort((b_sim, -b_score))  # most accurate first, then least similar
    names = base["name"].astype(str).to_numpy()[order]
    b_score, b_sim = b_score[order], b_sim[order]
    out = []
    for kind, score, sim in zip(table["kind"], table["score"], table["max_iou"]):
        hit = (
            np.flatnonzero((b_score >= score - 1e-12) & (b_sim < sim)) if kind == "generated" and pd.notna(sim) else []
        )
        out.append(str(names[hit[0]]) if len(hit) else "")
    return out


def dominance(table: pd.DataFrame) -> dict[str, Any]:
    """How many generated models no baseline model dominates, and how many each baseline kind dominates."""
    gen = table["kind"] == "generated"
    by = pd.Series(dominated_by(table), index=table.index)[gen]
    n = int(gen.sum())
    out: dict[str, Any] = {"n": n, "undominated": int((by == "").sum()),
                           "undominated_share": json_number((by == "").mean()) if n else None}  # fmt: skip
    sims, scores = table["max_iou"].to_numpy(np.float64), table["score"].to_numpy(np.float64)
    per_kind = {}
    for kind in BASELINE_KINDS:  # dominated by some model of this kind (any, not only the most accurate one)
        b = (table["kind"] == kind).to_numpy()
        per_kind[kind] = int(sum(bool(np.any((scores[b] >= s - 1e-12) & (sims[b] < x)))
                                 for s, x in zip(scores[gen.to_numpy()], sims[gen.to_numpy()])))  # fmt: skip
    out["dominated_by_kind"] = per_kind
    return out
