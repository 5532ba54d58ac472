"""Pieces shared by every training loop: weight-decay groups, the warm-up + cosine schedule (and a linear cool-down
that ends a run stopped by validation), seeded batches, AdamW (optionally 8-bit)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import torch
from torch import nn


def warmup_cosine(step: int, *, lr: float, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up over ``warmup`` steps, then a cosine from ``lr`` down
    to ``lr * min_ratio`` at step ``total``. With ``lr=1`` it is the factor of a LambdaLR schedule."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def linear_cooldown(step: int, *, start: int, end: int, factor: float, min_ratio: float = 0.0) -> float:
    """The lr factor at ``step`` of a linear decay from ``factor`` at ``start`` to ``min_ratio`` at ``end`` (the
    cool-down that ends a run of unknown length: the schedule before ``start`` is whatever it was)."""
    progress = min(1.0, max(0.0, (step - start) / max(1, end - start)))
    return factor + (min_ratio - factor) * progress


def decay_groups(params: Iterable[nn.Parameter], weight_decay: float) -> list[dict]:
    """Parameter groups with ``weight_decay`` on matrices/kernels and none on biases and norm weights (1-d)."""
    params = [p for p in params if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def make_optimizer(
    params: Iterable[nn.Parameter], *, name: str = "adamw", lr: float, weight_decay: float = 0.0, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay) or SGD with Nesterov momentum, over :func:`decay_groups`."""
    groups = decay_groups(params, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"optimizer {name!r} unknown (adamw or sgd)")


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def batch_rows(step: int, *, batch_size: int, num_checkpoints: int, seed: int) -> list[int]:
    """Checkpoint rows of ``step``: consecutive slices of a stream of seeded per-epoch permutations."""
    rows: list[int] = []
    pos = step * batch_size
    while len(rows) < batch_size:
        epoch, offset = divmod(pos, num_checkpoints)
        perm = torch.randperm(num_checkpoints, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        take = perm[offset : offset + batch_size - len(rows)].tolist()
        rows += take
        pos += len(take)
    return rows


def build_adamw(
    params: Iterable[nn.Parameter], *, lr: float, weight_decay: float, eight_bit: bool = False
) -> torch.optim.Optimizer:
    """AdamW; with ``eight_bit`` bitsandbytes' 8-bit AdamW (optimizer states in 8 bits, as the official code trains
    its largest generators) when the package is importable, else torch's AdamW with a warning."""
    params = list(params)
    if eight_bit:
        try:
            import bitsandbytes as bnb

            if not any(p.is_cuda for p in params):
                raise ImportError("8-bit AdamW needs the parameters on a GPU")
            return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay)
        except Exception as exc:  # ImportError, or a bitsandbytes build without this GPU/CPU
            logging.getLogger(__name__).warning(
                "8-bit AdamW unavailable (%s: %s): using torch AdamW (32-bit states)", type(exc).__name__, exc
            )
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
