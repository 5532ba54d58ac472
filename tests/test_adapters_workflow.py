"""The adapter workflow: the MiniLM preset's DAG, lint, config errors at start, and a tiny end-to-end run on a random
BERT up to the generated adapters in PEFT format."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from snakemake_helpers import job_counts, snakemake

ROOT = Path(__file__).resolve().parent.parent
MINILM = ROOT / "configs" / "adapters_minilm.yaml"


def test_dry_run_minilm_preset(tmp_path):
    proc = snakemake("-n", "--directory", str(tmp_path), "--configfile", str(MINILM))
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["collect_run"] == 3 * 2 * 2  # 3 tasks x (LoRA, DoRA) x 2 runs
    for rule in ("tokenize", "train_generator", "generate", "export_peft", "evaluate"):
        assert counts[rule] == 6, rule


def test_lint_is_clean_with_adapter_zoos():
    proc = snakemake("--lint", "--configfile", str(MINILM))
    assert "Congratulations" in proc.stdout + proc.stderr


def test_missing_base_model_is_named_at_start(tmp_path):
    cfg = yaml.safe_load(MINILM.read_text())
    cfg["experiments"]["minilm_topic"]["zoos"]["lora"]["adapter"]["base"] = str(tmp_path / "nowhere")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake("-n", "--configfile", str(path), "--directory", str(tmp_path), check=False)
    assert proc.returncode != 0
    assert "experiments.minilm_topic.zoos.lora.adapter.base" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_tiny_adapter_zoo_end_to_end(tmp_path):
    from adapter_models import tiny_bert

    from rpg.adapters.peft_io import read_peft_dir
    from rpg.zoo.checkpoint import load_checkpoint

    base = tiny_bert(tmp_path / "bert", layers=2)
    cfg = {"experiments": {"ad": {
        "device": "cpu",
        "data": {"name": "text", "task": "sentiment", "text_sizes": [12, 4, 4]},
        "zoos": {"dora": {"adapter": {"base": str(base), "method": "dora", "rank": 2, "layers": [1], "max_length": 32},
                          "runs": 2, "collect": {"epochs": 1, "batch_size": 8, "finetune_batch_size": 8,
                                                 "checkpoints": 2}}},
        "tokens": {"token_size": 32},
        "generator": {"preset": "tiny", "dim": 32, "d_state": 8, "headdim": 16, "denoiser_channels": [1, 8, 1]},
        "train": {"steps": 4, "batch_size": 2, "diffusion_batch": 16, "warmup_steps": 1, "save_every": 4},
        "generate": {"num_models": 3, "models_per_job": 2, "steps": 2},
    }}}  # fmt: skip
    path = tmp_path / "adapters.yaml"
    path.write_text(yaml.safe_dump(cfg))
    targets = ["results/ad/generated_peft/dora/batch000", "results/ad/generated_peft/dora/batch001"]
    snakemake("--cores", "2", "--configfile", str(path), "--directory", str(tmp_path), *targets)
    res = tmp_path / "results" / "ad"
    state, meta = load_checkpoint(res / "zoo" / "dora" / "run1" / "ckpt_001.safetensors")
    peft_state, config = read_peft_dir(res / "zoo" / "dora" / "run1" / "peft_001")
    assert sorted(peft_state) == sorted(state) and config["use_dora"] and config["layers_to_transform"] == [1]
    exported = sorted(p.name for p in (res / "generated_peft" / "dora").glob("batch*/model_*"))
    assert exported == ["model_000", "model_001", "model_002"]
    generated, gmeta = load_checkpoint(res / "generated" / "dora" / "batch001" / "model_002.safetensors")
    assert sorted(generated) == sorted(state) and gmeta["arch"] == meta["arch"]
    proc = snakemake("-n", "--configfile", str(path), "--directory", str(tmp_path), *targets)
    assert "Nothing to be done" in proc.stdout + proc.stderr
