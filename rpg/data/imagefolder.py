"""ImageNet-style folder trees: ``root/train/<class>/*.JPEG``, ``root/val/<class>/*.JPEG`` (and ``root/test/``).

Class indices come from the sorted class folders of ``root/train`` (so train and val agree
even when a val folder is missing a class). Images go through timm's standard transforms
(``timm.data.create_transform``): random-resized-crop augmentation for train, resize +
centre crop for val.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from rpg.config import DataConfig
from rpg.data.corruptions import FUNCTIONS
from rpg.errors import RPGInputError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _root(data_cfg: DataConfig) -> Path:
    if not data_cfg.root:
        raise RPGInputError("imagefolder needs a 'root' folder", "config data.root")
    return Path(data_cfg.root).expanduser()


def check_root(data_cfg: DataConfig) -> None:
    """Raise RPGInputError naming the folder unless ``root/train`` holds class folders and ``root/val`` exists."""
    find_classes(data_cfg)
    _split_dir(data_cfg, "val")


def _split_dir(data_cfg: DataConfig, split: str) -> Path:
    path = _root(data_cfg) / split
    if not path.is_dir():
        raise RPGInputError(f"missing {split!r} folder of the image dataset", path)
    return path


def find_classes(data_cfg: DataConfig) -> list[str]:
    """Sorted class folder names of ``root/train``."""
    train_dir = _split_dir(data_cfg, "train")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise RPGInputError("no class folders found", train_dir)
    return classes


class ImageFolderDataset(Dataset):
    """``(transform(image), class_index)`` pairs of one split of an ImageNet-style tree."""

    def __init__(self, *, root: Path, classes: list[str], transform: Callable | None = None) -> None:
        self.root = Path(root)
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.transform = transform
        self.samples: list[tuple[Path, int]] = []
        for class_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if class_dir.name not in self.class_to_idx:
                raise RPGInputError("class folder not present in the train split", class_dir)
            label = self.class_to_idx[class_dir.name]
            self.samples += [(f, label) for f in sorted(class_dir.iterdir()) if f.suffix.lower() in IMG_EXTENSIONS]
        if not self.samples:
            raise RPGInputError("no images found", self.root)
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from PIL import Image

        path, label = self.samples[index]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
        except OSError as exc:
            raise RPGInputError(f"unreadable image ({exc})", path) from exc
        return (self.transform(img) if self.transform is not None else img), label


def build_transform(data_cfg: DataConfig, split: str) -> Callable:
    """timm's train (augmenting) or eval transform for ``image_size``."""
    from timm.data import create_transform

    size = data_cfg.image_size
    return create_transform(
        input_size=(3, size, size),
        is_training=split == "train",
        interpolation=data_cfg.interpolation,
        mean=tuple(data_cfg.mean),
        std=tuple(data_cfg.std),
        crop_pct=data_cfg.crop_pct,
    )


class SampleSubset(Dataset):
    """Items ``indices`` of a dataset that has ``targets`` (which the subset keeps, in order)."""

    def __init__(self, base: Dataset, indices) -> None:
        self.base, self.indices = base, [int(i) for i in indices]
        self.targets = [base.targets[i] for i in self.indices]  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.base[self.indices[index]]


class CorruptedDataset(Dataset):
    """A dataset followed by one seeded corrupted copy of it per kind (:mod:`rpg.data.corruptions`)."""

    def __init__(self, base: Dataset, kinds, *, seed: int, severity: float) -> None:
        self.base, self.kinds, self.seed, self.severity = base, list(kinds), int(seed), float(severity)
        targets = list(base.targets)  # type: ignore[attr-defined]
        self.targets = targets * (1 + len(self.kinds))

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        k, i = divmod(index, len(self.base))  # type: ignore[arg-type]
        x, y = self.base[i]
        if k == 0:
            return x, y
        g = torch.Generator().manual_seed((self.seed * 1009 + k) * 1_000_003 + i)
        return FUNCTIONS[self.kinds[k - 1]](x[None], g, self.severity)[0], y


def build_imagefolder(data_cfg: DataConfig, split: str) -> Dataset:
    """One split of the tree. Without a ``test/`` folder, ``val/`` is split in two halves by a seeded
    permutation: one is the validation split, the other the test split. ``probe`` = test + its corruptions."""
    classes = find_classes(data_cfg)
    transform = build_transform(data_cfg, "train" if split == "train" else "val")
    if split == "train":
        return ImageFolderDataset(root=_split_dir(data_cfg, "train"), classes=classes, transform=transform)
    if split == "probe":
        test = build_imagefolder(data_cfg, "test")
        return CorruptedDataset(test, data_cfg.probe, seed=data_cfg.split_seed, severity=data_cfg.probe_severity)
    if (_root(data_cfg) / "test").is_dir():
        return ImageFolderDataset(root=_split_dir(data_cfg, split), classes=classes, transform=transform)
    val = ImageFolderDataset(root=_split_dir(data_cfg, "val"), classes=classes, transform=transform)
    perm = torch.randperm(len(val), generator=torch.Generator().manual_seed(data_cfg.split_seed)).tolist()
    half = len(perm) // 2
    return SampleSubset(val, sorted(perm[:half] if split == "test" else perm[half:]))


def imagefolder_info(data_cfg: DataConfig) -> dict[str, int]:
    return {"num_classes": len(find_classes(data_cfg)), "in_chans": 3, "image_size": data_cfg.image_size}
