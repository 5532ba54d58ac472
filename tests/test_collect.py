"""Checkpoint collection: a tiny run, reproducibility, tables, atomicity, initial weights."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from rpg.config import CollectConfig, ConfigError
from rpg.errors import RPGInputError
from rpg.io import read_safetensors_metadata
from rpg.zoo import build_model, load_checkpoint
from rpg.zoo.checkpoint import state_digest
from rpg.zoo.collect import checkpoint_steps, collect_run, run_seed, write_zoo_table

DATA = {"name": "digits", "image_size": 8}


def _zoo(**collect) -> dict:
    base = {
        "epochs": 2,
        "optimizer": "sgd",
        "lr": 0.05,
        "batch_size": 64,
        "finetune_lr": 0.001,
        "checkpoints": 3,
        "seed": 0,
    }
    return {"arch": "cnn_s", "arch_kwargs": {}, "init": "random", "collect": {**base, **collect}}


def _collect(tmp_path: Path, run: int = 0, n: int = 3, zoo: dict | None = None) -> list[Path]:
    out = tmp_path / f"run{run}"
    paths = [out / f"ckpt_{i:03d}.safetensors" for i in range(n)]
    zoo = zoo or _zoo(checkpoints=n)
    collect_run(
        arch=zoo["arch"],
        arch_kwargs=zoo["arch_kwargs"],
        init=zoo["init"],
        collect=zoo["collect"],
        data=DATA,
        run=run,
        out_paths=paths,
        table_path=out / "run.csv",
        device="cpu",
    )
    return paths


def test_checkpoint_steps_are_evenly_spaced():
    assert checkpoint_steps(21, 3) == [7, 14, 21]
    assert checkpoint_steps(5, 5) == [1, 2, 3, 4, 5]
    steps = checkpoint_steps(100, 50)
    assert steps[-1] == 100 and len(set(steps)) == 50
    with pytest.raises(ValueError):
        checkpoint_steps(2, 3)
    assert run_seed(2, 1) == 2001


def test_tiny_collect_run(tmp_path):
    torch.set_num_threads(1)
    paths = _collect(tmp_path, run=1)
    table = pd.read_csv(tmp_path / "run1" / "run.csv")
    assert list(table.columns) == ["path", "run", "seed", "step", "index", "val_accuracy"]
    assert table["index"].tolist() == [0, 1, 2] and table["path"].tolist() == [str(p) for p in paths]
    # 1077 train samples (60% of 1797), batch 64, drop_last: 16 steps/epoch; 2 epochs + 16 fine-tuning steps
    assert table["step"].tolist() == [32 + 5, 32 + 10, 32 + 16]
    assert (table["seed"] == 1).all() and (table["run"] == 1).all()
    assert table["val_accuracy"].min() > 0.5  # cnn_s learns digits within 2 epochs
    state, meta = load_checkpoint(paths[-1])
    assert meta["kind"] == "checkpoint" and meta["arch"] == "cnn_s" and meta["task"] is None
    assert meta["arch_kwargs"] == {"num_classes": 10, "in_chans": 1} and meta["num_classes"] == 10
    assert meta["val_accuracy"] == pytest.approx(table["val_accuracy"].iloc[-1])
    model = build_model(meta["arch"], meta["arch_kwargs"])
    model.load_state_dict(state, strict=True)
    first, _ = load_checkpoint(paths[0])
    assert not torch.equal(first["head.weight"], state["head.weight"])  # fine-tuning moved the weights

    write_zoo_table(paths, tmp_path / "checkpoints.csv")
    zoo = pd.read_csv(tmp_path / "checkpoints.csv")
    pd.testing.assert_frame_equal(zoo, table)
    assert not list(tmp_path.rglob("*.tmp"))


def test_runs_are_reproducible_and_distinct(tmp_path):
    torch.set_num_threads(1)
    zoo = _zoo(epochs=1, checkpoints=1)
    a = load_checkpoint(_collect(tmp_path / "a", run=0, n=1, zoo=zoo)[0])[0]
    b = load_checkpoint(_collect(tmp_path / "b", run=0, n=1, zoo=zoo)[0])[0]
    c = load_checkpoint(_collect(tmp_path / "c", run=1, n=1, zoo=zoo)[0])[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["features.0.weight"], c["features.0.weight"])


def test_finetune_batch_shrinks_when_too_few_steps(tmp_path):
    # 0.1 epoch at batch 64 is 2 steps < 4 checkpoints: batch becomes 1347 * 0.1 // 4 = 33 -> 4 steps
    paths = _collect(tmp_path, n=4, zoo=_zoo(epochs=0, finetune_epochs=0.1, checkpoints=4))
    assert [read_safetensors_metadata(p)["step"] for p in paths] == [1, 2, 3, 4]
    with pytest.raises(RPGInputError, match="finetune"):
        _collect(tmp_path / "x", n=4, zoo=_zoo(epochs=0, finetune_epochs=0.1, finetune_batch_size=64))


def test_init_from_weights_file(tmp_path):
    from rpg.zoo import save_checkpoint

    init = build_model("cnn_s", {"num_classes": 10, "in_chans": 1}, seed=99).state_dict()
    save_checkpoint(tmp_path / "init.safetensors", init, {"kind": "checkpoint", "arch": "cnn_s", "arch_kwargs": {}})
    zoo = {**_zoo(epochs=0, finetune_lr=0.0, checkpoints=1), "init": str(tmp_path / "init.safetensors")}
    state, _ = load_checkpoint(_collect(tmp_path, n=1, zoo=zoo)[0])
    assert torch.equal(state["features.0.weight"], init["features.0.weight"])  # lr 0 keeps the weights


def test_failure_leaves_no_partial_files(tmp_path, monkeypatch):
    import rpg.zoo.collect as collect

    calls = {"n": 0}
    real = collect.evaluate_accuracy

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(collect, "evaluate_accuracy", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        _collect(tmp_path, n=3, zoo=_zoo(epochs=0))
    files = sorted(p.name for p in (tmp_path / "run0").iterdir())
    assert files == ["ckpt_000.safetensors"]  # complete first checkpoint only; no run.csv, no temp files
    load_checkpoint(tmp_path / "run0" / "ckpt_000.safetensors")


def test_state_digest_tells_weights_apart():
    a, b = (
        build_model("cnn_s", {"num_classes": 10, "in_chans": 1}, seed=0),
        build_model("cnn_s", {"num_classes": 10, "in_chans": 1}, seed=0),
    )
    assert state_digest(a) == state_digest(b)  # same weights, another object
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-6
    assert state_digest(a) != state_digest(b)
    assert state_digest(a) != state_digest(build_model("cnn_s", {"num_classes": 10, "in_chans": 1}, seed=1))


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown key"):
        CollectConfig.parse({"epoch": 3}, "collect")
    with pytest.raises(ConfigError, match="optimizer"):
        CollectConfig.parse({"optimizer": "lbfgs"}, "collect")
