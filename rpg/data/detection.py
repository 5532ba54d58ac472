"""COCO-format detection data: the embedded ``digits_detection`` set, or images + instances JSON per split (``coco``).

Splits are train, val and test. For ``coco`` each split is an annotation file and an image folder under ``root``
(``data.annotations`` / ``data.images``); without a val file, a seeded ``val_fraction`` of the train images is held
out as val (COCO 2017: test = val2017, val = a slice of train2017, so that no choice is made on what is reported).

Items of a :class:`DetectionDataset` are ``(image, target)``: the image float32 [C, S, S] in [0, 1], letterboxed
(the longer side resized to ``image_size``, padded at the right and bottom), and the target a dict of ``boxes``
(float [n, 4], x1 y1 x2 y2 in letterboxed pixels; crowd and degenerate boxes left out), ``labels`` (int64 [n],
contiguous 0 .. C-1 in the order of the category ids) and ``image_id``. The split's annotations stay available in
COCO format (:attr:`DetectionDataset.coco`, original image coordinates) for COCOeval; :meth:`DetectionDataset.
to_original` maps predicted boxes back.

Annotation files are checked on load (JSON, the three lists, every annotation's image, category and box); a problem
raises RPGInputError naming the file.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rpg.config import DataConfig
from rpg.data import digits_detection
from rpg.errors import RPGInputError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


# --- annotation files -----------------------------------------------------------------------------------------------


def check_coco(coco: Any, path: str | Path | None = None) -> None:
    """Raise RPGInputError naming ``path`` unless ``coco`` is a well-formed COCO instances dict."""
    if not isinstance(coco, Mapping):
        raise RPGInputError("not a COCO instances file (expected a JSON object)", path)
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise RPGInputError(f"not a COCO instances file: no {key!r} list", path)
    image_ids, category_ids = set(), set()
    for i, img in enumerate(coco["images"]):
        if not isinstance(img, Mapping) or not {"id", "file_name", "width", "height"} <= set(img):
            raise RPGInputError(f"images[{i}] lacks id, file_name, width or height", path)
        if img["id"] in image_ids:
            raise RPGInputError(f"images[{i}]: duplicate image id {img['id']!r}", path)
        image_ids.add(img["id"])
    for i, cat in enumerate(coco["categories"]):
        if not isinstance(cat, Mapping) or "id" not in cat:
            raise RPGInputError(f"categories[{i}] lacks an id", path)
        category_ids.add(cat["id"])
    if not category_ids:
        raise RPGInputError("no categories", path)
    ann_ids = set()
    for i, ann in enumerate(coco["annotations"]):
        if not isinstance(ann, Mapping) or not {"id", "image_id", "category_id", "bbox"} <= set(ann):
            raise RPGInputError(f"annotations[{i}] lacks id, image_id, category_id or bbox", path)
        if ann["id"] in ann_ids:
            raise RPGInputError(f"annotations[{i}]: duplicate annotation id {ann['id']!r}", path)
        ann_ids.add(ann["id"])
        if ann["image_id"] not in image_ids:
            raise RPGInputError(f"annotations[{i}] (id {ann['id']}): unknown image_id {ann['image_id']!r}", path)
        if ann["category_id"] not in category_ids:
            raise RPGInputError(f"annotations[{i}] (id {ann['id']}): unknown category_id {ann['category_id']!r}", path)
        box = ann["bbox"]
        if (
            not isinstance(box, Sequence)
            or len(box) != 4
            or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in box)
            or box[2] < 0
            or box[3] < 0
        ):
            raise RPGInputError(f"annotations[{i}] (id {ann['id']}): bbox must be [x, y, w, h] with w, h >= 0", path)


@functools.lru_cache(maxsize=4)
def _read_annotations(path: str, mtime_ns: int) -> str:
    try:
        coco = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise RPGInputError(f"unreadable annotation file ({exc})", path) from exc
    except json.JSONDecodeError as exc:
        raise RPGInputError(f"annotation file is not valid JSON ({exc})", path) from exc
    check_coco(coco, path)
    return json.dumps(coco)


def read_annotations(path: str | Path) -> dict[str, Any]:
    """A checked COCO instances dict from ``path`` (cached by path and modification time; a fresh dict per call)."""
    path = Path(path)
    if not path.is_file():
        raise RPGInputError("annotation file does not exist", path)
    return json.loads(_read_annotations(str(path), path.stat().st_mtime_ns))


def subset(coco: Mapping[str, Any], image_ids: set) -> dict[str, Any]:
    """The COCO dict restricted to ``image_ids`` (images and their annotations; all categories)."""
    return {**coco, "images": [i for i in coco["images"] if i["id"] in image_ids],
            "annotations": [a for a in coco["annotations"] if a["image_id"] in image_ids]}  # fmt: skip


def _coco_file(data: DataConfig, key: str, split: str) -> Path:
    return Path(data.root or ".").expanduser() / getattr(data, key)[split]


def coco_split(data: DataConfig, split: str) -> tuple[dict[str, Any], Path]:
    """The COCO dict of ``split`` of a ``coco`` dataset and its image folder (val carved out of train if needed)."""
    if split in data.annotations:
        return read_annotations(_coco_file(data, "annotations", split)), _coco_file(data, "images", split)
    if split != "val":
        raise RPGInputError(f"no annotation file for split {split!r}", f"config data.annotations.{split}")
    train = read_annotations(_coco_file(data, "annotations", "train"))
    val_ids, _ = _carved_val(train, data)
    return subset(train, val_ids), _coco_file(data, "images", "train")


def _carved_val(train: Mapping[str, Any], data: DataConfig) -> tuple[set, set]:
    ids = sorted(img["id"] for img in train["images"])
    rng = np.random.default_rng(data.split_seed)
    n_val = max(1, round(data.val_fraction * len(ids)))
    chosen = set(rng.permutation(len(ids))[:n_val].tolist())
    val = {ids[i] for i in chosen}
    return val, set(ids) - val


# --- datasets -------------------------------------------------------------------------------------------------------


class DetectionDataset(Dataset):
    """One split of a COCO-format detection dataset (see the module docstring).

    ``load_image(record)`` returns the image of a COCO image record as a uint8 array [H, W] or [H, W, C].
    """

    def __init__(
        self,
        *,
        coco: Mapping[str, Any],
        load_image: Callable[[Mapping[str, Any]], np.ndarray],
        image_size: int,
        in_chans: int,
    ) -> None:
        self.coco = dict(coco)
        self.records = sorted(self.coco["images"], key=lambda r: r["id"])
        self.image_size = int(image_size)
        self.in_chans = int(in_chans)
        self.category_ids = sorted(c["id"] for c in self.coco["categories"])
        self.label_of = {c: i for i, c in enumerate(self.category_ids)}
        self._load_image = load_image
        self._anns: dict[Any, list[Mapping[str, Any]]] = {r["id"]: [] for r in self.records}
        for ann in sorted(self.coco["annotations"], key=lambda a: a["id"]):
            self._anns[ann["image_id"]].append(ann)
        self.scales = [self._scale(r) for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def _scale(self, record: Mapping[str, Any]) -> tuple[float, float]:
        w, h = int(record["width"]), int(record["height"])
        s = self.image_size / max(w, h)
        return max(1, round(w * s)) / w, max(1, round(h * s)) / h

    def image(self, index: int) -> torch.Tensor:
        """The letterboxed image ``index``: float32 [C, S, S] in [0, 1]."""
        record = self.records[index]
        arr = np.asarray(self._load_image(record))
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.shape[2] != self.in_chans:
            arr = arr.mean(axis=2, keepdims=True) if self.in_chans == 1 else np.repeat(arr[:, :, :1], self.in_chans, 2)
        x = torch.from_numpy(np.array(arr, dtype=np.float32)).permute(2, 0, 1).div_(255.0)
        h, w = x.shape[1:]
        sx, sy = self.scales[index]
        nh, nw = max(1, round(h * sy)), max(1, round(w * sx))
        if (nh, nw) != (h, w):
            x = torch.nn.functional.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
        if (nh, nw) == (self.image_size, self.image_size):
            return x
        out = torch.zeros(self.in_chans, self.image_size, self.image_size)
        out[:, :nh, :nw] = x
        return out

    def target(self, index: int) -> dict[str, Any]:
        """Boxes (x1 y1 x2 y2, letterboxed pixels) and contiguous labels of image ``index``, crowds left out."""
        record = self.records[index]
        sx, sy = self.scales[index]
        boxes, labels = [], []
        for ann in self._anns[record["id"]]:
            x, y, w, h = (float(v) for v in ann["bbox"])
            if ann.get("iscrowd", 0) or w < 1 or h < 1:
                continue
            boxes.append([x * sx, y * sy, (x + w) * sx, (y + h) * sy])
            labels.append(self.label_of[ann["category_id"]])
        return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor(labels, dtype=torch.int64), "image_id": record["id"]}  # fmt: skip

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.image(index), self.target(index)

    def to_original(self, index: int, boxes: torch.Tensor) -> torch.Tensor:
        """Boxes x1 y1 x2 y2 of letterboxed image ``index`` in the original image's pixels."""
        sx, sy = self.scales[index]
        return boxes / torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype)

    def category_id(self, labels: torch.Tensor) -> list[int]:
        """COCO category ids of contiguous labels."""
        return [self.category_ids[int(label)] for label in labels]


def _image_reader(folder: Path, in_chans: int) -> Callable[[Mapping[str, Any]], np.ndarray]:
    def load(record: Mapping[str, Any]) -> np.ndarray:
        from PIL import Image

        path = folder / str(record["file_name"])
        try:
            with Image.open(path) as img:
                return np.asarray(img.convert("L" if in_chans == 1 else "RGB"))
        except OSError as exc:
            raise RPGInputError(f"unreadable image ({exc})", path) from exc

    return load


def build_detection_dataset(data: DataConfig, split: str) -> DetectionDataset:
    """The ``split`` (train, val or test) of a detection dataset."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    info = detection_info(data)
    if data.name == "digits_detection":
        canvases, coco = digits_detection.make_split(data, split)
        index = {r["id"]: i for i, r in enumerate(coco["images"])}
        return DetectionDataset(coco=coco, load_image=lambda r: canvases[index[r["id"]]],
                                image_size=data.image_size, in_chans=1)  # fmt: skip
    if data.name != "coco":
        raise ValueError(f"{data.name!r} is not a detection dataset")
    coco, folder = coco_split(data, split)
    if split == "train" and "val" not in data.annotations:
        train_ids = _carved_val(coco, data)[1]
        coco = subset(coco, train_ids)
    if not folder.is_dir():
        raise RPGInputError(f"image folder of split {split!r} does not exist", folder)
    return DetectionDataset(coco=coco, load_image=_image_reader(folder, info["in_chans"]),
                            image_size=data.image_size, in_chans=info["in_chans"])  # fmt: skip


def detection_info(data: DataConfig) -> dict[str, int]:
    """``{"num_classes", "in_chans", "image_size"}``; coco reads the categories of the train annotation file."""
    if data.name == "digits_detection":
        return {"num_classes": digits_detection.NUM_CLASSES, "in_chans": 1, "image_size": data.image_size}
    coco = read_annotations(_coco_file(data, "annotations", "train"))
    return {"num_classes": len(coco["categories"]), "in_chans": 3, "image_size": data.image_size}


def check_detection_data(data: DataConfig) -> None:
    """Raise RPGInputError naming the file unless every configured annotation file reads and every image folder
    exists (run at start; does not open images)."""
    if data.name != "coco":
        return
    for split in data.annotations:
        read_annotations(_coco_file(data, "annotations", split))
        folder = _coco_file(data, "images", split)
        if not folder.is_dir():
            raise RPGInputError(f"image folder of split {split!r} does not exist", folder)


def collate(batch: Sequence[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Images stacked [B, C, S, S] (all letterboxed to one size) and the list of targets."""
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]


def detection_loader(
    dataset: DetectionDataset, *, batch_size: int, shuffle: bool, seed: int, workers: int = 0, drop_last: bool = False
) -> DataLoader:
    """Batches ``(images [B, C, S, S], targets)``; the order depends only on ``seed``."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed),
                      num_workers=workers, drop_last=drop_last, collate_fn=collate,
                      persistent_workers=workers > 0)  # fmt: skip
