"""The evaluator of adapter zoos (``evaluate.evaluator: adapter``), implementing the pipeline's evaluator interface.

:class:`AdapterEvaluator` scores an :class:`~rpg.adapters.model.AdapterModel` (what the evaluation builds for an
adapter checkpoint) on a split of the experiment's data:

- text data: top-1 accuracy of the classifier; failures are the wrongly classified sentences, outputs the class
  probabilities (as for images);
- commonsense data: accuracy of multiple choice by likelihood; ``accuracy`` is the mean over the tasks of their
  accuracies (the paper's "average"), ``accuracy_<task>`` each task's, ``accuracy_all`` over all items; failures are
  the wrongly answered items, outputs the softmax of the options' scores.

Splits: train, val, test and probe (text: the test sentences and as many again of the held-out form; commonsense:
test). The evaluation scores every model on test, then on probe: the evaluator keeps the last test predictions (with a
digest of the adapter tensors they belong to) and scores only the probe samples after the test ones. Adapters have no
BatchNorm, so there is nothing to re-estimate (:meth:`AdapterEvaluator.calibration_batches` is empty). The evaluation
stage (:mod:`rpg.evaluate`) builds this class; this module does not import it back: the result type is passed in
(``outcome``) and defaults to :class:`AdapterOutcome`, which has the same fields.

``evaluate.evaluator: rpg.adapters.evaluate:evaluate_adapter`` selects it through the evaluation's support for a
user's function (:func:`evaluate_adapter`, the same evaluator behind a function), which is what the presets use.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from rpg.adapters.model import AdapterModel
from rpg.adapters.objectives import make_objective
from rpg.config import DataConfig
from rpg.data import data_config
from rpg.runtime import resolve_device
from rpg.zoo.checkpoint import state_digest

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "probe")
CHOICE_BATCH = 16  # questions per forward pass of a causal LM (each with all its options)


@dataclass
class AdapterOutcome:
    """The evaluator interface's outcome: main metric, metrics, failure set, outputs (as ``rpg.evaluate``'s)."""

    main: str
    metrics: dict[str, float]
    failures: torch.Tensor
    outputs: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return self.metrics[self.main]


class AdapterEvaluator:
    """Accuracy of adapters on text classification or commonsense multiple choice (see the module docstring)."""

    name = "adapter"
    main_metric = "accuracy"

    def __init__(
        self,
        *,
        data: DataConfig | Mapping[str, Any],
        device: str | torch.device = "cpu",
        batch_size: int = 512,
        outcome: Callable[..., Any] | None = None,
    ) -> None:
        self.data = data_config(data)
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.batch_size = int(batch_size)
        self.outcome = outcome or AdapterOutcome
        self._objectives: dict[str, Any] = {}
        self._last_test: tuple[str, Any] | None = None  # (digest of the model's tensors, its test predictions)

    def _objective(self, model: AdapterModel):
        key = model.spec.key()
        if key not in self._objectives:
            batch = self.batch_size if model.spec.task == "classification" else min(self.batch_size, CHOICE_BATCH)
            self._objectives[key] = make_objective(model.spec, self.data, device=model.device, batch_size=batch)
        return self._objectives[key]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str) -> Any:
        """Score ``model`` (an AdapterModel) on ``split``."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not isinstance(model, AdapterModel):
            raise TypeError(f"the adapter evaluator scores AdapterModel instances, got {type(model).__name__}")
        if model.device != self.device:
            model.to(self.device)
        runner = model.activate()
        digest = f"{model.spec.key()}:{state_digest(model)}"
        known = self._last_test[1] if self._last_test and self._last_test[0] == digest and split != "test" else None
        preds = self._objective(model).predict(runner, split, test=known)
        if split == "test":
            self._last_test = (digest, preds)
        return self.outcome(main="accuracy", metrics=preds.metrics(), failures=preds.failures, outputs=preds.outputs)

    def calibration_batches(self, *, seed: int, batch_size: int) -> Iterable:
        return []


_EVALUATORS: dict[tuple[str, str], AdapterEvaluator] = {}


def evaluate_adapter(model: nn.Module, split: str, *, data: DataConfig | Mapping[str, Any],
                     device: str | torch.device = "cpu") -> dict[str, Any]:  # fmt: skip
    """:class:`AdapterEvaluator` as a function ``(model, split, *, data, device) -> dict`` (main, metrics, failures,
    outputs), for ``evaluate.evaluator: rpg.adapters.evaluate:evaluate_adapter``; one evaluator (and so one set of
    tokenized splits) per data block and device."""
    cfg = data_config(data)
    key = (json.dumps(cfg.to_dict(), sort_keys=True), str(device))
    if key not in _EVALUATORS:
        _EVALUATORS[key] = AdapterEvaluator(data=cfg, device=device)
    out = _EVALUATORS[key].evaluate(model, split)
    return {"main": out.main, "metrics": out.metrics, "failures": out.failures, "outputs": out.outputs}


__all__ = ["AdapterEvaluator", "AdapterOutcome", "evaluate_adapter"]
