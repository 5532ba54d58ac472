"""Detection architectures: torchvision's FCOS with a small built-in backbone or a timm backbone, no downloads.

``fcos`` (a zoo's ``arch: fcos``) builds :class:`torchvision.models.detection.FCOS` (anchor-free, one point per
location, focal loss + GIoU + centre-ness). Its ``arch_kwargs``:

- ``backbone``: ``tiny`` (default; conv-BN-ReLU stages of ``channels`` (default 16, 32), each halving the
  resolution, the last ``levels`` (default 1: one stride-4 map) projected to ``out_channels`` (32) by a feature
  pyramid; 46k parameters with the default head, for the 48-pixel digits_detection canvases) or a timm model name,
  built with ``features_only=True`` and ``pretrained=False`` (its stride-8/16/32 features through an FPN, plus P6/P7
  when ``extra_levels``; ``backbone_kwargs`` go to timm);
- ``num_classes``, ``in_chans``, ``image_size`` (filled from the dataset by the collection stage);
- ``num_convs`` (convolutions in each head tower, default 2; GroupNorm with up to 32 groups), ``score_thresh``,
  ``nms_thresh``, ``detections_per_img``, ``image_mean``/``image_std`` (the model normalises its [0, 1] inputs).

Inputs are batches [B, C, S, S] (or lists of [C, H, W]) of letterboxed images (:mod:`rpg.data.detection`); the
model resizes nothing (``image_size`` is both its min and max size). In eval mode it returns a list of dicts with
``boxes`` (x1 y1 x2 y2), ``scores`` and ``labels`` (contiguous 0 .. num_classes - 1); in train mode, given targets, a
dict of losses.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from rpg.errors import RPGInputError

DETECTORS = ("fcos",)
GRAY_MEAN, GRAY_STD = [0.5], [0.25]
RGB_MEAN, RGB_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class TinyBackbone(nn.Module):
    """conv-BN-ReLU stages (3x3, stride 2 each) and a top-down feature pyramid over the last ``levels`` stages.

    ``forward`` returns an OrderedDict of ``levels`` maps with ``out_channels`` channels, finest first; level i has
    stride ``2 ** (len(channels) - levels + 1 + i)``.
    """

    def __init__(self, *, in_chans: int, channels: Sequence[int], out_channels: int, levels: int) -> None:
        super().__init__()
        if not channels or min(channels) < 1 or not 1 <= levels <= len(channels):
            raise RPGInputError(f"tiny backbone: need channels >= 1 and 1 <= levels <= {len(channels)}",
                                "config arch_kwargs")  # fmt: skip
        stages, prev = [], in_chans
        for width in channels:
            stages.append(nn.Sequential(nn.Conv2d(prev, width, 3, stride=2, padding=1, bias=False),
                                        nn.BatchNorm2d(width), nn.ReLU(inplace=True)))  # fmt: skip
            prev = width
        self.stages = nn.ModuleList(stages)
        self.levels = levels
        used = list(channels)[-levels:]
        self.lateral = nn.ModuleList(
            nn.Identity() if c == out_channels else nn.Conv2d(c, out_channels, 1) for c in used
        )
        self.smooth = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in used[:-1])
        self.out_channels = out_channels
        self.strides = [2 ** (len(channels) - levels + 1 + i) for i in range(levels)]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        feats = [lat(f) for lat, f in zip(self.lateral, feats[-self.levels :])]
        outs = [feats[-1]]
        for i in range(self.levels - 2, -1, -1):
            top = nn.functional.interpolate(outs[0], size=feats[i].shape[-2:], mode="nearest")
            outs.insert(0, self.smooth[i](feats[i] + top))
        return OrderedDict((str(i), f) for i, f in enumerate(outs))


class TimmBackbone(nn.Module):
    """A timm model's stride-8/16/32 features (``features_only``) through torchvision's FPN (+ P6/P7)."""

    def __init__(self, *, name: str, in_chans: int, out_channels: int, extra_levels: bool, **timm_kwargs) -> None:
        super().__init__()
        import timm
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelP6P7

        if not timm.is_model(name):
            raise RPGInputError(f"fcos backbone {name!r} is not a timm model name", "config arch_kwargs.backbone")
        self.body = timm.create_model(name, pretrained=False, features_only=True, in_chans=in_chans, **timm_kwargs)
        reductions = self.body.feature_info.reduction()
        self.indices = [i for i, r in enumerate(reductions) if r in (8, 16, 32)]
        if not self.indices:
            raise RPGInputError(f"timm backbone {name!r} has no stride-8/16/32 features", "config arch_kwargs.backbone")
        channels = self.body.feature_info.channels()
        extra = LastLevelP6P7(out_channels, out_channels) if extra_levels else None
        self.fpn = FeaturePyramidNetwork([channels[i] for i in self.indices], out_channels, extra_blocks=extra)
        self.out_channels = out_channels
        self.strides = [reductions[i] for i in self.indices] + ([64, 128] if extra_levels else [])

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body(x)
        return self.fpn(OrderedDict((str(i), feats[j]) for i, j in enumerate(self.indices)))


def _groups(channels: int) -> int:
    return math.gcd(32, channels)


def fcos(
    *,
    num_classes: int,
    in_chans: int = 3,
    image_size: int = 640,
    backbone: str = "tiny",
    channels: Sequence[int] = (16, 32),
    levels: int = 1,
    out_channels: int = 32,
    extra_levels: bool = True,
    backbone_kwargs: dict | None = None,
    num_convs: int = 2,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.6,
    detections_per_img: int = 100,
    topk_candidates: int = 1000,
    center_sampling_radius: float = 1.5,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
) -> nn.Module:
    """An FCOS detector (see the module docstring); random initial weights, nothing downloaded."""
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.fcos import FCOSClassificationHead, FCOSHead, FCOSRegressionHead

    if num_classes < 1 or in_chans < 1 or image_size < 8:
        raise RPGInputError(f"fcos needs num_classes, in_chans >= 1 and image_size >= 8; got {num_classes}, "
                            f"{in_chans}, {image_size}", "config arch_kwargs")  # fmt: skip
    if backbone == "tiny":
        body: nn.Module = TinyBackbone(in_chans=in_chans, channels=channels, out_channels=out_channels, levels=levels)
    else:
        body = TimmBackbone(name=backbone, in_chans=in_chans, out_channels=out_channels, extra_levels=extra_levels,
                            **(backbone_kwargs or {}))  # fmt: skip
    strides = body.strides
    anchors = AnchorGenerator(sizes=tuple((s,) for s in strides), aspect_ratios=((1.0,),) * len(strides))
    if out_channels % 32 == 0:
        head = FCOSHead(out_channels, 1, num_classes, num_convs=num_convs)
    else:  # torchvision's towers use GroupNorm(32, C): build them with fewer groups
        head = FCOSHead(out_channels, 1, num_classes, num_convs=0)
        norm = partial(nn.GroupNorm, _groups(out_channels))
        head.classification_head = FCOSClassificationHead(out_channels, 1, num_classes, num_convs, norm_layer=norm)
        head.regression_head = FCOSRegressionHead(out_channels, 1, num_convs, norm_layer=norm)
    default = {1: (GRAY_MEAN, GRAY_STD), 3: (RGB_MEAN, RGB_STD)}.get(in_chans, ([0.5] * in_chans, [0.25] * in_chans))
    mean = list(image_mean) if image_mean is not None else default[0]
    std = list(image_std) if image_std is not None else default[1]
    return FCOS(body, num_classes, min_size=image_size, max_size=image_size, image_mean=mean, image_std=std,
                anchor_generator=anchors, head=head, center_sampling_radius=center_sampling_radius,
                score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img,
                topk_candidates=topk_candidates, size_divisible=min(32, max(strides)))  # fmt: skip


def build_detector(arch: str, kwargs: dict) -> nn.Module:
    """The detector ``arch`` (one of DETECTORS) from its keyword arguments; bad keywords name arch_kwargs."""
    if arch != "fcos":
        raise RPGInputError(f"unknown detector {arch!r}; detectors: {', '.join(DETECTORS)}", "config arch")
    try:
        return fcos(**kwargs)
    except TypeError as exc:
        raise RPGInputError(f"bad arch_kwargs for {arch!r}: {exc}", "config arch_kwargs") from exc


def from_torchvision_fcos(state_dict: dict[str, torch.Tensor], category_ids: Sequence[int]) -> dict[str, torch.Tensor]:
    """torchvision's COCO-trained ``fcos_resnet50_fpn`` weights as a state_dict of ``fcos`` with ``backbone:
    resnet50``, ``out_channels: 256``, ``num_convs: 4`` (timm's ResNets name their layers as torchvision's do).

    torchvision scores the COCO category ids directly (91 rows); ours are contiguous labels in the order of the
    sorted ``category_ids``, so row i of the classifier becomes torchvision's row ``category_ids[i]``. Frozen
    BatchNorm layers have no ``num_batches_tracked``: zeros are added.
    """
    ids = sorted(int(c) for c in category_ids)
    out = {k.removeprefix("module."): v for k, v in state_dict.items()}
    for key in ("head.classification_head.cls_logits.weight", "head.classification_head.cls_logits.bias"):
        if key not in out:
            raise RPGInputError(f"not torchvision FCOS weights: no {key!r}")
        if max(ids) >= out[key].shape[0]:
            raise RPGInputError(f"category id {max(ids)} beyond the {out[key].shape[0]} classifier rows")
        out[key] = out[key][ids].clone()
    for key in [k for k in out if k.endswith(".running_var")]:
        out.setdefault(key.removesuffix("running_var") + "num_batches_tracked", torch.tensor(0))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rpg.zoo.detectors IN.pth OUT.safetensors --annotations instances_train2017.json``: convert
    torchvision's COCO FCOS weights into initial weights for a ``fcos`` zoo with ``backbone: resnet50``."""
    import argparse

    from rpg.data.detection import read_annotations
    from rpg.io import save_safetensors

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("weights", help="torchvision fcos_resnet50_fpn COCO weights (.pth)")
    parser.add_argument("out", help="the .safetensors file to write (the zoo's init)")
    parser.add_argument("--annotations", required=True, help="a COCO instances JSON: its categories fix the labels")
    parser.add_argument("--backbone", default="resnet50", help="the ResNet of the torchvision model (timm name)")
    args = parser.parse_args(argv)
    categories = [c["id"] for c in read_annotations(args.annotations)["categories"]]
    try:
        weights = torch.load(args.weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RPGInputError(f"cannot read weights ({type(exc).__name__}: {exc})", args.weights) from exc
    state = from_torchvision_fcos(weights, categories)
    model = fcos(num_classes=len(categories), backbone=args.backbone, out_channels=256, num_convs=4)
    model.load_state_dict(state, strict=True)  # fails loudly if anything does not fit
    save_safetensors(model.state_dict(), args.out, {"converted_from": str(args.weights)})
    print(f"wrote {args.out}: {len(state)} entries, {len(categories)} classes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
