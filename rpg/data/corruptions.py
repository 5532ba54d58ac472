"""Seeded corruptions of image batches: the probe split that gives failure-set similarity its resolution.

Two good models of a small task make a handful of errors on the test split, so the IoU of their failure sets moves
in coarse steps (one error more or less changes it by a sixth) and ties everywhere. The probe split is the test
split plus corrupted copies of it (shifts, blur, noise, erased patches), on which every model fails often enough
(the evaluation reports the smallest failure count). Each corruption is deterministic given the seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rpg.config.blocks import CORRUPTIONS


def _fill(x: torch.Tensor) -> torch.Tensor:
    """The background value of each image (its minimum), shaped [N, 1, 1, 1]."""
    return x.amin(dim=(1, 2, 3), keepdim=True)


def shift(x: torch.Tensor, g: torch.Generator, severity: float) -> torch.Tensor:
    """Translate each image by a random sub-pixel offset of up to ``severity * size / 16`` pixels in x and y
    (bilinear), filling with the background."""
    n, _, h, w = x.shape
    offsets = (torch.rand(n, 2, generator=g, dtype=x.dtype) * 2 - 1) * severity / 8  # in [-1, 1] grid units / 8
    theta = torch.zeros(n, 2, 3, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = offsets
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    fill = _fill(x)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def blur(x: torch.Tensor, g: torch.Generator, severity: float) -> torch.Tensor:
    """Gaussian blur with sigma ``0.6 * severity`` pixels (at least 0.2; 3x3 .. 7x7 kernel), per channel."""
    sigma = max(0.2, 0.6 * severity)
    radius = max(1, min(3, round(2 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k1 = torch.exp(-(t**2) / (2 * sigma**2))
    k1 = k1 / k1.sum()
    c = x.shape[1]
    kernel = (k1[:, None] * k1[None, :]).expand(c, 1, -1, -1)
    padded = F.pad(x, (radius,) * 4, mode="replicate")
    return F.conv2d(padded, kernel, groups=c)


def noise(x: torch.Tensor, g: torch.Generator, severity: float) -> torch.Tensor:
    """Additive Gaussian noise with std ``0.25 * severity`` times each image's own std."""
    scale = 0.25 * severity * x.std(dim=(1, 2, 3), keepdim=True)
    return x + scale * torch.randn(x.shape, generator=g, dtype=x.dtype)


def erase(x: torch.Tensor, g: torch.Generator, severity: float) -> torch.Tensor:
    """Set one random square of side ``severity * size / 4`` to the background."""
    n, _, h, w = x.shape
    s = max(1, round(severity * min(h, w) / 4))
    ys = torch.randint(0, h - s + 1, (n,), generator=g)
    xs = torch.randint(0, w - s + 1, (n,), generator=g)
    out = x.clone()
    fill = _fill(x)
    for i in range(n):
        out[i, :, ys[i] : ys[i] + s, xs[i] : xs[i] + s] = fill[i]
    return out


def contrast(x: torch.Tensor, g: torch.Generator, severity: float) -> torch.Tensor:
    """Pull every image toward its mean by a factor ``1 - 0.4 * severity`` (at least 0.1 left)."""
    keep = max(0.1, 1.0 - 0.4 * severity)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return mean + keep * (x - mean)


FUNCTIONS = {"shift": shift, "blur": blur, "noise": noise, "erase": erase, "contrast": contrast}


def corrupt(x: torch.Tensor, kinds: list[str], *, seed: int, severity: float = 1.0) -> torch.Tensor:
    """``x`` [N, C, H, W] followed by one corrupted copy per kind, in order ([N * (1 + len(kinds)), C, H, W])."""
    unknown = [k for k in kinds if k not in FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown corruptions {unknown}; choose from {CORRUPTIONS}")
    parts = [x]
    for i, kind in enumerate(kinds):
        g = torch.Generator().manual_seed(int(seed) * 1009 + i)
        parts.append(FUNCTIONS[kind](x, g, severity).to(x.dtype))
    return torch.cat(parts)
