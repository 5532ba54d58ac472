"""scikit-learn's embedded handwritten digits (1797 images, 8x8, 10 classes; no download).

Pixels (0..16) are scaled to [0, 1] and normalised with a fixed mean/std (of the whole
set), then optionally upscaled (bilinear) to ``image_size`` for models that need larger
inputs. The train/val/test split is stratified and fixed by ``split_seed``, ``val_fraction`` and ``test_fraction``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from rpg.config import DataConfig
from rpg.data.corruptions import corrupt

NATIVE_SIZE = 8
NUM_CLASSES = 10
MEAN = 0.3053  # mean of all pixels / 16 over the full set
STD = 0.3760


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32), bunch.target.astype(np.int64)


@functools.lru_cache(maxsize=8)
def split_indices(val_fraction: float, test_fraction: float, split_seed: int) -> dict[str, np.ndarray]:
    """Sorted sample indices of the stratified, seeded three-way split: {"train", "val", "test"}.

    The test split is drawn first (seed ``split_seed``), then the validation split from the rest (seed
    ``split_seed + 1``), both stratified by class; the three are disjoint and cover the set.
    """
    from sklearn.model_selection import train_test_split

    _, y = _raw()
    rest, test = train_test_split(np.arange(len(y)), test_size=test_fraction, stratify=y, random_state=split_seed)
    train, val = train_test_split(
        rest, test_size=val_fraction / (1.0 - test_fraction), stratify=y[rest], random_state=split_seed + 1
    )
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def build_digits(data_cfg: DataConfig, split: str) -> TensorDataset:
    """In-memory dataset of ``(x [1, S, S] float32, y int64)`` for ``split`` in train / val / test / probe.

    ``probe`` is the test split followed by its seeded corruptions (``data.probe``, :mod:`rpg.data.corruptions`).
    """
    image_size = data_cfg.image_size
    images, labels = _raw()
    idx = split_indices(data_cfg.val_fraction, data_cfg.test_fraction, data_cfg.split_seed)
    rows = idx["test"] if split == "probe" else idx[split]
    x = torch.from_numpy(images[rows] / 16.0).float().unsqueeze(1)
    x = (x - MEAN) / STD
    if image_size != NATIVE_SIZE:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    y = torch.from_numpy(labels[rows]).long()
    if split == "probe":
        x = corrupt(x, list(data_cfg.probe), seed=data_cfg.split_seed, severity=data_cfg.probe_severity)
        y = y.repeat(1 + len(data_cfg.probe))
    return TensorDataset(x.contiguous(), y)


def digits_info(data_cfg: DataConfig) -> dict[str, int]:
    return {"num_classes": NUM_CLASSES, "in_chans": 1, "image_size": data_cfg.image_size}
