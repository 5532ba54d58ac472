"""The embedded detection dataset: scikit-learn's digits pasted on blank canvases, in COCO format (no download).

Each split draws its digits from its own third of the 1,797 images (a seeded permutation), so no digit image is
shared between train, val and test. A canvas of ``image_size`` x ``image_size`` pixels gets 1 .. ``max_objects``
digits, each resized (bilinear) to a random size in [min_size, max_size] and pasted at a random place where it
overlaps no earlier digit by more than 10% IoU (a digit that finds no place in 50 tries is left out). The box of an
object is the tight box of the pasted digit's ink (pixels above a quarter of the maximum); the category is the
digit (COCO ids 1..10, names "0".."9").

:func:`make_split` returns the uint8 canvases and the COCO-format annotation dict (``images``, ``annotations``,
``categories``), deterministic in the config; :func:`write_digits_detection` writes the same data as a COCO tree
(``images/<split>/<id>.png`` and ``annotations/instances_<split>.json``) that ``data: {name: coco}`` reads back.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rpg.config import DataConfig, DigitsDetectionConfig
from rpg.io import atomic_path, write_json

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
NUM_CLASSES = 10
MAX_OVERLAP = 0.1  # IoU a new digit may have with an earlier one on the same canvas
PLACEMENT_TRIES = 50
INK = 0.25  # a pixel belongs to the box when it is above INK x the digit's maximum


def categories() -> list[dict[str, Any]]:
    """COCO categories: digit d has id d + 1 and name "d"."""
    return [{"id": d + 1, "name": str(d), "supercategory": "digit"} for d in range(NUM_CLASSES)]


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int64)


def _pools(seed: int) -> dict[str, np.ndarray]:
    """Disjoint digit indices per split: a seeded permutation cut into thirds."""
    _, labels = _digits()
    order = np.random.default_rng([seed, 7]).permutation(len(labels))
    thirds = np.array_split(order, len(SPLITS))
    return dict(zip(SPLITS, thirds))


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / float(aw * ah + bw * bh - inter)


def _scaled(digit: np.ndarray, size: int) -> np.ndarray:
    x = torch.from_numpy(digit)[None, None]
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[0, 0].clamp(0, 1).numpy()


def num_images(cfg: DigitsDetectionConfig, split: str) -> int:
    return {"train": cfg.train_images, "val": cfg.val_images, "test": cfg.test_images}[split]


@functools.lru_cache(maxsize=6)
def _make_split(cfg_json: str, image_size: int, split: str) -> tuple[np.ndarray, str]:
    cfg = DigitsDetectionConfig.parse(json.loads(cfg_json))
    images, labels = _digits()
    pool = _pools(cfg.seed)[split]
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split) + 1])
    n, size = num_images(cfg, split), image_size
    canvases = np.zeros((n, size, size), dtype=np.uint8)
    coco_images, annotations = [], []
    for i in range(n):
        canvas = np.zeros((size, size), dtype=np.float32)
        boxes: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(1, cfg.max_objects + 1))):
            d = int(pool[rng.integers(len(pool))])
            s = int(rng.integers(cfg.min_size, cfg.max_size + 1))
            patch = _scaled(images[d], s)
            for _try in range(PLACEMENT_TRIES):
                x, y = int(rng.integers(0, size - s + 1)), int(rng.integers(0, size - s + 1))
                if all(_iou((x, y, s, s), b) <= MAX_OVERLAP for b in boxes):
                    break
            else:
                continue
            boxes.append((x, y, s, s))
            canvas[y : y + s, x : x + s] = np.maximum(canvas[y : y + s, x : x + s], patch)
            rows = np.flatnonzero((patch > INK * patch.max()).any(axis=1))
            cols = np.flatnonzero((patch > INK * patch.max()).any(axis=0))
            bx, by = x + int(cols[0]), y + int(rows[0])
            bw, bh = int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(labels[d]) + 1,
                                "bbox": [bx, by, bw, bh], "area": bw * bh, "iscrowd": 0})  # fmt: skip
        canvases[i] = np.round(canvas * 255).astype(np.uint8)
        coco_images.append({"id": i + 1, "file_name": f"{i + 1:05d}.png", "width": size, "height": size})
    coco = {"info": {"description": f"digits_detection {split}", "seed": cfg.seed}, "images": coco_images,
            "annotations": annotations, "categories": categories()}  # fmt: skip
    canvases.setflags(write=False)
    return canvases, json.dumps(coco)


def make_split(data: DataConfig, split: str) -> tuple[np.ndarray, dict[str, Any]]:
    """``(canvases uint8 [N, S, S], COCO annotation dict)`` of ``split`` (cached; a fresh dict per call)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    canvases, coco = _make_split(json.dumps(data.synthetic.to_dict(), sort_keys=True), data.image_size, split)
    return canvases, json.loads(coco)


def write_digits_detection(data: DataConfig, root: str | Path) -> dict[str, Path]:
    """Write the dataset as a COCO tree under ``root``; returns the annotation file of each split.

    ``root/images/<split>/<nnnnn>.png`` (8-bit grayscale) and ``root/annotations/instances_<split>.json``; every file
    is written atomically. Read it back with ``data: {name: coco, root: ROOT, annotations: {train:
    annotations/instances_train.json, ...}, images: {train: images/train, ...}}``.
    """
    from PIL import Image

    root = Path(root)
    out = {}
    for split in SPLITS:
        canvases, coco = make_split(data, split)
        for image, record in zip(canvases, coco["images"]):
            with atomic_path(root / "images" / split / record["file_name"]) as tmp:
                Image.fromarray(image, mode="L").save(tmp, format="PNG")
        out[split] = root / "annotations" / f"instances_{split}.json"
        write_json(coco, out[split])
        log.info("%s: %d images, %d objects -> %s", split, len(canvases), len(coco["annotations"]), out[split])
    return out
