"""Evaluators: how a model is scored on a split, behind one interface.

An evaluator turns (model, split) into an :class:`Outcome`: its metrics (one of them the main metric, higher is
better), the per-sample *failure set* that similarity is computed on (classification: the wrongly classified
samples; detection: the missed ground-truth objects), and, where it has them, per-sample output distributions for a
continuous functional distance. The baselines, the summary, the checks, the plots and the report only use these,
so they work for any evaluator.

``evaluate.evaluator`` in the config names one: ``classification`` (the default), ``detection`` (COCO-format data,
:mod:`rpg.evaluate.detection`), or ``package.module:function``: a user's function
``function(model, split, *, data, device) -> Outcome | dict`` (a dict with ``metrics``, ``main`` and ``failures``,
optionally ``outputs``), wrapped by :class:`FunctionEvaluator`.

Splits: ``train`` (BatchNorm re-estimation only), ``val`` (collection and every choice), ``test`` (what is
reported) and ``probe`` (test plus seeded corruptions: a set on which every model fails often enough for
failure-set similarity to have resolution; an evaluator without one answers ``probe`` with ``test``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import Subset, TensorDataset

from rpg.classifier import dataset_labels
from rpg.config import DataConfig
from rpg.data import build_dataset, data_config, make_loader
from rpg.errors import RPGInputError
from rpg.evaluate.outcome import SPLITS, Evaluator, Outcome
from rpg.runtime import resolve_device
from rpg.zoo.checkpoint import state_digest

__all__ = ["SPLITS", "ClassificationEvaluator", "Evaluator", "FunctionEvaluator", "Outcome", "build_evaluator",
           "load_function"]  # fmt: skip


class ClassificationEvaluator:
    """Top-1 accuracy; failures = wrongly classified samples; outputs = softmax probabilities."""

    name = "classification"
    main_metric = "accuracy"

    def __init__(self, *, data: DataConfig | Mapping[str, Any], device: str | torch.device = "cpu",
                 batch_size: int = 512) -> None:  # fmt: skip
        self.data = data_config(data)
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.batch_size = int(batch_size)
        self._sets: dict[str, tuple[Any, torch.Tensor]] = {}
        self._last_test: tuple[str, torch.Tensor] | None = None  # (weights digest, test outputs) of the last model

    def dataset(self, split: str):
        """The dataset of ``split`` and its labels (cached)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if split not in self._sets:
            ds = build_dataset(self.data, split)
            self._sets[split] = (ds, dataset_labels(ds, batch_size=self.batch_size, workers=self.data.workers))
        return self._sets[split]

    def evaluate(self, model: nn.Module, split: str) -> Outcome:
        """Accuracy on ``split``. The probe split begins with the test split (:func:`rpg.data.build_dataset`), so
        when the same weights were just scored on test, only the probe samples after it are run through the model."""
        ds, labels = self.dataset(split)
        digest = state_digest(model) if split in ("test", "probe") else None
        if split == "probe" and self._last_test is not None and self._last_test[0] == digest:
            test_outputs = self._last_test[1]
            outputs = torch.cat([test_outputs, self._probabilities(model, _tail(ds, len(test_outputs)))])
        else:
            outputs = self._probabilities(model, ds)
        if split == "test":
            self._last_test = (digest, outputs)
        failures = outputs.argmax(dim=1) != labels
        return Outcome(main="accuracy", metrics={"accuracy": 1.0 - int(failures.sum()) / len(failures)},
                       failures=failures, outputs=outputs)  # fmt: skip

    @torch.no_grad()
    def _probabilities(self, model: nn.Module, ds) -> torch.Tensor:
        """Softmax outputs [N, classes] of ``model`` (in eval mode) on ``ds``."""
        loader = make_loader(ds, batch_size=self.batch_size, shuffle=False, seed=0, workers=self.data.workers)
        was_training = model.training
        model.eval()
        probs = []
        try:
            for batch in loader:
                logits = model(batch[0].to(self.device, non_blocking=True)).float()
                probs.append(torch.softmax(logits, dim=1).cpu())
        finally:
            model.train(was_training)
        return torch.cat(probs)

    def calibration_batches(self, *, seed: int, batch_size: int) -> Iterable:
        ds, _ = self.dataset("train")
        return make_loader(ds, batch_size=batch_size, shuffle=True, seed=seed, workers=self.data.workers)


class FunctionEvaluator:
    """A user's evaluator ``package.module:function`` (see the module docstring); BatchNorm re-estimation uses the
    experiment's training split when the data is one the pipeline knows, and is skipped otherwise."""

    main_metric = ""

    def __init__(self, spec: str, *, data: DataConfig | Mapping[str, Any], device: str | torch.device = "cpu",
                 batch_size: int = 512) -> None:  # fmt: skip
        self.name = spec
        self.func = load_function(spec)
        self.data = data
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.batch_size = batch_size

    def evaluate(self, model: nn.Module, split: str) -> Outcome:
        value = self.func(model, split, data=self.data, device=self.device)
        outcome = Outcome.from_value(value, where=self.name)
        self.main_metric = outcome.main
        return outcome

    def calibration_batches(self, *, seed: int, batch_size: int) -> Iterable:
        try:
            ds = build_dataset(self.data, "train")
        except Exception:  # a dataset only the user's function knows
            return []
        return make_loader(ds, batch_size=batch_size, shuffle=True, seed=seed)


def _tail(ds, start: int):
    """The samples of ``ds`` from index ``start`` on (an in-memory TensorDataset stays one, as views)."""
    if isinstance(ds, TensorDataset):
        return TensorDataset(*(t[start:] for t in ds.tensors))
    return Subset(ds, range(start, len(ds)))


def load_function(spec: str) -> Callable:
    """The callable named ``package.module:function`` (RPGInputError naming the config key otherwise)."""
    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name:
        raise RPGInputError(f"an evaluator is classification, detection or package.module:function, got {spec!r}",
                            "config evaluate.evaluator")  # fmt: skip
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RPGInputError(
            f"cannot import evaluator module {module_name!r}: {exc}", "config evaluate.evaluator"
        ) from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise RPGInputError(f"{module_name} has no callable {func_name!r}", "config evaluate.evaluator")
    return func


def build_evaluator(
    spec: str, *, data: DataConfig | Mapping[str, Any], device: str | torch.device = "cpu", batch_size: int = 512
) -> Evaluator:
    """The evaluator named by ``spec`` (``evaluate.evaluator``)."""
    if spec == "classification":
        return ClassificationEvaluator(data=data, device=device, batch_size=batch_size)
    if spec == "detection":
        from rpg.evaluate.detection import DetectionEvaluator  # optional stack (pycocotools)

        return DetectionEvaluator(data=data, device=device, batch_size=batch_size)
    return FunctionEvaluator(spec, data=data, device=device, batch_size=batch_size)
