"""Evaluation of a task zoo (paper section 4): generated weights for tasks the generator never saw.

For every evaluated task (all held-out tasks and a seeded sample of seen ones) on that task's relabelled
test split, accuracy and balanced accuracy (mean recall of the two classes; binary tasks are often imbalanced) of:

- ``generated``: models sampled from the task-conditioned generator for that task vector;
- ``reference``: classifiers trained for that task the ordinary way (held out: trained only for this
  comparison; seen: the generator's own training checkpoints of the task);
- ``majority``: always predicting the class that is more frequent in the task's training split;
- ``untrained_head``: the shared backbone with the task's new, untrained 2-way head;
- ``nearest_seen``: the checkpoints of the seen task nearest in Hamming distance (another task; ties: the
  smallest id), a retrieval baseline: a generator that only recalls the closest training task scores this;
- ``composed_head``: the shared backbone's own 10-class head turned into a binary classifier without any training
  (positive logit = logsumexp of the positive classes' logits): the backbone already solves every task;
- ``complement_swapped``: where the complementary task was seen, its checkpoints with the two outputs swapped (the
  same task); held-out tasks are held out in pairs, so it never exists for them (reported for seen tasks).

Per task, best/mean/min over its models; the summary averages these over the tasks of a split.

**Generated weights as initialisation** (paper Table 15): for held-out tasks, fine-tune the whole network from
(a) the task's first generated model, (b) the shared backbone with a new head, (c) random weights ("scratch"),
with AdamW at one constant learning rate, and evaluate after each listed number of epochs (0 = as initialised).

Outputs in ``out_dir``: ``table.parquet``/``table.csv`` (a row per model and task), ``init_finetune.csv``
(a row per task, initialisation and epoch count), ``summary.json`` and the plots of :mod:`rpg.tasks.plots`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from rpg.classifier import dataset_labels, finetune, score, steps_per_epoch
from rpg.config import DataConfig, GenerateConfig, TasksConfig
from rpg.data import build_dataset, data_config
from rpg.errors import RPGInputError
from rpg.evaluate.plots import plot_training_loss, read_train_log
from rpg.generator.sampling import generate_models
from rpg.io import read_json, write_json, write_table
from rpg.runtime import progress, resolve_device
from rpg.tasks.heads import ComposedHead, SwappedOutputs, head_keys, make_task_model
from rpg.tasks.plan import task_seed
from rpg.tasks.plots import plot_init_finetune, plot_task_accuracy
from rpg.tasks.summary import FINETUNE_COLUMNS, INITS, TABLE_COLUMNS, format_summary, summarize_tasks
from rpg.tasks.vectors import complement_id, relabel, task_id
from rpg.tokens.store import TokenStore
from rpg.zoo.checkpoint import load_checkpoint
from rpg.zoo.models import build_model

log = logging.getLogger(__name__)


def generate_task_models(
    *,
    generator_dir: str | Path,
    token_dir: str | Path,
    tasks: Sequence[Sequence[int]],
    out_paths: Sequence[str | Path],
    generate_cfg: Mapping[str, Any] | GenerateConfig,
    device: str = "auto",
) -> None:
    """Sample one model per output path, model ``i`` for task vector ``tasks[i]`` (seed ``generate.seed + i``).

    A generator trained without a task condition (``generator.task_condition: null``, an ablation) gives
    unconditional samples; a warning says so and the metadata keeps ``task: null``.
    """
    if len(tasks) != len(out_paths):
        raise ValueError(f"{len(tasks)} task vectors for {len(out_paths)} output paths")
    gcfg = read_json(Path(generator_dir) / "config.json")["generator"]
    cond = gcfg.get("task_condition")
    if cond is None:
        log.warning("the generator has no task condition: generating unconditional models (an ablation)")
    elif any(len(t) != int(gcfg["task_bits"]) for t in tasks):
        raise RPGInputError(f"the generator takes {gcfg['task_bits']}-bit tasks", generator_dir)
    cfg = GenerateConfig.parse(generate_cfg, "generate").replace(task=None)
    generate_models(
        generator_dir=generator_dir, token_dir=token_dir, out_paths=out_paths, generate_cfg=cfg, device=device,
        tasks=[[float(b) for b in t] for t in tasks] if cond else None,
    )  # fmt: skip


def _load_model(path: str | Path) -> torch.nn.Module:
    state, meta = load_checkpoint(path)
    model = build_model(meta["arch"], meta.get("arch_kwargs") or {})
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise RPGInputError(f"weights do not fit {meta['arch']}: {exc}", path) from exc
    return model


def _bits(task: Sequence[int]) -> str:
    return "".join(str(int(b)) for b in task)


def seen_pool(token_dir: str | Path) -> dict[int, list[str]]:
    """Seen task id -> its checkpoint paths, from the token store's index (what the generator was trained on)."""
    index = TokenStore(token_dir).index
    pool: dict[int, list[str]] = {}
    for path, task in zip(index["checkpoint"], index["task"]):
        if task is None or (isinstance(task, float) and np.isnan(task)):
            raise RPGInputError(f"checkpoint {path} has no task vector: not a task zoo", token_dir)
        pool.setdefault(task_id(list(task)), []).append(str(path))
    return pool


def nearest_task(task: Sequence[int], pool: Sequence[int]) -> tuple[int, int]:
    """``(id, Hamming distance)`` of the task in ``pool`` nearest to ``task``, itself excluded (ties: smallest id)."""
    tid = task_id(task)
    best: tuple[int, int] | None = None
    for other in sorted(pool):
        if other == tid:
            continue
        d = bin(other ^ tid).count("1")
        if best is None or d < best[1]:
            best = (other, d)
    if best is None:
        raise ValueError("no other seen task to compare with")
    return best


def _row(split: str, tid: int, task, pos: float, kind: str, name: str, acc: float, bal: float, **kw) -> dict:
    row = {c: None for c in TABLE_COLUMNS}
    row.update(
        split=split,
        task_id=tid,
        task=_bits(task),
        positive_fraction=pos,
        kind=kind,
        name=name,
        accuracy=acc,
        balanced_accuracy=bal,
        source_task=None,
        hamming=None,
        path="",
    )
    row.update(kw)
    return row


def evaluate_task_models(
    *,
    manifest: Sequence[Mapping[str, Any]],
    data: DataConfig | Mapping[str, Any],
    tasks: TasksConfig | Mapping[str, Any],
    backbone_path: str | Path,
    token_dir: str | Path,
    device: torch.device,
    batch_size: int = 512,
) -> pd.DataFrame:
    """The table of every model on every evaluated task of ``manifest`` (see the module docstring)."""
    cfg, data_cfg = TasksConfig.parse(tasks, "tasks"), data_config(data)
    backbone, bmeta = load_checkpoint(backbone_path)
    full_kwargs = dict(bmeta["arch_kwargs"])
    task_kwargs = {**full_kwargs, "num_classes": 2}
    arch = bmeta["arch"]
    heads = head_keys(arch, full_kwargs, task_kwargs)
    train_full, test_full = build_dataset(data_cfg, "train"), build_dataset(data_cfg, "test")
    train_labels = dataset_labels(train_full)
    full_model = build_model(arch, full_kwargs)
    full_model.load_state_dict(backbone, strict=True)
    pool = seen_pool(token_dir)
    rows: list[dict[str, Any]] = []
    for entry in progress(manifest, desc="evaluate tasks", total=len(manifest)):
        split, task = entry["split"], [int(b) for b in entry["task"]]
        tid = task_id(task)
        val_set = relabel(test_full, task)  # everything reported is on the test split
        labels = dataset_labels(val_set)
        pos = float(labels.float().mean())

        for kind in ("generated", "reference"):
            for path in entry[kind]:
                acc, bal = score(_load_model(path).to(device), val_set, device=device, batch_size=batch_size)
                rows.append(_row(split, tid, task, pos, kind, Path(path).stem, acc, bal, path=str(path)))
        majority = int(torch.tensor(task)[train_labels].float().mean() >= 0.5)
        acc = float((labels == majority).float().mean())
        rows.append(_row(split, tid, task, pos, "majority", f"always {majority}", acc, 0.5))
        model = make_task_model(arch, task_kwargs, backbone, heads=heads, seed=task_seed(cfg.seed, tid))
        acc, bal = score(model.to(device), val_set, device=device, batch_size=batch_size)
        rows.append(_row(split, tid, task, pos, "untrained_head", "backbone + new head", acc, bal))
        acc, bal = score(ComposedHead(full_model, task).to(device), val_set, device=device, batch_size=batch_size)
        rows.append(_row(split, tid, task, pos, "composed_head", "10-class head, logsumexp per side", acc, bal))
        for path in pool.get(complement_id(tid, len(task)), []):  # never for held-out pairs
            acc, bal = score(SwappedOutputs(_load_model(path)).to(device), val_set, device=device,
                             batch_size=batch_size)  # fmt: skip
            rows.append(_row(split, tid, task, pos, "complement_swapped", Path(path).stem, acc, bal,
                             source_task=complement_id(tid, len(task)), path=str(path)))  # fmt: skip
        other, dist = nearest_task(task, list(pool))
        for path in pool[other]:
            acc, bal = score(_load_model(path).to(device), val_set, device=device, batch_size=batch_size)
            rows.append(
                _row(
                    split,
                    tid,
                    task,
                    pos,
                    "nearest_seen",
                    Path(path).stem,
                    acc,
                    bal,
                    source_task=other,
                    hamming=dist,
                    path=str(path),
                )
            )
        gen = [r["balanced_accuracy"] for r in rows if r["task_id"] == tid and r["kind"] == "generated"]
        ref = [r["balanced_accuracy"] for r in rows if r["task_id"] == tid and r["kind"] == "reference"]
        log.info(
            "%s task %d (%s, %.0f%% positive): balanced accuracy generated mean %.4f (min %.4f), reference %.4f",
            split,
            tid,
            _bits(task),
            100 * pos,
            np.mean(gen) if gen else float("nan"),
            min(gen) if gen else float("nan"),
            np.mean(ref) if ref else float("nan"),
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def finetune_curve(
    model: torch.nn.Module,
    train_set,
    val_set,
    *,
    epochs: Sequence[int],
    steps_per_epoch: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    device: torch.device,
) -> list[tuple[int, float, float]]:
    """``(epochs, accuracy, balanced accuracy)`` after each of ``epochs`` epochs of one fine-tuning run (0: as is).

    One run with a constant learning rate, evaluated on the way, gives the same numbers as separate runs per count.
    """
    epochs = sorted({int(e) for e in epochs})
    at = {e * steps_per_epoch: e for e in epochs}
    curve: list[tuple[int, float, float]] = []

    def record(step: int) -> None:
        if step in at:
            curve.append((at[step], *score(model, val_set, device=device)))

    record(0)
    if epochs and epochs[-1] > 0:
        finetune(
            model,
            train_set,
            steps=epochs[-1] * steps_per_epoch,
            lr=lr,
            weight_decay=weight_decay,
            batch_size=batch_size,
            seed=seed,
            device=device,
            on_step=record,
        )
    return curve


def init_finetune_experiment(
    *,
    manifest: Sequence[Mapping[str, Any]],
    data: DataConfig | Mapping[str, Any],
    tasks: TasksConfig | Mapping[str, Any],
    backbone_path: str | Path,
    device: torch.device,
) -> pd.DataFrame:
    """Fine-tuning from generated weights, the shared backbone and scratch on held-out tasks (paper Table 15)."""
    cfg, data_cfg = TasksConfig.parse(tasks, "tasks"), data_config(data)
    ev = cfg.evaluate
    epochs = sorted({int(e) for e in ev.finetune_epochs})
    entries = [e for e in manifest if e["split"] == "held_out" and e["generated"]]
    if ev.finetune_tasks is not None:
        entries = entries[: int(ev.finetune_tasks)]
    if not entries or not epochs:
        return pd.DataFrame(columns=FINETUNE_COLUMNS)
    backbone, bmeta = load_checkpoint(backbone_path)
    arch, full_kwargs = bmeta["arch"], dict(bmeta["arch_kwargs"])
    task_kwargs = {**full_kwargs, "num_classes": 2}
    heads = head_keys(arch, full_kwargs, task_kwargs)
    train_full, test_full = build_dataset(data_cfg, "train"), build_dataset(data_cfg, "test")
    spe = steps_per_epoch(len(train_full), cfg.batch_size)
    rows: list[dict[str, Any]] = []
    for entry in progress(entries, desc="fine-tune from inits", total=len(entries)):
        task = [int(b) for b in entry["task"]]
        tid = task_id(task)
        seed = task_seed(cfg.seed, tid)
        train_set, val_set = relabel(train_full, task), relabel(test_full, task)
        for init in INITS:
            if init == "generated":  # the task's first generated model: no selection on the validation split
                model = _load_model(entry["generated"][0])
            elif init == "backbone":
                model = make_task_model(arch, task_kwargs, backbone, heads=heads, seed=seed)
            else:
                model = build_model(arch, task_kwargs, seed=seed)
            curve = finetune_curve(
                model.to(device),
                train_set,
                val_set,
                epochs=epochs,
                steps_per_epoch=spe,
                lr=ev.finetune_lr,
                weight_decay=cfg.weight_decay,
                batch_size=cfg.batch_size,
                seed=seed + 2,
                device=device,
            )
            rows += [
                {
                    "task_id": tid,
                    "task": _bits(task),
                    "init": init,
                    "epochs": e,
                    "accuracy": acc,
                    "balanced_accuracy": bal,
                }
                for e, acc, bal in curve
            ]
    return pd.DataFrame(rows, columns=FINETUNE_COLUMNS)


def evaluate_tasks(
    *,
    manifest: Sequence[Mapping[str, Any]],
    data: DataConfig | Mapping[str, Any],
    tasks: TasksConfig | Mapping[str, Any],
    backbone_path: str | Path,
    token_dir: str | Path,
    generator_dir: str | Path | None,
    out_dir: str | Path,
    device: str = "auto",
    plan: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a task zoo (see the module docstring); write the outputs into ``out_dir``; return the summary.

    ``manifest``: a row per evaluated task with ``split``, ``task`` (vector), ``reference`` and ``generated``
    (checkpoint paths), as made by :meth:`rpg.zoo.tasks.TaskZooPlan.manifest`. ``plan``: recorded in the summary.
    """
    dev = resolve_device(device)
    cfg, data_cfg = TasksConfig.parse(tasks, "tasks"), data_config(data)
    if not manifest:
        raise RPGInputError("no tasks to evaluate", out_dir)
    table = evaluate_task_models(
        manifest=manifest,
        data=data_cfg,
        tasks=cfg,
        backbone_path=backbone_path,
        token_dir=token_dir,
        device=dev,
        batch_size=cfg.evaluate.batch_size,
    )
    ft = init_finetune_experiment(manifest=manifest, data=data_cfg, tasks=cfg, backbone_path=backbone_path, device=dev)
    summary = summarize_tasks(table, ft)
    gen_cfg = read_json(Path(generator_dir) / "config.json") if generator_dir else {}
    summary["settings"] = {
        "arch": load_checkpoint(backbone_path)[1]["arch"],
        "tasks": cfg.to_dict(),
        "num_seen_tasks": len(seen_pool(token_dir)),
        "models_per_task": max((len(e["generated"]) for e in manifest), default=0),
        "generator": gen_cfg.get("generator", {}),
        "train": gen_cfg.get("train", {}),
        "device": str(dev),
        "finetune": {
            "optimizer": "adamw",
            "lr": cfg.evaluate.finetune_lr,
            "schedule": "constant",
            "batch_size": cfg.batch_size,
            "weight_decay": cfg.weight_decay,
        },
        "majority": "the class more frequent in the task's training split",
        "untrained_head": "shared backbone + the task's seeded random 2-way head",
        "nearest_seen": "checkpoints of the nearest other seen task (Hamming distance; ties: smallest id)",
    }
    if plan is not None:
        summary["plan"] = dict(plan)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_table(table, out / "table.parquet")
    write_table(table, out / "table.csv")
    write_table(ft, out / "init_finetune.csv")
    write_json(summary, out / "summary.json")
    plot_task_accuracy(table, out / "task_accuracy.png")
    plot_init_finetune(ft, out / "init_finetune.png")
    train_log = read_train_log(Path(generator_dir) / "train_log.csv") if generator_dir else None
    plot_training_loss(train_log, out / "loss.png", title="task-conditioned generator: training loss")
    log.info("%s", format_summary(summary))
    return summary
