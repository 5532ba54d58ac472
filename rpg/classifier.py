"""Classifier training and scoring shared by checkpoint collection, task zoos and evaluation.

Predictions and metrics (:func:`predict`, :func:`evaluate_accuracy`, :func:`binary_metrics`, :func:`dataset_labels`),
one supervised step (:func:`train_step`), fine-tuning at a constant learning rate (:func:`finetune`) and training a
head on frozen features (:func:`train_head`). Optimisers and schedules come from :mod:`rpg.optim`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from rpg.data import make_loader
from rpg.optim import make_optimizer
from rpg.runtime import resolve_device


def autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on CUDA when ``enabled``; a no-op elsewhere."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


def cycle(loader: DataLoader) -> Iterator:
    """Batches of ``loader`` forever (a new pass, with its own shuffle, after each)."""
    while True:
        yield from loader


@torch.no_grad()
def predict(
    model: nn.Module,
    data: Dataset | DataLoader,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 512,
    amp: bool = False,
    logits: bool = False,
) -> torch.Tensor:
    """Predicted classes (LongTensor, in dataset order) or, with ``logits=True``, the float32 logits.

    A DataLoader is used as given (it must not shuffle); a Dataset gets a sequential loader. The model's
    train/eval mode is restored afterwards.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    loader = data if isinstance(data, DataLoader) else make_loader(data, batch_size=batch_size, shuffle=False, seed=0)
    was_training = model.training
    model.eval()
    out = []
    try:
        for batch in loader:
            with autocast(device, amp):
                z = model(batch[0].to(device, non_blocking=True))
            out.append(z.float().cpu() if logits else z.argmax(dim=1).cpu())
    finally:
        model.train(was_training)
    if not out:
        raise ValueError("predict: empty dataset")
    return torch.cat(out) if logits else torch.cat(out).long()


def evaluate_accuracy(
    model: nn.Module,
    data: Dataset | DataLoader,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 512,
    amp: bool = False,
) -> tuple[float, torch.Tensor]:
    """Top-1 accuracy and the predicted classes (in dataset order)."""
    preds = predict(model, data, device=device, batch_size=batch_size, amp=amp)
    labels = dataset_labels(data.dataset if isinstance(data, DataLoader) else data, batch_size=batch_size)
    return int((preds == labels).sum()) / len(labels), preds


def dataset_labels(dataset: Dataset, *, batch_size: int = 512, workers: int = 0) -> torch.Tensor:
    """Labels of a classification dataset (y of every item, in order) as LongTensor [N].

    Uses ``TensorDataset.tensors[1]`` or a ``targets`` attribute when it matches the items (checked on a few
    samples), else iterates the dataset once.
    """
    n = len(dataset)  # type: ignore[arg-type]
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        return dataset.tensors[1].reshape(-1).long().cpu()
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == n and n > 0:
        t = torch.as_tensor(np.asarray(targets)).long().reshape(-1)
        probe = sorted({0, n // 2, n - 1})
        if all(int(dataset[i][1]) == int(t[i]) for i in probe):
            return t
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False, seed=0, workers=workers)
    ys = [torch.as_tensor(batch[1]).reshape(-1).long() for batch in loader]
    return torch.cat(ys) if ys else torch.zeros(0, dtype=torch.long)


def binary_metrics(preds: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """``(accuracy, balanced accuracy)``; balanced accuracy is the mean recall over the classes present."""
    preds, labels = preds.long().reshape(-1), labels.long().reshape(-1)
    if preds.shape != labels.shape or labels.numel() == 0:
        raise ValueError(f"need predictions and labels of one non-empty shape, got {preds.shape}, {labels.shape}")
    correct = preds == labels
    recalls = [float(correct[labels == c].float().mean()) for c in torch.unique(labels).tolist()]
    return float(correct.float().mean()), float(np.mean(recalls))


def score(model: nn.Module, dataset: Dataset, *, device: torch.device, batch_size: int = 512) -> tuple[float, float]:
    """``(accuracy, balanced accuracy)`` of ``model`` on ``dataset``."""
    return binary_metrics(predict(model, dataset, device=device, batch_size=batch_size), dataset_labels(dataset))


def train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    device: torch.device,
    amp: bool = False,
    label_smoothing: float = 0.0,
) -> tuple[float, int]:
    """One cross-entropy step; returns (loss, number of correct predictions in the batch)."""
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    with autocast(device, amp):
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach()), int((logits.argmax(1) == y).sum())


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps of one epoch (drop_last when the set is larger than a batch)."""
    return max(1, n // batch_size) if n > batch_size else 1


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
    on_step: Callable[[int], None] | None = None,
) -> None:
    """Fine-tune the whole network for ``steps`` AdamW steps at a constant ``lr`` (BatchNorm in train mode).

    ``on_step(step)`` is called after every step (1-based), e.g. to save or evaluate.
    """
    model.train()
    opt = make_optimizer(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(train_set)  # type: ignore[arg-type]
    loader = make_loader(train_set, batch_size=batch_size, shuffle=True, seed=seed, drop_last=n > batch_size)
    batches: Iterator = iter(())
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


@torch.no_grad()
def head_inputs(model: nn.Module, head: nn.Module, dataset: Dataset, device: torch.device) -> torch.Tensor:
    """The inputs of the ``head`` module for every sample (model in eval mode: frozen BatchNorm statistics)."""
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
    """Train only the submodule ``head_name`` on frozen features of the rest (computed once)."""
    if epochs <= 0:
        return
    head = model.get_submodule(head_name)
    feats = head_inputs(model, head, train_set, device)
    labels = dataset_labels(train_set).to(device)
    n = len(labels)
    steps = max(1, round(epochs * max(1, n // batch_size)))
    opt = make_optimizer(head.parameters(), lr=lr, weight_decay=weight_decay)
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
