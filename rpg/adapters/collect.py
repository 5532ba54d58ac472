"""Checkpoint collection of an adapter zoo: fine-tune one run's adapter and save checkpoints at its end.

A run follows the zoo's ``collect`` block as the image zoos do (:mod:`rpg.zoo.collect`): ``epochs`` epochs with
AdamW (or SGD), linear warm-up and a cosine decay of ``lr`` per step, then ``finetune_epochs`` at the constant
``finetune_lr`` during which ``checkpoints`` evenly spaced checkpoints are saved (the last one is the final
adapter). The seed of run ``r`` (``collect.seed * 1000 + r``) fixes the adapter's (and head's) initialisation and
the data order, so runs differ and each is reproducible. Only the adapter (and head) is trained; the base is frozen
and runs without dropout (on CUDA under bfloat16 autocast when ``collect.amp``).

Each checkpoint is written twice: ``ckpt_<iii>.safetensors`` (our format: the adapter tensors only, metadata in the
header, ``arch: rpg.adapters.model:build_adapter_model`` and the spec as ``arch_kwargs``) and ``peft_<iii>/``
(``adapter_model.safetensors`` + ``adapter_config.json``). ``run.csv`` lists the checkpoints.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from rpg.adapters.base import build_peft_model, freeze_base_dropout, trainable_parameters
from rpg.adapters.model import live_tensors
from rpg.adapters.objectives import make_objective
from rpg.adapters.peft_io import write_peft_dir
from rpg.adapters.spec import AdapterSpec
from rpg.config import ADAPTER_ARCH, CollectConfig, DataConfig
from rpg.errors import RPGInputError
from rpg.io import write_table
from rpg.optim import make_optimizer, set_lr, warmup_cosine
from rpg.runtime import fault_point, progress
from rpg.zoo.checkpoint import save_checkpoint
from rpg.zoo.collect import TABLE_COLUMNS, checkpoint_steps, start_run

log = logging.getLogger(__name__)


def peft_dir_name(index: int) -> str:
    """Folder of checkpoint ``index`` in PEFT format, beside ``ckpt_<iii>.safetensors``: ``peft_<iii>``."""
    return f"peft_{index:03d}"


class _Batches:
    """Seeded index batches over ``n`` samples: consecutive slices of a stream of permutations."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size = n, min(batch_size, n)
        self.gen = torch.Generator().manual_seed(seed)
        self.order = torch.zeros(0, dtype=torch.long)

    def next(self) -> torch.Tensor:
        if self.order.numel() < self.batch_size:
            self.order = torch.cat([self.order, torch.randperm(self.n, generator=self.gen)])
        idx, self.order = self.order[: self.batch_size], self.order[self.batch_size :]
        return idx


def collect_adapter_run(
    *,
    spec: AdapterSpec,
    collect: CollectConfig,
    data: DataConfig,
    run: int,
    out_paths: Sequence[str | Path],
    table_path: str | Path,
    device: str = "auto",
) -> None:
    """Train run ``run`` of an adapter zoo; write ``len(out_paths)`` checkpoints (and PEFT folders) and run.csv."""
    cfg = CollectConfig.parse(collect, "collect")
    out_paths = [Path(p) for p in out_paths]
    n_ckpt = len(out_paths)
    dev, seed = start_run(cfg, run=run, n_ckpt=n_ckpt, device=device, job="collect_adapter_run")
    start = time.perf_counter()
    model = build_peft_model(spec, seed=seed).to(dev)
    objective = make_objective(spec, data, device=dev, batch_size=cfg.eval_batch_size)
    n_train = objective.num_samples(model, "train")
    objective.num_samples(model, "val")
    steps_per_epoch = max(1, n_train // cfg.batch_size)
    main_steps = int(round(cfg.epochs * steps_per_epoch))
    ft_batch = cfg.finetune_batch_size or cfg.batch_size
    ft_steps = max(1, int(round(cfg.finetune_epochs * max(1, n_train // ft_batch))))
    if ft_steps < n_ckpt:
        raise RPGInputError(
            f"fine-tuning has {ft_steps} steps for {n_ckpt} checkpoints; raise collect.finetune_epochs or lower "
            "collect.finetune_batch_size", "config collect")  # fmt: skip
    save_at = dict(zip(checkpoint_steps(ft_steps, n_ckpt), range(n_ckpt)))
    params = trainable_parameters(model)
    log.info(
        "run %d (seed %d): %s rank %d on %s, %d trainable parameters on %s; %d train samples; %d + %d steps, "
        "%d checkpoints (set-up %.1fs)", run, seed, spec.method, spec.rank, spec.base, sum(p.numel() for p in params),
        dev, n_train, main_steps, ft_steps, n_ckpt, time.perf_counter() - start,
    )  # fmt: skip
    opt = make_optimizer(params, name=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    batches, ft_batches = _Batches(n_train, cfg.batch_size, seed), _Batches(n_train, ft_batch, seed + 1)

    def step(index: torch.Tensor) -> float:
        model.train()
        freeze_base_dropout(model)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=cfg.amp and dev.type == "cuda"):
            loss = objective.loss(model, index)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    rows = []
    bar = progress(desc=f"collect adapter run {run}", total=main_steps + ft_steps)
    try:
        loss = float("nan")
        for s in range(main_steps):
            set_lr(opt, warmup_cosine(s, lr=cfg.lr, warmup=warmup, total=main_steps))
            loss = step(batches.next())
            bar.update(1)
            if (s + 1) % steps_per_epoch == 0:
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        log.info("main phase done: last loss %.4f", loss)
        set_lr(opt, cfg.finetune_lr)
        for s in range(1, ft_steps + 1):
            loss = step(ft_batches.next())
            bar.update(1)
            if s not in save_at:
                continue
            index = save_at[s]
            model.eval()
            metrics = objective.predict(model, "val").metrics()
            state = {k: v.detach().cpu().clone() for k, v in live_tensors(model).items()}
            meta = {"kind": "checkpoint", "arch": ADAPTER_ARCH, "arch_kwargs": spec.to_kwargs(), "run": int(run),
                    "seed": seed, "step": main_steps + s, "index": index, "val_accuracy": metrics["accuracy"],
                    "val_metrics": metrics, "task": None, "num_classes": spec.num_labels,
                    "adapter": spec.method}  # fmt: skip
            save_checkpoint(out_paths[index], state, meta)
            write_peft_dir(state, spec, out_paths[index].parent / peft_dir_name(index))
            rows.append({"path": str(out_paths[index]), "run": int(run), "seed": seed, "step": main_steps + s,
                         "index": index, "val_accuracy": metrics["accuracy"]})  # fmt: skip
            bar.set_postfix(ckpt=f"{index + 1}/{n_ckpt}", val_acc=f"{metrics['accuracy']:.3f}", refresh=False)
            fault_point("collect", index + 1)
    finally:
        bar.close()
    accs = [r["val_accuracy"] for r in rows]
    log.info("run %d: checkpoint val accuracy min %.4f mean %.4f max %.4f (%.1fs)", run, min(accs),
             sum(accs) / len(accs), max(accs), time.perf_counter() - start)  # fmt: skip
    write_table(pd.DataFrame(rows, columns=TABLE_COLUMNS), table_path)


__all__ = ["collect_adapter_run", "peft_dir_name"]
