"""The stage layer: which settings reach each rule's params, the Snakemake job adapter, start-time checks."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import yaml

from rpg.config import resolve_config
from rpg.errors import RPGInputError
from rpg.stages.checks import check_settings
from rpg.stages.collect import run_checkpoints
from rpg.stages.generate import batch_models
from rpg.stages.job import snakemake_job
from rpg.stages.params import STAGES, stage_params
from rpg.stages.workflow import missing_intermediates

ROOT = Path(__file__).resolve().parent.parent
TINY = yaml.safe_load((ROOT / "tests" / "configs" / "tiny.yaml").read_text())
TASKS = yaml.safe_load((ROOT / "tests" / "configs" / "tasks_tiny.yaml").read_text())
EXECUTION = {"threads", "log_every", "save_every", "nproc", "gpus", "preload_max_mb", "num_models", "models_per_job",
             "batch_size", "device", "workers", "eval_batch_size", "scan", "enabled"}  # fmt: skip


def keys(d, prefix=""):
    for k, v in d.items():
        yield f"{prefix}{k}"
        if isinstance(v, dict):
            yield from keys(v, f"{prefix}{k}.")


@pytest.mark.parametrize("stage", STAGES)
def test_params_hold_only_result_settings(stage):
    settings = resolve_config(TASKS if "task" in stage else TINY)
    (s,) = (z for e in settings.values() for z in e.values())
    params = stage_params(s, stage)
    leaves = {k.rsplit(".", 1)[-1] for k in keys(params)}
    # evaluate.batch_size and data.batch_size are execution settings; generate's and collect's batch sizes are not
    allowed = {"batch_size"} if stage in ("collect_run", "task_backbone", "collect_task_group", "train_generator",
                                          "train_pdiff", "generate_pdiff", "evaluate_tasks") else set()  # fmt: skip
    assert not (leaves & EXECUTION) - allowed, (stage, leaves & EXECUTION)
    # a change of threads, devices or log intervals leaves every stage's params alone
    raw = yaml.safe_load(yaml.safe_dump(TASKS if "task" in stage else TINY))
    exp = next(iter(raw["experiments"].values()))
    exp.setdefault("train", {}).update(threads=3, log_every=7, save_every=11)
    exp.setdefault("generate", {}).update(threads=2, num_models=7)
    exp.setdefault("evaluate", {}).update(batch_size=99)
    exp["device"] = "cpu" if exp.get("device") != "cpu" else "auto"
    (s2,) = (z for e in resolve_config(raw).values() for z in e.values())
    assert stage_params(s2, stage) == params


def test_a_job_rejects_settings_that_changed_after_planning(tmp_path):
    settings = resolve_config(TINY)["tiny"]["cnn_s"]
    smk = types.SimpleNamespace(
        log=[str(tmp_path / "j.log")], threads=1, output=[str(tmp_path / "out")], config=TINY,
        wildcards=types.SimpleNamespace(items=lambda: [("exp", "tiny"), ("zoo", "cnn_s")]),
        params=types.SimpleNamespace(settings=stage_params(settings, "train_generator")),
    )  # fmt: skip
    with snakemake_job(smk, "train_generator") as got:
        assert got == settings
    smk.params.settings = {**smk.params.settings, "train": {**smk.params.settings["train"], "steps": 1}}
    with pytest.raises(RuntimeError, match="configuration changed"), snakemake_job(smk, "train_generator"):
        pass
    assert "configuration changed" in (tmp_path / "j.log").read_text()  # the failure is in the stage's log


def test_start_checks_name_the_key(tmp_path):
    assert check_settings(resolve_config(TINY)) == []
    bad = yaml.safe_load(yaml.safe_dump(TINY))
    bad["experiments"]["tiny"]["zoos"]["cnn_s"]["arch"] = "no_such_net_xyz"
    bad["experiments"]["tiny"]["data"] = {"name": "imagefolder", "root": str(tmp_path / "nowhere")}
    problems = check_settings(resolve_config(bad))
    assert any("experiments.tiny.zoos.cnn_s.arch" in p and "no_such_net_xyz" in p for p in problems)
    assert any("experiments.tiny.data.root" in p and "nowhere" in p for p in problems)


def test_run_and_batch_directories(tmp_path):
    run = tmp_path / "run0"
    run.mkdir()
    (run / "run.csv").write_text("path,run\n" + "".join(f"x/ckpt_{i:03d}.safetensors,0\n" for i in range(2)))
    (run / "ckpt_000.safetensors").write_bytes(b"")
    with pytest.raises(RPGInputError, match="ckpt_001.safetensors.*run.csv.*--force"):
        run_checkpoints([run])
    (run / "ckpt_001.safetensors").write_bytes(b"")
    assert [p.name for p in run_checkpoints([run])] == ["ckpt_000.safetensors", "ckpt_001.safetensors"]
    batch = tmp_path / "batch000"
    batch.mkdir()
    with pytest.raises(RPGInputError, match="no models"):
        batch_models([batch])
    (batch / "model_001.safetensors").write_bytes(b"")
    (batch / "model_000.safetensors").write_bytes(b"")
    assert [p.name for p in batch_models([batch])] == ["model_000.safetensors", "model_001.safetensors"]


def test_missing_intermediates_are_reported(tmp_path):
    settings = resolve_config(TINY)
    base = tmp_path / "results" / "tiny"
    (base / "tokens" / "cnn_s").mkdir(parents=True)
    (base / "zoo" / "cnn_s" / "run0").mkdir(parents=True)
    warnings = list(missing_intermediates(settings, tmp_path))
    assert len(warnings) == 1 and "results/tiny/zoo/cnn_s/run1 is missing" in warnings[0]
    assert "snakemake --cores all results/tiny/zoo/cnn_s/run1" in warnings[0]
