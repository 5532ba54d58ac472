"""Collection of a task zoo (paper section 4): a shared backbone, then a short classifier per binary task.

1. **Shared backbone.** The zoo's architecture is trained once on the full (10-class) problem with the zoo's
   ``collect`` block (:func:`train_backbone`, one run, one checkpoint).
2. **Per task.** For every task (:mod:`rpg.tasks.vectors`) the backbone gets a new 2-way head, the head is trained
   ``head_epochs`` epochs on frozen backbone features, then the whole network is fine-tuned for ``finetune_epochs``
   epochs at ``finetune_lr``, and ``checkpoints_per_task`` checkpoints are saved at evenly spaced steps of the
   fine-tuning (the last one is the final model) (:func:`collect_task_group`).

All task checkpoints share one backbone, so they sit in one permutation basin: their metadata says ``run: 0``
(one permutation state) and carries the task vector (``task``), which the token store puts into its index. Seen
tasks are collected for training the generator; held-out tasks are collected the same way only as reference models
for the evaluation, never for training.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from rpg.classifier import dataset_labels, finetune, score, steps_per_epoch, train_head
from rpg.config import CollectConfig, DataConfig, TasksConfig
from rpg.data import build_dataset, data_config
from rpg.errors import RPGInputError
from rpg.io import write_table
from rpg.runtime import progress, resolve_device
from rpg.tasks.heads import head_keys, head_module_name, make_task_model, task_arch_kwargs
from rpg.tasks.plan import task_seed
from rpg.tasks.vectors import relabel, task_vector
from rpg.zoo.checkpoint import load_checkpoint, save_checkpoint
from rpg.zoo.collect import checkpoint_steps, collect_run

log = logging.getLogger(__name__)

GROUP_COLUMNS = ["path", "split", "group", "task_id", "task", "positive_fraction", "run", "seed", "step", "index",
                 "val_accuracy", "val_balanced_accuracy"]  # fmt: skip
GROUP_TABLE = "group.csv"


def train_backbone(
    *,
    arch: str,
    arch_kwargs: Mapping[str, Any] | None,
    init: str = "random",
    collect: CollectConfig | Mapping[str, Any] | None,
    data: DataConfig | Mapping[str, Any],
    out_path: str | Path,
    table_path: str | Path,
    device: str = "auto",
) -> None:
    """Train the shared backbone on the full problem: one run of the zoo's ``collect`` block, one checkpoint."""
    cfg = CollectConfig.parse(collect, "collect").replace(checkpoints=1)
    collect_run(arch=arch, arch_kwargs=arch_kwargs, init=init, collect=cfg, data=data, run=0,
                out_paths=[Path(out_path)], table_path=Path(table_path), device=device)  # fmt: skip


def train_task(
    model: nn.Module,
    *,
    head_name: str,
    train_set: Dataset,
    val_set: Dataset,
    cfg: TasksConfig,
    seed: int,
    steps: int,
    save_at: Mapping[int, int],
    device: torch.device,
    save: Callable[[int, int, float, float], None],
) -> None:
    """Train one task's classifier: the head on frozen features, then ``steps`` steps of the whole network.

    After fine-tuning step ``s`` in ``save_at`` it calls ``save(save_at[s], s, val_accuracy, val_balanced_accuracy)``.
    """
    train_head(
        model,
        head_name,
        train_set,
        epochs=cfg.head_epochs,
        lr=cfg.head_lr,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        seed=seed,
        device=device,
    )

    def on_step(step: int) -> None:
        if step in save_at:
            acc, bal = score(model, val_set, device=device)
            save(save_at[step], step, acc, bal)

    finetune(
        model,
        train_set,
        steps=steps,
        lr=cfg.finetune_lr,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        seed=seed + 1,
        device=device,
        on_step=on_step,
    )


@dataclass
class _CheckpointWriter:
    """Saves checkpoint ``index`` of one task (``paths[index]``) and appends its row to the group table."""

    model: nn.Module
    paths: list[Path]
    meta: dict[str, Any]
    row: dict[str, Any]
    rows: list[dict[str, Any]]

    def __call__(self, index: int, step: int, acc: float, bal: float) -> None:
        scores = {"step": step, "index": index, "val_accuracy": acc, "val_balanced_accuracy": bal}
        save_checkpoint(self.paths[index], self.model.state_dict(), {**self.meta, **scores})
        self.rows.append({"path": str(self.paths[index]), **self.row, **scores})


def collect_task_group(
    *,
    arch: str,
    arch_kwargs: Mapping[str, Any] | None,
    tasks: TasksConfig | Mapping[str, Any],
    data: DataConfig | Mapping[str, Any],
    backbone_path: str | Path,
    split: str,
    group: str,
    task_ids: Sequence[int],
    out_paths: Sequence[str | Path],
    table_path: str | Path,
    device: str = "auto",
) -> None:
    """Train a classifier per task of one group and save ``checkpoints_per_task`` checkpoints each.

    ``out_paths`` are task-major (``len(task_ids) * checkpoints_per_task`` files). ``table_path`` gets a row per
    checkpoint (:data:`GROUP_COLUMNS`). Every checkpoint's metadata carries its ``task`` vector, ``task_id``,
    ``split`` and ``val_balanced_accuracy``; ``run`` is 0 for all (one shared backbone, one basin).
    """
    cfg = TasksConfig.parse(tasks, "tasks")
    data_cfg = data_config(data)
    n_ckpt = cfg.checkpoints_per_task
    if len(out_paths) != len(task_ids) * n_ckpt:
        raise ValueError(f"{len(task_ids)} tasks x {n_ckpt} checkpoints need as many paths, got {len(out_paths)}")
    dev = resolve_device(device)
    full_kwargs, task_kwargs = task_arch_kwargs(arch_kwargs, data_cfg)
    heads = head_keys(arch, full_kwargs, task_kwargs)
    head_name = head_module_name(heads)
    backbone, bmeta = load_checkpoint(backbone_path)
    if bmeta.get("arch") != arch:
        raise RPGInputError(f"backbone is a {bmeta.get('arch')!r}, the zoo a {arch!r}", backbone_path)
    num_classes = int(full_kwargs["num_classes"])
    train_full, val_full = build_dataset(data_cfg, "train"), build_dataset(data_cfg, "val")
    n_train = len(train_full)
    ft_steps = max(1, round(cfg.finetune_epochs * steps_per_epoch(n_train, cfg.batch_size)))
    if ft_steps < n_ckpt:
        raise RPGInputError(
            f"fine-tuning has {ft_steps} steps for {n_ckpt} checkpoints per task; raise tasks.finetune_epochs "
            "or lower tasks.batch_size",
            "config tasks",
        )
    save_at = dict(zip(checkpoint_steps(ft_steps, n_ckpt), range(n_ckpt)))
    log.info(
        "%s %s: %d tasks of %s from %s; head %s (%s init) %.3g epochs, then %d fine-tuning steps, %d checkpoints",
        split,
        group,
        len(task_ids),
        arch,
        backbone_path,
        head_name,
        cfg.head_init,
        cfg.head_epochs,
        ft_steps,
        n_ckpt,
    )
    rows: list[dict[str, Any]] = []
    for j, tid in enumerate(progress(task_ids, desc=f"{split} {group}", total=len(task_ids))):
        start = time.perf_counter()
        task = task_vector(tid, num_classes)
        seed = task_seed(cfg.seed, tid)
        train_set, val_set = relabel(train_full, task), relabel(val_full, task)
        model = make_task_model(arch, task_kwargs, backbone, heads=heads, seed=seed, head_init=cfg.head_init).to(dev)
        pos = float(dataset_labels(val_set).float().mean())
        writer = _CheckpointWriter(
            model=model,
            paths=[Path(p) for p in out_paths[j * n_ckpt : (j + 1) * n_ckpt]],
            meta={
                "kind": "checkpoint",
                "arch": arch,
                "arch_kwargs": task_kwargs,
                "run": 0,
                "seed": seed,
                "task": task,
                "task_id": int(tid),
                "split": split,
                "group": group,
                "num_classes": 2,
                "backbone": str(backbone_path),
            },
            row={
                "split": split,
                "group": group,
                "task_id": int(tid),
                "task": "".join(map(str, task)),
                "positive_fraction": pos,
                "run": 0,
                "seed": seed,
            },
            rows=rows,
        )
        train_task(
            model,
            head_name=head_name,
            train_set=train_set,
            val_set=val_set,
            cfg=cfg,
            seed=seed,
            steps=ft_steps,
            save_at=save_at,
            device=dev,
            save=writer,
        )
        last = rows[-1]
        log.info(
            "task %d (%s, %.0f%% positive): val acc %.4f, balanced %.4f (%.1fs)",
            tid,
            last["task"],
            100 * pos,
            last["val_accuracy"],
            last["val_balanced_accuracy"],
            time.perf_counter() - start,
        )
    table = pd.DataFrame(rows, columns=GROUP_COLUMNS)
    log.info(
        "%s %s: balanced accuracy of the final checkpoints min %.4f mean %.4f",
        split,
        group,
        table.groupby("task_id")["val_balanced_accuracy"].last().min(),
        table.groupby("task_id")["val_balanced_accuracy"].last().mean(),
    )
    write_table(table, table_path)
