"""Checkpoint collection for detection: one run of a detector zoo, as :mod:`rpg.zoo.collect` does for classifiers.

A run trains ``epochs`` epochs from the initial weights (AdamW or SGD, warm-up + cosine per step, gradient-norm
clipping at 10), then fine-tunes at the constant ``finetune_lr`` and saves ``len(out_paths)`` evenly spaced
checkpoints of that phase (:func:`rpg.zoo.collect.finetune_plan`). The run's seed (``collect.seed * 1000 + run``)
fixes the init, the data order and the flips (``data.hflip``).

Each checkpoint stores its validation box mAP@[.5:.95] (COCOeval) in the metadata field ``val_accuracy`` (the zoo
table's column for "the main validation metric at save time"; ``val_metric`` says which metric it is) and AP50 in
``val_AP50``. ``label_smoothing`` does not apply to detectors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from rpg.classifier import cycle
from rpg.config import CollectConfig, DataConfig
from rpg.data import data_config
from rpg.data.detection import build_detection_dataset, detection_info, detection_loader
from rpg.detector import hflip, score_detector, train_step
from rpg.io import write_table
from rpg.optim import make_optimizer, set_lr, warmup_cosine
from rpg.runtime import fault_point, progress
from rpg.zoo.checkpoint import save_checkpoint
from rpg.zoo.collect import TABLE_COLUMNS, checkpoint_steps, finetune_plan, initial_model, start_run
from rpg.zoo.models import count_parameters

log = logging.getLogger(__name__)


def collect_detection_run(
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
    """Train run ``run`` of a detector zoo; write ``len(out_paths)`` checkpoints and ``table_path`` (run.csv)."""
    cfg = CollectConfig.parse(collect, "collect")
    data_cfg = data_config(data)
    n_ckpt = len(out_paths)
    dev, seed = start_run(cfg, run=run, n_ckpt=n_ckpt, device=device, job="collect_detection_run")
    info = detection_info(data_cfg)
    model, arch_kwargs = initial_model(arch, arch_kwargs, info, init=init, seed=seed, device=dev)

    train_set = build_detection_dataset(data_cfg, "train")
    val_set = build_detection_dataset(data_cfg, "val")
    workers, n_train = data_cfg.workers, len(train_set)
    loader = detection_loader(train_set, batch_size=cfg.batch_size, shuffle=True, seed=seed, workers=workers,
                              drop_last=n_train > cfg.batch_size)  # fmt: skip
    ft_batch, ft_steps = finetune_plan(n_train=n_train, cfg=cfg, n_ckpt=n_ckpt)
    ft_loader = detection_loader(train_set, batch_size=ft_batch, shuffle=True, seed=seed + 1, workers=workers,
                                 drop_last=n_train > ft_batch)  # fmt: skip
    save_at = dict(zip(checkpoint_steps(ft_steps, n_ckpt), range(n_ckpt)))
    flips = torch.Generator().manual_seed(seed + 2)

    def step_on(batch, lr: float) -> float:
        images, targets = batch
        if data_cfg.hflip:
            images, targets = hflip(images, targets, torch.rand(len(images), generator=flips) < 0.5)
        set_lr(opt, lr)
        return train_step(model, opt, images, targets, device=dev, amp=cfg.amp)

    def val_scores():
        return score_detector(model, val_set, device=dev, batch_size=cfg.eval_batch_size, workers=workers,
                              amp=cfg.amp)  # fmt: skip

    steps_per_epoch = len(loader)
    log.info("run %d (seed %d): %s with %d parameters on %s; %d train / %d val images; %d epochs x %d steps, then %d "
             "fine-tuning steps (batch %d) with %d checkpoints", run, seed, arch, count_parameters(model), dev, n_train,
             len(val_set), cfg.epochs, steps_per_epoch, ft_steps, ft_batch, n_ckpt)  # fmt: skip
    opt = make_optimizer(model.parameters(), name=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay,
                         momentum=cfg.momentum)  # fmt: skip
    total_main = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    bar = progress(desc=f"collect run {run}", total=total_main + ft_steps)
    step, rows = 0, []
    try:
        for epoch in range(cfg.epochs):
            t0, loss_sum = time.time(), 0.0
            for batch in loader:
                loss_sum += step_on(batch, warmup_cosine(step, lr=cfg.lr, warmup=warmup, total=total_main))
                step += 1
                bar.update(1)
            log.info("epoch %d/%d: loss %.4f lr %.2e (%.1fs)", epoch + 1, cfg.epochs, loss_sum / max(1, len(loader)),
                     opt.param_groups[0]["lr"], time.time() - t0)  # fmt: skip
            bar.set_postfix(loss=f"{loss_sum / max(1, len(loader)):.3f}", refresh=False)
        if cfg.epochs:
            log.info("after training: val %s", _show(val_scores().metrics))

        batches = cycle(ft_loader)
        loss_sum = 0.0
        for ft_step in range(1, ft_steps + 1):
            loss_sum += step_on(next(batches), cfg.finetune_lr)
            step += 1
            bar.update(1)
            if ft_step not in save_at:
                continue
            index = save_at[ft_step]
            scores = val_scores()
            meta = {"kind": "checkpoint", "arch": arch, "arch_kwargs": arch_kwargs, "run": int(run), "seed": seed,
                    "step": step, "index": index, "val_accuracy": scores.metrics["mAP"], "val_metric": "mAP",
                    "val_AP50": scores.metrics["AP50"], "task": None,
                    "num_classes": int(arch_kwargs.get("num_classes", info["num_classes"]))}  # fmt: skip
            save_checkpoint(out_paths[index], model.state_dict(), meta)
            rows.append({"path": str(out_paths[index]), "run": int(run), "seed": seed, "step": step, "index": index,
                         "val_accuracy": scores.metrics["mAP"]})  # fmt: skip
            log.info("checkpoint %d/%d (step %d): val %s", index + 1, n_ckpt, step, _show(scores.metrics))
            bar.set_postfix(ckpt=f"{index + 1}/{n_ckpt}", mAP=f"{scores.metrics['mAP']:.3f}", refresh=False)
            fault_point("collect", index + 1)
    finally:
        bar.close()
    maps = [r["val_accuracy"] for r in rows]
    log.info("fine-tuning loss %.4f; checkpoint val mAP min %.4f mean %.4f max %.4f", loss_sum / ft_steps, min(maps),
             sum(maps) / len(maps), max(maps))  # fmt: skip
    write_table(pd.DataFrame(rows, columns=TABLE_COLUMNS), table_path)


def _show(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
