"""Bring your own zoo: a folder of checkpoints (an architecture no default uses, an entry point the test writes)
listed at start, imported into run directories, checked on load; the workflow imports instead of collecting."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from snakemake_helpers import job_counts, snakemake

from rpg.config import resolve_config
from rpg.errors import RPGInputError
from rpg.io import save_safetensors
from rpg.stages.checks import check_settings
from rpg.zoo import build_model, load_checkpoint
from rpg.zoo.collect import model_kwargs
from rpg.zoo.source import import_run, list_source_runs, natural_key

ARCH = "byo_mlp_arch:make_mlp"
MODULE = '''
import torch
from torch import nn


def make_mlp(hidden=16, depth=1):
    """An MLP on flattened 8x8 digits: no num_classes or in_chans argument (it must get only what the user wrote)."""
    layers, width = [nn.Flatten()], 64
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, 10))
'''
EVALUATOR = '''
import torch

from rpg.data import build_dataset


def accuracy(model, split, *, data, device):
    """A user's evaluator: top-1 accuracy on the digits (test = val here)."""
    ds = build_dataset(data, "val" if split in ("test", "probe") else split)
    x, y = ds.tensors
    with torch.no_grad():
        wrong = model.eval()(x.to(device)).argmax(1).cpu() != y
    return {"main": "accuracy", "metrics": {"accuracy": 1 - wrong.float().mean().item()}, "failures": wrong}
'''


@pytest.fixture
def byo_module(tmp_path, monkeypatch):
    """A package folder with the user's architecture and evaluator, importable in this process."""
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "byo_mlp_arch.py").write_text(textwrap.dedent(MODULE))
    (pkg / "byo_user_eval.py").write_text(textwrap.dedent(EVALUATOR))
    monkeypatch.syspath_prepend(str(pkg))
    yield pkg
    for name in ("byo_mlp_arch", "byo_user_eval"):
        sys.modules.pop(name, None)


def _weights(seed: int, hidden: int = 16) -> dict[str, torch.Tensor]:
    sys.modules.pop("byo_mlp_arch", None)
    torch.manual_seed(seed)
    return build_model(ARCH, {"hidden": hidden}).state_dict()


def _train(model, steps: int, seed: int):
    """A few steps on the digits, so that the checkpoints classify (for the end-to-end test)."""
    from rpg.data import build_dataset

    x, y = build_dataset({"name": "digits"}, "train").tensors
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        idx = torch.randint(len(y), (128,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def write_folder(root: Path, *, runs: int = 2, per_run: int = 3, trained: bool = False) -> Path:
    """runs as subfolders: run0 holds .pt files with a nested state_dict, the others .pth (model key) and
    .safetensors files, named so that natural order differs from text order (ckpt_2 before ckpt_10)."""
    for r in range(runs):
        folder = root / f"run{r}"
        folder.mkdir(parents=True)
        torch.manual_seed(100 + r)
        model = build_model(ARCH, {"hidden": 16})
        for i, step in enumerate([2, 10, 30][:per_run]):
            if trained:
                _train(model, 40 if i == 0 else 10, seed=r * 10 + i)
            else:
                with torch.no_grad():
                    for p in model.parameters():
                        p.add_(0.01 * torch.randn_like(p))
            state = {k: v.clone() for k, v in model.state_dict().items()}
            if r == 0:
                torch.save({"state_dict": state, "epoch": step}, folder / f"ckpt_{step}.pt")
            elif i % 2:
                torch.save({"model": state}, folder / f"ckpt_{step}.pth")
            else:
                save_safetensors(state, folder / f"ckpt_{step}.safetensors", {"foreign": "metadata"})
    (root / "notes.txt").write_text("not a checkpoint")
    return root


def test_natural_order():
    assert sorted(["run10", "run2", "run1"], key=natural_key) == ["run1", "run2", "run10"]
    assert sorted(["ckpt_10.pt", "ckpt_2.pt"], key=natural_key) == ["ckpt_2.pt", "ckpt_10.pt"]


def test_list_runs_from_subfolders_and_top_level(byo_module, tmp_path):
    root = write_folder(tmp_path / "zoo", runs=3)
    (root / "run10").mkdir()  # empty: not a run
    runs = list_source_runs({"path": str(root)})
    assert [r.label for r in runs] == ["run0", "run1", "run2"]
    assert [p.name for p in runs[0].files] == ["ckpt_2.pt", "ckpt_10.pt", "ckpt_30.pt"]
    assert [p.name for p in runs[1].files] == ["ckpt_2.safetensors", "ckpt_10.pth", "ckpt_30.safetensors"]
    assert [p.name for p in list_source_runs({"path": str(root), "glob": "*.pt*"})[1].files] == ["ckpt_10.pth"]
    assert [len(r.files) for r in list_source_runs({"path": str(root), "last": 2})] == [2, 2, 2]
    flat = list_source_runs({"path": str(root / "run0")})  # files, no subfolders: one run
    assert len(flat) == 1 and len(flat[0].files) == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(RPGInputError, match="empty source") as err:
        list_source_runs({"path": str(tmp_path / "empty")})
    assert err.value.path == str(tmp_path / "empty")
    with pytest.raises(RPGInputError, match="does not exist"):
        list_source_runs({"path": str(tmp_path / "nowhere")})


def test_list_runs_from_a_table(byo_module, tmp_path):
    root = write_folder(tmp_path / "zoo")
    rows = [{"path": "run1/ckpt_10.pth", "run": "b", "step": 10, "acc": 0.5},
            {"path": str(root / "run0/ckpt_2.pt"), "run": "a", "step": 2, "acc": 0.25},
            {"path": "run1/ckpt_2.safetensors", "run": "b", "step": 2, "acc": 0.75}]  # fmt: skip
    pd.DataFrame(rows).to_csv(root / "zoo.csv", index=False)
    runs = list_source_runs({"path": str(root), "table": "zoo.csv", "metric": "acc"})
    assert [r.label for r in runs] == ["a", "b"]
    assert [c.step for c in runs[1].checkpoints] == [2, 10] and runs[1].checkpoints[0].metrics == {"acc": 0.75}
    pd.DataFrame(rows + [{"path": "run1/ckpt_99.pt", "run": "b"}]).to_csv(root / "bad.csv", index=False)
    with pytest.raises(RPGInputError, match=r"listed in bad.csv \(row 4\) does not exist"):
        list_source_runs({"path": str(root), "table": "bad.csv"})
    pd.DataFrame([{"file": "x"}]).to_csv(root / "nocols.csv", index=False)
    with pytest.raises(RPGInputError, match=r"lacks the column\(s\) \['path', 'run'\]"):
        list_source_runs({"path": str(root), "table": "nocols.csv"})


def test_import_run_writes_the_collection_layout(byo_module, tmp_path):
    root = write_folder(tmp_path / "zoo")
    source = {"path": str(root)}
    for run in (0, 1):
        import_run(source=source, arch=ARCH, arch_kwargs={"hidden": 16}, run=run, out_dir=tmp_path / f"run{run}")
    table = pd.read_csv(tmp_path / "run1" / "run.csv")
    assert table["index"].tolist() == [0, 1, 2] and (table["run"] == 1).all() and table["step"].tolist() == [0, 1, 2]
    state, meta = load_checkpoint(tmp_path / "run1" / "ckpt_001.safetensors")
    assert meta["arch"] == ARCH and meta["arch_kwargs"] == {"hidden": 16} and meta["kind"] == "checkpoint"
    assert meta["source"].endswith("run1/ckpt_10.pth") and meta["source_run"] == "run1"
    model = build_model(ARCH, meta["arch_kwargs"])
    assert list(state) == list(model.state_dict())  # the architecture's entry order
    model.load_state_dict(state, strict=True)
    original = torch.load(root / "run1" / "ckpt_10.pth", weights_only=True)["model"]
    assert all(torch.equal(state[k], original[k]) for k in original)


def test_import_keeps_table_steps_and_metric(byo_module, tmp_path):
    root = write_folder(tmp_path / "zoo")
    rows = [{"path": "run0/ckpt_30.pt", "run": 0, "step": 30, "acc": 0.9},
            {"path": "run0/ckpt_2.pt", "run": 0, "step": 2, "acc": 0.1}]  # fmt: skip
    pd.DataFrame(rows).to_csv(root / "t.csv", index=False)
    source = {"path": str(root), "table": "t.csv", "metric": "acc"}
    import_run(source=source, arch=ARCH, arch_kwargs={"hidden": 16}, run=0, out_dir=tmp_path / "run0")
    table = pd.read_csv(tmp_path / "run0" / "run.csv")
    assert table["step"].tolist() == [2, 30] and table["val_accuracy"].tolist() == [0.1, 0.9]
    assert load_checkpoint(tmp_path / "run0" / "ckpt_001.safetensors")[1]["metrics"] == {"acc": 0.9}


@pytest.mark.parametrize(
    "break_it, needle",
    [
        (lambda f: torch.save({"state_dict": _weights(0, hidden=8)}, f), "has shape [8, 64], architecture"),
        (lambda f: torch.save({"state_dict": {**_weights(0), "extra.weight": torch.ones(2)}}, f), "1 unexpected"),
        (lambda f: torch.save({"state_dict": {k: v.half() for k, v in _weights(0).items()}}, f), "dtype"),
        (lambda f: torch.save({"state_dict": {k: v * float("nan") for k, v in _weights(0).items()}}, f), "NaN"),
        (lambda f: f.write_bytes(b"garbage, not a torch file"), "cannot read weights"),
        (lambda f: torch.save({"weights": _weights(0)}, f), "not a state_dict"),
    ],
)
def test_import_checks_each_file_and_writes_nothing_on_failure(byo_module, tmp_path, break_it, needle):
    root = write_folder(tmp_path / "zoo")
    bad = root / "run0" / "ckpt_30.pt"
    break_it(bad)
    out = tmp_path / "run0"
    with pytest.raises(RPGInputError) as err:
        import_run(source={"path": str(root)}, arch=ARCH, arch_kwargs={"hidden": 16}, run=0, out_dir=out)
    assert err.value.path == str(bad) and needle in err.value.problem, str(err.value)
    assert not out.exists()  # the first two checkpoints were written, then removed again


def test_import_names_a_wrong_architecture(byo_module, tmp_path):
    root = write_folder(tmp_path / "zoo")
    with pytest.raises(RPGInputError, match="does not fit architecture") as err:
        import_run(source={"path": str(root)}, arch=ARCH, arch_kwargs={"hidden": 16, "depth": 2}, run=1,
                   out_dir=tmp_path / "run1")  # fmt: skip
    assert err.value.path.endswith("run0/ckpt_2.pt")  # checked against the zoo's first checkpoint first
    with pytest.raises(RPGInputError, match="key 'ema'"):
        import_run(source={"path": str(root), "key": "ema"}, arch=ARCH, arch_kwargs={"hidden": 16}, run=0,
                   out_dir=tmp_path / "run0")  # fmt: skip


def test_entry_points_get_only_the_configured_kwargs():
    info = {"num_classes": 10, "in_chans": 1, "image_size": 48}
    assert model_kwargs(ARCH, {"hidden": 4}, info) == {"hidden": 4}
    assert model_kwargs("cnn_s", {}, info) == {"num_classes": 10, "in_chans": 1}
    assert model_kwargs("fcos", {"num_classes": 3}, info) == {"num_classes": 3, "in_chans": 1, "image_size": 48}


def _config(root: Path, **zoo) -> dict:
    return {"experiments": {"byo": {
        "device": "cpu", "data": {"name": "digits"},
        "zoos": {"mlp": {"arch": ARCH, "arch_kwargs": {"hidden": 16}, "source": {"path": str(root)}, **zoo},
                 "cnn_s": {"arch": "cnn_s", "runs": 1, "collect": {"epochs": 1, "checkpoints": 2}}},
        "tokens": {"token_size": 32, "shard_size": 8},
        "generator": {"preset": "tiny", "dim": 32, "d_state": 8, "headdim": 16, "denoiser_channels": [1, 8, 16, 8, 1]},
        "train": {"steps": 30, "batch_size": 2, "diffusion_batch": 64, "warmup_steps": 2, "save_every": 10},
        "generate": {"num_models": 2, "models_per_job": 2, "sampler": "ddim", "steps": 5},
        "evaluate": {"noise_levels": [0.01], "noise_models_per_level": 1, "interp_weights": [0.5], "interp_pairs": 1,
                     "gaussian_scales": [1.0, 64.0], "gaussian_models_per_scale": 1,
                     "bn_recalibrate_batches": 0, "evaluator": "byo_user_eval:accuracy"},
    }}}  # fmt: skip


def test_source_config_checks(byo_module, tmp_path):
    (tmp_path / "empty").mkdir()
    problems = check_settings(resolve_config(_config(tmp_path / "empty")))
    assert len(problems) == 1 and "zoos.mlp.source.path" in problems[0] and "empty source" in problems[0]
    with pytest.raises(Exception, match="either source or tasks"):
        resolve_config(_config(tmp_path, tasks={}))


def test_workflow_imports_source_runs_instead_of_collecting(byo_module, tmp_path):
    root = write_folder(tmp_path / "zoo", runs=3)
    cfg = tmp_path / "byo.yaml"
    cfg.write_text(yaml.safe_dump(_config(root)))
    work = tmp_path / "work"
    env_path = f"{byo_module}:{Path(__file__).resolve().parent.parent}"
    proc = snakemake(
        "-n", "--cores", "1", "--directory", str(work), "--configfile", str(cfg), env={"PYTHONPATH": env_path}
    )
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["import_run"] == 3 and counts["collect_run"] == 1  # the source zoo's 3 runs; cnn_s is collected
    assert "results/byo/zoo/mlp/run2" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_byo_zoo_end_to_end(byo_module, tmp_path):
    """A folder of entry-point MLP checkpoints through Snakemake: import, tokenize, train, generate, evaluate with the
    user's evaluator."""
    root = write_folder(tmp_path / "zoo", runs=2, trained=True)
    cfg = _config(root)
    del cfg["experiments"]["byo"]["zoos"]["cnn_s"]
    path = tmp_path / "byo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    env = {"PYTHONPATH": f"{byo_module}:{Path(__file__).resolve().parent.parent}"}
    gen = "results/byo/generated/mlp/batch000"
    proc = snakemake(gen, "--cores", "2", "--directory", str(work), "--configfile", str(path), env=env)
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts.get("import_run") == 2 and "collect_run" not in counts
    for model_path in sorted((work / gen).glob("model_*.safetensors")):
        state, meta = load_checkpoint(model_path)
        assert meta["arch"] == ARCH and meta["arch_kwargs"] == {"hidden": 16}
        build_model(ARCH, meta["arch_kwargs"]).load_state_dict(state, strict=True)

    snakemake("--cores", "2", "--directory", str(work), "--configfile", str(path), env=env)
    summary = json.loads((work / "results/byo/evaluation/mlp/summary.json").read_text())
    assert summary["metric"] == "accuracy"  # the user's evaluator named the main metric
    assert summary["generated"]["n"] == summary["original"]["n"] > 0
    assert 0.0 <= summary["generated"]["score"]["mean"] <= 1.0
