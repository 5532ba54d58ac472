"""Detector training and scoring shared by checkpoint collection and evaluation (the counterpart of
:mod:`rpg.classifier` for detection).

:func:`train_step` (one step on the sum of a torchvision detector's losses, optional horizontal flips),
:func:`predict` (detections of a whole split in COCO result format, original image coordinates) and
:func:`coco_scores` (COCOeval box mAP@[.5:.95], AP50, AP75, and per ground-truth object the score of the detection
that COCO's matching at IoU 0.5 assigns to it). pycocotools is imported only here, when scoring.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from rpg.data.detection import DetectionDataset, detection_loader
from rpg.runtime import resolve_device

RESULT_COLUMNS = 7  # image_id, x, y, w, h, score, category_id (pycocotools' numpy result format)


def autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on CUDA when ``enabled``; a no-op elsewhere."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


def hflip(images: torch.Tensor, targets: list[dict[str, Any]], flip: torch.Tensor) -> tuple[torch.Tensor, list]:
    """Flip the images (and their boxes) where ``flip`` [B] is True."""
    if not bool(flip.any()):
        return images, targets
    images = images.clone()
    images[flip] = images[flip].flip(-1)
    width = images.shape[-1]
    out = []
    for t, f in zip(targets, flip.tolist()):
        if f and len(t["boxes"]):
            b = t["boxes"]
            t = {**t, "boxes": torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], dim=1)}
        out.append(t)
    return images, out


def train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    images: torch.Tensor,
    targets: list[dict[str, Any]],
    *,
    device: torch.device,
    amp: bool = False,
    grad_clip: float | None = 10.0,
) -> float:
    """One step on the summed losses of a torchvision detector in train mode; returns the loss."""
    images = images.to(device, non_blocking=True)
    targets = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]
    with autocast(device, amp):
        losses = model(images, targets)
    loss = sum(v.float() for v in losses.values())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return float(loss.detach())


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: DetectionDataset,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    workers: int = 0,
    amp: bool = False,
) -> np.ndarray:
    """Detections of every image of ``dataset``: float64 [n, 7] rows (image_id, x, y, w, h, score, category_id) in the
    original images' pixels. The model's train/eval mode is restored afterwards."""
    device = resolve_device(device) if isinstance(device, str) else device
    loader = detection_loader(dataset, batch_size=batch_size, shuffle=False, seed=0, workers=workers)
    was_training = model.training
    model.eval()
    rows, index = [], 0
    try:
        for images, targets in loader:
            with autocast(device, amp):
                outputs = model(images.to(device, non_blocking=True))
            for out, target in zip(outputs, targets):
                boxes = dataset.to_original(index, out["boxes"].float().cpu()).double()
                n = len(boxes)
                if n:
                    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
                    cats = torch.tensor(dataset.category_id(out["labels"].cpu()), dtype=torch.float64)
                    ids = torch.full((n, 1), float(target["image_id"]), dtype=torch.float64)
                    rows.append(torch.cat([ids, xywh, out["scores"].double().cpu()[:, None], cats[:, None]], 1))
                index += 1
    finally:
        model.train(was_training)
    return torch.cat(rows).numpy() if rows else np.zeros((0, RESULT_COLUMNS))


@dataclass
class DetectionScores:
    """COCOeval's figures for one set of detections, and what each ground-truth object got.

    ``object_ids``: the annotation ids of the non-crowd objects (sorted); ``object_scores``: for each, the score of
    the detection that COCO's greedy matching at IoU 0.5 (same category, up to 100 detections per image) assigned to
    it, 0 where none; ``detection_scores``: the scores of all evaluated detections.
    """

    metrics: dict[str, float]
    object_ids: list[int]
    object_scores: np.ndarray
    detection_scores: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    def operating_point(self) -> tuple[float, float]:
        """``(threshold, F1)``: the score threshold that maximises F1 at IoU 0.5 over the split, and that F1.

        At threshold t an object counts as found when its matched detection scores >= t (COCO matches in order of
        score, so the matches above t do not depend on the detections below it); precision counts every detection
        scoring >= t. No detections: threshold inf, F1 0.
        """
        num_objects = len(self.object_scores)
        if not len(self.detection_scores) or not num_objects:
            return float("inf"), 0.0
        candidates = np.unique(self.detection_scores)
        dets = np.sort(self.detection_scores)
        found = np.sort(self.object_scores[self.object_scores > 0])
        num_dets = len(dets) - np.searchsorted(dets, candidates, side="left")
        num_found = len(found) - np.searchsorted(found, candidates, side="left")
        f1 = 2 * num_found / (num_dets + num_objects)
        best = int(np.argmax(f1))
        return float(candidates[best]), float(f1[best])


def _ground_truth(coco: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a COCO dict with the fields COCOeval needs (area, iscrowd) filled where a file left them out."""
    anns = []
    for a in coco["annotations"]:
        a = dict(a)
        a.setdefault("iscrowd", 0)
        a.setdefault("area", float(a["bbox"][2]) * float(a["bbox"][3]))
        anns.append(a)
    return {**coco, "annotations": anns}


def coco_scores(coco: Mapping[str, Any], detections: np.ndarray) -> DetectionScores:
    """Score ``detections`` ([n, 7] rows as from :func:`predict`) against the COCO dict ``coco`` with COCOeval."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as exc:
        raise ImportError("scoring detectors needs pycocotools: pip install 'rpg-pipeline[detection]'") from exc

    gt = _ground_truth(coco)
    objects = sorted(a["id"] for a in gt["annotations"] if not a["iscrowd"])
    if not objects:
        raise ValueError("the split has no (non-crowd) ground-truth objects to score detections against")
    if not len(detections):
        return DetectionScores(metrics={"mAP": 0.0, "AP50": 0.0, "AP75": 0.0}, object_ids=objects,
                               object_scores=np.zeros(len(objects)), detection_scores=np.zeros(0))  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(np.asarray(detections, dtype=np.float64))
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        # only what mAP/AP50/AP75 read (all areas, 100 detections): a quarter of COCOeval's per-image work
        ev.params.areaRng, ev.params.areaRngLbl, ev.params.maxDets = [[0, 1e10]], ["all"], [100]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][:, :, :, 0, 0]  # [IoU thresholds, recall points, categories]
    iou = ev.params.iouThrs

    def ap(p: np.ndarray) -> float:
        valid = p[p > -1]  # -1: a category without ground truth
        return float(valid.mean()) if valid.size else 0.0

    metrics = {"mAP": ap(precision), "AP50": ap(precision[np.isclose(iou, 0.5)]),
               "AP75": ap(precision[np.isclose(iou, 0.75)])}  # fmt: skip
    dt_score = {int(d["id"]): float(d["score"]) for d in coco_dt.dataset["annotations"]}
    t50 = int(np.argmin(np.abs(iou - 0.5)))
    matched: dict[int, float] = {}
    evaluated: list[float] = []
    for e in ev.evalImgs:
        if e is None:
            continue
        for gid, m in zip(e["gtIds"], e["gtMatches"][t50]):
            if m > 0:
                matched[int(gid)] = dt_score[int(m)]
        evaluated += [float(s) for s in e["dtScores"]]
    scores = np.array([matched.get(g, 0.0) for g in objects], dtype=np.float64)
    return DetectionScores(metrics=metrics, object_ids=objects, object_scores=scores,
                           detection_scores=np.asarray(evaluated, dtype=np.float64))  # fmt: skip


def score_detector(
    model: nn.Module, dataset: DetectionDataset, *, device: str | torch.device = "cpu", batch_size: int = 64,
    workers: int = 0, amp: bool = False,
) -> DetectionScores:  # fmt: skip
    """COCOeval scores of ``model`` on ``dataset``."""
    dets = predict(model, dataset, device=device, batch_size=batch_size, workers=workers, amp=amp)
    return coco_scores(dataset.coco, dets)
