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
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from rpg.classifier import cycle, evaluate_accuracy, train_step
from rpg.config import CollectConfig, DataConfig
from rpg.data import build_dataset, data_config, dataset_info, make_loader
from rpg.errors import RPGInputError
from rpg.io import read_safetensors_metadata, write_table
from rpg.optim import make_optimizer, set_lr, warmup_cosine
from rpg.runtime import fault_point, progress, resolve_device, seed_everything
from rpg.zoo.checkpoint import save_checkpoint
from rpg.zoo.detectors import DETECTORS
from rpg.zoo.models import build_model, count_parameters, load_initial_weights

log = logging.getLogger(__name__)

TABLE_COLUMNS = ["path", "run", "seed", "step", "index", "val_accuracy"]
RUN_TABLE = "run.csv"


def checkpoint_name(index: int) -> str:
    """File name of checkpoint ``index`` of a run: ``ckpt_<iii>.safetensors``."""
    return f"ckpt_{index:03d}.safetensors"


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


def finetune_plan(*, n_train: int, cfg: CollectConfig, n_ckpt: int) -> tuple[int, int]:
    """``(batch size, steps)`` of the fine-tuning phase that saves ``n_ckpt`` checkpoints.

    ``finetune_epochs`` epochs at ``finetune_batch_size`` (default: ``batch_size``); when that phase would have fewer
    steps than checkpoints and no fine-tuning batch was set, the batch shrinks (a warning says so). Still too few
    steps raise RPGInputError.
    """
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
    return ft_batch, ft_steps


def model_kwargs(arch: str, arch_kwargs: Mapping[str, Any] | None, info: Mapping[str, int]) -> dict[str, Any]:
    """The keyword arguments a zoo's models are built with: the config's ``arch_kwargs``, plus the dataset's
    ``num_classes`` and ``in_chans`` (and ``image_size`` for detectors) where the config leaves them out. An entry
    point (``package.module:function``) gets exactly the config's ``arch_kwargs``."""
    if ":" in arch:
        return dict(arch_kwargs or {})
    keys = ("num_classes", "in_chans", "image_size") if arch in DETECTORS else ("num_classes", "in_chans")
    return {**{k: info[k] for k in keys}, **(arch_kwargs or {})}


def start_run(cfg: CollectConfig, *, run: int, n_ckpt: int, device: str, job: str):
    """The opening of every collection job: at least one checkpoint to write, the device, the run's seed (every
    random generator seeded with it). Returns ``(device, seed)``."""
    if n_ckpt < 1:
        raise ValueError(f"{job} needs at least one output path")
    dev = resolve_device(device)
    seed = run_seed(cfg.seed, run)
    seed_everything(seed)
    return dev, seed


def initial_model(arch: str, arch_kwargs: Mapping[str, Any] | None, info: Mapping[str, Any], *, init: str, seed: int,
                  device):  # fmt: skip
    """The run's model before training, in train mode on ``device``: built with the dataset's defaults
    (:func:`model_kwargs`), from ``init`` weights unless "random". Returns ``(model, arch_kwargs)``."""
    arch_kwargs = model_kwargs(arch, arch_kwargs, info)
    model = build_model(arch, arch_kwargs, seed=seed)
    if init and init != "random":
        load_initial_weights(model, init)
    return model.to(device).train(), arch_kwargs


def collect_run(
    *,
    arch: str,
    arch_kwargs: Mapping[str, Any] | None = None,
    init: str = "random",
    collect: CollectConfig | Mapping[str, Any] | None = None,
    data: DataConfig | Mapping[str, Any],
    run: int,
    out_paths: Sequence[str | Path],
    table_path: str | Path,
    device: str = "auto",
) -> None:
    """Train run ``run`` of a zoo and write ``len(out_paths)`` checkpoints plus ``table_path`` (run.csv).

    ``init`` is "random" or a weights file; ``collect`` the zoo's collect block. ``num_classes``/``in_chans``
    default to the dataset's (not for entry points, see :func:`model_kwargs`).
    """
    cfg = CollectConfig.parse(collect, "collect")
    data_cfg = data_config(data)
    n_ckpt = len(out_paths)
    dev, seed = start_run(cfg, run=run, n_ckpt=n_ckpt, device=device, job="collect_run")
    if cfg.checkpoints != n_ckpt:
        log.warning("collect.checkpoints=%d but %d output paths given; saving %d", cfg.checkpoints, n_ckpt, n_ckpt)
    info = dataset_info(data_cfg)
    model, arch_kwargs = initial_model(arch, arch_kwargs, info, init=init, seed=seed, device=dev)

    train_set = build_dataset(data_cfg, "train")
    val_set = build_dataset(data_cfg, "val")
    workers = data_cfg.workers
    n_train = len(train_set)
    drop_last = n_train > cfg.batch_size
    loader = make_loader(
        train_set, batch_size=cfg.batch_size, shuffle=True, seed=seed, workers=workers, drop_last=drop_last
    )
    val_loader = make_loader(val_set, batch_size=cfg.eval_batch_size, shuffle=False, seed=0, workers=workers)
    steps_per_epoch = len(loader)

    ft_batch, ft_steps = finetune_plan(n_train=n_train, cfg=cfg, n_ckpt=n_ckpt)
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

    opt = make_optimizer(
        model.parameters(), name=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum
    )
    total_main = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    bar = progress(desc=f"collect run {run}", total=total_main + ft_steps)
    step = 0
    try:
        for epoch in range(cfg.epochs):
            t0, loss_sum, correct, seen = time.time(), 0.0, 0, 0
            for x, y in loader:
                set_lr(opt, warmup_cosine(step, lr=cfg.lr, warmup=warmup, total=total_main))
                loss, c = train_step(model, opt, x, y, device=dev, amp=cfg.amp, label_smoothing=cfg.label_smoothing)
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

        set_lr(opt, cfg.finetune_lr)
        rows = []
        batches = cycle(ft_loader)
        loss_sum, seen = 0.0, 0
        for ft_step in range(1, ft_steps + 1):
            x, y = next(batches)
            loss, _ = train_step(model, opt, x, y, device=dev, amp=cfg.amp, label_smoothing=cfg.label_smoothing)
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
                "num_classes": int(arch_kwargs.get("num_classes", info["num_classes"])),
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
            fault_point("collect", index + 1)
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
