"""The evaluator interface (:class:`Outcome`, :class:`Evaluator`, the splits), apart from the evaluators themselves
so that an evaluator module (:mod:`rpg.evaluate.detection`) can implement it while :func:`rpg.evaluate.evaluators.
build_evaluator` imports that module: no import cycle. :mod:`rpg.evaluate.evaluators` re-exports all three."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

SPLITS = ("train", "val", "test", "probe")


@dataclass
class Outcome:
    """What an evaluator returns for one model on one split."""

    main: str
    metrics: dict[str, float]
    failures: torch.Tensor  # bool [N]: True where the model fails sample (object) n
    outputs: torch.Tensor | None = None  # float [N, C]: per-sample output distribution (rows sum to 1), optional
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.main not in self.metrics:
            raise ValueError(f"the main metric {self.main!r} is not among the metrics {sorted(self.metrics)}")
        self.metrics = {k: float(v) for k, v in self.metrics.items()}
        self.failures = torch.as_tensor(self.failures).reshape(-1).bool().cpu()
        if self.outputs is not None:
            self.outputs = torch.as_tensor(self.outputs).float().cpu()
            if self.outputs.shape[0] != self.failures.shape[0]:
                raise ValueError(f"{self.outputs.shape[0]} output rows for {self.failures.shape[0]} samples")

    @property
    def score(self) -> float:
        """The value of the main metric."""
        return self.metrics[self.main]

    @classmethod
    def from_value(cls, value: Outcome | Mapping[str, Any], where: str = "evaluator") -> Outcome:
        """An Outcome from what an evaluator returned (an Outcome, or a dict of the same fields)."""
        if isinstance(value, Outcome):
            return value
        if not isinstance(value, Mapping) or not {"metrics", "main", "failures"} <= set(value):
            raise TypeError(f"{where} must return an Outcome or a dict with 'metrics', 'main' and 'failures'")
        return cls(main=value["main"], metrics=dict(value["metrics"]), failures=value["failures"],
                   outputs=value.get("outputs"))  # fmt: skip


class Evaluator(Protocol):
    """The interface the evaluation stage uses."""

    name: str
    main_metric: str

    def evaluate(self, model: nn.Module, split: str) -> Outcome:
        """Score ``model`` on ``split`` (one of SPLITS)."""
        ...

    def calibration_batches(self, *, seed: int, batch_size: int) -> Iterable:
        """Training inputs (batches whose first item is the input tensor) for re-estimating BatchNorm statistics."""
        ...
