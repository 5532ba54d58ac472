"""Datasets for checkpoint collection and evaluation.

``data_cfg`` is the experiment's ``data:`` block (:class:`rpg.config.DataConfig`, or a plain mapping of its keys)
with a ``name``:

- ``digits``: scikit-learn's embedded 8x8 handwritten digits (no download), see :mod:`rpg.data.digits`.
- ``imagefolder``: an ImageNet-style folder tree ``root/{train,val}/<class>/*``, see
  :mod:`rpg.data.imagefolder`.
- ``digits_detection`` and ``coco``: detection data in COCO format (train/val/test), see
  :mod:`rpg.data.detection` (:func:`~rpg.data.detection.build_detection_dataset`); :func:`build_dataset` is for
  classification data only.
- ``text``: templated text classification tasks (splits train, val and test; items ``(sentence, label)``), see
  :mod:`rpg.data.text`.
- ``commonsense``: multiple-choice questions from local JSON files (splits train, val and test), see
  :mod:`rpg.data.commonsense`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)

from rpg.config import DataConfig

SPLITS = ("train", "val", "test", "probe")
DATASETS = ("digits", "imagefolder", "digits_detection", "coco", "text", "commonsense")
TEXT_DATA = ("text", "commonsense")  # the data of adapter zoos


def data_config(data_cfg: DataConfig | Mapping[str, Any]) -> DataConfig:
    """The typed data block (a plain mapping is checked; ConfigError names the bad key)."""
    return DataConfig.parse(data_cfg, "data")


def build_dataset(data_cfg: DataConfig | Mapping[str, Any], split: str) -> Dataset:
    """The ``split`` (train, val, test, or probe = test + seeded corruptions) of the dataset of ``data_cfg``.

    Items are ``(x, y)`` with ``x`` a float32 tensor [C, H, W] and ``y`` an int64 class index (text: ``(sentence,
    label)``; commonsense: :class:`rpg.data.commonsense.ChoiceItem`).
    """
    cfg = data_config(data_cfg)
    if cfg.name == "text":
        return text.build_text(cfg, split)
    if cfg.name == "commonsense":
        return commonsense.build_commonsense(cfg, split)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if cfg.is_detection:
        raise ValueError(f"{cfg.name!r} is detection data: use rpg.data.detection.build_detection_dataset")
    if cfg.name == "digits":
        return digits.build_digits(cfg, split)
    return imagefolder.build_imagefolder(cfg, split)


def dataset_info(data_cfg: DataConfig | Mapping[str, Any]) -> dict[str, int]:
    """``{"num_classes", "in_chans", "image_size"}`` of the dataset (cheap: no images are read)."""
    cfg = data_config(data_cfg)
    if cfg.is_detection:
        from rpg.data.detection import detection_info

        return detection_info(cfg)
    if cfg.name == "text":
        return text.text_info(cfg)
    if cfg.name == "commonsense":
        return commonsense.commonsense_info(cfg)
    if cfg.name == "digits":
        return digits.digits_info(cfg)
    return imagefolder.imagefolder_info(cfg)


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader whose shuffling order depends only on ``seed``.

    In-memory :class:`TensorDataset` s are indexed a whole batch at a time (no per-sample
    collation), which makes small-model training on digits several times faster.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator = torch.Generator().manual_seed(int(seed))
    if isinstance(dataset, TensorDataset):
        base = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        sampler = BatchSampler(base, batch_size=batch_size, drop_last=drop_last)
        return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=0)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=workers,
        drop_last=drop_last,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


from rpg.data import commonsense, digits, imagefolder, text  # noqa: E402 (they import nothing from here)

__all__ = ["build_dataset", "data_config", "dataset_info", "make_loader", "SPLITS", "DATASETS"]
