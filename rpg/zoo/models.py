"""Target-model registry: small built-in CNNs for digits-sized inputs, everything else via timm.

Built-ins (conv + BatchNorm + ReLU, global average pooling, linear head):

- ``cnn_s``: channels (8, 12, 16), 2,906 parameters for 1 input channel and 10 classes
  (the size of the paper's CNN(s)).
- ``cnn_m``: channels (16, 24, 32), 10,986 parameters (the paper's CNN(m)).

Detectors (:mod:`rpg.zoo.detectors`): ``fcos``, torchvision's FCOS with a small built-in or a timm backbone.

A name ``package.module:function`` is a Python entry point: ``function(**arch_kwargs)`` must return the
``nn.Module`` (bring your own architecture); it gets exactly the ``arch_kwargs`` of the config. Any other name is
passed to ``timm.create_model(name, pretrained=False, **arch_kwargs)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rpg.errors import RPGInputError
from rpg.io import load_safetensors
from rpg.zoo.detectors import DETECTORS, build_detector

log = logging.getLogger(__name__)

BUILTIN_ARCHS: dict[str, tuple[int, ...]] = {"cnn_s": (8, 12, 16), "cnn_m": (16, 24, 32)}


class SmallCNN(nn.Module):
    """Three 3x3 conv-BN-ReLU stages (strides 1, 2, 2), global average pooling and a linear head."""

    def __init__(
        self,
        *,
        in_chans: int = 1,
        num_classes: int = 10,
        channels: Sequence[int] = (16, 24, 32),
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if in_chans < 1 or num_classes < 1 or not channels or min(channels) < 1:
            raise ValueError(
                f"SmallCNN needs in_chans, num_classes >= 1 and positive channels; "
                f"got in_chans={in_chans}, num_classes={num_classes}, channels={channels}"
            )
        layers: list[nn.Module] = []
        prev = in_chans
        for i, width in enumerate(channels):
            stride = 1 if i == 0 else 2
            layers += [
                nn.Conv2d(prev, width, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            prev = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.pool(self.features(x)).flatten(1)))


def entry_point(arch: str):
    """The callable named by ``package.module:function`` (RPGInputError naming the config key when not found)."""
    import importlib

    module_name, _, func_name = arch.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RPGInputError(f"cannot import the module of architecture {arch!r}: {exc}", "config arch") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise RPGInputError(f"architecture {arch!r}: {module_name} has no callable {func_name!r}", "config arch")
    return func


def check_arch(arch: str) -> None:
    """Raise RPGInputError unless ``arch`` is a built-in, an importable entry point or a timm model name."""
    if arch in BUILTIN_ARCHS or arch in DETECTORS:
        return
    if ":" in arch:
        entry_point(arch)
        return
    import timm

    if not timm.is_model(arch):
        raise RPGInputError(
            f"unknown architecture {arch!r}: not a built-in ({sorted(BUILTIN_ARCHS) + list(DETECTORS)}), not an "
            "entry point (package.module:function) and not a timm model name (see timm.list_models())",
            "config arch",
        )


def build_model(arch: str, arch_kwargs: dict[str, Any] | None = None, *, seed: int | None = None) -> nn.Module:
    """Build ``arch`` with random initial weights (``seed`` makes the init reproducible).

    Built-ins accept ``in_chans``, ``num_classes``, ``channels`` and ``drop_rate``; other names
    go to timm (``pretrained=False``, never a download).
    """
    kwargs = dict(arch_kwargs or {})
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(int(seed))
        if arch in BUILTIN_ARCHS:
            kwargs.setdefault("channels", BUILTIN_ARCHS[arch])
            try:
                return SmallCNN(**kwargs)
            except TypeError as exc:
                raise RPGInputError(f"bad arch_kwargs for {arch!r}: {exc}", "config arch_kwargs") from exc
        if arch in DETECTORS:
            return build_detector(arch, kwargs)
        if ":" in arch:
            model = entry_point(arch)(**kwargs)
            if not isinstance(model, nn.Module):
                raise RPGInputError(f"{arch} returned {type(model).__name__}, not an nn.Module", "config arch")
            return model
        import timm

        check_arch(arch)
        kwargs.pop("pretrained", None)
        try:
            return timm.create_model(arch, pretrained=False, **kwargs)
        except TypeError as exc:
            raise RPGInputError(f"bad arch_kwargs for timm model {arch!r}: {exc}", "config arch_kwargs") from exc


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (not buffers)."""
    return sum(p.numel() for p in model.parameters())


def read_weights_file(path: str | Path, *, key: str | None = None) -> dict[str, torch.Tensor]:
    """A state_dict from ``.safetensors`` or a torch/timm file (``weights_only=True``).

    Torch files: the mapping under ``key`` when given, else wrappers ``{"state_dict": ...}`` / ``{"model": ...}`` /
    ``{"state_dict_ema": ...}`` are unwrapped; DDP ``module.`` prefixes are removed.
    """
    path = Path(path)
    if not path.is_file():
        raise RPGInputError("weights file does not exist", path)
    if path.suffix == ".safetensors":
        tensors, _ = load_safetensors(path)
        return tensors
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RPGInputError(f"cannot read weights ({type(exc).__name__}: {exc})", path) from exc
    if key is not None:
        if not isinstance(obj, dict) or not isinstance(obj.get(key), dict):
            found = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
            raise RPGInputError(f"no state_dict under key {key!r} (found: {found})", path)
        obj = obj[key]
    else:
        for wrapper in ("state_dict", "model", "state_dict_ema"):
            if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise RPGInputError("not a state_dict (expected a mapping of names to tensors)", path)
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_initial_weights(model: nn.Module, path: str | Path) -> None:
    """Load a weights file into ``model`` (strict: every key and shape must match)."""
    state = read_weights_file(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise RPGInputError(f"weights do not fit the model: {exc}", path) from exc
    log.info("loaded initial weights from %s", path)
