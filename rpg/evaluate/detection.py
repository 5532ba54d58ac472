"""The detection evaluator: COCO box mAP of a detector on COCO-format data (``evaluate.evaluator: detection``).

Metrics (COCOeval, bbox, up to 100 detections per image): ``mAP`` (AP averaged over IoU 0.50:0.05:0.95, the main
metric), ``AP50`` and ``AP75``, in [0, 1].

The samples are the split's ground-truth objects (non-crowd annotations, in annotation-id order), the same for
every model, so failure sets and outputs of different models compare object by object:

- ``outputs`` [N, 2]: per object (1 - s, s), where s is the score of the detection that COCO's own matching at IoU
  0.5 assigns to the object (same category, greedy in score order), 0 when none does. s is the model's confidence
  that it found this object; it moves smoothly with the weights, which is what a functional distance needs.
- ``failures``: the objects the model misses at IoU 0.5 *at its operating point*: s below the score threshold that
  maximises the model's F1 at IoU 0.5 over the split. Why not "no matching detection at all": a detector keeps
  up to 100 boxes per image down to a score of 0.05, and among those low-confidence boxes almost every object finds
  a match, so that set is nearly empty for every model and carries no resolution (and junk boxes would shrink it).
  The F1 operating point is threshold-free from the user's side, adapts to each model's calibration like argmax
  does for a classifier, and counts a miss only where a practitioner deploying the model would see one.

``probe`` is ``test`` (no corrupted probe set for detection): asked for probe right after test with the same
weights, the evaluator answers from its last result instead of scoring the model twice. ``calibration_batches``
yields train images for BatchNorm re-estimation. pycocotools is needed (``pip install rpg-pipeline[detection]``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from rpg.config import DataConfig
from rpg.data import data_config
from rpg.data.detection import DetectionDataset, build_detection_dataset, detection_loader
from rpg.detector import DetectionScores, score_detector
from rpg.evaluate.outcome import SPLITS, Outcome
from rpg.runtime import resolve_device
from rpg.zoo.checkpoint import state_digest

log = logging.getLogger(__name__)


def outcome_from_scores(scores: DetectionScores) -> Outcome:
    """The evaluator's Outcome of COCOeval scores (see the module docstring)."""
    threshold, f1 = scores.operating_point()
    s = torch.from_numpy(scores.object_scores).float()
    failures = s < threshold if np.isfinite(threshold) else torch.ones(len(s), dtype=torch.bool)
    return Outcome(main="mAP", metrics=dict(scores.metrics), failures=failures,
                   outputs=torch.stack([1.0 - s, s], dim=1),
                   extra={"threshold": threshold, "F1": f1, "object_ids": scores.object_ids})  # fmt: skip


class DetectionEvaluator:
    """COCO box mAP on a detection dataset (``digits_detection`` or ``coco``); see the module docstring."""

    name = "detection"
    main_metric = "mAP"

    def __init__(self, *, data: DataConfig | Mapping[str, Any], device: str | torch.device = "cpu",
                 batch_size: int = 64) -> None:  # fmt: skip
        self.data = data_config(data)
        if not self.data.is_detection:
            raise ValueError(f"the detection evaluator needs detection data (digits_detection, coco), got "
                             f"{self.data.name!r}")  # fmt: skip
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.batch_size = int(batch_size)
        self._sets: dict[str, DetectionDataset] = {}
        self._last: tuple[str, str, Outcome] | None = None  # (split, model and weights, outcome)

    def dataset(self, split: str) -> DetectionDataset:
        """The dataset of ``split`` (cached; ``probe`` is ``test``)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        split = "test" if split == "probe" else split
        if split not in self._sets:
            self._sets[split] = build_detection_dataset(self.data, split)
        return self._sets[split]

    def scores(self, model: nn.Module, split: str) -> DetectionScores:
        """COCOeval scores of ``model`` on ``split``."""
        return score_detector(model, self.dataset(split), device=self.device, batch_size=self.batch_size,
                              workers=self.data.workers)  # fmt: skip

    def evaluate(self, model: nn.Module, split: str) -> Outcome:
        key = f"{id(model)}:{state_digest(model)}"  # the same model object with the same weights
        if split == "probe" and self._last is not None and self._last[:2] == ("test", key):
            return self._last[2]
        outcome = outcome_from_scores(self.scores(model, split))
        self._last = (split, key, outcome)
        return outcome

    def calibration_batches(self, *, seed: int, batch_size: int) -> Iterable:
        """Shuffled train batches ``(images [B, C, S, S], targets)``: the first item is the model's input."""
        return detection_loader(self.dataset("train"), batch_size=batch_size, shuffle=True, seed=seed,
                                workers=self.data.workers)  # fmt: skip
