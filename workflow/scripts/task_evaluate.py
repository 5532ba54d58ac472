"""Snakemake adapter: evaluate a task zoo on held-out and seen tasks (rpg.evaluate.tasks)."""

from pathlib import Path

from rpg.evaluate.tasks import evaluate_tasks
from rpg.io import read_json
from rpg.runtime import stage_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
with stage_logging(sm.log[0], sm.threads):
    evaluate_tasks(
        manifest=sm.params.manifest,
        data_cfg=sm.params.data,
        zoo_cfg=sm.params.zoo,
        backbone_path=sm.input.backbone,
        token_dir=sm.input.tokens,
        generator_dir=Path(sm.input.generator).parent,
        out_dir=Path(sm.output.summary).parent,
        device=sm.params.device,
        plan=read_json(sm.input.split),
    )
