"""Checkpoint collection: train one run of a zoo and save checkpoints during a final fine-tuning phase.

One run (paper, section 5.1): train ``epochs`` epochs from the initial weights (SGD with momentum
or AdamW, cosine learning-rate decay per step, optional linear warm-up and label smoothing),
then continue with a small constant ``finetune_lr`` for ``finetune_epochs`` epochs (may be
fractional) and save ``len(out_paths)`` checkpoints at evenly spaced steps of that phase: the
i-th (0-based) after fine-tuning step ``(i + 1) * T // n`` of ``T`` steps, so the last one is
the final model. When ``T`` is smaller than the number of checkpoints (a small dataset), the
fine-tuning batch is reduced so that there are enough steps (a warning says so); set
``finetune_batch_size`` to choose it yourself.

The run's seed is ``collect.seed * 1000 + run``: it fixes the weight init, data order and
augmentation, so a run is reproducible and different runs differ.

Each checkpoint stores its validation accuracy at save time in its metadata; ``run.csv`` lists
them. Every file is written atomically.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from rpg.data import build_dataset, dataset_info, make_loader
from rpg.errors import RPGInputError
from rpg.io import read_safetensors_metadata, write_table
from rpg.runtime import progress, resolve_device, seed_everything
from rpg.zoo.checkpoint import save_checkpoint
from rpg.zoo.models import build_model, count_parameters, load_initial_weights

log = logging.getLogger(__name__)

TABLE_COLUMNS = ["path", "run", "seed", "step", "index", "val_accuracy"]


@dataclass(frozen=True)
class CollectConfig:
    """The ``collect:`` block of a zoo (defaults as in workflow/schemas/config.schema.yaml)."""

    epochs: int = 30
    lr: float = 0.005
    batch_size: int = 64
    weight_decay: float = 5e-4  # decoupled for adamw; not applied to biases and norm weights
    optimizer: str = "adamw"  # adamw | sgd (momentum, nesterov)
    momentum: float = 0.9  # sgd only
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    finetune_lr: float = 0.0005
    finetune_epochs: float = 1.0
    finetune_batch_size: int | None = None
    checkpoints: int = 50
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 512
    amp: bool = True  # bfloat16 autocast, CUDA only

    @classmethod
    def from_dict(cls, cfg: dict[str, Any] | None) -> CollectConfig:
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise RPGInputError(
                f"unknown collect settings {unknown}; known: {sorted(known)}", "config collect"
            )
        out = cls(**cfg)
        if out.optimizer not in ("sgd", "adamw"):
            raise RPGInputError(
                f"optimizer must be 'sgd' or 'adamw', got {out.optimizer!r}", "config collect"
            )
        if out.epochs < 0 or out.finetune_epochs <= 0 or out.batch_size < 1:
            raise RPGInputError("need epochs >= 0, finetune_epochs > 0, batch_size >= 1", "config collect")
        return out


def run_seed(collect_seed: int, run: int) -> int:
    """The seed of run ``run``: ``collect_seed * 1000 + run``."""
    return int(collect_seed) * 1000 + int(run)


def checkpoint_steps(total_steps: int, num_checkpoints: int) -> list[int]:
    """1-based fine-tuning steps after which checkpoints are saved, evenly spaced, last = total."""
    if num_checkpoints < 1:
        raise ValueError("need at least one checkpoint")
    if total_steps < num_checkpoints:
        raise ValueError(f"{num_checkpoints} checkpoints need at least as many steps, got {total_steps}")
    return [(i + 1) * total_steps // num_checkpoints for i in range(num_checkpoints)]


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda"
    )


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module,
    dataset_or_loader: Dataset | DataLoader,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 512,
    amp: bool = False,
) -> tuple[float, torch.Tensor]:
    """Top-1 accuracy and the predicted classes (LongTensor, in dataset order).

    A DataLoader is used as given (it must not shuffle); a Dataset gets a sequential loader.
    The model's train/eval mode is restored afterwards. ``amp``: bfloat16 autocast on CUDA.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    if isinstance(dataset_or_loader, DataLoader):
        loader = dataset_or_loader
    else:
        loader = make_loader(dataset_or_loader, batch_size=batch_size, shuffle=False, seed=0)
    was_training = model.training
    model.eval()
    preds, correct, total = [], 0, 0
    try:
        for x, y in loader:
            with _autocast(device, amp):
                logits = model(x.to(device, non_blocking=True))
            p = logits.argmax(dim=1).cpu()
            preds.append(p)
            correct += int((p == y).sum())
            total += len(y)
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("evaluate_accuracy: empty dataset")
    return correct / total, torch.cat(preds).long()


def _cycle(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


def _make_optimizer(model: nn.Module, cfg: CollectConfig) -> torch.optim.Optimizer:
    # no weight decay on biases and norm weights (1-d parameters)
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _lr_at(step: int, total: int, warmup: int, cfg: CollectConfig) -> float:
    """Linear warm-up then cosine decay from ``lr`` to 0 over ``total`` steps."""
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress_frac = (step - warmup) / max(1, total - warmup)
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * min(1.0, progress_frac)))


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def _train_step(model, opt, x, y, device, cfg: CollectConfig) -> tuple[float, int]:
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    with _autocast(device, cfg.amp):
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach()), int((logits.argmax(1) == y).sum())


def collect_run(
    *,
    zoo_cfg: dict[str, Any],
    data_cfg: dict[str, Any],
    run: int,
    out_paths: Sequence[str | Path],
    table_path: str | Path,
    device: str = "auto",
) -> None:
    """Train run ``run`` of a zoo and write ``len(out_paths)`` checkpoints plus ``table_path`` (run.csv).

    ``zoo_cfg`` holds ``arch``, ``arch_kwargs``, ``init`` ("random" or a weights file) and the
    ``collect`` block (:class:`CollectConfig`). ``num_classes``/``in_chans`` default to the
    dataset's. ``device="auto"`` defers to ``collect.device``.
    """
    cfg = CollectConfig.from_dict(zoo_cfg.get("collect"))
    n_ckpt = len(out_paths)
    if n_ckpt < 1:
        raise ValueError("collect_run needs at least one output path")
    if cfg.checkpoints != n_ckpt:
        log.warning(
            "collect.checkpoints=%d but %d output paths given; saving %d", cfg.checkpoints, n_ckpt, n_ckpt
        )
    dev = resolve_device(cfg.device if device == "auto" else device)
    seed = run_seed(cfg.seed, run)
    seed_everything(seed)

    info = dataset_info(data_cfg)
    arch = zoo_cfg["arch"]
    arch_kwargs = {
        "num_classes": info["num_classes"],
        "in_chans": info["in_chans"],
        **(zoo_cfg.get("arch_kwargs") or {}),
    }
    model = build_model(arch, arch_kwargs, seed=seed)
    init = zoo_cfg.get("init", "random") or "random"
    if init != "random":
        load_initial_weights(model, init)
    model.to(dev).train()

    train_set = build_dataset(data_cfg, "train")
    val_set = build_dataset(data_cfg, "val")
    workers = int(data_cfg.get("workers", 0))
    n_train = len(train_set)
    drop_last = n_train > cfg.batch_size
    loader = make_loader(
        train_set, batch_size=cfg.batch_size, shuffle=True, seed=seed, workers=workers, drop_last=drop_last
    )
    val_loader = make_loader(val_set, batch_size=cfg.eval_batch_size, shuffle=False, seed=0, workers=workers)
    steps_per_epoch = len(loader)

    # fine-tuning batch: reduced when one phase would have fewer steps than checkpoints
    ft_batch = cfg.finetune_batch_size or cfg.batch_size
    ft_steps = max(1, round(cfg.finetune_epochs * (n_train // ft_batch if n_train > ft_batch else 1)))
    if ft_steps < n_ckpt and cfg.finetune_batch_size is None:
        ft_batch = max(2, int(n_train * cfg.finetune_epochs // n_ckpt))
        ft_steps = max(1, round(cfg.finetune_epochs * (n_train // ft_batch)))
        log.warning(
            "fine-tuning has fewer steps than checkpoints at batch %d; using batch %d (%d steps)",
            cfg.batch_size,
            ft_batch,
            ft_steps,
        )
    if ft_steps < n_ckpt:
        raise RPGInputError(
            f"fine-tuning has {ft_steps} steps for {n_ckpt} checkpoints; raise finetune_epochs "
            "or lower finetune_batch_size",
            "config collect",
        )
    save_at = dict(zip(checkpoint_steps(ft_steps, n_ckpt), range(n_ckpt)))
    ft_loader = (
        loader
        if ft_batch == cfg.batch_size
        else make_loader(
            train_set,
            batch_size=ft_batch,
            shuffle=True,
            seed=seed + 1,
            workers=workers,
            drop_last=n_train > ft_batch,
        )
    )

    log.info(
        "run %d (seed %d): %s with %d parameters on %s; %d train / %d val samples; "
        "%d epochs x %d steps, then %d fine-tuning steps (batch %d) with %d checkpoints",
        run,
        seed,
        arch,
        count_parameters(model),
        dev,
        n_train,
        len(val_set),
        cfg.epochs,
        steps_per_epoch,
        ft_steps,
        ft_batch,
        n_ckpt,
    )

    opt = _make_optimizer(model, cfg)
    total_main = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    bar = progress(desc=f"collect run {run}", total=total_main + ft_steps)
    step = 0
    try:
        for epoch in range(cfg.epochs):
            t0, loss_sum, correct, seen = time.time(), 0.0, 0, 0
            for x, y in loader:
                _set_lr(opt, _lr_at(step, total_main, warmup, cfg))
                loss, c = _train_step(model, opt, x, y, dev, cfg)
                loss_sum, correct, seen, step = loss_sum + loss * len(y), correct + c, seen + len(y), step + 1
                bar.update(1)
            val_acc, _ = evaluate_accuracy(model, val_loader, device=dev, amp=cfg.amp)
            log.info(
                "epoch %d/%d: loss %.4f train acc %.4f val acc %.4f lr %.2e (%.1fs)",
                epoch + 1,
                cfg.epochs,
                loss_sum / seen,
                correct / seen,
                val_acc,
                opt.param_groups[0]["lr"],
                time.time() - t0,
            )
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", val_acc=f"{val_acc:.3f}", refresh=False)

        _set_lr(opt, cfg.finetune_lr)
        rows = []
        batches = _cycle(ft_loader)
        loss_sum, seen = 0.0, 0
        for ft_step in range(1, ft_steps + 1):
            x, y = next(batches)
            loss, _ = _train_step(model, opt, x, y, dev, cfg)
            loss_sum, seen, step = loss_sum + loss * len(y), seen + len(y), step + 1
            bar.update(1)
            if ft_step not in save_at:
                continue
            index = save_at[ft_step]
            val_acc, _ = evaluate_accuracy(model, val_loader, device=dev, amp=cfg.amp)
            meta = {
                "kind": "checkpoint",
                "arch": arch,
                "arch_kwargs": arch_kwargs,
                "run": int(run),
                "seed": seed,
                "step": step,
                "index": index,
                "val_accuracy": val_acc,
                "task": None,
                "num_classes": int(arch_kwargs["num_classes"]),
            }
            save_checkpoint(out_paths[index], model.state_dict(), meta)
            rows.append(
                {
                    "path": str(out_paths[index]),
                    "run": int(run),
                    "seed": seed,
                    "step": step,
                    "index": index,
                    "val_accuracy": val_acc,
                }
            )
            bar.set_postfix(ckpt=f"{index + 1}/{n_ckpt}", val_acc=f"{val_acc:.3f}", refresh=False)
    finally:
        bar.close()
    accs = [r["val_accuracy"] for r in rows]
    log.info(
        "fine-tuning loss %.4f; checkpoint val acc min %.4f mean %.4f max %.4f",
        loss_sum / seen,
        min(accs),
        sum(accs) / len(accs),
        max(accs),
    )
    write_table(pd.DataFrame(rows, columns=TABLE_COLUMNS), table_path)


def write_zoo_table(checkpoint_paths: Sequence[str | Path], out_path: str | Path) -> None:
    """The zoo table (a row per checkpoint: path, run, seed, step, index, val_accuracy) from metadata."""
    rows = []
    for path in checkpoint_paths:
        meta = read_safetensors_metadata(path)
        missing = [k for k in TABLE_COLUMNS[1:] if k not in meta]
        if missing:
            raise RPGInputError(f"checkpoint metadata lacks {missing}", path)
        rows.append({"path": str(path), **{k: meta[k] for k in TABLE_COLUMNS[1:]}})
    write_table(pd.DataFrame(rows, columns=TABLE_COLUMNS), out_path)
