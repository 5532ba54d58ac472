"""A task family with a continuous task parameter: task value v transforms the data (rotation: by v degrees).

Binary class-subset tasks (:mod:`rpg.tasks.vectors`) are all answered by the shared backbone's 10-class head, so
a generator cannot add anything there. Here it must: the model of a rotated task needs new weights throughout
the network, and a held-out angle has no trained model to copy.

- **Task vector.** Value v becomes a small float vector (:func:`task_features`): ``[v / scale]`` (features
  ``scalar``) or ``[v / scale, sin v, cos v, sin 2v, cos 2v]`` (``fourier``, degrees). It is the checkpoint's
  ``task`` metadata, the token store's task column and the generator's condition (``generator.task_bits`` = its
  length, ``task_condition: all``).
- **Collection.** One shared initialisation (the task zoo's backbone, trained on untransformed data) is fine-tuned,
  whole network, for every task value (:func:`collect_value_group`): models of nearby values share a basin, so
  averaging or interpolating them is meaningful (the baselines of :mod:`rpg.tasks.continuous_eval`).
- **Plan.** :class:`rpg.tasks.plan.ContinuousPlan` (with the task vectors, in :mod:`rpg.tasks.plan`: cheap, no data
  read) has the interface of :class:`rpg.tasks.plan.TaskZooPlan` that the workflow
  uses (groups, manifest, file names); a group's ``task_ids`` are its task values, so changing a value reruns its
  collection job.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from rpg.classifier import finetune, score, steps_per_epoch
from rpg.config import DataConfig, TasksConfig
from rpg.data import build_dataset, data_config
from rpg.errors import RPGInputError
from rpg.io import write_table
from rpg.runtime import progress, resolve_device
from rpg.tasks.plan import (
    ContinuousPlan,
    feature_dim,
    plan_continuous,
    task_features,
    value_label,
    value_seed,
)
from rpg.zoo.checkpoint import load_checkpoint, save_checkpoint
from rpg.zoo.collect import checkpoint_steps
from rpg.zoo.models import build_model

log = logging.getLogger(__name__)

GROUP_COLUMNS = ["path", "split", "group", "task_value", "task", "run", "seed", "step", "index", "val_accuracy"]


# ---------------------------------------------------------------------------------------------------------
# task vectors and transforms


def rotate_images(x: torch.Tensor, degrees: float, *, fill: float) -> torch.Tensor:
    """``x`` [N, C, H, W] rotated by ``degrees`` (counter-clockwise, bilinear); corners that come from outside the
    image take ``fill`` (the background)."""
    if x.ndim != 4:
        raise ValueError(f"rotate_images needs [N, C, H, W] images, got shape {tuple(x.shape)}")
    if float(degrees) == 0.0:
        return x.clone()
    t = math.radians(float(degrees))
    theta = torch.tensor([[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0]], dtype=x.dtype)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    out = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill


def transformed(dataset: Dataset, value: float, *, family: str) -> TensorDataset:
    """The dataset of task ``value``: every image transformed (rotation: by ``value`` degrees), labels unchanged.

    Needs an in-memory image dataset (a ``TensorDataset`` of [N, C, H, W] images, e.g. digits); the background
    is the smallest pixel value of the set.
    """
    if family != "rotation":
        raise RPGInputError(f"unknown continuous task family {family!r}; families: rotation", "config tasks.family")
    if not (isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2 and dataset.tensors[0].ndim == 4):
        raise RPGInputError("a continuous task family needs an in-memory image dataset (digits)", "config data")
    x, y = dataset.tensors
    return TensorDataset(rotate_images(x, value, fill=float(x.min())).contiguous(), y)


# ---------------------------------------------------------------------------------------------------------
# collection


def collect_value_group(
    *,
    arch: str,
    tasks: TasksConfig | Mapping[str, Any],
    data: DataConfig | Mapping[str, Any],
    backbone_path: str | Path,
    split: str,
    group: str,
    values: Sequence[float],
    out_paths: Sequence[str | Path],
    table_path: str | Path,
    device: str = "auto",
) -> None:
    """Fine-tune the shared backbone, whole network, for every task value of one group.

    ``tasks.finetune_epochs`` epochs of AdamW at ``tasks.finetune_lr`` (batch ``tasks.batch_size``) on the transformed
    training split; ``checkpoints_per_task`` checkpoints at evenly spaced steps (the last: the final model).
    ``out_paths`` are value-major. Every checkpoint's metadata carries ``task`` (the task vector), ``task_value``,
    ``split`` and ``run: 0`` (one shared initialisation, one basin).
    """
    cfg = TasksConfig.parse(tasks, "tasks")
    if cfg.continuous is None:
        raise RPGInputError(f"family {cfg.family!r} needs tasks.continuous", "config tasks")
    data_cfg = data_config(data)
    n_ckpt = cfg.checkpoints_per_task
    if len(out_paths) != len(values) * n_ckpt:
        raise ValueError(f"{len(values)} task values x {n_ckpt} checkpoints need as many paths, got {len(out_paths)}")
    dev = resolve_device(device)
    backbone, bmeta = load_checkpoint(backbone_path)
    if bmeta.get("arch") != arch:
        raise RPGInputError(f"backbone is a {bmeta.get('arch')!r}, the zoo a {arch!r}", backbone_path)
    kwargs = dict(bmeta.get("arch_kwargs") or {})
    train_full, val_full = build_dataset(data_cfg, "train"), build_dataset(data_cfg, "val")
    steps = max(1, round(cfg.finetune_epochs * steps_per_epoch(len(train_full), cfg.batch_size)))
    if steps < n_ckpt:
        raise RPGInputError(f"fine-tuning has {steps} steps for {n_ckpt} checkpoints per task; raise "
                            "tasks.finetune_epochs", "config tasks")  # fmt: skip
    save_at = dict(zip(checkpoint_steps(steps, n_ckpt), range(n_ckpt)))
    log.info("%s %s: task values %s (%s) of %s from %s; %d fine-tuning steps, %d checkpoints each", split, group,
             list(values), cfg.family, arch, backbone_path, steps, n_ckpt)  # fmt: skip
    rows: list[dict[str, Any]] = []
    for j, value in enumerate(progress(values, desc=f"{split} {group}", total=len(values))):
        start = time.perf_counter()
        seed = value_seed(cfg.seed, value)
        train_set = transformed(train_full, value, family=cfg.family)
        val_set = transformed(val_full, value, family=cfg.family)
        model = build_model(arch, kwargs)
        model.load_state_dict(backbone, strict=True)
        model.to(dev)
        paths = [Path(p) for p in out_paths[j * n_ckpt : (j + 1) * n_ckpt]]
        task = task_features(value, cfg.continuous)

        def on_step(
            step: int, *, _paths=paths, _task=task, _value=value, _seed=seed, _model=model, _val=val_set
        ) -> None:
            if step not in save_at:
                return
            index = save_at[step]
            acc = score(_model, _val, device=dev)[0]
            meta = {"kind": "checkpoint", "arch": arch, "arch_kwargs": kwargs, "run": 0, "seed": _seed,
                    "task": _task, "task_value": float(_value), "family": cfg.family, "split": split,
                    "group": group, "backbone": str(backbone_path), "step": step, "index": index,
                    "val_accuracy": acc}  # fmt: skip
            save_checkpoint(_paths[index], _model.state_dict(), meta)
            rows.append({"path": str(_paths[index]), "split": split, "group": group, "task_value": float(_value),
                         "task": str(_task), "run": 0, "seed": _seed, "step": step, "index": index,
                         "val_accuracy": acc})  # fmt: skip

        finetune(model, train_set, steps=steps, lr=cfg.finetune_lr, weight_decay=cfg.weight_decay,
                 batch_size=cfg.batch_size, seed=seed, device=dev, on_step=on_step)  # fmt: skip
        log.info("task value %s: val accuracy %.4f (%.1fs)", value_label(value), rows[-1]["val_accuracy"],
                 time.perf_counter() - start)  # fmt: skip
    write_table(pd.DataFrame(rows, columns=GROUP_COLUMNS), table_path)


__all__ = [
    "ContinuousPlan",
    "collect_value_group",
    "feature_dim",
    "plan_continuous",
    "rotate_images",
    "task_features",
    "transformed",
    "value_seed",
]
