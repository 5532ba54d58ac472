"""Task zoos (paper section 4): a shared backbone, then a short classifier per binary task.

A zoo with a ``tasks:`` block is a *task zoo*. Its checkpoints come from two steps:

1. **Shared backbone.** The zoo's architecture is trained once on the full (10-class) problem with the
   zoo's ``collect`` block (:func:`train_backbone`, one run, one checkpoint).
2. **Per task.** For every task (see :mod:`rpg.data.tasks`) the backbone gets a new 2-way head, the head is
   trained ``head_epochs`` epochs on frozen backbone features, then the whole network is fine-tuned for
   ``finetune_epochs`` epochs at ``finetune_lr``, and ``checkpoints_per_task`` checkpoints are saved at evenly
   spaced steps of the fine-tuning (the last one is the final model) (:func:`collect_task_group`).

All task checkpoints share one backbone, so they sit in one permutation basin: their metadata says
``run: 0`` (one permutation state) and carries the task vector (``task``), which the token store puts into its
index. Seen tasks are collected for training the generator; held-out tasks are collected the same way only as
reference models for the evaluation, never for training.

Tasks are collected in groups (``group_size`` tasks per job), so a cluster fans out while a laptop runs a
few dozen jobs rather than a thousand. :class:`TaskZooPlan` fixes the split, the groups and the file names
that the workflow and the evaluation share.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from rpg.data import build_dataset, dataset_info, make_loader
from rpg.data.tasks import TaskSplit, relabel, split_tasks, task_vector
from rpg.errors import RPGInputError
from rpg.io import write_table
from rpg.runtime import progress, resolve_device
from rpg.zoo.checkpoint import load_checkpoint, save_checkpoint
from rpg.zoo.collect import checkpoint_steps, collect_run
from rpg.zoo.models import build_model

log = logging.getLogger(__name__)

HEAD_INITS = ("random", "zero")
GROUP_COLUMNS = [
    "path",
    "split",
    "group",
    "task_id",
    "task",
    "positive_fraction",
    "run",
    "seed",
    "step",
    "index",
    "val_accuracy",
    "val_balanced_accuracy",
]


@dataclass
class TaskEvaluateConfig:
    """The ``tasks.evaluate`` block: which tasks are evaluated and the fine-tuning-from-init experiment."""

    seen_tasks: int = 10  # seen tasks evaluated like the held-out ones (a seeded sample)
    finetune_epochs: list[int] = field(default_factory=lambda: [0, 1, 5])  # evaluated after these epochs
    finetune_lr: float = 0.001  # AdamW, constant, the same for every initialisation
    finetune_tasks: int | None = None  # held-out tasks in the fine-tuning experiment (None: all)
    batch_size: int = 512  # evaluation batch size
    seed: int = 0


@dataclass
class TaskZooConfig:
    """The ``tasks:`` block of a task zoo (defaults as in workflow/schemas/config.schema.yaml)."""

    seen: int | str = 80  # number of seen tasks (a seeded sample) or "all"
    held_out: int = 20  # number of held-out tasks (a seeded sample)
    held_out_tasks: list[list[int]] | None = None  # explicit held-out task vectors (overrides held_out)
    seed: int = 0
    group_size: int = 20  # tasks per collection job
    checkpoints_per_task: int = 2
    head_init: str = "random"  # random (seeded per task) | zero
    head_epochs: float = 5.0  # head only, on frozen backbone features
    head_lr: float = 0.01
    finetune_epochs: float = 1.0  # the whole network
    finetune_lr: float = 0.0005
    batch_size: int = 64
    weight_decay: float = 0.0005
    evaluate: TaskEvaluateConfig = field(default_factory=TaskEvaluateConfig)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> TaskZooConfig:
        cfg = dict(cfg or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise RPGInputError(f"unknown tasks settings {unknown}; known: {sorted(known)}", "config tasks")
        ev = dict(cfg.pop("evaluate", None) or {})
        known_ev = {f.name for f in dataclasses.fields(TaskEvaluateConfig)}
        if set(ev) - known_ev:
            raise RPGInputError(
                f"unknown tasks.evaluate settings {sorted(set(ev) - known_ev)}; known: {sorted(known_ev)}",
                "config tasks.evaluate",
            )
        out = cls(**cfg, evaluate=TaskEvaluateConfig(**ev))
        if out.head_init not in HEAD_INITS:
            raise RPGInputError(f"head_init must be one of {HEAD_INITS}, got {out.head_init!r}", "config tasks")
        if out.group_size < 1 or out.checkpoints_per_task < 1 or out.batch_size < 1:
            raise RPGInputError("group_size, checkpoints_per_task and batch_size must be >= 1", "config tasks")
        if out.head_epochs < 0 or out.finetune_epochs <= 0:
            raise RPGInputError("need head_epochs >= 0 and finetune_epochs > 0", "config tasks")
        if any(int(e) < 0 for e in out.evaluate.finetune_epochs):
            raise RPGInputError("tasks.evaluate.finetune_epochs must be >= 0", "config tasks.evaluate")
        return out


COLLECTION_KEYS = (
    "seed",
    "checkpoints_per_task",
    "head_init",
    "head_epochs",
    "head_lr",
    "finetune_epochs",
    "finetune_lr",
    "batch_size",
    "weight_decay",
)


def collection_settings(tasks_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The ``tasks`` keys that change a task's checkpoints (not the split sizes, grouping or evaluation).

    The workflow passes only these to a collection job, so that e.g. a new evaluation setting or a larger ``seen``
    count does not retrain the tasks already collected.
    """
    return {k: tasks_cfg[k] for k in COLLECTION_KEYS if k in tasks_cfg}


def task_seed(seed: int, task_id: int) -> int:
    """The seed of task ``task_id``'s head init and data order (the same whether seen or held out)."""
    return int(seed) * 10_007 + int(task_id)


# ---------------------------------------------------------------------------------------------------------
# plan: split, groups, evaluated tasks, file names


@dataclass(frozen=True)
class TaskGroup:
    """Tasks collected by one job. ``name`` carries the number of tasks, which fixes the job's outputs."""

    split: str
    index: int
    task_ids: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"group{self.index:03d}-{len(self.task_ids)}tasks"

    def checkpoint_names(self, checkpoints_per_task: int) -> list[str]:
        """File names (relative to the zoo folder), task-major: member j of the group, checkpoint i."""
        return [
            member_checkpoint(self.split, self.name, j, i)
            for j in range(len(self.task_ids))
            for i in range(checkpoints_per_task)
        ]


def member_checkpoint(split: str, group: str, member: int, ckpt: int) -> str:
    """``<split>/<group>/member<jj>_ckpt<ii>.safetensors``: checkpoint ``ckpt`` of the group's ``member``-th task."""
    return f"{split}/{group}/member{member:02d}_ckpt{ckpt:02d}.safetensors"


def generated_name(split: str, k: int, m: int) -> str:
    """Generated model ``m`` for the ``k``-th evaluated task of ``split`` (relative to generated/<zoo>/)."""
    return f"{split}/task{k:02d}_model{m:02d}.safetensors"


@dataclass(frozen=True)
class TaskZooPlan:
    """Everything the workflow needs to know about a task zoo before running anything."""

    split: TaskSplit
    groups: dict[str, list[TaskGroup]]
    eval_tasks: dict[str, tuple[int, ...]]  # held_out: every held-out task; seen: a seeded sample
    checkpoints_per_task: int

    def group(self, split: str, name: str) -> TaskGroup:
        for g in self.groups[split]:
            if g.name == name:
                return g
        raise KeyError(f"no task group {split}/{name}")

    def checkpoint_names(self, split: str) -> list[str]:
        return [n for g in self.groups[split] for n in g.checkpoint_names(self.checkpoints_per_task)]

    def task_checkpoints(self, split: str, tid: int) -> list[str]:
        """Checkpoint names of task ``tid`` (all its checkpoints)."""
        for g in self.groups[split]:
            if tid in g.task_ids:
                j = g.task_ids.index(tid)
                return [member_checkpoint(split, g.name, j, i) for i in range(self.checkpoints_per_task)]
        raise KeyError(f"task {tid} is not a {split} task")

    def manifest(self, *, zoo_dir: str, generated_dir: str, models_per_task: int) -> list[dict[str, Any]]:
        """A row per evaluated task: split, task_id, task vector, reference checkpoints, generated models."""
        rows = []
        for split in ("held_out", "seen"):
            for k, tid in enumerate(self.eval_tasks[split]):
                rows.append(
                    {
                        "split": split,
                        "task_id": int(tid),
                        "task": task_vector(tid, self.split.num_classes),
                        "reference": [f"{zoo_dir}/{n}" for n in self.task_checkpoints(split, tid)],
                        "generated": [f"{generated_dir}/{generated_name(split, k, m)}" for m in range(models_per_task)],
                    }
                )
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.split.to_dict(),
            "checkpoints_per_task": self.checkpoints_per_task,
            "groups": {s: {g.name: list(g.task_ids) for g in gs} for s, gs in self.groups.items()},
            "eval_tasks": {s: list(v) for s, v in self.eval_tasks.items()},
        }


def make_groups(task_ids: Sequence[int], group_size: int, split: str) -> list[TaskGroup]:
    """Consecutive groups of ``group_size`` tasks (the last one may be smaller)."""
    ids = list(task_ids)
    return [
        TaskGroup(split=split, index=g, task_ids=tuple(ids[s : s + group_size]))
        for g, s in enumerate(range(0, len(ids), group_size))
    ]


def plan_task_zoo(tasks_cfg: Mapping[str, Any] | TaskZooConfig, data_cfg: Mapping[str, Any]) -> TaskZooPlan:
    """The split, collection groups and evaluated tasks of a task zoo (cheap: no data is read)."""
    cfg = tasks_cfg if isinstance(tasks_cfg, TaskZooConfig) else TaskZooConfig.from_dict(tasks_cfg)
    num_classes = dataset_info(dict(data_cfg))["num_classes"]
    split = split_tasks(
        num_classes=num_classes,
        seen=cfg.seen,
        held_out=cfg.held_out,
        seed=cfg.seed,
        held_out_tasks=cfg.held_out_tasks,
    )
    n_eval = min(int(cfg.evaluate.seen_tasks), len(split.seen))
    rng = np.random.default_rng([int(cfg.seed), int(cfg.evaluate.seed), 1])
    seen_eval = tuple(sorted(split.seen[i] for i in rng.permutation(len(split.seen))[:n_eval]))
    return TaskZooPlan(
        split=split,
        groups={s: make_groups(split.ids(s), cfg.group_size, s) for s in ("seen", "held_out")},
        eval_tasks={"held_out": split.held_out, "seen": seen_eval},
        checkpoints_per_task=cfg.checkpoints_per_task,
    )


# ---------------------------------------------------------------------------------------------------------
# models


def task_arch_kwargs(zoo_cfg: Mapping[str, Any], data_cfg: Mapping[str, Any]) -> tuple[dict, dict]:
    """``(backbone_kwargs, task_kwargs)``: the zoo's arch_kwargs for the full problem and for 2-way tasks."""
    info = dataset_info(dict(data_cfg))
    full = {"num_classes": info["num_classes"], "in_chans": info["in_chans"], **(zoo_cfg.get("arch_kwargs") or {})}
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


def binary_metrics(preds: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """``(accuracy, balanced accuracy)``; balanced accuracy is the mean recall over the classes present."""
    preds, labels = preds.long().reshape(-1), labels.long().reshape(-1)
    if preds.shape != labels.shape or labels.numel() == 0:
        raise ValueError(f"need predictions and labels of one non-empty shape, got {preds.shape}, {labels.shape}")
    correct = preds == labels
    recalls = [float(correct[labels == c].float().mean()) for c in torch.unique(labels).tolist()]
    return float(correct.float().mean()), float(np.mean(recalls))


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, *, device: torch.device, batch_size: int = 512) -> torch.Tensor:
    """Predicted classes of ``dataset`` (in order); the model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    out = [
        model(x.to(device)).argmax(1).cpu()
        for x, _ in make_loader(dataset, batch_size=batch_size, shuffle=False, seed=0)
    ]
    model.train(was_training)
    return torch.cat(out)


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """All labels of a dataset, in order."""
    if hasattr(dataset, "tensors"):
        return dataset.tensors[1].long()
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


def score(model: nn.Module, dataset: Dataset, *, device: torch.device, batch_size: int = 512) -> tuple[float, float]:
    """``(accuracy, balanced accuracy)`` of ``model`` on ``dataset``."""
    return binary_metrics(predict(model, dataset, device=device, batch_size=batch_size), dataset_labels(dataset))


def _optimizer(params: Sequence[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


@torch.no_grad()
def _head_inputs(model: nn.Module, head: nn.Module, dataset: Dataset, device: torch.device) -> torch.Tensor:
    """The inputs of the head module for every sample (model in eval mode: frozen BatchNorm statistics)."""
    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _m, args, _out: captured.append(args[0].detach()))
    was_training = model.training
    model.eval()
    try:
        for x, _ in make_loader(dataset, batch_size=512, shuffle=False, seed=0):
            model(x.to(device))
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(captured)


def train_head(
    model: nn.Module,
    head_name: str,
    train_set: Dataset,
    *,
    epochs: float,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    device: torch.device,
) -> None:
    """Train only the head on frozen backbone features (computed once, BatchNorm in eval mode)."""
    if epochs <= 0:
        return
    head = model.get_submodule(head_name)
    feats = _head_inputs(model, head, train_set, device)
    labels = dataset_labels(train_set).to(device)
    n = len(labels)
    steps = max(1, round(epochs * max(1, n // batch_size)))
    opt = _optimizer(list(head.parameters()), lr, weight_decay)
    gen = torch.Generator().manual_seed(seed)
    order = torch.zeros(0, dtype=torch.long)
    for _ in range(steps):
        if order.numel() < batch_size:
            order = torch.cat([order, torch.randperm(n, generator=gen)])
        idx, order = order[:batch_size], order[batch_size:]
        loss = F.cross_entropy(head(feats[idx.to(device)]), labels[idx.to(device)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def finetune(
    model: nn.Module,
    train_set: Dataset,
    *,
    steps: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    device: torch.device,
    on_step=None,
) -> None:
    """Fine-tune the whole network for ``steps`` AdamW steps at a constant ``lr`` (BatchNorm in train mode).

    ``on_step(step)`` is called after every step (1-based), e.g. to save or evaluate.
    """
    model.train()
    opt = _optimizer([p for p in model.parameters() if p.requires_grad], lr, weight_decay)
    n = len(train_set)
    loader = make_loader(train_set, batch_size=batch_size, shuffle=True, seed=seed, drop_last=n > batch_size)
    batches = iter(())
    for step in range(1, steps + 1):
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        loss = F.cross_entropy(model(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(step)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps of one epoch (drop_last when the set is larger than a batch)."""
    return max(1, n // batch_size) if n > batch_size else 1


# ---------------------------------------------------------------------------------------------------------
# collection


def train_backbone(
    *,
    zoo_cfg: Mapping[str, Any],
    data_cfg: Mapping[str, Any],
    out_path: str | Path,
    table_path: str | Path,
    device: str = "auto",
) -> None:
    """Train the shared backbone on the full problem: one run of the zoo's ``collect`` block, one checkpoint."""
    collect = {**(zoo_cfg.get("collect") or {}), "checkpoints": 1}
    cfg = {k: zoo_cfg[k] for k in ("arch", "arch_kwargs", "init") if k in zoo_cfg}
    collect_run(
        zoo_cfg={**cfg, "collect": collect},
        data_cfg=dict(data_cfg),
        run=0,
        out_paths=[Path(out_path)],
        table_path=Path(table_path),
        device=device,
    )


def train_task(
    model: nn.Module,
    *,
    head_name: str,
    train_set: Dataset,
    val_set: Dataset,
    cfg: TaskZooConfig,
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
    zoo_cfg: Mapping[str, Any],
    data_cfg: Mapping[str, Any],
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
    cfg = TaskZooConfig.from_dict(zoo_cfg["tasks"])
    n_ckpt = cfg.checkpoints_per_task
    if len(out_paths) != len(task_ids) * n_ckpt:
        raise ValueError(f"{len(task_ids)} tasks x {n_ckpt} checkpoints need as many paths, got {len(out_paths)}")
    dev = resolve_device(device)
    arch = zoo_cfg["arch"]
    full_kwargs, task_kwargs = task_arch_kwargs(zoo_cfg, data_cfg)
    heads = head_keys(arch, full_kwargs, task_kwargs)
    head_name = head_module_name(heads)
    backbone, bmeta = load_checkpoint(backbone_path)
    if bmeta.get("arch") != arch:
        raise RPGInputError(f"backbone is a {bmeta.get('arch')!r}, the zoo a {arch!r}", backbone_path)
    num_classes = int(full_kwargs["num_classes"])
    train_full, val_full = build_dataset(dict(data_cfg), "train"), build_dataset(dict(data_cfg), "val")
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


__all__ = [
    "COLLECTION_KEYS",
    "GROUP_COLUMNS",
    "TaskEvaluateConfig",
    "TaskGroup",
    "TaskZooConfig",
    "TaskZooPlan",
    "binary_metrics",
    "collect_task_group",
    "collection_settings",
    "finetune",
    "generated_name",
    "head_keys",
    "head_module_name",
    "make_task_model",
    "member_checkpoint",
    "plan_task_zoo",
    "score",
    "steps_per_epoch",
    "task_arch_kwargs",
    "task_seed",
    "train_backbone",
    "train_head",
    "train_task",
]
