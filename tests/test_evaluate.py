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
from rpg.evaluate import baselines as bl
from rpg.evaluate.evaluate import TABLE_COLUMNS
from rpg.evaluate.plots import plot_accuracy_vs_similarity, plot_distances, plot_training_loss, read_train_log
from rpg.evaluate.similarity import (
    flatten_tokens,
    iou,
    iou_matrix,
    masked_min,
    max_iou,
    pairwise_rms_distances,
    rms_distances,
    wrong_mask,
)
from rpg.evaluate.summary import accuracy_at_similarity, group_table, summarize

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
    near, idx = masked_min(pw, exclude=torch.eye(3, dtype=torch.bool))
    assert near[0] == pytest.approx(0.5) and int(idx[0]) == 1


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

    def add(kind, group, acc, sim, dist, **kw):
        row = {c: None for c in TABLE_COLUMNS}
        row.update(
            kind=kind, group=group, name=f"{group}_{len(rows)}", accuracy=acc, max_iou=sim, nearest_distance=dist, **kw
        )
        rows.append(row)

    for acc in (0.90, 0.92, 0.94):
        add("original", "original", acc, 0.8, 0.5)
    for acc in (0.91, 0.93):
        add("generated", "generated", acc, 0.5, 0.3)
    for level, acc, sim in ((0.01, 0.93, 0.9), (0.05, 0.70, 0.4)):
        for _ in range(2):
            add("noise", f"noise@{level:g}", acc, sim, level, level=level)
    add("interpolated", "interpolated@0.5", 0.6, 0.3, 0.2, weight=0.5, pair_type="across_run")
    add("average", "average", 0.5, 0.2, 0.4)
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def test_summary_keys_values_and_checks():
    s = summarize(synthetic_table())
    assert s["original_accuracy"] == pytest.approx({"best": 0.94, "mean": 0.92, "min": 0.90})
    assert s["generated_accuracy"] == pytest.approx({"best": 0.93, "mean": 0.92, "min": 0.91})
    assert s["generated_similarity"] == pytest.approx({"mean": 0.5, "max": 0.5})
    assert s["original_similarity"]["mean"] == pytest.approx(0.8)
    assert set(s["baselines"]) == {"noise@0.01", "noise@0.05", "interpolated@0.5", "average"}
    b = s["baselines"]["noise@0.05"]
    assert b["level"] == 0.05 and b["n"] == 2 and b["accuracy"]["mean"] == pytest.approx(0.70)
    assert set(b) >= {"accuracy", "similarity"} and set(b["similarity"]) == {"mean", "max"}
    assert s["distances"]["generated_nearest"] == pytest.approx({"mean": 0.3, "min": 0.3})
    assert s["distances"]["original_nearest_other"]["mean"] == pytest.approx(0.5)
    c = s["checks"]
    assert c["generated_not_copies"] is True
    # noise curve (0.4 -> 0.70, 0.9 -> 0.93) at similarity 0.5: 0.70 + 0.1/0.5 * 0.23 = 0.746
    assert c["noise_accuracy_at_generated_similarity"] == pytest.approx(0.746)
    assert c["generated_beats_noise_at_equal_similarity"] is True
    assert s["num_models"]["noise"] == 4


def test_summary_fails_checks_for_copies_and_handles_missing_generated():
    t = synthetic_table()
    t.loc[t["kind"] == "generated", ["max_iou", "accuracy"]] = [0.95, 0.80]
    c = summarize(t)["checks"]
    assert c["generated_not_copies"] is False
    assert c["generated_beats_noise_at_equal_similarity"] is False  # 0.80 < noise at sim 0.95 (clamped 0.93)
    s = summarize(t[t["kind"] != "generated"])
    assert s["generated_accuracy"] == {"best": None, "mean": None, "min": None}
    assert s["checks"]["generated_not_copies"] is None
    assert s["checks"]["generated_beats_noise_at_equal_similarity"] is None


def test_accuracy_at_similarity_clamps():
    s, a = np.array([0.9, 0.4]), np.array([0.9, 0.5])
    assert accuracy_at_similarity(s, a, 0.1) == pytest.approx(0.5)
    assert accuracy_at_similarity(s, a, 1.0) == pytest.approx(0.9)
    assert accuracy_at_similarity(s, a, 0.65) == pytest.approx(0.7)
    assert accuracy_at_similarity(np.array([]), np.array([]), 0.5) is None


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


# ---------------------------------------------------------------- evaluate_zoo with stand-in modules
# Minimal stand-ins for rpg.data / rpg.zoo / rpg.tokens following the shared API contract, so the
# orchestration is tested on its own; test_evaluate_zoo_real_modules uses the real ones.


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn = nn.Linear(8, 16), nn.BatchNorm1d(16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x.flatten(1)))))


def _data(split: str) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    centers = torch.randn(3, 8, generator=torch.Generator().manual_seed(42)) * 0.6
    y = torch.arange(300 if split == "train" else 120) % 3
    return torch.utils.data.TensorDataset(centers[y] + torch.randn(len(y), 8, generator=g), y)


class _Layout:
    """Each float entry with > 1 element is a layer, standardised, cut into NaN-padded tokens of size k."""

    def __init__(self, sd, k=16):
        self.k, self.rows = (
            k,
            [
                (n, t.shape, t.mean().item(), t.std().item() + 1e-8)
                for n, t in sd.items()
                if t.is_floating_point() and t.numel() > 1
            ],
        )

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


def _evaluate_accuracy(model, dataset, *, device, batch_size):
    model.eval()
    x, y = dataset.tensors
    with torch.no_grad():
        preds = torch.cat(
            [model(x[i : i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)]
        )
    return float((preds == y).float().mean()), preds


def _install_standins(monkeypatch, layout, reference):
    import rpg.evaluate.evaluate as ev
    from rpg.io import load_safetensors

    def make_loader(ds, *, batch_size, shuffle, seed, workers=0):
        return torch.utils.data.DataLoader(
            ds, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed)
        )

    store = types.SimpleNamespace(
        layout=layout, reference=reference, index=pd.DataFrame({"checkpoint": [], "state": []})
    )
    for name, value in dict(
        build_dataset=lambda cfg, split: _data(split),
        data_config=lambda cfg: types.SimpleNamespace(workers=0),
        make_loader=make_loader,
        build_model=lambda arch, kw, seed=None: _Net(),
        load_checkpoint=load_safetensors,
        evaluate_accuracy=_evaluate_accuracy,
        tokenize=_tokenize,
        detokenize=_detokenize,
        TokenStore=lambda d: store,
    ).items():
        monkeypatch.setattr(ev, name, value)


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
            save_safetensors(
                net.state_dict(),
                p,
                {"kind": "checkpoint", "arch": "toy", "arch_kwargs": {}, "run": run, "step": i, "index": i},
            )
            paths.append(p)
    return paths


def test_evaluate_zoo_end_to_end_with_standins(tmp_path: Path, monkeypatch):
    from rpg.evaluate import evaluate_zoo
    from rpg.io import load_safetensors, read_json, read_table, save_safetensors

    torch.set_num_threads(1)
    ckpts = _train_zoo(tmp_path)
    sd0, _ = load_safetensors(ckpts[0])
    layout = _Layout(sd0)
    _install_standins(monkeypatch, layout, sd0)
    gen = []
    for i, src in enumerate((ckpts[2], ckpts[5])):  # "generated" = an exact copy and a perturbed copy
        sd, _ = load_safetensors(src)
        if i == 1:
            sd = {k: v + 0.02 * torch.randn_like(v) if v.is_floating_point() else v for k, v in sd.items()}
        gen.append(tmp_path / f"generated/model_{i:03d}.safetensors")
        save_safetensors(sd, gen[-1], {"kind": "generated", "arch": "toy", "state": i})
    gdir = tmp_path / "generator"
    gdir.mkdir()
    pd.DataFrame({"step": [1, 2, 3], "loss": [1.0, 0.5, 0.2], "lr": [1e-3] * 3}).to_csv(gdir / "train_log.csv")
    out = tmp_path / "evaluation"
    cfg = {
        "noise_levels": [0.01, 0.5],
        "noise_models_per_level": 2,
        "interp_weights": [0.0, 0.5],
        "interp_pairs": 2,
        "bn_recalibrate_batches": 2,
        "batch_size": 64,
    }
    summary = evaluate_zoo(
        data_cfg={"name": "toy"},
        token_dir=tmp_path / "tokens",
        checkpoint_paths=ckpts,
        generated_paths=gen,
        generator_dir=gdir,
        out_dir=out,
        evaluate_cfg=cfg,
        device="cpu",
    )

    for name in (
        "table.parquet",
        "table.csv",
        "summary.json",
        "accuracy_vs_similarity.png",
        "loss.png",
        "distances.png",
    ):
        assert (out / name).is_file(), name
    assert read_json(out / "summary.json") == json.loads(json.dumps(summary))
    table = read_table(out / "table.parquet")
    assert list(table.columns) == TABLE_COLUMNS
    counts = table["kind"].value_counts().to_dict()
    # 6 originals, 2 generated, 2 levels x 2 noise, 2 pairs x 2 weights, mean of all + mean of each of 2 runs
    assert counts == {"original": 6, "generated": 2, "noise": 4, "interpolated": 4, "average": 3}
    orig = table[table["kind"] == "original"]
    assert (orig["accuracy"] > 0.6).all()  # chance is 1/3
    assert (orig["nearest_original"] != orig["name"]).all()  # originals compare with OTHER originals
    assert (orig["nearest_distance"] > 0).all()
    copy = table[table["name"] == "model_000"].iloc[0]  # exact copy of run0/ckpt_002
    assert copy["max_iou"] == 1.0 and copy["nearest_distance"] == pytest.approx(0.0, abs=1e-6)
    assert copy["nearest_original"] == "run0/ckpt_002" and copy["max_iou_original"] == "run0/ckpt_002"
    assert copy["state"] == 0 and table[table["name"] == "model_001"].iloc[0]["state"] == 1
    noise = table[table["kind"] == "noise"]
    small = noise[noise["level"] == 0.01]
    assert np.allclose(small["nearest_distance"], 0.01, rtol=0.1)  # RMS distance = noise std
    assert (small["nearest_original"] == small["source"]).all()
    assert noise[noise["level"] == 0.5]["accuracy"].mean() <= small["accuracy"].mean()
    interp = table[table["kind"] == "interpolated"]
    assert set(interp["pair_type"]) == {"within_run", "across_run"}
    assert interp["bn_recalibrated"].all() and not noise["bn_recalibrated"].any()
    # weight 0 = the first original of the pair (up to BN re-estimation): its nearest original is that one
    w0 = interp[interp["weight"] == 0.0]
    assert (w0["nearest_original"] == w0["source"].str.split("|").str[0]).all()
    assert set(table[table["kind"] == "average"]["group"]) == {"average", "average_within_run"}
    assert summary["num_models"]["generated"] == 2
    assert summary["generated_similarity"]["max"] == 1.0
    assert set(summary["baselines"]) == {
        "noise@0.01",
        "noise@0.5",
        "interpolated@0",
        "interpolated@0.5",
        "average",
        "average_within_run",
    }
    assert summary["settings"]["evaluate"]["interp_pairs"] == 2


def test_evaluate_zoo_rejects_wrong_state_dict(tmp_path: Path, monkeypatch):
    from rpg.errors import RPGInputError
    from rpg.evaluate import evaluate_zoo
    from rpg.io import load_safetensors, save_safetensors

    ckpts = _train_zoo(tmp_path, runs=1, per_run=2)
    sd0, _ = load_safetensors(ckpts[0])
    _install_standins(monkeypatch, _Layout(sd0), sd0)
    bad = tmp_path / "generated/model_000.safetensors"
    save_safetensors({"fc1.weight": torch.zeros(16, 8)}, bad, {"arch": "toy"})
    with pytest.raises(RPGInputError, match="model_000"):
        evaluate_zoo(
            data_cfg={},
            token_dir=tmp_path,
            checkpoint_paths=ckpts,
            generated_paths=[bad],
            generator_dir=None,
            out_dir=tmp_path / "ev",
            evaluate_cfg={},
            device="cpu",
        )


@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]
)
def test_evaluate_zoo_real_modules(tmp_path: Path, device: str):
    """A tiny real zoo (cnn_s on digits, 2 runs x 3 checkpoints, trained on CPU) through tokens and evaluation."""
    collect = pytest.importorskip("rpg.zoo.collect")
    tokens = pytest.importorskip("rpg.tokens")
    from rpg.evaluate import evaluate_zoo
    from rpg.io import read_json, read_table
    from rpg.zoo.checkpoint import save_checkpoint

    torch.set_num_threads(1)
    data_cfg = {"name": "digits", "image_size": 8, "val_fraction": 0.25, "split_seed": 0}
    zoo_cfg = {
        "arch": "cnn_s",
        "arch_kwargs": {},
        "init": "random",
        "collect": {
            "epochs": 2,
            "lr": 0.05,
            "batch_size": 64,
            "checkpoints": 3,
            "finetune_epochs": 0.3,
            "finetune_lr": 0.01,
            "seed": 0,
        },
    }
    ckpts = []
    for run in range(2):
        paths = [tmp_path / f"zoo/z/run{run}/ckpt_{i:03d}.safetensors" for i in range(3)]
        collect.collect_run(
            arch=zoo_cfg["arch"],
            arch_kwargs=zoo_cfg["arch_kwargs"],
            init=zoo_cfg["init"],
            collect=zoo_cfg["collect"],
            data=data_cfg,
            run=run,
            out_paths=paths,
            table_path=tmp_path / f"zoo/z/run{run}/run.csv",
            device="cpu",
        )
        ckpts += paths
    token_dir = tmp_path / "tokens/z"
    tokens.write_token_store(ckpts, token_dir, token_size=64, shard_size=4, state="run")
    store = tokens.TokenStore(token_dir)
    # stand-ins for generated models: a checkpoint's tokens plus small noise, detokenized
    gen = []
    for i in range(2):
        t = store.tokens([3 * i], dtype=torch.float64)[0]
        t = t + 0.002 * torch.randn(t.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
        sd = tokens.detokenize(t, store.layout, store.reference)
        gen.append(tmp_path / f"generated/z/model_{i:03d}.safetensors")
        save_checkpoint(gen[-1], sd, {**store.meta, "kind": "generated", "state": i, "val_accuracy": None})
    out = tmp_path / "evaluation/z"
    summary = evaluate_zoo(
        data_cfg=data_cfg,
        token_dir=token_dir,
        checkpoint_paths=ckpts,
        generated_paths=gen,
        generator_dir=tmp_path / "generator/z",
        out_dir=out,
        evaluate_cfg={
            "noise_levels": [0.01, 0.05],
            "noise_models_per_level": 2,
            "interp_weights": [0.5],
            "interp_pairs": 2,
            "bn_recalibrate_batches": 3,
            "batch_size": 256,
        },
        device=device,
    )
    table = read_table(out / "table.csv")
    assert len(table) == 6 + 2 + 4 + 2 + 3
    assert summary == read_json(out / "summary.json")
    orig = table[table["kind"] == "original"]
    # accuracies agree with what collection measured (on CPU) on the same split; a GPU may flip a sample (TF32)
    tol = 1e-6 if device == "cpu" else 2.5 / 450
    for _, row in orig.iterrows():
        meta = read_json_meta(row["path"])
        assert row["accuracy"] == pytest.approx(meta["val_accuracy"], abs=tol)
    assert summary["settings"]["device"].startswith(device)
    assert set(orig["state"]) == {0, 1}
    g = table[table["kind"] == "generated"]
    assert list(g["nearest_original"]) == ["run0/ckpt_000", "run1/ckpt_000"]
    assert np.allclose(g["nearest_distance"], 0.002, rtol=0.2)
    noise = table[table["kind"] == "noise"]
    assert np.allclose(noise["nearest_distance"], noise["level"], rtol=0.2)
    assert summary["original_accuracy"]["mean"] > 0.5  # 10 classes: chance is 0.1
    assert (out / "loss.png").is_file()  # no train log: a placeholder plot


def read_json_meta(path: str) -> dict:
    from rpg.io import read_safetensors_metadata

    return read_safetensors_metadata(path)


def test_evaluate_zoo_keeps_diverged_generated_model(tmp_path: Path, monkeypatch):
    from rpg.evaluate import evaluate_zoo
    from rpg.io import load_safetensors, save_safetensors

    ckpts = _train_zoo(tmp_path, runs=1, per_run=2)
    sd0, _ = load_safetensors(ckpts[0])
    _install_standins(monkeypatch, _Layout(sd0), sd0)
    sd = dict(sd0, **{"fc2.weight": torch.full_like(sd0["fc2.weight"], float("nan"))})
    bad = tmp_path / "generated/model_000.safetensors"
    save_safetensors(sd, bad, {"arch": "toy", "state": 0})
    cfg = {"noise_levels": [], "interp_pairs": 0, "bn_recalibrate_batches": 0}
    summary = evaluate_zoo(data_cfg={}, token_dir=tmp_path, checkpoint_paths=ckpts, generated_paths=[bad],
                           generator_dir=None, out_dir=tmp_path / "ev", evaluate_cfg=cfg, device="cpu")  # fmt: skip
    assert summary["num_models"] == {"original": 2, "generated": 1, "noise": 0, "interpolated": 0, "average": 1}
    assert summary["generated_accuracy"]["mean"] is not None  # evaluated (at chance or worse)
    assert summary["distances"]["generated_nearest"] == {"mean": None, "min": None}  # NaN distance -> None
    assert summary["original_similarity"]["mean"] is not None


def test_evaluate_zoo_single_original(tmp_path: Path, monkeypatch):
    """One original: no other original to compare with (NaN -> null), no pairs; nothing crashes."""
    from rpg.evaluate import evaluate_zoo
    from rpg.io import load_safetensors, read_table

    ckpts = _train_zoo(tmp_path, runs=1, per_run=1)
    sd0, _ = load_safetensors(ckpts[0])
    _install_standins(monkeypatch, _Layout(sd0), sd0)
    cfg = {"noise_levels": [0.02], "noise_models_per_level": 2, "interp_pairs": 3}
    summary = evaluate_zoo(data_cfg={}, token_dir=tmp_path, checkpoint_paths=ckpts, generated_paths=[],
                           generator_dir=None, out_dir=tmp_path / "ev", evaluate_cfg=cfg, device="cpu")  # fmt: skip
    assert summary["original_similarity"] == {"mean": None, "max": None}
    assert summary["num_models"]["interpolated"] == 0 and summary["num_models"]["noise"] == 2
    assert summary["checks"]["generated_not_copies"] is None
    table = read_table(tmp_path / "ev" / "table.csv")
    assert table.loc[table["kind"] == "noise", "nearest_original"].eq("run0/ckpt_000").all()
