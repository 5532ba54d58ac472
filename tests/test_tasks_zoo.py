"""Task zoos (rpg.tasks): plan, head surgery, metrics, backbone + per-task collection."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from rpg.classifier import binary_metrics
from rpg.config import ConfigError, TasksConfig
from rpg.errors import RPGInputError
from rpg.io import read_json, read_safetensors_metadata
from rpg.stages.tasks import write_plan
from rpg.tasks.collect import collect_task_group, train_backbone
from rpg.tasks.heads import head_keys, head_module_name, make_task_model
from rpg.tasks.plan import plan_task_zoo
from rpg.tasks.vectors import task_vector
from rpg.zoo.checkpoint import load_checkpoint
from rpg.zoo.models import build_model

DIGITS = {"name": "digits", "image_size": 8, "val_fraction": 0.25, "split_seed": 0}


def test_plan_groups_names_and_manifest(tmp_path):
    cfg = {"seen": 45, "held_out": 8, "group_size": 20, "checkpoints_per_task": 3, "evaluate": {"seen_tasks": 4}}
    plan = plan_task_zoo(cfg, DIGITS)
    seen = plan.groups["seen"]
    assert [g.name for g in seen] == ["group000-20tasks", "group001-20tasks", "group002-5tasks"]
    assert [t for g in seen for t in g.task_ids] == list(plan.split.seen)
    assert [g.name for g in plan.groups["held_out"]] == ["group000-8tasks"]
    names = plan.checkpoint_names("seen")
    assert len(names) == len(set(names)) == 45 * 3
    assert names[0] == "seen/group000-20tasks/member00_ckpt00.safetensors"
    tid = plan.split.seen[21]  # second task of the second group
    assert plan.task_checkpoints("seen", tid) == [
        f"seen/group001-20tasks/member01_ckpt{i:02d}.safetensors" for i in range(3)
    ]
    assert plan.eval_tasks["held_out"] == plan.split.held_out
    assert len(plan.eval_tasks["seen"]) == 4 and set(plan.eval_tasks["seen"]) <= set(plan.split.seen)
    rows = plan.manifest(zoo_dir="Z", generated_dir="G", models_per_task=2)
    assert [r["split"] for r in rows] == ["held_out"] * 8 + ["seen"] * 4
    assert rows[0]["task"] == task_vector(rows[0]["task_id"]) and len(rows[0]["reference"]) == 3
    assert rows[0]["reference"][0].startswith("Z/held_out/group000-8tasks/member00_ckpt00")
    assert rows[-1]["generated"] == ["G/seen/task03_model00.safetensors", "G/seen/task03_model01.safetensors"]
    json.dumps(plan.to_dict())  # JSON-able
    write_plan(plan, tmp_path / "tasks.json")  # the workflow's stage: the plan as JSON
    assert read_json(tmp_path / "tasks.json") == json.loads(json.dumps(plan.to_dict()))
    assert plan_task_zoo(cfg, DIGITS) == plan  # deterministic


def test_more_seen_tasks_keep_the_earlier_groups_and_settings_that_matter():
    small = plan_task_zoo({"seen": 45, "group_size": 20}, DIGITS)
    large = plan_task_zoo({"seen": 60, "group_size": 20}, DIGITS)
    assert large.groups["seen"][:2] == small.groups["seen"][:2]  # already collected groups stay valid
    assert large.groups["held_out"] == small.groups["held_out"]
    cfg = {"seen": 45, "held_out": 3, "group_size": 20, "head_lr": 0.1, "evaluate": {"seen_tasks": 2}}
    other = {**cfg, "seen": 60, "held_out": 5, "group_size": 7, "evaluate": {"seen_tasks": 9}}
    settings = TasksConfig.parse(cfg).collection()
    assert settings == TasksConfig.parse(other).collection()  # split sizes, grouping, evaluation: no retraining
    assert settings["head_lr"] == 0.1 and settings != TasksConfig.parse({**cfg, "head_lr": 0.2}).collection()


def test_config_rejects_unknown_and_bad_values():
    with pytest.raises(ConfigError, match="unknown key"):
        TasksConfig.parse({"seen": 3, "heads": 2}, "tasks")
    with pytest.raises(ConfigError, match="tasks.evaluate"):
        TasksConfig.parse({"evaluate": {"epochs": [1]}}, "tasks")
    with pytest.raises(ConfigError, match="head_init"):
        TasksConfig.parse({"head_init": "ones"}, "tasks")


def test_head_keys_of_builtin_and_timm_models():
    keys = head_keys("cnn_s", {"num_classes": 10, "in_chans": 1}, {"num_classes": 2, "in_chans": 1})
    assert keys == ["head.weight", "head.bias"] and head_module_name(keys) == "head"
    keys = head_keys("resnet18", {"num_classes": 10}, {"num_classes": 2})
    assert keys == ["fc.weight", "fc.bias"] and head_module_name(keys) == "fc"


def test_make_task_model_copies_backbone_and_seeds_the_head():
    backbone = build_model("cnn_s", {"num_classes": 10, "in_chans": 1}, seed=0).state_dict()
    kw = {"num_classes": 2, "in_chans": 1}
    heads = ["head.weight", "head.bias"]
    a = make_task_model("cnn_s", kw, backbone, heads=heads, seed=5).state_dict()
    b = make_task_model("cnn_s", kw, backbone, heads=heads, seed=5).state_dict()
    c = make_task_model("cnn_s", kw, backbone, heads=heads, seed=6).state_dict()
    z = make_task_model("cnn_s", kw, backbone, heads=heads, seed=5, head_init="zero").state_dict()
    for k, v in a.items():
        if k not in heads:
            assert torch.equal(v, backbone[k]), k
    assert a["head.weight"].shape == (2, 16)
    assert torch.equal(a["head.weight"], b["head.weight"]) and not torch.equal(a["head.weight"], c["head.weight"])
    assert not z["head.weight"].any() and not z["head.bias"].any()


def test_binary_metrics():
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    acc, bal = binary_metrics(torch.zeros(10, dtype=torch.long), labels)  # majority predictor
    assert acc == pytest.approx(0.8) and bal == pytest.approx(0.5)
    preds = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 0])
    acc, bal = binary_metrics(preds, labels)
    assert acc == pytest.approx(0.7) and bal == pytest.approx((6 / 8 + 1 / 2) / 2)
    with pytest.raises(ValueError):
        binary_metrics(preds[:3], labels)


def test_backbone_and_task_group_collection(tmp_path):
    zoo = {
        "arch": "cnn_s",
        "arch_kwargs": {},
        "init": "random",
        "collect": {"epochs": 3, "batch_size": 128, "checkpoints": 50},
        "tasks": {
            "checkpoints_per_task": 2,
            "head_epochs": 5,
            "head_lr": 0.05,
            "finetune_epochs": 1,
            "batch_size": 128,
        },
    }
    backbone = tmp_path / "backbone.safetensors"
    train_backbone(arch=zoo["arch"], arch_kwargs=zoo["arch_kwargs"], init=zoo["init"], collect=zoo["collect"],
                   data=DIGITS, out_path=backbone, table_path=tmp_path / "b.csv", device="cpu")  # fmt: skip
    bstate, bmeta = load_checkpoint(backbone)
    assert bmeta["num_classes"] == 10 and bstate["head.weight"].shape == (10, 16)

    tasks = [0b0000000011, 0b1010101010]  # {0, 1} positive (imbalanced); odd digits positive
    paths = [tmp_path / "g" / f"m{j}_c{i}.safetensors" for j in range(2) for i in range(2)]
    collect_task_group(
        arch=zoo["arch"],
        arch_kwargs=zoo["arch_kwargs"],
        tasks=zoo["tasks"],
        data=DIGITS,
        backbone_path=backbone,
        split="seen",
        group="g0",
        task_ids=tasks,
        out_paths=paths,
        table_path=tmp_path / "g" / "group.csv",
        device="cpu",
    )
    table = pd.read_csv(tmp_path / "g" / "group.csv")
    assert table["path"].tolist() == [str(p) for p in paths]
    assert table["task_id"].tolist() == [tasks[0]] * 2 + [tasks[1]] * 2
    assert table["positive_fraction"].iloc[0] == pytest.approx(0.2, abs=0.02)
    for j, tid in enumerate(tasks):
        for i in range(2):
            state, meta = load_checkpoint(paths[2 * j + i])
            assert meta["task"] == task_vector(tid) and meta["task_id"] == tid
            assert meta["run"] == 0 and meta["num_classes"] == 2 and meta["index"] == i and meta["split"] == "seen"
            assert meta["arch_kwargs"]["num_classes"] == 2
            model = build_model("cnn_s", meta["arch_kwargs"])
            model.load_state_dict(state, strict=True)
            # a real classifier of the binary task, far above the 0.5 of a constant predictor
            assert meta["val_balanced_accuracy"] > 0.8, meta
            # fine-tuned from the shared backbone: close to it, but not equal
            diff = (state["features.3.weight"] - bstate["features.3.weight"]).abs().max()
            assert 0 < diff < 0.1
    assert read_safetensors_metadata(paths[1])["step"] > read_safetensors_metadata(paths[0])["step"]

    with pytest.raises(ValueError, match="need as many paths"):
        collect_task_group(
            arch=zoo["arch"],
            arch_kwargs=zoo["arch_kwargs"],
            tasks=zoo["tasks"],
            data=DIGITS,
            backbone_path=backbone,
            split="seen",
            group="g0",
            task_ids=tasks,
            out_paths=paths[:3],
            table_path=tmp_path / "x.csv",
            device="cpu",
        )
    few = {**zoo, "tasks": {**zoo["tasks"], "checkpoints_per_task": 50, "batch_size": 1024}}
    with pytest.raises(RPGInputError, match="fine-tuning has"):
        collect_task_group(
            arch=few["arch"],
            arch_kwargs=few["arch_kwargs"],
            tasks=few["tasks"],
            data=DIGITS,
            backbone_path=backbone,
            split="seen",
            group="g0",
            task_ids=tasks[:1],
            out_paths=[tmp_path / f"f{i}" for i in range(50)],
            table_path=tmp_path / "x.csv",
            device="cpu",
        )
