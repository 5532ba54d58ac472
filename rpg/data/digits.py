"""scikit-learn's embedded handwritten digits (1797 images, 8x8, 10 classes; no download).

Pixels (0..16) are scaled to [0, 1] and normalised with a fixed mean/std (of the whole
set), then optionally upscaled (bilinear) to ``image_size`` for models that need larger
inputs. The train/val split is stratified and fixed by ``split_seed`` and ``val_fraction``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from rpg.config import DataConfig

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
def split_indices(val_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) sample indices of the stratified, seeded split."""
    from sklearn.model_selection import train_test_split

    _, y = _raw()
    train, val = train_test_split(np.arange(len(y)), test_size=val_fraction, stratify=y, random_state=split_seed)
    return np.sort(train), np.sort(val)


def build_digits(data_cfg: DataConfig, split: str) -> TensorDataset:
    """In-memory dataset of ``(x [1, S, S] float32, y int64)`` for ``split`` in {"train", "val"}."""
    image_size = data_cfg.image_size
    images, labels = _raw()
    train, val = split_indices(data_cfg.val_fraction, data_cfg.split_seed)
    idx = train if split == "train" else val
    x = torch.from_numpy(images[idx] / 16.0).float().unsqueeze(1)
    x = (x - MEAN) / STD
    if image_size != NATIVE_SIZE:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    y = torch.from_numpy(labels[idx]).long()
    return TensorDataset(x.contiguous(), y)


def digits_info(data_cfg: DataConfig) -> dict[str, int]:
    return {"num_classes": NUM_CLASSES, "in_chans": 1, "image_size": data_cfg.image_size}
