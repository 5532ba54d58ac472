"""Head surgery for task zoos: which state_dict entries are the classifier head, and 2-way task models.

The head is found, not named: the entries whose shape depends on ``num_classes`` (built on the meta device for
the full problem and for 2 classes). A task model takes every other entry from the shared backbone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from rpg.config import DataConfig
from rpg.data import dataset_info
from rpg.errors import RPGInputError
from rpg.zoo.models import build_model


def task_arch_kwargs(
    arch_kwargs: Mapping[str, Any] | None, data_cfg: Mapping[str, Any] | DataConfig
) -> tuple[dict, dict]:
    """``(backbone_kwargs, task_kwargs)``: the zoo's arch_kwargs for the full problem and for 2-way tasks."""
    info = dataset_info(data_cfg)
    full = {"num_classes": info["num_classes"], "in_chans": info["in_chans"], **(arch_kwargs or {})}
    return full, {**full, "num_classes": 2}


def head_keys(arch: str, full_kwargs: Mapping[str, Any], task_kwargs: Mapping[str, Any]) -> list[str]:
    """State_dict entries that belong to the classifier head: those whose shape depends on num_classes."""
    with torch.device("meta"):
        full = build_model(arch, dict(full_kwargs)).state_dict()
        task = build_model(arch, dict(task_kwargs)).state_dict()
    if list(full) != list(task):
        raise RPGInputError(f"{arch}: the state_dict keys change with num_classes", "config arch")
    keys = [k for k in task if tuple(task[k].shape) != tuple(full[k].shape)]
    if not keys:
        raise RPGInputError(f"{arch}: no entry depends on num_classes; cannot find the classifier head", "config arch")
    return keys


def head_module_name(keys: Sequence[str]) -> str:
    """The module holding the head entries (their common prefix, e.g. ``head`` or ``head.fc``)."""
    prefixes = {k.rsplit(".", 1)[0] for k in keys}
    if len(prefixes) != 1:
        raise RPGInputError(f"the classifier head spans several modules {sorted(prefixes)}", "config arch")
    return prefixes.pop()


def make_task_model(
    arch: str,
    task_kwargs: Mapping[str, Any],
    backbone: Mapping[str, torch.Tensor],
    *,
    heads: Sequence[str],
    seed: int,
    head_init: str = "random",
) -> nn.Module:
    """A 2-way model: every entry from the backbone but the head, a new head (seeded random or zero)."""
    model = build_model(arch, dict(task_kwargs), seed=seed)
    state = model.state_dict()
    missing = [k for k in state if k not in heads and k not in backbone]
    if missing:
        raise RPGInputError(f"backbone lacks entries {missing[:3]}", "backbone")
    for k in state:
        if k not in heads:
            state[k] = backbone[k].clone()
        elif head_init == "zero":
            state[k] = torch.zeros_like(state[k])
    model.load_state_dict(state, strict=True)
    return model


class ComposedHead(nn.Module):
    """A binary classifier composed from a multi-class model without training: the positive logit is the
    logsumexp of the positive classes' logits, the negative one that of the others (a zero-training baseline)."""

    def __init__(self, model: nn.Module, task: Sequence[int]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("pos", torch.tensor([i for i, b in enumerate(task) if b], dtype=torch.long))
        self.register_buffer("neg", torch.tensor([i for i, b in enumerate(task) if not b], dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        return torch.stack([z[:, self.neg].logsumexp(1), z[:, self.pos].logsumexp(1)], dim=1)


class SwappedOutputs(nn.Module):
    """A 2-way classifier with its two outputs swapped: a classifier of the complementary task."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).flip(1)
