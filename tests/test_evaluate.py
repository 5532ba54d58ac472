"""Tests of the evaluation stage: similarity, distances, baselines, summary, plots, and evaluate_zoo."""

from __future__ import annotations

import json
import math
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from rpg.classifier import dataset_labels
from rpg.config import EvaluateConfig
from rpg.errors import RPGInputError
from rpg.evaluate import baselines as bl
from rpg.evaluate.evaluate import TABLE_COLUMNS
from rpg.evaluate.evaluators import ClassificationEvaluator, Outcome, build_evaluator
from rpg.evaluate.frontier import decide, dominance, dominated_by, frontier_score, frontiers, levels_needed
from rpg.evaluate.plots import plot_accuracy_vs_similarity, plot_distances, plot_training_loss, read_train_log
from rpg.evaluate.similarity import (
    flatten_tokens,
    iou,
    iou_matrix,
    masked_min,
    max_iou,
    pairwise_rms_distances,
    rms_distances,
    tv_distances,
    wrong_mask,
)
from rpg.evaluate.summary import diversity, group_table, score_stats, summarize
from rpg.report import GENERATED_BN, summary_rows

PNG = b"\x89PNG\r\n\x1a\n"


def mask_of(n: int, idx) -> torch.Tensor:
    m = torch.zeros(n, dtype=torch.bool)
    m[list(idx)] = True
    return m


# ---------------------------------------------------------------- similarity


def test_iou_known_sets():
    a, b = mask_of(10, [0, 1, 2, 3]), mask_of(10, [2, 3, 4])
    assert iou(a, b) == pytest.approx(2 / 5)
    assert iou(a, a) == 1.0
    assert iou(a, mask_of(10, [7, 8])) == 0.0
    assert iou(mask_of(10, []), mask_of(10, [])) == 1.0  # both perfect: identical behaviour
    assert iou(mask_of(10, []), mask_of(10, [1])) == 0.0


def test_wrong_mask_and_shape_check():
    assert wrong_mask(torch.tensor([0, 1, 2]), torch.tensor([0, 2, 2])).tolist() == [False, True, False]
    with pytest.raises(ValueError):
        wrong_mask(torch.tensor([0, 1]), torch.tensor([0, 1, 2]))


def test_iou_matrix_and_max_excluding_self():
    sets = [[0, 1, 2], [0, 1, 3], [5, 6], [0, 1, 2, 9]]
    w = torch.stack([mask_of(10, s) for s in sets])
    m = iou_matrix(w, w)
    assert m.shape == (4, 4)
    assert torch.allclose(m, m.T)
    assert torch.allclose(torch.diagonal(m), torch.ones(4, dtype=torch.float64))
    assert m[0, 1] == pytest.approx(2 / 4) and m[0, 3] == pytest.approx(3 / 4) and m[0, 2] == 0.0
    sim, idx = max_iou(w, w, exclude=torch.eye(4, dtype=torch.bool))
    assert sim.tolist() == pytest.approx([0.75, 0.5, 0.0, 0.75])
    assert idx.tolist()[0] == 3 and idx.tolist()[3] == 0
    # a single original has no "other" original: NaN and index -1
    sim1, idx1 = max_iou(w[:1], w[:1], exclude=torch.ones(1, 1, dtype=torch.bool))
    assert math.isnan(float(sim1[0])) and int(idx1[0]) == -1


def test_rms_distances_and_padding():
    tokens = torch.tensor([[1.0, 2.0], [3.0, float("nan")]], dtype=torch.float64)
    flat = flatten_tokens(tokens)
    assert flat.tolist() == [1.0, 2.0, 3.0]
    # the layout mask keeps a NaN produced by a broken model visible
    broken = torch.tensor([[1.0, float("nan")], [3.0, float("nan")]], dtype=torch.float64)
    mask = torch.tensor([[True, True], [True, False]])
    assert math.isnan(float(rms_distances(flatten_tokens(broken, mask), flat[None])[0]))
    refs = torch.stack([flat, flat + 0.5, torch.zeros(3, dtype=torch.float64)])
    d = rms_distances(flat, refs, chunk_elements=3)  # one row per chunk
    assert d.tolist() == pytest.approx([0.0, 0.5, math.sqrt((1 + 4 + 9) / 3)])
    pw = pairwise_rms_distances(refs)
    assert torch.allclose(pw, pw.T) and torch.all(torch.diagonal(pw) == 0)
    wide = torch.randn(7, 50, generator=torch.Generator().manual_seed(0))  # each pair once, mirrored: row by row
    rows = torch.stack([rms_distances(w, wide) for w in wide]).fill_diagonal_(0.0)
    assert torch.equal(pairwise_rms_distances(wide), rows)
    near, idx = masked_min(pw, exclude=torch.eye(3, dtype=torch.bool))
    assert near[0] == pytest.approx(0.5) and int(idx[0]) == 1

    exact = torch.sqrt(((wide.double() - wide[0].double()) ** 2).sum(1) / 50)  # the squares taken in place: same bits
    assert torch.equal(rms_distances(wide[0], wide), exact)


def test_distances_are_added_row_by_row_as_the_frontiers_widen():
    # the evaluation widens its frontiers in rounds; each row's distances are computed once, in the first round that
    # has the row, and equal what one round over every row gives (originals: pairwise, 0 to themselves)
    from rpg.evaluate.evaluate import _add_distances, _original_functional, _Results

    g = torch.Generator().manual_seed(1)
    flats = [torch.randn(40, generator=g) for _ in range(7)]
    flats[5] = None  # non-finite weights: a NaN row
    once, rounds = (_Results([], [], list(flats), [], []) for _ in range(2))
    _add_distances(once, 3, 7)
    _add_distances(rounds, 3, 4)
    _add_distances(rounds, 3, 4)  # nothing new: nothing added
    assert len(rounds.distances) == 4
    _add_distances(rounds, 3, 7)
    originals = torch.stack(flats[:3]).double()
    assert torch.equal(torch.stack(once.distances[:3]), pairwise_rms_distances(originals))
    assert torch.equal(once.distances[6], rms_distances(flats[6], originals))
    assert torch.isnan(once.distances[5]).all()
    assert torch.equal(torch.stack(once.distances).nan_to_num(-1), torch.stack(rounds.distances).nan_to_num(-1))
    outputs = [torch.softmax(torch.randn(6, 4, generator=g), -1) for _ in range(3)]
    functional = _original_functional(outputs)
    assert functional[1] == float(tv_distances(outputs[1], torch.stack([outputs[0], outputs[2]])).min())
    assert _original_functional([outputs[0], None, outputs[2]]) == [None] * 3 and _original_functional([None]) == [None]


# ---------------------------------------------------------------- baselines


def test_token_noise_std_and_padding():
    tokens = torch.zeros(200, 64, dtype=torch.float64)
    tokens[-1, 10:] = float("nan")
    a = bl.add_token_noise(tokens, 0.03, torch.Generator().manual_seed(1))
    b = bl.add_token_noise(tokens, 0.03, torch.Generator().manual_seed(1))
    assert torch.equal(torch.isnan(a), torch.isnan(tokens))  # padding stays padding
    assert torch.allclose(a.nan_to_num(), b.nan_to_num())  # seeded
    real = a[~torch.isnan(a)]
    assert real.std().item() == pytest.approx(0.03, rel=0.03)
    assert abs(real.mean().item()) < 0.002
    # RMS distance to the source = the noise std
    assert float(rms_distances(flatten_tokens(a), flatten_tokens(tokens)[None])[0]) == pytest.approx(0.03, rel=0.03)


def test_interpolation_endpoints_and_average():
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(5, 3, generator=g), "n": torch.tensor(7)}
    b = {"w": torch.randn(5, 3, generator=g), "n": torch.tensor(9)}
    assert torch.equal(bl.interpolate_state_dicts(a, b, 0.0)["w"], a["w"])
    assert torch.equal(bl.interpolate_state_dicts(a, b, 1.0)["w"], b["w"])
    mid = bl.interpolate_state_dicts(a, b, 0.25)
    assert torch.allclose(mid["w"], 0.75 * a["w"] + 0.25 * b["w"])
    assert mid["n"].item() == 7 and mid["w"].dtype == torch.float32
    avg = bl.average_state_dicts(iter([a, b]))  # a generator works
    assert torch.allclose(avg["w"], (a["w"] + b["w"]) / 2) and avg["n"].item() == 7
    with pytest.raises(ValueError):
        bl.interpolate_state_dicts(a, {"w": b["w"]}, 0.5)


def test_select_pairs_mixes_runs_and_is_seeded():
    runs = [0, 0, 0, 1, 1, 1]
    pairs = bl.select_pairs(runs, 4, seed=3)
    assert pairs == bl.select_pairs(runs, 4, seed=3)
    kinds = [p[2] for p in pairs]
    assert kinds.count(bl.ACROSS_RUN) == 2 and kinds.count(bl.WITHIN_RUN) == 2
    for i, j, kind in pairs:
        assert (runs[i] == runs[j]) == (kind == bl.WITHIN_RUN)
    assert len({(i, j) for i, j, _ in pairs}) == 4
    one_run = bl.select_pairs([0, 0, 0], 5, seed=0)  # only 3 within-run pairs exist
    assert len(one_run) == 3 and {k for *_, k in one_run} == {bl.WITHIN_RUN}
    two_runs = bl.select_pairs([0, 1], 3, seed=0)
    assert two_runs == [(0, 1, bl.ACROSS_RUN)]


def test_recalibrate_batchnorm_estimates_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(4))
        model[0].bias.zero_()
    x = torch.randn(400, 4) * 2.0 + 3.0
    batches = [(x[i : i + 100], torch.zeros(100)) for i in range(0, 400, 100)]
    assert bl.recalibrate_batchnorm(model, batches, num_batches=4, device="cpu")
    bn = model[1]
    assert torch.allclose(bn.running_mean, x.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, torch.stack([b[0].var(0) for b in batches]).mean(0), atol=1e-4)
    assert bn.momentum == 0.1 and not model.training and not bn.training  # mode restored
    before = bn.running_mean.clone()
    assert not bl.recalibrate_batchnorm(model, [], num_batches=4, device="cpu")  # no data: stats kept
    assert torch.equal(bn.running_mean, before)
    assert not bl.recalibrate_batchnorm(model, batches, num_batches=0, device="cpu")
    assert not bl.recalibrate_batchnorm(nn.Linear(2, 2), batches, num_batches=3, device="cpu")


# ---------------------------------------------------------------- config, labels


def test_config_defaults_and_errors():
    cfg = EvaluateConfig.parse({})
    assert cfg.noise_levels == [0.01, 0.02, 0.03, 0.04, 0.05] and cfg.bn_recalibrate_batches == 10
    with pytest.raises(ValueError, match="unknown"):
        EvaluateConfig.parse({"noise_level": [0.1]})
    with pytest.raises(ValueError, match="interp_weights"):
        EvaluateConfig.parse({"interp_weights": [1.5]})
    with pytest.raises(ValueError, match="bn_recalibrate_generated.*bn_recalibrate_batches > 0"):
        EvaluateConfig.parse({"bn_recalibrate_generated": True, "bn_recalibrate_batches": 0})
    assert cfg.evaluator == "classification" and cfg.copy_noise == 0.01 and cfg.equal_n is None


def test_dataset_labels():
    ds = torch.utils.data.TensorDataset(torch.zeros(5, 2), torch.tensor([3, 1, 4, 1, 5]))
    assert dataset_labels(ds).tolist() == [3, 1, 4, 1, 5]

    class Plain(torch.utils.data.Dataset):
        targets = [0, 0, 0]  # stale attribute: must not be trusted

        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.zeros(2), i + 1

    assert dataset_labels(Plain(), batch_size=2).tolist() == [1, 2, 3]


# ---------------------------------------------------------------- summary, plots


def synthetic_table() -> pd.DataFrame:
    rows = []

    def add(kind, group, score, sim, dist, **kw):
        row = {c: None for c in TABLE_COLUMNS}
        row.update(kind=kind, group=group, name=f"{group}_{len(rows)}", score=score, max_iou=sim,
                   nearest_distance=dist, failures_probe=60, copy=dist is not None and dist <= 0.02,
                   **{"in_summary": False, **kw})  # fmt: skip
        rows.append(row)

    for i, score in enumerate((0.90, 0.92, 0.94, 0.96)):
        add("original", "original", score, 0.8, 0.5, in_summary=i < 2)
    for score in (0.91, 0.93):
        add("generated", "generated", score, 0.5, 0.3)
    for level, score, sim in ((0.01, 0.93, 0.9), (0.05, 0.70, 0.4)):
        for _ in range(2):
            add("noise", f"noise@{level:g}", score, sim, level, level=level)
    add("interpolated", "interpolated@0.5", 0.6, 0.3, 0.2, weight=0.5, pair_type="across_run")
    add("average", "average", 0.5, 0.2, 0.4)
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def test_summary_is_on_test_over_equal_n_with_intervals():
    s = summarize(synthetic_table())
    assert s["split"] == "test" and s["similarity_split"] == "probe"
    assert s["original"]["n"] == 2 and s["original"]["score"]["mean"] == pytest.approx(0.91)  # the subsample
    assert s["original_all"]["n"] == 4 and s["original_all"]["score"]["mean"] == pytest.approx(0.93)
    g = s["generated"]["score"]
    assert (g["best"], g["mean"], g["min"]) == pytest.approx((0.93, 0.92, 0.91))
    lo, hi = s["generated"]["score"]["ci95"]["mean"]
    assert 0.91 <= lo <= 0.92 <= hi <= 0.93
    assert s["generated"]["similarity"]["mean"] == pytest.approx(0.5)
    assert set(s["baselines"]) == {"noise@0.01", "noise@0.05", "interpolated@0.5", "average"}
    b = s["baselines"]["noise@0.05"]
    assert b["level"] == 0.05 and b["n"] == 2 and b["score"]["mean"] == pytest.approx(0.70)
    c = s["checks"]
    assert c["generated_not_copies"] is True and c["resolution_ok"] is True
    # frontier (0.4 -> 0.70, 0.9 -> 0.93) at similarity 0.5: 0.70 + 0.1/0.5 * 0.23 = 0.746
    noise = s["frontiers"]["noise"]
    assert noise["score_at_generated_similarity"] == pytest.approx(0.746)
    assert noise["margin"] == pytest.approx(0.92 - 0.746) and noise["ci95"][0] > 0  # models resampled only
    assert c["generated_beats_noise_at_equal_similarity"] == "pass"
    assert c["generated_beats_interpolation_at_equal_similarity"] == "not covered"  # one point, at 0.3
    assert c["generated_beats_gaussian_at_equal_similarity"] == "no baseline"
    assert s["dominance"]["n"] == 2 and s["dominance"]["undominated"] == 2
    assert s["num_models"]["noise"] == 4 and s["resolution"]["wrong_per_model_min"] == 60


def test_summary_copies_frontier_not_covered_and_missing_generated():
    t = synthetic_table()
    gen = t["kind"] == "generated"
    t.loc[gen, ["max_iou", "score", "nearest_distance", "copy"]] = [0.95, 0.80, 0.01, True]
    s = summarize(t, cfg=EvaluateConfig(frontier_max_gap=0.2))  # 10 points below the originals: still a claim
    assert s["checks"]["generated_not_copies"] is False and s["generated"]["copies"] == 2
    # 0.95 lies above the noise frontier's range (0.4 .. 0.9): not covered, no clamping
    assert s["checks"]["generated_beats_noise_at_equal_similarity"] == "not covered"
    assert s["frontiers"]["noise"]["status"].startswith("not covered") and s["frontiers"]["noise"]["margin"] is None
    # 0.80 at similarity 0.95: the originals' 0.90 at 0.8 dominate nothing (not baselines), the noise at 0.9 does
    assert s["dominance"]["undominated"] == 0 and s["dominance"]["dominated_by_kind"]["noise"] == 2
    s = summarize(t[~gen])
    assert s["generated"]["score"]["mean"] is None and s["checks"]["generated_not_copies"] is None
    assert s["checks"]["generated_beats_noise_at_equal_similarity"] == "no generated models"
    # beyond the tolerance (default 5 points) no frontier speaks, covered or not
    assert summarize(t)["checks"]["generated_beats_noise_at_equal_similarity"] == "not applicable"


def test_frontier_ties_are_averaged_and_levels_extend_until_covered():
    points = [{"similarity": 1.0, "score": 0.9}, {"similarity": 1.0, "score": 0.8}, {"similarity": 0.5, "score": 0.4}]
    assert frontier_score(points, 1.0)[0] == pytest.approx(0.85)  # tied levels averaged
    assert frontier_score(points, 0.75)[0] == pytest.approx(0.625)
    assert frontier_score(points, 0.2)[0] is None and frontier_score([], 0.5)[0] is None
    rows = [{"kind": "generated", "max_iou": 0.3}, {"kind": "noise", "level": 0.05, "max_iou": 0.6}]
    assert levels_needed(rows, "noise", [0.05], cap=1.0) == [0.1]  # noise still more similar: go further
    assert levels_needed(rows, "noise", [0.05], cap=0.08) == []  # unless the cap is reached
    assert levels_needed(rows, "gaussian", [1.0], cap=8.0) == []  # another family's rows do not count
    rows = [{"kind": "generated", "max_iou": 0.99}, {"kind": "noise", "level": 0.01, "max_iou": 0.9}]
    assert levels_needed(rows, "noise", [0.01], cap=1.0) == [0.005]  # more similar than the smallest level
    rows = [{"kind": "generated", "max_iou": 0.5}, {"kind": "noise", "level": 0.01, "max_iou": 0.9},
            {"kind": "noise", "level": 0.1, "max_iou": 0.2}]  # fmt: skip
    assert levels_needed(rows, "noise", [0.01, 0.1], cap=1.0) == []
    # a level whose models sit far nearer the originals than the generated ones: jump (distance grows with level)
    rows = [{"kind": "generated", "max_iou": 0.5, "nearest_distance": 0.64},
            {"kind": "gaussian", "level": 1.0, "max_iou": 0.99, "nearest_distance": 0.01}]  # fmt: skip
    assert levels_needed(rows, "gaussian", [1.0], cap=1e6) == [32.0]  # 0.64 / 0.01 / 2 = 32
    assert levels_needed(rows, "gaussian", [1.0], cap=10.0) == [8.0]  # never past the cap


def test_frontier_is_the_best_curve_where_it_spans_the_similarity():
    points = [{"curve": "across_run", "similarity": 0.4, "score": 0.90}, {"curve": "across_run", "similarity": 0.8,
              "score": 0.94}, {"curve": "within_run", "similarity": 0.7, "score": 0.99},
              {"curve": "within_run", "similarity": 0.95, "score": 0.99}]  # fmt: skip
    assert frontier_score(points, 0.5)[0] == pytest.approx(0.91)  # only the across-run curve spans 0.5
    assert frontier_score(points, 0.75)[0] == pytest.approx(0.99)  # both do: the better one
    assert frontier_score(points, 0.9)[0] == pytest.approx(0.99)


def _frontier_table(gen_accuracy: float, n_test: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Noise groups at similarity 0.9 / 0.5 / 0.1 with accuracy 0.95 / 0.85 / 0.45 (5 models each) and 10 generated
    models at similarity 0.5 with accuracy ``gen_accuracy``; every model's test failures drawn at its accuracy."""
    rng = np.random.default_rng(seed)
    rows, fails = [], []

    def add(kind, group, acc, sim, **kw):
        wrong = np.zeros(n_test, dtype=bool)
        wrong[rng.choice(n_test, size=round((1 - acc) * n_test), replace=False)] = True
        row = {c: None for c in TABLE_COLUMNS}
        row.update(kind=kind, group=group, name=f"{group}_{len(rows)}", score=1 - wrong.mean(), max_iou=sim,
                   failures_probe=60, in_summary=kind == "original", **kw)  # fmt: skip
        rows.append(row)
        fails.append(wrong)

    for _ in range(10):
        add("original", "original", 0.96, 0.95)
        add("generated", "generated", gen_accuracy, 0.5)
    for level, acc, sim in ((0.01, 0.95, 0.9), (0.1, 0.85, 0.5), (1.0, 0.45, 0.1)):
        for _ in range(5):
            add("noise", f"noise@{level:g}", acc, sim, level=level)
    return pd.DataFrame(rows, columns=TABLE_COLUMNS), np.stack(fails)


@pytest.mark.parametrize(("accuracy", "verdict"), [(0.90, "pass"), (0.85, "undecided"), (0.80, "fail")])
def test_frontier_margin_is_decided_by_its_interval(accuracy: float, verdict: str):
    table, fails = _frontier_table(accuracy, 2000)
    f = frontiers(table, fails, resamples=500)["noise"]
    assert f["margin"] == pytest.approx(accuracy - 0.85, abs=1e-3) and f["verdict"] == verdict
    assert f["covered_share"] == 1.0 and f["ci95"][0] < f["margin"] < f["ci95"][1]
    s = summarize(table, cfg=EvaluateConfig(bootstrap=500, frontier_max_gap=0.2), test_failures=fails)
    assert s["checks"]["generated_beats_noise_at_equal_similarity"] == verdict
    assert s["frontiers"]["generated"]["resampled"] == "models and test samples"
    assert decide([0.01, 0.02]) == "pass" and decide([-0.02, -0.01]) == "fail" and decide(None) == "undecided"


def test_frontier_interval_shrinks_with_more_test_samples():
    widths = []
    for n_test in (200, 2000):
        table, fails = _frontier_table(0.88, n_test)
        lo, hi = frontiers(table, fails, resamples=500)["noise"]["ci95"]
        widths.append(hi - lo)
    assert widths[1] < 0.6 * widths[0]
    # without the test failures only the models are resampled: identical models per group, a narrower interval
    table, fails = _frontier_table(0.88, 200)
    only_models = frontiers(table, None, resamples=500)
    assert only_models["generated"]["resampled"].startswith("models (")
    lo, hi = only_models["noise"]["ci95"]
    assert hi - lo < widths[0]


def test_frontier_claims_need_working_models_and_resolution():
    table, _ = _frontier_table(0.93, 500)
    far = table.copy()
    far.loc[far["kind"] == "generated", "score"] -= 0.2  # 0.70 against the originals' 0.96: far off
    s = summarize(far, cfg=EvaluateConfig(bootstrap=200))
    assert s["frontiers"]["applicable"]["applicable"] is False
    assert s["checks"]["generated_beats_noise_at_equal_similarity"] == "not applicable"
    assert s["frontiers"]["noise"]["margin"] is not None  # still reported
    coarse = table.copy()
    coarse["failures_probe"] = 10
    s = summarize(coarse, cfg=EvaluateConfig(bootstrap=200))
    assert s["checks"]["resolution_ok"] is False
    assert s["checks"]["generated_beats_noise_at_equal_similarity"] == "no resolution"


def test_dominance_per_generated_model():
    table, _ = _frontier_table(0.90, 200)
    gen = table.index[table["kind"] == "generated"]
    table.loc[gen[0], ["score", "max_iou"]] = [0.80, 0.95]  # the noise at 0.01 is more accurate and less similar
    by = dominated_by(table)
    assert by[gen[0]].startswith("noise@0.01") and all(by[i] == "" for i in gen[1:])
    assert all(b == "" for i, b in enumerate(by) if i not in set(gen))
    d = dominance(table)
    assert d == {"n": 10, "undominated": 9, "undominated_share": 0.9,
                 "dominated_by_kind": {"noise": 1, "interpolated": 0, "gaussian": 0, "average": 0}}  # fmt: skip


def test_diversity_counts_distinct_models_and_groups():
    # models 0 and 1 share their failures, 2 is within the spacing of 3, 4 stands alone
    d = [[0.0, 0.5, 0.5, 0.5, 0.5], [0.5, 0.0, 0.5, 0.5, 0.5], [0.5, 0.5, 0.0, 0.001, 0.5],
         [0.5, 0.5, 0.001, 0.0, 0.5], [0.5, 0.5, 0.5, 0.5, 0.0]]  # fmt: skip
    same = np.eye(5, dtype=bool)
    same[0, 1] = same[1, 0] = True
    pairs = {"names": list("abcde"), "states": [0, 0, 1, 1, 1], "distance": d, "iou": np.eye(5).tolist(),
             "same_failures": same.tolist()}  # fmt: skip
    out = diversity(pairs, spacing=0.01)
    assert out["n"] == 5 and out["distinct"] == 1 and out["clusters"] == 3
    assert out["pairwise_similarity_mean"] == pytest.approx(0.0) and out["pairwise_distance_mean"] > 0.3
    assert out["per_state"]["0"]["distinct"] == 0 and out["per_state"]["1"]["clusters"] == 2
    assert diversity({"names": []}, 0.01)["distinct"] == 0


def test_duplicates_are_judged_on_probe_failures_not_on_the_few_test_failures():
    # three accurate models failing on the same 2 of 6 test samples: on the probe samples after the test split, a
    # and b still fail alike (the same function) while c differs, so only a and b are duplicates
    from rpg.evaluate.evaluate import _Job, _Results, generated_pairs

    test = torch.tensor([0, 1, 0, 0, 1, 0], dtype=torch.bool)
    extra = {"a": [1, 1, 0, 1], "b": [1, 1, 0, 1], "c": [0, 1, 1, 1]}
    probe = [torch.cat([test, torch.tensor(v, dtype=torch.bool)]) for v in extra.values()]
    jobs = [_Job(row={"kind": "generated", "name": n, "state": 0}, make=dict) for n in extra]
    flats = [torch.full((8,), float(i)) for i in range(3)]  # far apart: only the failure rule can pair them
    results = _Results(test_failures=[test] * 3, probe_failures=probe, flats=flats, outputs=[None] * 3,
                       functional=[None] * 3)  # fmt: skip
    pairs = generated_pairs(jobs, results, "generated")
    assert pairs["same_failures"] == [[True, True, False], [True, True, False], [False, False, True]]
    out = diversity(pairs, spacing=0.01)
    assert out["distinct"] == 1 and out["clusters"] == 2


def test_score_stats_bootstrap_interval():
    s = score_stats([0.5, 0.6, 0.7, 0.8], bootstrap=500, seed=0)
    assert s["mean"] == pytest.approx(0.65) and s["ci95"]["mean"][0] < 0.65 < s["ci95"]["mean"][1]
    assert s["ci95"]["best"][1] == pytest.approx(0.8) and s["ci95"]["min"][0] == pytest.approx(0.5)
    assert score_stats([], bootstrap=10)["mean"] is None and score_stats([0.3])["ci95"] is None


def test_group_table():
    g = group_table(synthetic_table())
    assert list(g["kind"])[:2] == ["original", "generated"]
    assert int(g.loc[g["group"] == "noise@0.01", "n"].iloc[0]) == 2


def test_plots_written(tmp_path: Path):
    t = synthetic_table()
    for fn, name in ((plot_accuracy_vs_similarity, "a.png"), (plot_distances, "d.png")):
        out = fn(t, tmp_path / name)
        assert out.read_bytes()[:8] == PNG and out.stat().st_size > 5000
    log_csv = tmp_path / "train_log.csv"
    steps = np.arange(1, 301)
    pd.DataFrame({"step": steps, "loss": 1.0 / steps + 0.01, "lr": 1e-3 * np.ones(300)}).to_csv(log_csv, index=False)
    out = plot_training_loss(read_train_log(log_csv), tmp_path / "loss.png")
    assert out.read_bytes()[:8] == PNG
    missing = plot_training_loss(read_train_log(tmp_path / "nope.csv"), tmp_path / "loss_missing.png")
    assert missing.read_bytes()[:8] == PNG
    empty = plot_distances(t.iloc[0:0], tmp_path / "empty.png")
    assert empty.read_bytes()[:8] == PNG
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files


# ---------------------------------------------------------------- evaluators


def test_classification_evaluator_on_digits():
    ev = ClassificationEvaluator(data={"name": "digits"})
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    test, probe = ev.evaluate(model, "test"), ev.evaluate(model, "probe")
    n = len(ev.dataset("test")[1])
    assert test.main == "accuracy" and test.failures.shape == (n,) and test.outputs.shape == (n, 10)
    assert test.score == pytest.approx(1 - test.failures.float().mean().item())
    assert torch.allclose(test.outputs.sum(1), torch.ones(n))
    assert probe.failures.shape == (6 * n,) and torch.equal(probe.failures[:n], test.failures)  # test comes first
    assert sum(1 for _ in ev.calibration_batches(seed=0, batch_size=100)) == 11


def test_classification_probe_reuses_the_same_models_test_outputs():
    """Right after test, probe runs only the corrupted samples through the model; same result as from scratch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    ev = ClassificationEvaluator(data={"name": "digits"})
    n = len(ev.dataset("test")[1])
    test = ev.evaluate(model, "test")
    seen.clear()
    probe = ev.evaluate(model, "probe")
    assert sum(seen) == 5 * n  # the five corrupted copies only
    fresh = ClassificationEvaluator(data={"name": "digits"}).evaluate(model, "probe")
    assert torch.equal(probe.failures, fresh.failures) and torch.allclose(probe.outputs, fresh.outputs)
    assert torch.equal(probe.outputs[:n], test.outputs)
    with torch.no_grad():  # the same object with other weights is scored in full
        model[1].bias.add_(1.0)
    seen.clear()
    ev.evaluate(model, "probe")
    assert sum(seen) == 6 * n


def test_function_evaluator_and_errors(tmp_path, monkeypatch):
    (tmp_path / "my_eval.py").write_text(
        "import torch\n"
        "def score(model, split, *, data, device):\n"
        "    fails = torch.tensor([True, False, False, True])\n"
        "    return {'main': 'f1', 'metrics': {'f1': 0.5, 'other': 2}, 'failures': fails}\n"
        "def bad(model, split, *, data, device):\n"
        "    return 0.5\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ev = build_evaluator("my_eval:score", data={"name": "digits"})
    out = ev.evaluate(nn.Linear(2, 2), "test")
    assert out.main == "f1" and out.score == 0.5 and out.failures.tolist() == [True, False, False, True]
    assert ev.main_metric == "f1"
    with pytest.raises(TypeError, match="my_eval:bad"):
        build_evaluator("my_eval:bad", data={"name": "digits"}).evaluate(nn.Linear(2, 2), "test")
    for spec in ("no_such_module_xyz:f", "my_eval:nothing", "plainword"):
        with pytest.raises(RPGInputError, match="evaluator"):
            build_evaluator(spec, data={"name": "digits"})
    with pytest.raises(ValueError, match="main metric"):
        Outcome(main="acc", metrics={"f1": 1.0}, failures=torch.zeros(3))


# ---------------------------------------------------------------- evaluate_zoo with stand-in modules
# A toy architecture and layout, so the orchestration is tested on its own (fast); test_evaluate_zoo_real_modules
# uses the real ones.


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn = nn.Linear(8, 16), nn.BatchNorm1d(16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x.flatten(1)))))


def _data(split: str) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed({"train": 0, "test": 1, "probe": 1}[split])
    centers = torch.randn(3, 8, generator=torch.Generator().manual_seed(42)) * 0.6
    y = torch.arange(300 if split == "train" else 120) % 3
    x = centers[y] + torch.randn(len(y), 8, generator=g)
    if split == "probe":  # test + a noisier copy
        x = torch.cat([x, x + torch.randn(x.shape, generator=g)])
        y = torch.cat([y, y])
    return torch.utils.data.TensorDataset(x, y)


class _ToyEvaluator:
    name, main_metric = "toy", "accuracy"

    def evaluate(self, model, split):
        x, y = _data(split).tensors
        model.eval()
        with torch.no_grad():
            p = torch.softmax(model(x), 1)
        fails = p.argmax(1) != y
        return Outcome(main="accuracy", metrics={"accuracy": 1 - fails.float().mean().item()}, failures=fails,
                       outputs=p)  # fmt: skip

    def calibration_batches(self, *, seed, batch_size):
        return torch.utils.data.DataLoader(_data("train"), batch_size=batch_size, shuffle=True,
                                           generator=torch.Generator().manual_seed(seed))  # fmt: skip


class _Layout:
    """Each float entry with > 1 element is a layer, standardised, cut into NaN-padded tokens of size k."""

    def __init__(self, sd, k=16):
        self.k = k
        self.names = list(sd)
        self.rows = [(n, t.shape, t.mean().item(), t.std().item() + 1e-8) for n, t in sd.items()
                     if t.is_floating_point() and t.numel() > 1]  # fmt: skip

    def token_mask(self):
        return ~torch.isnan(_tokenize({n: torch.zeros(s) for n, s, *_ in self.rows}, self))


def _tokenize(sd, layout, source=None):
    out = []
    for name, _, mean, std in layout.rows:
        v = (sd[name].double().flatten() - mean) / std
        pad = (-v.numel()) % layout.k
        out.append(torch.cat([v, torch.full((pad,), float("nan"), dtype=torch.float64)]).view(-1, layout.k))
    return torch.cat(out)


def _detokenize(tokens, layout, reference):
    sd, start = dict(reference), 0
    for name, shape, mean, std in layout.rows:
        n = int(np.prod(shape))
        rows = -(-n // layout.k)
        sd[name] = (tokens[start : start + rows].flatten()[:n] * std + mean).view(shape).to(torch.float32)
        start += rows
    return sd


def _install_standins(monkeypatch, layout, reference):
    import rpg.evaluate.evaluate as ev
    from rpg.io import load_safetensors

    store = types.SimpleNamespace(
        layout=layout, reference=reference, index=pd.DataFrame({"checkpoint": [], "state": []})
    )
    for name, value in dict(
        build_model=lambda arch, kw, seed=None: _Net(),
        load_checkpoint=load_safetensors,
        tokenize=_tokenize,
        detokenize=_detokenize,
        TokenStore=lambda d: store,
    ).items():
        monkeypatch.setattr(ev, name, value)


def _train(seed: int, steps: int) -> dict:
    x, y = _data("train").tensors
    torch.manual_seed(seed)
    net = _Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.state_dict()


def _train_zoo(root: Path, runs=2, per_run=3) -> list[Path]:
    from rpg.io import save_safetensors

    paths = []
    x, y = _data("train").tensors
    for run in range(runs):
        torch.manual_seed(run)
        net = _Net()
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        for i in range(per_run):
            for _ in range(20):
                opt.zero_grad()
                nn.functional.cross_entropy(net(x), y).backward()
                opt.step()
            p = root / f"zoo/run{run}/ckpt_{i:03d}.safetensors"
            save_safetensors(net.state_dict(), p,
                             {"kind": "checkpoint", "arch": "toy", "arch_kwargs": {}, "run": run, "step": i,
                              "index": i})  # fmt: skip
            paths.append(p)
    return paths


def _evaluate(tmp_path, ckpts, generated, cfg, monkeypatch, out="evaluation"):
    from rpg.evaluate import evaluate_zoo
    from rpg.io import load_safetensors

    sd0, _ = load_safetensors(ckpts[0])
    _install_standins(monkeypatch, _Layout(sd0), sd0)
    return evaluate_zoo(data_cfg={"name": "digits"}, token_dir=tmp_path / "tokens", checkpoint_paths=ckpts,
                        generated_paths=generated, generator_dir=None, out_dir=tmp_path / out, evaluate_cfg=cfg,
                        device="cpu", evaluator=_ToyEvaluator())  # fmt: skip


def test_evaluate_zoo_end_to_end_with_standins(tmp_path: Path, monkeypatch):
    from rpg.io import load_safetensors, read_json, read_table, save_safetensors

    torch.set_num_threads(1)
    ckpts = _train_zoo(tmp_path)
    gen = []
    for i, src in enumerate((ckpts[2], ckpts[5])):  # "generated" = an exact copy and a perturbed copy
        sd, _ = load_safetensors(src)
        if i == 1:
            sd = {k: v + 0.02 * torch.randn_like(v) if v.is_floating_point() else v for k, v in sd.items()}
        gen.append(tmp_path / f"generated/model_{i:03d}.safetensors")
        save_safetensors(sd, gen[-1], {"kind": "generated", "arch": "toy", "state": i})
    cfg = {"noise_levels": [0.01, 0.5], "noise_models_per_level": 2, "interp_weights": [0.0, 0.5], "interp_pairs": 2,
           "bn_recalibrate_batches": 2, "batch_size": 64, "frontier_max_level": 0.6, "gaussian_scales": [1.0, 4.0],
           "gaussian_models_per_scale": 2, "gaussian_max_scale": 64.0}  # fmt: skip
    summary = _evaluate(tmp_path, ckpts, gen, cfg, monkeypatch)
    out = tmp_path / "evaluation"
    for name in ("table.parquet", "table.csv", "summary.json", "pairs.json", "accuracy_vs_similarity.png",
                 "loss.png", "distances.png"):  # fmt: skip
        assert (out / name).is_file(), name
    assert read_json(out / "summary.json") == json.loads(json.dumps(summary))
    table = read_table(out / "table.parquet")
    assert list(table.columns) == TABLE_COLUMNS
    counts = table["kind"].value_counts().to_dict()
    # 6 originals, 2 generated, 2 pairs x 2 weights, mean of all + mean of each of 2 runs; 2 noise models per level,
    # with levels below 0.01 added until the frontier reaches the exact copy's similarity
    levels = summary["settings"]["noise_levels"]
    assert levels[:2] == [0.01, 0.5] and min(levels) < 0.01
    scales = summary["settings"]["gaussian_scales"]
    assert scales[:2] == [1.0, 4.0] and counts.pop("gaussian") == 2 * len(scales)
    assert counts == {"original": 6, "generated": 2, "noise": 2 * len(levels), "interpolated": 4, "average": 3}
    gauss = table[table["kind"] == "gaussian"]
    assert set(gauss["run"]) == {0, 1} and (gauss.groupby("level")["nearest_distance"].mean().diff().dropna() > 0).all()
    assert set(summary["frontiers"]) >= {"noise", "interpolation", "gaussian", "generated", "applicable"}
    for key in ("noise", "interpolation", "gaussian"):
        assert summary["checks"][f"generated_beats_{key}_at_equal_similarity"] in (
            "pass", "fail", "undecided", "not covered", "not applicable", "no resolution")  # fmt: skip
    assert table.loc[table["kind"] != "generated", "dominated_by"].eq("").all()
    orig = table[table["kind"] == "original"]
    assert (orig["score"] > 0.6).all()  # chance is 1/3
    assert (orig["nearest_original"] != orig["name"]).all()  # originals compare with OTHER originals
    assert (orig["nearest_distance"] > 0).all() and (orig["loro_distance"] > orig["nearest_distance"]).all()
    assert orig["in_summary"].sum() == 2 and set(orig[orig["in_summary"]]["run"]) == {0, 1}  # equal n, both runs
    assert (orig["failures_probe"] >= orig["failures_test"]).all()
    copy = table[table["name"] == "model_000"].iloc[0]  # exact copy of run0/ckpt_002
    assert copy["max_iou"] == 1.0 and copy["nearest_distance"] == pytest.approx(0.0, abs=1e-6) and copy["copy"]
    assert copy["nearest_original"] == "run0/ckpt_002" and copy["max_iou_original"] == "run0/ckpt_002"
    assert copy["functional_distance"] == pytest.approx(0.0, abs=1e-3)
    assert copy["state"] == 0 and table[table["name"] == "model_001"].iloc[0]["state"] == 1
    noise = table[table["kind"] == "noise"]
    small = noise[noise["level"] == 0.01]
    assert np.allclose(small["nearest_distance"], 0.01, rtol=0.1)  # RMS distance = noise std
    assert (small["nearest_original"] == small["source"]).all()
    assert noise[noise["level"] == 0.5]["score"].mean() <= small["score"].mean()
    interp = table[table["kind"] == "interpolated"]
    assert set(interp["pair_type"]) == {"within_run", "across_run"}
    assert interp["bn_recalibrated"].all() and not noise["bn_recalibrated"].any()
    w0 = interp[interp["weight"] == 0.0]  # weight 0 = the first original of the pair (up to BN re-estimation)
    assert (w0["nearest_original"] == w0["source"].str.split("|").str[0]).all()
    assert set(table[table["kind"] == "average"]["group"]) == {"average", "average_within_run"}
    assert summary["num_models"]["generated"] == 2 and summary["generated"]["n"] == summary["original"]["n"] == 2
    assert summary["generated"]["similarity"]["max"] == 1.0
    assert summary["checks"]["generated_not_copies"] is False  # an exact copy is among them
    assert summary["generated_diversity"]["n"] == 2 and summary["novelty"]["copy_radius"] == 0.02
    assert summary["settings"]["evaluate"]["interp_pairs"] == 2 and summary["split"] == "test"


def test_generated_models_with_re_estimated_batchnorm_statistics_are_a_separate_kind(tmp_path, monkeypatch):
    from rpg.io import load_safetensors, read_table, save_safetensors

    torch.set_num_threads(1)
    ckpts = _train_zoo(tmp_path, runs=2, per_run=2)
    gen = []
    for i, src in enumerate((ckpts[0], ckpts[3])):  # right weights, wrong running statistics
        sd, _ = load_safetensors(src)
        sd["bn.running_mean"], sd["bn.running_var"] = sd["bn.running_mean"] + 3.0, sd["bn.running_var"] * 30.0
        gen.append(tmp_path / f"generated/model_{i:03d}.safetensors")
        save_safetensors(sd, gen[-1], {"kind": "generated", "arch": "toy", "state": i})
    cfg = {"noise_levels": [0.05], "noise_models_per_level": 1, "interp_pairs": 0, "bn_recalibrate_batches": 2,
           "batch_size": 64, "frontier_max_level": 0.1}  # fmt: skip
    plain = _evaluate(tmp_path, ckpts, gen, cfg, monkeypatch, out="plain")
    assert "generated_bn" not in plain and "generated_bn" not in plain["num_models"]
    s = _evaluate(tmp_path, ckpts, gen, {**cfg, "bn_recalibrate_generated": True}, monkeypatch, out="bn")
    table = read_table(tmp_path / "bn" / "table.parquet")
    bn, raw = table[table["kind"] == "generated_bn"], table[table["kind"] == "generated"]
    assert list(bn["name"]) == ["model_000_bn", "model_001_bn"] and list(bn["path"]) == list(raw["path"])
    assert bn["bn_recalibrated"].all() and not raw["bn_recalibrated"].any()
    assert s["num_models"]["generated_bn"] == 2 and s["generated_bn"]["n"] == 2
    # the models as generated stay what is reported and checked; the re-estimated ones recover the originals' level
    assert s["generated"] == plain["generated"] and s["checks"] == plain["checks"]
    assert s["generated"]["score"]["mean"] < s["original"]["score"]["mean"] - 0.1
    assert s["generated_bn"]["score"]["mean"] == pytest.approx(s["original"]["score"]["mean"], abs=0.05)
    assert "generated_bn" in s["settings"]["bn_recalibrated"]
    row = next(r for r in summary_rows(s) if r["group"] == GENERATED_BN)
    assert row["score"] == s["generated_bn"]["score"]
    # the diagnosis names the statistics as what the generated models lose (only where the row was measured)
    bn_note = s["diagnosis"]["batchnorm"]
    assert bn_note["recovered"] == pytest.approx(s["generated_bn"]["score"]["mean"] - s["generated"]["score"]["mean"])
    assert "BatchNorm running statistics" in bn_note["message"] and bn_note["message"] in s["diagnosis"]["message"]
    assert "batchnorm" not in plain["diagnosis"]


def _novelty(tmp_path, monkeypatch, make_generated) -> dict:
    """The summary of a toy zoo whose one generated model is ``make_generated(checkpoint paths, layout)``."""
    from rpg.io import load_safetensors, save_safetensors

    ckpts = _train_zoo(tmp_path, runs=2, per_run=3)
    sd0, _ = load_safetensors(ckpts[0])
    sd = make_generated(ckpts, _Layout(sd0), sd0)
    path = tmp_path / "generated" / "model_000.safetensors"
    save_safetensors(sd, path, {"kind": "generated", "arch": "toy", "state": 0})
    cfg = {"noise_levels": [0.05], "noise_models_per_level": 1, "interp_pairs": 0, "bn_recalibrate_batches": 0,
           "frontier_max_level": 0.1}  # fmt: skip
    return _evaluate(tmp_path, ckpts, [path], cfg, monkeypatch)


def test_novelty_check_fails_an_exact_copy(tmp_path, monkeypatch):
    from rpg.io import load_safetensors

    s = _novelty(tmp_path, monkeypatch, lambda ckpts, layout, ref: load_safetensors(ckpts[4])[0])
    assert s["checks"]["generated_not_copies"] is False and s["generated"]["copies"] == 1


def test_novelty_check_fails_a_copy_plus_small_noise(tmp_path, monkeypatch):
    from rpg.io import load_safetensors

    def noisy_copy(ckpts, layout, ref):
        tokens = _tokenize(load_safetensors(ckpts[4])[0], layout)
        return _detokenize(bl.add_token_noise(tokens, 0.01, torch.Generator().manual_seed(0)), layout, ref)

    s = _novelty(tmp_path, monkeypatch, noisy_copy)
    assert s["generated"]["distance"]["min"] == pytest.approx(0.01, rel=0.2)
    assert s["checks"]["generated_not_copies"] is False


def test_novelty_check_passes_a_model_trained_from_a_new_seed(tmp_path, monkeypatch):
    s = _novelty(tmp_path, monkeypatch, lambda ckpts, layout, ref: _train(seed=7, steps=60))
    assert s["generated"]["score"]["mean"] > 0.6  # a working model ...
    assert s["checks"]["generated_not_copies"] is True  # ... that is no copy
    assert s["generated"]["distance"]["min"] > 10 * s["novelty"]["copy_radius"]


def test_evaluate_zoo_rejects_wrong_state_dict(tmp_path: Path, monkeypatch):
    from rpg.errors import RPGInputError
    from rpg.io import save_safetensors

    ckpts = _train_zoo(tmp_path, runs=1, per_run=2)
    bad = tmp_path / "generated/model_000.safetensors"
    save_safetensors({"fc1.weight": torch.zeros(16, 8)}, bad, {"arch": "toy"})
    with pytest.raises(RPGInputError, match="model_000"):
        _evaluate(tmp_path, ckpts, [bad], {}, monkeypatch, out="ev")


def test_evaluate_zoo_keeps_diverged_generated_model(tmp_path: Path, monkeypatch):
    from rpg.io import load_safetensors, save_safetensors

    ckpts = _train_zoo(tmp_path, runs=1, per_run=2)
    sd0, _ = load_safetensors(ckpts[0])
    sd = dict(sd0, **{"fc2.weight": torch.full_like(sd0["fc2.weight"], float("nan"))})
    bad = tmp_path / "generated/model_000.safetensors"
    save_safetensors(sd, bad, {"arch": "toy", "state": 0})
    cfg = {"noise_levels": [0.01], "interp_pairs": 0, "bn_recalibrate_batches": 0, "frontier_max_level": 0.02}
    summary = _evaluate(tmp_path, ckpts, [bad], cfg, monkeypatch, out="ev")
    assert summary["num_models"]["generated"] == 1 and summary["num_models"]["interpolated"] == 0
    assert summary["generated"]["score"]["mean"] is not None  # evaluated (at chance or worse)
    assert summary["generated"]["distance"]["mean"] is None  # NaN distance -> None
    assert summary["original_all"]["similarity"]["mean"] is not None
    assert json.loads((tmp_path / "ev" / "pairs.json").read_text())["generated"]["distance"] == [[None]]


def test_evaluate_zoo_single_original(tmp_path: Path, monkeypatch):
    """One original: no other original to compare with (NaN -> null), no pairs; nothing crashes."""
    from rpg.io import read_table

    ckpts = _train_zoo(tmp_path, runs=1, per_run=1)
    cfg = {"noise_levels": [0.02], "noise_models_per_level": 2, "interp_pairs": 3}
    summary = _evaluate(tmp_path, ckpts, [], cfg, monkeypatch, out="ev")
    assert summary["original"]["similarity"] == {"mean": None, "max": None, "min": None}
    assert summary["num_models"]["interpolated"] == 0 and summary["num_models"]["noise"] == 2
    assert summary["checks"]["generated_not_copies"] is None
    table = read_table(tmp_path / "ev" / "table.csv")
    assert table.loc[table["kind"] == "noise", "nearest_original"].eq("run0/ckpt_000").all()


@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]
)
def test_evaluate_zoo_real_modules(tmp_path: Path, device: str):
    """A tiny real zoo (cnn_s on digits, 2 runs x 3 checkpoints, trained on CPU) through tokens and evaluation."""
    from rpg import tokens
    from rpg.evaluate import evaluate_zoo
    from rpg.io import read_json, read_table
    from rpg.zoo import collect
    from rpg.zoo.checkpoint import save_checkpoint

    torch.set_num_threads(1)
    data_cfg = {"name": "digits", "image_size": 8, "split_seed": 0}
    collect_cfg = {"epochs": 2, "lr": 0.05, "batch_size": 64, "checkpoints": 3, "finetune_epochs": 0.3,
                   "finetune_lr": 0.01, "seed": 0}  # fmt: skip
    ckpts = []
    for run in range(2):
        paths = [tmp_path / f"zoo/z/run{run}/ckpt_{i:03d}.safetensors" for i in range(3)]
        collect.collect_run(arch="cnn_s", arch_kwargs={}, init="random", collect=collect_cfg, data=data_cfg,
                            run=run, out_paths=paths, table_path=tmp_path / f"zoo/z/run{run}/run.csv",
                            device="cpu")  # fmt: skip
        ckpts += paths
    token_dir = tmp_path / "tokens/z"
    tokens.write_token_store(ckpts, token_dir, token_size=64, shard_size=4, state="run")
    store = tokens.TokenStore(token_dir)
    gen = []  # stand-ins for generated models: a checkpoint's tokens plus small noise, detokenized
    for i in range(2):
        t = store.tokens([3 * i], dtype=torch.float64)[0]
        t = t + 0.002 * torch.randn(t.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
        sd = tokens.detokenize(t, store.layout, store.reference)
        gen.append(tmp_path / f"generated/z/model_{i:03d}.safetensors")
        save_checkpoint(gen[-1], sd, {**store.meta, "kind": "generated", "state": i, "val_accuracy": None})
    out = tmp_path / "evaluation/z"
    summary = evaluate_zoo(
        data_cfg=data_cfg, token_dir=token_dir, checkpoint_paths=ckpts, generated_paths=gen,
        generator_dir=tmp_path / "generator/z", out_dir=out, device=device,
        evaluate_cfg={"noise_levels": [0.01, 0.05], "noise_models_per_level": 2, "interp_weights": [0.5],
                      "interp_pairs": 2, "bn_recalibrate_batches": 3, "batch_size": 256, "frontier_max_level": 0.1},
    )  # fmt: skip
    table = read_table(out / "table.csv")
    assert summary == read_json(out / "summary.json")
    orig = table[table["kind"] == "original"]
    assert len(orig) == 6 and summary["original"]["n"] == 2  # as many as generated
    assert summary["settings"]["device"].startswith(device) and summary["metric"] == "accuracy"
    assert set(orig["state"]) == {0, 1}
    g = table[table["kind"] == "generated"]
    assert list(g["nearest_original"]) == ["run0/ckpt_000", "run1/ckpt_000"]
    assert np.allclose(g["nearest_distance"], 0.002, rtol=0.2) and g["copy"].all()  # noisy copies are copies
    assert summary["checks"]["generated_not_copies"] is False
    noise = table[table["kind"] == "noise"]
    assert np.allclose(noise["nearest_distance"], noise["level"], rtol=0.2)
    assert summary["original_all"]["score"]["mean"] > 0.5  # 10 classes: chance is 0.1
    assert summary["resolution"]["wrong_per_model_min"] >= 50  # the probe split gives IoU resolution
    assert summary["checks"]["resolution_ok"] is True
    assert summary["frontiers"]["generated"]["resampled"] == "models and test samples"  # accuracy: per-sample mean
    assert (out / "loss.png").is_file()  # no train log: a placeholder plot


def _log(losses, val=None) -> pd.DataFrame:
    df = pd.DataFrame({"step": np.arange(len(losses)) * 10, "loss": losses})
    if val is not None:
        df["val_score"] = val
    return df


def test_diagnosis_tells_what_to_change():
    from rpg.evaluate.diagnosis import diagnose

    falling = _log(np.linspace(1.0, 0.2, 100))
    flat = _log(np.r_[np.linspace(1.0, 0.1, 50), np.full(50, 0.1)])
    assert diagnose(gap=0.01, tolerance=0.05, train_log=falling)["status"] == "ok"
    d = diagnose(gap=0.4, tolerance=0.05, train_log=falling)
    assert d["status"] == "not converged" and "train.steps" in d["message"] and d["loss_trend"] < -0.05
    d = diagnose(gap=0.4, tolerance=0.05, train_log=flat)
    assert d["status"] == "plateau" and "generator.dim" in d["message"]
    assert diagnose(gap=0.4, tolerance=0.05, train_log=None)["status"] == "unknown"
    # a flat loss but a validation score still rising: not converged either
    rising = _log(np.full(100, 0.1), val=np.r_[np.full(96, np.nan), [0.3, 0.4, 0.5, 0.6]])
    assert diagnose(gap=0.4, tolerance=0.05, train_log=rising)["status"] == "not converged"


def test_diagnosis_names_the_generated_batchnorm_statistics_when_re_estimating_them_recovers_points():
    from rpg.evaluate.diagnosis import BN_RECOVERED, diagnose

    flat = _log(np.r_[np.linspace(1.0, 0.1, 50), np.full(50, 0.1)])
    d = diagnose(gap=0.03, tolerance=0.05, train_log=flat, generated=0.96, recalibrated=0.99)
    assert d["status"] == "ok" and d["batchnorm"]["recovered"] == pytest.approx(0.03)
    assert "cost 3.00 points" in d["message"] and "99.00" in d["message"] and "running_stats_weight" in d["message"]
    far = diagnose(gap=0.3, tolerance=0.05, train_log=flat, generated=0.6, recalibrated=0.9)
    assert far["status"] == "plateau" and far["batchnorm"]["message"] in far["message"]
    small = diagnose(gap=0.01, tolerance=0.05, train_log=flat, generated=0.96, recalibrated=0.96 + BN_RECOVERED / 2)
    assert small["batchnorm"]["message"] is None and "BatchNorm" not in small["message"]
    assert "batchnorm" not in diagnose(gap=0.01, tolerance=0.05, train_log=flat, generated=0.96)


def test_under_trained_generator_is_diagnosed_and_gets_no_frontier_verdict():
    """Generated models 20 points below the originals while the loss still falls: 'not converged', and no frontier
    check says pass or fail about them."""
    table, fails = _frontier_table(0.90, 500)
    table.loc[table["kind"] == "generated", "score"] -= 0.2
    s = summarize(table, cfg=EvaluateConfig(bootstrap=200), train_log=_log(np.linspace(1.0, 0.3, 200)))
    assert s["diagnosis"]["status"] == "not converged"
    verdicts = {s["checks"][f"generated_beats_{f}_at_equal_similarity"] for f in ("noise", "interpolation", "gaussian")}
    assert verdicts == {"not applicable"}
