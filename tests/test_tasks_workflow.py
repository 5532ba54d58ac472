"""The unseen-task workflow (workflow/rules/tasks.smk): dry runs, lint, config errors, one tiny end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from snakemake_helpers import copy_run, job_counts, snakemake

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "configs" / "tasks_tiny.yaml"


def dry_run(config: Path, tmp_path: Path) -> dict[str, int]:
    proc = snakemake("-n", "--directory", str(tmp_path), "--configfile", str(config))
    return job_counts(proc.stdout + proc.stderr)


def test_dry_run_unseen_tasks_config(tmp_path):
    counts = dry_run(ROOT / "configs" / "unseen_tasks.yaml", tmp_path)
    groups = {k: v for k, v in counts.items() if k.startswith("collect_task_group")}
    assert sum(groups.values()) == 5  # 200 seen tasks in 4 groups of 50, 20 held-out tasks in one group
    for rule in ("task_backbone", "task_split", "tokenize", "train_generator", "generate_tasks", "evaluate_tasks"):
        assert counts[rule] == 1, rule
    assert not {"collect_run", "evaluate", "generate"} & set(counts)  # no standard zoo stages for a task zoo


def test_dry_run_paper_preset_uses_all_1002_seen_tasks(tmp_path):
    counts = dry_run(ROOT / "configs" / "unseen_tasks_paper.yaml", tmp_path)
    # 1002 seen tasks: 50 groups of 20 and one of 2; 20 held-out tasks: one group of 20
    assert counts["collect_task_group"] == 52  # one rule name, whatever the group sizes


def test_standard_and_task_zoos_side_by_side(tmp_path):
    cfg = yaml.safe_load(TINY.read_text())
    std = yaml.safe_load((ROOT / "tests" / "configs" / "tiny.yaml").read_text())["experiments"]["tiny"]
    cfg["experiments"]["tasks_tiny"]["zoos"]["plain"] = {**std["zoos"]["cnn_s"]}
    cfg["experiments"]["tasks_tiny"]["zoos"]["plain"]["generator"] = {"task_condition": None}
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    counts = dry_run(path, tmp_path)
    runs = sum(v for k, v in counts.items() if k.startswith("collect_run"))
    assert runs == 2 and counts["evaluate"] == 1 and counts["generate"] == 1  # the plain zoo
    assert counts["evaluate_tasks"] == 1 and counts["generate_tasks"] == 1  # the task zoo
    assert counts["tokenize"] == 2 and counts["train_generator"] == 2


def test_lint_is_clean():
    proc = snakemake("--lint", "--configfile", str(ROOT / "configs" / "unseen_tasks.yaml"))
    assert "Congratulations" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda z, e: z["tasks"].update(seen=1021), "tasks"),
        (lambda z, e: e["generator"].update(task_bits=7), "generator.task_bits"),
    ],
)
def test_bad_task_config_names_the_key(tmp_path, change, key):
    cfg = yaml.safe_load(TINY.read_text())
    exp = cfg["experiments"]["tasks_tiny"]
    change(exp["zoos"]["cnn_s"], exp)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake("-n", "--configfile", str(path), "--directory", str(tmp_path), check=False)
    assert proc.returncode != 0
    assert key in proc.stdout + proc.stderr


@pytest.mark.slow
def test_tiny_task_experiment_end_to_end(tasks_tiny_run, tmp_path):
    res = tasks_tiny_run / "results" / "tasks_tiny"  # the session's finished run of the config (conftest.py)
    ev = res / "evaluation" / "cnn_s" / "tasks"
    summary = json.loads((ev / "summary.json").read_text())
    assert summary["kind"] == "tasks"
    for split, n in (("held_out", 2), ("seen", 1)):
        block = summary["splits"][split]
        assert block["num_tasks"] == n
        assert block["generated"]["num_models"] == 2 * n and block["reference"]["num_models"] == 2 * n
        assert block["majority"]["balanced_accuracy"]["mean"] == 0.5  # a constant predictor, by definition
        assert block["composed_head"]["num_models"] == n  # the shared backbone's own head, one per task
        assert block["nearest_seen"]["num_models"] == 2 * n  # the nearest seen task's 2 checkpoints per task
    assert "complement_swapped" not in summary["splits"]["held_out"]  # held out in pairs: never seen
    # the reference models are real classifiers of their tasks
    assert summary["splits"]["held_out"]["reference"]["balanced_accuracy"]["mean"] > 0.6
    assert summary["init_finetune"]["epochs"] == [0, 1] and summary["init_finetune"]["num_tasks"] == 1
    assert set(summary["checks"]) >= {
        "held_out_generated_near_reference",
        "held_out_generated_beats_strongest_baseline",
    }
    assert summary["comparison"]["winner"] in ("generated", *summary["comparison"]["baselines"])
    for png in ("task_accuracy.png", "init_finetune.png", "loss.png"):
        assert (ev / png).stat().st_size > 1000

    # the split; the token index carries the task vector of every seen checkpoint and no held-out task
    split = json.loads((res / "zoo" / "cnn_s" / "tasks.json").read_text())
    from rpg.tasks.vectors import task_id
    from rpg.tokens.store import TokenStore

    index = TokenStore(res / "tokens" / "cnn_s").index
    assert len(index) == 6 * 2
    assert sorted({task_id(list(t)) for t in index["task"]}) == sorted(split["seen"])
    assert not {task_id(list(t)) for t in index["task"]} & set(split["held_out"])

    # generated models carry their task and load strict=True into the 2-way architecture
    from rpg.zoo.checkpoint import load_checkpoint
    from rpg.zoo.models import build_model

    held = sorted((res / "generated" / "cnn_s" / "tasks" / "held_out").glob("*.safetensors"))
    assert len(held) == 4
    state, meta = load_checkpoint(held[0])
    assert meta["kind"] == "generated" and task_id(meta["task"]) == split["held_out"][0]
    build_model(meta["arch"], meta["arch_kwargs"]).load_state_dict(state, strict=True)
    assert meta["arch_kwargs"]["num_classes"] == 2

    report = (tasks_tiny_run / "results" / "report.html").read_text()
    assert "generated (RPG)" in report and "task_accuracy" in report

    # everything is up to date now (a dry run writes Snakemake's caches: in a copy)
    proc = snakemake("-n", "--configfile", str(TINY), "--directory", str(copy_run(tasks_tiny_run, tmp_path / "work")))
    assert "Nothing to be done" in proc.stdout + proc.stderr
