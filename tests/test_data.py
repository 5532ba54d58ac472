"""Datasets: embedded digits (split, scaling, upscaling), ImageNet-style folders, loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rpg.config import ConfigError
from rpg.config.blocks import CORRUPTIONS
from rpg.data import build_dataset, dataset_info, make_loader
from rpg.data.corruptions import corrupt
from rpg.data.digits import split_indices
from rpg.errors import RPGInputError

DIGITS = {"name": "digits", "image_size": 8, "val_fraction": 0.25, "test_fraction": 0.2, "split_seed": 0}


def test_digits_shapes_and_dtypes():
    train, val, test = (build_dataset(DIGITS, s) for s in ("train", "val", "test"))
    assert len(train) + len(val) + len(test) == 1797
    assert len(val) == pytest.approx(0.25 * 1797, abs=1) and len(test) == pytest.approx(0.2 * 1797, abs=1)
    x, y = train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and 0 <= int(y) < 10
    xs = train.tensors[0]
    assert abs(float(xs.mean())) < 0.05 and abs(float(xs.std()) - 1.0) < 0.05  # normalised
    assert dataset_info(DIGITS) == {"num_classes": 10, "in_chans": 1, "image_size": 8}


def test_digits_split_is_deterministic_stratified_and_disjoint():
    a, b = build_dataset(DIGITS, "val"), build_dataset(DIGITS, "val")
    assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])
    idx = split_indices(0.25, 0.2, 0)
    train_idx, val_idx, test_idx = idx["train"], idx["val"], idx["test"]
    assert not set(train_idx) & set(val_idx) and not set(train_idx) & set(test_idx) and not set(val_idx) & set(test_idx)
    assert len(train_idx) + len(val_idx) + len(test_idx) == 1797
    counts = np.bincount(a.tensors[1].numpy(), minlength=10)
    assert counts.min() >= 43 and counts.max() <= 46  # ~25% of ~180 per class
    test_counts = np.bincount(build_dataset(DIGITS, "test").tensors[1].numpy(), minlength=10)
    assert test_counts.min() >= 34 and test_counts.max() <= 38  # stratified too
    other = build_dataset({**DIGITS, "split_seed": 1}, "val")
    assert not torch.equal(a.tensors[1], other.tensors[1]) or not torch.equal(a.tensors[0], other.tensors[0])
    assert len(build_dataset({**DIGITS, "val_fraction": 0.4}, "val")) in (718, 719)
    # the test split does not depend on the validation fraction: choices on val never touch it
    assert torch.equal(
        build_dataset({**DIGITS, "val_fraction": 0.4}, "test").tensors[1], build_dataset(DIGITS, "test").tensors[1]
    )


def test_probe_split_is_test_plus_seeded_corruptions():
    test, probe = build_dataset(DIGITS, "test"), build_dataset(DIGITS, "probe")
    n, kinds = len(test), len(CORRUPTIONS)
    assert len(probe) == n * (1 + kinds)
    assert torch.equal(probe.tensors[0][:n], test.tensors[0])  # the clean test images come first
    assert torch.equal(probe.tensors[1], test.tensors[1].repeat(1 + kinds))
    assert torch.equal(build_dataset(DIGITS, "probe").tensors[0], probe.tensors[0])  # deterministic
    for k in range(1, 1 + kinds):  # every corrupted copy differs from the clean images
        assert not torch.allclose(probe.tensors[0][k * n : (k + 1) * n], test.tensors[0])
    only_blur = build_dataset({**DIGITS, "probe": ["blur"]}, "probe")
    assert len(only_blur) == 2 * n
    x = torch.randn(4, 3, 8, 8)
    for kind in CORRUPTIONS:
        out = corrupt(x, [kind], seed=1)
        assert out.shape == (8, 3, 8, 8) and torch.isfinite(out).all() and torch.equal(out[:4], x), kind


def test_digits_upscaling():
    cfg = {**DIGITS, "image_size": 16}
    val = build_dataset(cfg, "val")
    assert val.tensors[0].shape[1:] == (1, 16, 16)
    assert dataset_info(cfg)["image_size"] == 16
    assert torch.equal(val.tensors[1], build_dataset(DIGITS, "val").tensors[1])


def test_bad_data_config():
    with pytest.raises(ConfigError, match="data.name.*allowed values: digits"):
        build_dataset({"name": "mnist"}, "train")
    with pytest.raises(ConfigError, match="val_fraction"):
        build_dataset({**DIGITS, "val_fraction": 1.5}, "train")
    with pytest.raises(ValueError):
        build_dataset(DIGITS, "holdout")
    with pytest.raises(ConfigError, match="probe"):
        build_dataset({**DIGITS, "probe": ["rotate"]}, "probe")


def test_make_loader_order_depends_on_seed_only():
    ds = build_dataset(DIGITS, "val")

    def labels(seed: int) -> torch.Tensor:
        return torch.cat([y for _, y in make_loader(ds, batch_size=32, shuffle=True, seed=seed)])

    assert torch.equal(labels(3), labels(3))
    assert not torch.equal(labels(3), labels(4))
    assert torch.equal(labels(3).sort().values, ds.tensors[1].sort().values)  # every sample once
    batches = list(make_loader(ds, batch_size=100, shuffle=False, seed=0))
    assert batches[0][0].shape == (100, 1, 8, 8)
    assert torch.equal(torch.cat([y for _, y in batches]), ds.tensors[1])
    dropped = list(make_loader(ds, batch_size=100, shuffle=True, seed=0, drop_last=True))
    assert len(dropped) == len(ds) // 100


def _write_tree(root: Path, split: str, counts: dict[str, int], size: int = 20) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, n in counts.items():
        folder = root / split / cls
        folder.mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"img_{i}.JPEG")
        (folder / "notes.txt").write_text("not an image")


def test_imagefolder_tiny_tree(tmp_path):
    _write_tree(tmp_path, "train", {"cat": 3, "dog": 2})
    _write_tree(tmp_path, "val", {"dog": 2})  # a val split lacking a class keeps train's indices
    _write_tree(tmp_path, "test", {"cat": 1, "dog": 1})
    cfg = {"name": "imagefolder", "root": str(tmp_path), "image_size": 16}
    assert dataset_info(cfg) == {"num_classes": 2, "in_chans": 3, "image_size": 16}
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert len(train) == 5 and len(val) == 2
    assert [label for _, label in train.samples] == [0, 0, 0, 1, 1]
    x, y = val[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == 1
    xb, yb = next(iter(make_loader(train, batch_size=4, shuffle=True, seed=0)))
    assert xb.shape == (4, 3, 16, 16) and yb.dtype == torch.int64
    test, probe = build_dataset(cfg, "test"), build_dataset(cfg, "probe")
    assert len(test) == 2 and len(probe) == 2 * (1 + len(CORRUPTIONS)) and probe.targets == test.targets * 6
    assert probe[0][0].shape == probe[len(test)][0].shape == (3, 16, 16)


def test_imagefolder_without_test_folder_splits_val_in_halves(tmp_path):
    _write_tree(tmp_path, "train", {"cat": 2, "dog": 2})
    _write_tree(tmp_path, "val", {"cat": 3, "dog": 3})
    cfg = {"name": "imagefolder", "root": str(tmp_path), "image_size": 16}
    val, test = build_dataset(cfg, "val"), build_dataset(cfg, "test")
    assert len(val) == len(test) == 3
    assert not set(val.indices) & set(test.indices)  # disjoint halves of val/
    assert build_dataset(cfg, "test").indices == test.indices  # seeded


def test_imagefolder_errors_name_the_path(tmp_path):
    cfg = {"name": "imagefolder", "root": str(tmp_path / "nowhere"), "image_size": 16}
    with pytest.raises(RPGInputError, match="nowhere"):
        build_dataset(cfg, "train")
    _write_tree(tmp_path, "train", {"cat": 1})
    cfg = {"name": "imagefolder", "root": str(tmp_path), "image_size": 16}
    with pytest.raises(RPGInputError, match=str(tmp_path / "val")):
        build_dataset(cfg, "val")
    _write_tree(tmp_path, "val", {"cow": 1})
    with pytest.raises(RPGInputError, match="cow"):
        build_dataset(cfg, "val")
