"""A task family with a continuous task parameter (rpg.tasks.continuous, rpg.tasks.continuous_eval)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rpg.config import ConfigError, TasksConfig, resolve_config
from rpg.tasks.continuous import plan_continuous, rotate_images, task_features, transformed
from rpg.tasks.continuous_eval import (
    interpolation_pair,
    margin,
    mix_states,
    nearest_value,
    steps_to_reference,
    summarize_continuous,
    value_rows,
)

ROOT = Path(__file__).resolve().parent.parent
PRESET = ROOT / "configs" / "unseen_continuous.yaml"
TINY = ROOT / "tests" / "configs" / "continuous_tiny.yaml"


def tasks_cfg(**continuous) -> TasksConfig:
    c = {"seen": [-30, 0, 30], "held_out": [15, 45], **continuous}
    return TasksConfig.parse({"family": "rotation", "continuous": c, "group_size": 2}, "tasks")


def test_task_features():
    c = tasks_cfg().continuous
    assert task_features(45, c) == [0.5]
    f = task_features(90, tasks_cfg(features="fourier").continuous)
    assert f == pytest.approx([1.0, 1.0, 0.0, 0.0, -1.0], abs=1e-6)


def test_rotation_by_90_is_rot90_and_keeps_labels():
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4)
    r = rotate_images(x, 90, fill=0.0)
    matches = [k for k in (1, 3) if torch.allclose(r, torch.rot90(x, k, dims=(2, 3)), atol=1e-4)]
    assert matches, "a 90 degree rotation is a quarter turn"
    assert torch.equal(rotate_images(x, 0, fill=0.0), x)
    ds = torch.utils.data.TensorDataset(x, torch.tensor([3, 5]))
    out = transformed(ds, 30, family="rotation")
    assert torch.equal(out.tensors[1], torch.tensor([3, 5]))
    assert not torch.allclose(out.tensors[0], x)
    # corners rotated in from outside take the background (the set's minimum), not 0
    corner = transformed(torch.utils.data.TensorDataset(x + 5.0, torch.tensor([0, 1])), 45, family="rotation")
    assert float(corner.tensors[0].min()) >= 5.0 - 1e-5


def test_plan_groups_hold_values_and_manifest_marks_inside():
    cfg = tasks_cfg()
    plan = plan_continuous(cfg)
    assert [g.task_ids for g in plan.groups["seen"]] == [(-30.0, 0.0), (30.0,)]
    assert plan.groups["held_out"][0].name == "group000-2tasks"
    rows = plan.manifest(zoo_dir="z", generated_dir="g", models_per_task=2)
    held = [r for r in rows if r["split"] == "held_out"]
    assert [(r["task_value"], r["inside"]) for r in held] == [(15.0, True), (45.0, False)]
    assert held[0]["task"] == [round(15 / 90, 6)]
    assert held[1]["reference"][-1] == "z/held_out/group000-2tasks/member01_ckpt01.safetensors"
    assert json.loads(json.dumps(plan.to_dict()))["seen"] == [-30.0, 0.0, 30.0]


@pytest.mark.parametrize(
    "continuous, key",
    [({"seen": [0]}, "seen"), ({"seen": [0, 30], "held_out": [30]}, "held_out"), ({"seen": [0, 0, 30]}, "seen")],
)
def test_bad_values_name_the_key(continuous, key):
    with pytest.raises(ConfigError, match=key):
        tasks_cfg(**continuous)


def test_family_needs_values_and_binary_takes_none():
    with pytest.raises(ConfigError, match="continuous"):
        TasksConfig.parse({"family": "rotation"}, "tasks")
    with pytest.raises(ConfigError, match="continuous"):
        TasksConfig.parse({"continuous": {"seen": [0, 30], "held_out": [15]}}, "tasks")
    assert TasksConfig.parse({}, "tasks").collection() == TasksConfig.parse({"family": "binary"}, "tasks").collection()


def test_preset_resolves_and_passes_the_checks():
    from rpg.stages.checks import check_settings
    from rpg.stages.prompt import prompt_zoo

    settings = resolve_config(yaml.safe_load(PRESET.read_text()))
    assert check_settings(settings) == []
    z = settings["unseen_continuous"]["cnn_m"]
    assert z.is_continuous_task_zoo and z.generator.task_condition == "all"
    assert prompt_zoo(settings, "unseen_continuous") is None  # prompts name class subsets: binary zoos only
    bad = yaml.safe_load(PRESET.read_text())
    bad["experiments"]["unseen_continuous"]["generator"]["task_bits"] = 5
    assert any("task_bits" in p for p in check_settings(resolve_config(bad)))


def test_nearest_and_interpolation_pair():
    seen = [-30.0, 0.0, 30.0, 60.0]
    assert nearest_value(15.0, seen) == 0.0  # ties: the smaller
    assert nearest_value(50.0, seen) == 60.0
    assert interpolation_pair(15.0, seen) == (0.0, 30.0, 0.5)
    assert interpolation_pair(40.0, seen) == pytest.approx((30.0, 60.0, 1 / 3))
    assert interpolation_pair(30.0, seen)[2] in (0.0, 1.0)
    assert interpolation_pair(90.0, seen) == (30.0, 60.0, 2.0)  # beyond: extrapolates
    assert interpolation_pair(-45.0, seen) == (-30.0, 0.0, -0.5)


def test_mix_states_weights_floats_and_copies_integer_buffers():
    a = {"w": torch.zeros(3), "n": torch.tensor(4)}
    b = {"w": torch.ones(3), "n": torch.tensor(9)}
    out = mix_states([a, b], [0.25, 0.75])
    assert torch.allclose(out["w"], torch.full((3,), 0.75)) and int(out["n"]) == 4
    with pytest.raises(ValueError):
        mix_states([a], [0.5, 0.5])


def test_steps_to_reference_and_margin_verdicts():
    curve = {0: 0.5, 10: 0.9, 100: 0.97}
    assert steps_to_reference(curve, 0.975, 0.01) == 100
    assert steps_to_reference(curve, 0.9, 0.0) == 10
    assert steps_to_reference(curve, 0.99, 0.0) is None
    rng = np.random.default_rng(0)
    good = rng.random((3, 400)) < 0.95
    bad = rng.random((1, 400)) < 0.6
    assert margin(good, bad, n=200, seed=0)["verdict"] == "pass"
    assert margin(bad, good, n=200, seed=0)["verdict"] == "fail"
    assert margin(good, good[:1], n=200, seed=0)["verdict"] in ("undecided", "pass", "fail")


def _value(v, inside, gen, base, steps):
    acc = {k: {"mean": gen if k == "generated" else base, "ci95": [0, 1]} for k in
           ("generated", "reference", "nearest", "interpolation", "average", "backbone")}  # fmt: skip
    acc["generated"].update(n=2, distinct=2, min=gen, max=gen)
    verdict = "pass" if gen > base else "fail"
    margins = {k: {"margin": gen - base, "ci95": [gen - base - 0.01, gen - base + 0.01], "verdict": verdict}
               for k in ("nearest", "interpolation", "average", "reference")}  # fmt: skip
    return {"split": "held_out", "task_value": v, "inside": inside, "accuracy": acc, "margins": margins,
            "steps_to_reference": steps, "finetune": {}}  # fmt: skip


def test_summary_counts_claims_inside_and_beyond():
    values = [
        _value(15.0, True, 0.95, 0.9, {"generated": 0, "nearest": 20, "scratch": None, "interpolation": 10}),
        _value(45.0, True, 0.85, 0.9, {"generated": 50, "nearest": 20, "scratch": None, "interpolation": 10}),
        _value(120.0, False, 0.5, 0.6, {"generated": None, "nearest": None, "scratch": None, "interpolation": 5}),
    ]
    s = summarize_continuous(values, tolerance=0.01)
    assert s["checks"]["inside"]["beats_every_zero_training_baseline"] == "1 of 2"
    assert not s["checks"]["inside"]["all_pass"]
    assert s["checks"]["beyond"]["beats_every_zero_training_baseline"] == "0 of 1"
    faster = s["checks"]["generated_reaches_reference_first"]["inside"]
    assert faster == {"nearest": "1 of 2", "scratch": "2 of 2", "interpolation": "1 of 2"}
    rows = value_rows(s)
    assert rows[0]["where"] == "inside" and rows[2]["where"] == "beyond"
    assert rows[2]["steps generated"] == "-"


def test_store_keeps_float_task_vectors(tmp_path):
    from rpg.generator.model import unique_conditions
    from rpg.tokens.store import TokenStore, write_token_store
    from rpg.zoo.checkpoint import save_checkpoint
    from rpg.zoo.models import build_model

    paths = []
    for i, task in enumerate(([0.25], [-0.5], [0.25])):
        state = build_model("cnn_s", {"num_classes": 10}, seed=i).state_dict()
        paths.append(tmp_path / f"c{i}.safetensors")
        save_checkpoint(paths[-1], state, {"kind": "checkpoint", "arch": "cnn_s", "arch_kwargs": {}, "run": 0,
                                           "task": task, "task_value": task[0] * 90})  # fmt: skip
    write_token_store(paths, tmp_path / "tokens", token_size=64, shard_size=8)
    tasks = [list(t) for t in TokenStore(tmp_path / "tokens").index["task"]]
    assert tasks == [[0.25], [-0.5], [0.25]]
    states, uniq, inverse = unique_conditions(torch.zeros(3, dtype=torch.long), torch.tensor(tasks))
    assert len(states) == 2 and sorted(uniq.reshape(-1).tolist()) == [-0.5, 0.25]  # not truncated to 0
    assert inverse[0] == inverse[2] != inverse[1]


def test_dry_run_of_the_preset(tmp_path):
    from snakemake_helpers import job_counts, snakemake

    proc = snakemake("-n", "--directory", str(tmp_path), "--configfile", str(PRESET))
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["collect_task_group"] == 2 and counts["evaluate_continuous_tasks"] == 1
    assert "evaluate_tasks" not in counts and "prompted" not in counts


@pytest.mark.slow
def test_tiny_continuous_experiment_end_to_end(tmp_path):
    from snakemake_helpers import snakemake

    from rpg.tokens.store import TokenStore
    from rpg.zoo.checkpoint import load_checkpoint
    from rpg.zoo.models import build_model

    snakemake("--cores", "2", "--configfile", str(TINY), "--directory", str(tmp_path))
    res = tmp_path / "results" / "continuous_tiny"
    ev = res / "evaluation" / "cnn_s" / "tasks"
    summary = json.loads((ev / "summary.json").read_text())
    assert summary["kind"] == "continuous_tasks"
    held = [v for v in summary["values"] if v["split"] == "held_out"]
    assert [(v["task_value"], v["inside"]) for v in held] == [(15.0, True), (60.0, False)]
    for v in held:
        assert set(v["accuracy"]) == {"generated", "reference", "nearest", "interpolation", "average", "backbone"}
        assert v["accuracy"]["generated"]["n"] == 2
        assert set(v["steps_to_reference"]) == {"generated", "nearest", "interpolation", "scratch"}
        assert set(v["finetune"]["scratch"]) == {"0", "3"}
    assert held[0]["interpolation"] == [0.0, 30.0, 0.5]
    for png in ("accuracy_vs_value.png", "finetune.png", "loss.png"):
        assert (ev / png).stat().st_size > 1000
    # the generator's zoo holds the seen values only; generated models carry their float task and load strict
    index = TokenStore(res / "tokens" / "cnn_s").index
    assert sorted({round(t[0] * 90, 3) for t in index["task"]}) == [-30.0, 0.0, 30.0]
    gen = sorted((res / "generated" / "cnn_s" / "tasks" / "held_out").glob("*.safetensors"))
    state, meta = load_checkpoint(gen[0])
    assert meta["task"] == [round(15 / 90, 6)]
    build_model(meta["arch"], meta["arch_kwargs"]).load_state_dict(state, strict=True)
    report = (tmp_path / "results" / "report.html").read_text()
    assert "accuracy_vs_value" in report and "interpolation" in report
    proc = snakemake("-n", "--configfile", str(TINY), "--directory", str(tmp_path))
    assert "Nothing to be done" in proc.stdout + proc.stderr
