"""Detection: COCO-format data and its checks, the embedded digits_detection set, FCOS, COCOeval scoring, the
detection evaluator's outcome sets, and a quick detector collection run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from rpg.config import ConfigError, DataConfig, resolve_config
from rpg.data.detection import build_detection_dataset, check_detection_data, detection_info, read_annotations
from rpg.data.digits_detection import make_split, write_digits_detection
from rpg.detector import coco_scores, predict
from rpg.errors import RPGInputError
from rpg.evaluate.detection import DetectionEvaluator
from rpg.evaluate.evaluators import build_evaluator
from rpg.stages.checks import check_settings
from rpg.zoo import build_model, load_checkpoint
from rpg.zoo.collect_detection import collect_detection_run

SYNTH = {"train_images": 48, "val_images": 12, "test_images": 12, "min_size": 10, "max_size": 16}
TINY_SYNTH = {"name": "digits_detection", "image_size": 32, "synthetic": SYNTH}


def write_coco_tree(root: Path) -> DataConfig:
    """A tiny COCO tree: 3 RGB images of different sizes, 2 categories (ids 3 and 7), 5 objects and a crowd box."""
    from PIL import Image

    images = [(1, 40, 30), (2, 32, 32), (5, 20, 50)]  # id, width, height
    anns = [(10, 1, 3, [2, 3, 10, 8]), (11, 1, 7, [20, 10, 12, 15]), (12, 2, 3, [0, 0, 16, 16]),
            (13, 5, 7, [4, 20, 10, 20]), (14, 5, 3, [1, 1, 8, 8])]  # fmt: skip
    coco = {
        "images": [{"id": i, "file_name": f"img{i}.png", "width": w, "height": h} for i, w, h in images],
        "annotations": [
            {"id": a, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for a, i, c, b in anns
        ]  # fmt: skip
        + [{"id": 99, "image_id": 2, "category_id": 7, "bbox": [18, 18, 10, 10], "area": 100, "iscrowd": 1}],
        "categories": [{"id": 3, "name": "three"}, {"id": 7, "name": "seven"}],
    }
    (root / "images").mkdir(parents=True)
    for i, w, h in images:
        Image.fromarray(np.full((h, w, 3), 40 * i, dtype=np.uint8)).save(root / "images" / f"img{i}.png")
    (root / "instances.json").write_text(json.dumps(coco))
    splits = {s: "instances.json" for s in ("train", "val", "test")}
    return DataConfig.parse({"name": "coco", "root": str(root), "image_size": 64, "annotations": splits,
                             "images": {s: "images" for s in splits}})  # fmt: skip


def gt_detections(dataset, *, drop=(), score=1.0) -> np.ndarray:
    """Detections equal to the ground truth (crowds left out), each with ``score``; ``drop``: annotation ids left
    out."""
    rows = [[a["image_id"], *a["bbox"], score, a["category_id"]] for a in dataset.coco["annotations"]
            if not a.get("iscrowd") and a["id"] not in drop]  # fmt: skip
    return np.array(rows, dtype=np.float64).reshape(-1, 7)


class OracleDetector(nn.Module):
    """Answers a batch of letterboxed images with given detections per image (in dataset order, cycling)."""

    def __init__(self, dataset, detections: np.ndarray) -> None:
        super().__init__()
        self.dataset, self.dets, self.position = dataset, detections, 0
        self.bn = nn.BatchNorm2d(dataset.in_chans)

    def forward(self, images):
        out = []
        for _ in range(len(images)):
            i = self.position % len(self.dataset)
            self.position += 1
            record = self.dataset.records[i]
            rows = self.dets[self.dets[:, 0] == record["id"]]
            xyxy = torch.tensor(rows[:, 1:5], dtype=torch.float32).reshape(-1, 4)
            xyxy[:, 2:] += xyxy[:, :2]
            sx, sy = self.dataset.scales[i]
            boxes = xyxy * torch.tensor([sx, sy, sx, sy])
            labels = torch.tensor([self.dataset.label_of[int(c)] for c in rows[:, 6]], dtype=torch.int64)
            out.append({"boxes": boxes, "scores": torch.tensor(rows[:, 5], dtype=torch.float32), "labels": labels})
        self.bn(images)  # so that BatchNorm re-estimation sees the inputs
        return out


def test_cocoeval_perfect_and_empty_predictions(tmp_path):
    data = write_coco_tree(tmp_path)
    ds = build_detection_dataset(data, "test")
    assert len(ds) == 3 and ds.num_classes == 2 and ds.category_ids == [3, 7]
    perfect = coco_scores(ds.coco, gt_detections(ds))
    assert perfect.metrics == {"mAP": pytest.approx(1.0), "AP50": pytest.approx(1.0), "AP75": pytest.approx(1.0)}
    assert perfect.object_ids == [10, 11, 12, 13, 14] and (perfect.object_scores == 1.0).all()  # the crowd is no object
    none = coco_scores(ds.coco, np.zeros((0, 7)))
    assert none.metrics == {"mAP": 0.0, "AP50": 0.0, "AP75": 0.0} and (none.object_scores == 0).all()
    # boxes off by a quarter of their size: found at IoU 0.5, missed at 0.75
    shifted = gt_detections(ds)
    shifted[:, 1] += shifted[:, 3] * 0.15
    s = coco_scores(ds.coco, shifted)
    assert s.metrics["AP50"] == pytest.approx(1.0) and s.metrics["AP75"] < 0.5 and 0 < s.metrics["mAP"] < 1


def test_letterbox_round_trip(tmp_path):
    data = write_coco_tree(tmp_path)
    ds = build_detection_dataset(data, "train")
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.shape == (3, 64, 64) and 0 <= float(image.min()) and float(image.max()) <= 1
        original = ds.to_original(i, target["boxes"])
        rows = gt_detections(ds)
        expected = rows[rows[:, 0] == ds.records[i]["id"]][:, 1:5]
        expected[:, 2:] += expected[:, :2]
        assert torch.allclose(original, torch.tensor(expected, dtype=torch.float32), atol=1e-4)
    assert detection_info(data) == {"num_classes": 2, "in_chans": 3, "image_size": 64}


def test_detection_evaluator_outcome_sets(tmp_path):
    data = write_coco_tree(tmp_path)
    evaluator = build_evaluator("detection", data=data, batch_size=2)
    assert isinstance(evaluator, DetectionEvaluator) and evaluator.main_metric == "mAP"
    ds = evaluator.dataset("test")
    assert evaluator.dataset("probe") is ds  # no corrupted probe set for detection: probe is test

    perfect = evaluator.evaluate(OracleDetector(ds, gt_detections(ds)), "test")
    assert (
        perfect.main == "mAP"
        and perfect.score == pytest.approx(1.0)
        and set(perfect.metrics) == {"mAP", "AP50", "AP75"}
    )
    assert perfect.failures.shape == (5,) and not perfect.failures.any()
    assert perfect.outputs.shape == (5, 2) and torch.allclose(perfect.outputs.sum(1), torch.ones(5))

    # probe (= test) right after test with the same weights: the last result, not a second pass
    oracle = OracleDetector(ds, gt_detections(ds))
    first = evaluator.evaluate(oracle, "test")
    assert evaluator.evaluate(oracle, "probe") is first and oracle.position == 3
    with torch.no_grad():
        oracle.bn.weight.add_(1.0)
    assert evaluator.evaluate(oracle, "probe") is not first and oracle.position == 6

    missed = evaluator.evaluate(OracleDetector(ds, gt_detections(ds, drop={11, 13})), "test")
    assert missed.failures.tolist() == [False, True, False, True, False] and missed.score < 1
    assert missed.outputs[:, 1].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]

    nothing = evaluator.evaluate(OracleDetector(ds, np.zeros((0, 7))), "test")
    assert nothing.score == 0.0 and nothing.failures.all()

    # an object found only by a low-score box while false positives score as high: missed at the F1 operating point
    dets = gt_detections(ds, score=0.9)
    dets[dets[:, 0] == 5, 5] = [0.1, 0.9]  # object 13 at score 0.1
    junk = np.array([[1, 30, 20, 5, 5, 0.2, 3], [2, 25, 2, 5, 5, 0.2, 3], [5, 10, 40, 5, 5, 0.2, 7]], dtype=float)
    low = evaluator.evaluate(OracleDetector(ds, np.concatenate([dets, junk])), "test")
    assert low.failures.tolist() == [False, False, False, True, False]
    assert low.outputs[3, 1] == pytest.approx(0.1) and 0.1 < low.extra["threshold"] <= 0.9


def test_calibration_batches_feed_batchnorm_reestimation(tmp_path):
    from rpg.evaluate.baselines import recalibrate_batchnorm

    data = DataConfig.parse(TINY_SYNTH)
    evaluator = DetectionEvaluator(data=data)
    batches = evaluator.calibration_batches(seed=0, batch_size=8)
    images, targets = next(iter(batches))
    assert images.shape == (8, 1, 32, 32) and len(targets) == 8
    model = build_model("fcos", {"num_classes": 10, "in_chans": 1, "image_size": 32, "channels": [8, 16]}, seed=0)
    before = model.backbone.stages[0][1].running_mean.clone()
    assert recalibrate_batchnorm(model, batches, num_batches=2, device="cpu")
    assert not torch.equal(before, model.backbone.stages[0][1].running_mean)


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda c: "{not json", "not valid JSON"),
        (lambda c: json.dumps({k: v for k, v in c.items() if k != "categories"}), "no 'categories' list"),
        (lambda c: json.dumps({**c, "annotations": [{**c["annotations"][0], "image_id": 42}]}), "unknown image_id 42"),
        (lambda c: json.dumps({**c, "annotations": [{**c["annotations"][0], "category_id": 5}]}), "unknown category"),
        (lambda c: json.dumps({**c, "annotations": [{**c["annotations"][0], "bbox": [1, 2, -3, 4]}]}), "bbox"),
        (lambda c: json.dumps({**c, "images": c["images"] + c["images"][:1]}), "duplicate image id"),
    ],
)
def test_bad_annotation_file_is_named(tmp_path, edit, needle):
    data = write_coco_tree(tmp_path)
    path = tmp_path / "instances.json"
    path.write_text(edit(json.loads(path.read_text())))
    with pytest.raises(RPGInputError) as err:
        build_detection_dataset(data, "test")
    assert err.value.path == str(path) and needle in err.value.problem
    with pytest.raises(RPGInputError, match="instances.json"):
        check_detection_data(data)


def test_missing_annotation_file_fails_at_start(tmp_path):
    data = write_coco_tree(tmp_path)
    cfg = {"experiments": {"e": {"data": {**data.to_dict(), "annotations": {"train": "instances.json",
                                                                             "test": "nope.json"}},
                                 "zoos": {"z": {"arch": "fcos"}}, "evaluate": {"evaluator": "detection"}}}}  # fmt: skip
    cfg["experiments"]["e"]["data"]["images"] = {"train": "images", "test": "images"}
    problems = check_settings(resolve_config(cfg))
    assert len(problems) == 1 and "nope.json" in problems[0] and "annotation file does not exist" in problems[0]


def test_presets_stop_at_start_until_their_placeholders_are_filled():
    raw = yaml.safe_load((Path(__file__).parent.parent / "configs" / "coco.yaml").read_text())
    problems = check_settings(resolve_config(raw))
    assert any("data.root" in p and "instances_train2017.json" in p for p in problems)
    assert any("zoos.fcos_r50.init" in p and "does not exist" in p for p in problems)


def test_annotations_read_once_and_checked():
    with pytest.raises(RPGInputError, match="does not exist"):
        read_annotations("/nonexistent/instances.json")


def test_digits_detection_is_deterministic_and_disjoint(tmp_path):
    data = DataConfig.parse(TINY_SYNTH)
    a_img, a_coco = make_split(data, "train")
    b_img, b_coco = make_split(DataConfig.parse(TINY_SYNTH), "train")
    assert np.array_equal(a_img, b_img) and a_coco == b_coco
    other = DataConfig.parse({**TINY_SYNTH, "synthetic": {**TINY_SYNTH["synthetic"], "seed": 1}})
    assert not np.array_equal(make_split(other, "train")[0], a_img)
    assert a_img.shape == (48, 32, 32) and a_img.dtype == np.uint8
    for ann in a_coco["annotations"]:
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 32 and y + h <= 32 and 1 <= ann["category_id"] <= 10
        assert w >= 2 and h >= 2
    per_image = pd.Series([a["image_id"] for a in a_coco["annotations"]]).value_counts()
    assert per_image.max() <= 3 and len(per_image) == 48  # 1..3 digits on every canvas
    # the COCO tree the writer makes reads back as coco data with the same annotations and pixels
    files = write_digits_detection(data, tmp_path / "d1")
    write_digits_detection(data, tmp_path / "d2")
    for split, path in files.items():
        twin = tmp_path / "d2" / path.relative_to(tmp_path / "d1")
        assert path.read_bytes() == twin.read_bytes(), split
    coco = DataConfig.parse({"name": "coco", "root": str(tmp_path / "d1"), "image_size": 32,
                             "annotations": {s: f"annotations/instances_{s}.json" for s in files},
                             "images": {s: f"images/{s}" for s in files}})  # fmt: skip
    back, mem = build_detection_dataset(coco, "val"), build_detection_dataset(data, "val")
    assert back.coco["annotations"] == mem.coco["annotations"]
    assert torch.allclose(back[3][0], mem[3][0]) and torch.equal(back[3][1]["boxes"], mem[3][1]["boxes"])


def test_digits_detection_splits_use_disjoint_digits():
    from rpg.data.digits_detection import _pools

    pools = _pools(0)
    assert sum(len(p) for p in pools.values()) == 1797
    assert not set(pools["train"]) & set(pools["test"]) and not set(pools["val"]) & set(pools["test"])


def test_fcos_builds_without_downloads_and_runs():
    kwargs = {"num_classes": 10, "in_chans": 1, "image_size": 32, "channels": [8, 16]}
    model, twin = build_model("fcos", kwargs, seed=0), build_model("fcos", kwargs, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values()))
    images = torch.rand(2, 1, 32, 32)
    targets = [{"boxes": torch.tensor([[2.0, 3.0, 14.0, 15.0]]), "labels": torch.tensor([4])}] * 2
    losses = model.train()(images, targets)
    assert set(losses) == {"classification", "bbox_regression", "bbox_ctrness"}
    out = model.eval()(images)
    assert len(out) == 2 and set(out[0]) == {"boxes", "scores", "labels"}
    with pytest.raises(RPGInputError, match="arch_kwargs"):
        build_model("fcos", {"num_classes": 10, "bogus": 1})


def test_fcos_with_a_timm_backbone():
    model = build_model("fcos", {"num_classes": 3, "image_size": 64, "backbone": "resnet10t", "out_channels": 32,
                                 "extra_levels": False})  # fmt: skip
    out = model.eval()(torch.rand(1, 3, 64, 64))
    assert len(out) == 1 and model.backbone.strides == [8, 16, 32]


def test_collect_detection_run(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run0"
    paths = [out / f"ckpt_{i:03d}.safetensors" for i in range(2)]
    collect = {"epochs": 1, "batch_size": 16, "lr": 0.003, "finetune_lr": 0.0005, "checkpoints": 2,
               "eval_batch_size": 12}  # fmt: skip
    collect_detection_run(arch="fcos", arch_kwargs={"channels": [8, 16]}, collect=collect,
                          data={**TINY_SYNTH, "hflip": True}, run=0, out_paths=paths, table_path=out / "run.csv",
                          device="cpu")  # fmt: skip
    table = pd.read_csv(out / "run.csv")
    assert table["index"].tolist() == [0, 1] and table["step"].tolist() == [3 + 1, 3 + 3]  # 48/16 = 3 steps/epoch
    state, meta = load_checkpoint(paths[-1])
    assert meta["val_metric"] == "mAP" and 0 <= meta["val_accuracy"] <= 1 and "val_AP50" in meta
    assert meta["arch_kwargs"] == {"num_classes": 10, "in_chans": 1, "image_size": 32, "channels": [8, 16]}
    model = build_model(meta["arch"], meta["arch_kwargs"])
    model.load_state_dict(state, strict=True)
    dets = predict(model, build_detection_dataset(DataConfig.parse(TINY_SYNTH), "test"))
    assert dets.shape[1] == 7


@pytest.mark.parametrize(
    "data, key, needle",
    [
        ({"name": "coco", "root": "/x", "annotations": {"train": "a.json"}, "images": {"train": "i"}},
         "data.annotations.test", "required"),
        ({"name": "coco", "root": "/x", "annotations": {"train": "a", "test": "b"}, "images": {"train": "i"}},
         "data.images", "image folder"),
        ({"name": "coco", "annotations": {"train": "a", "test": "b"}, "images": {"train": "i", "test": "j"}},
         "data.root", "required"),
        ({"name": "coco", "root": "/x", "annotations": {"train": "a", "test": "b", "dev": "c"},
          "images": {"train": "i", "test": "j", "dev": "k"}}, "data.annotations.dev", "unknown split"),
        ({"name": "digits_detection", "image_size": 16}, "data.synthetic.max_size", "canvas"),
        ({"name": "digits_detection", "synthetic": {"min_size": 20, "max_size": 10}}, "data.synthetic.max_size", ">="),
    ],
)  # fmt: skip
def test_detection_config_blocks_validate(data, key, needle):
    with pytest.raises(ConfigError) as err:
        resolve_config({"experiments": {"e": {"data": data, "zoos": {"z": {"arch": "fcos"}}}}})
    assert err.value.path == f"experiments.e.{key}" and needle in err.value.problem


def test_detection_defaults_and_evaluator_checks():
    cfg = {"experiments": {"e": {"data": {"name": "digits_detection"}, "zoos": {"z": {"arch": "fcos"}}}}}
    s = resolve_config(cfg)["e"]["z"]
    assert s.data.image_size == 48 and s.data.is_detection and s.evaluate.evaluator == "classification"
    problems = check_settings(resolve_config(cfg))
    assert len(problems) == 1 and "evaluate.evaluator" in problems[0] and "detection" in problems[0]
    cfg["experiments"]["e"]["evaluate"] = {"evaluator": "detection"}
    assert check_settings(resolve_config(cfg)) == []
    cfg["experiments"]["e"]["evaluate"] = {"evaluator": "my module"}
    with pytest.raises(ConfigError, match="package.module:function"):
        resolve_config(cfg)
    digits = {"experiments": {"e": {"data": {"name": "digits"}, "zoos": {"z": {"arch": "cnn_s"}},
                                    "evaluate": {"evaluator": "detection"}}}}  # fmt: skip
    assert "needs detection data" in check_settings(resolve_config(digits))[0]


def test_torchvision_fcos_weights_convert(tmp_path):
    """torchvision's FCOS layout (here on a ResNet-18, as fcos_resnet50_fpn builds it on a ResNet-50) loads into
    ``fcos`` with the timm backbone after conversion."""
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    from rpg.zoo.detectors import from_torchvision_fcos, main
    from rpg.zoo.models import load_initial_weights

    body = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5, returned_layers=[2, 3, 4],
                               extra_blocks=LastLevelP6P7(256, 256))  # fmt: skip
    tv = FCOS(body, num_classes=91).state_dict()
    ids = [1, 3, 90]
    state = from_torchvision_fcos(tv, ids)
    kwargs = {"num_classes": 3, "backbone": "resnet18", "out_channels": 256, "num_convs": 4}
    model = build_model("fcos", kwargs)
    model.load_state_dict(state, strict=True)
    cls, conv = "head.classification_head.cls_logits.weight", "backbone.body.conv1.weight"
    assert torch.equal(state[cls][2], tv[cls][90]) and torch.equal(state[conv], tv[conv])
    torch.save(tv, tmp_path / "tv.pth")
    coco = {"images": [], "annotations": [], "categories": [{"id": i, "name": str(i)} for i in ids]}
    (tmp_path / "a.json").write_text(json.dumps(coco))
    out = tmp_path / "init.safetensors"
    assert (
        main([str(tmp_path / "tv.pth"), str(out), "--annotations", str(tmp_path / "a.json"), "--backbone", "resnet18"])
        == 0
    )
    load_initial_weights(model, out)


@pytest.mark.slow
def test_detection_end_to_end(tmp_path):
    """The detection pipeline through Snakemake on a tiny config: collection, tokens, generator, generation and the
    evaluation stage with the detection evaluator (COCO mAP on test)."""
    from snakemake_helpers import snakemake

    config = Path(__file__).parent / "configs" / "detection_tiny.yaml"
    snakemake("--cores", "2", "--configfile", str(config), "--directory", str(tmp_path))
    base = tmp_path / "results" / "det_tiny"
    summary = json.loads((base / "evaluation" / "fcos" / "summary.json").read_text())
    assert summary["split"] == "test" and summary["metric"] == "mAP"
    assert summary["original"]["n"] == summary["generated"]["n"] == 2
    table = pd.read_csv(base / "evaluation" / "fcos" / "table.csv")
    assert {"original", "generated"} <= set(table["kind"]) and table["score"].between(0, 1).all()
    assert all("mAP" in json.loads(m) and "AP50" in json.loads(m) for m in table["metrics"])
    for path in sorted((base / "generated" / "fcos").rglob("model_*.safetensors")):
        state, meta = load_checkpoint(path)
        build_model(meta["arch"], meta["arch_kwargs"]).load_state_dict(state, strict=True)


def test_fcos_head_width_not_a_multiple_of_32():
    model = build_model("fcos", {"num_classes": 2, "in_chans": 1, "image_size": 32, "channels": [8, 16],
                                 "out_channels": 16, "num_convs": 2})  # fmt: skip
    norms = [m for m in model.head.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 4 and all(m.num_groups == 16 for m in norms)
    assert len(model.eval()(torch.rand(1, 1, 32, 32))) == 1
