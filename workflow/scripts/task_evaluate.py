"""Snakemake adapter: evaluate a task zoo on held-out and seen tasks (rpg.stages.tasks)."""

from pathlib import Path

from rpg.stages import tasks
from rpg.stages.job import snakemake_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
with snakemake_job(sm, "evaluate_tasks") as settings:
    tasks.evaluate_tasks(
        settings, manifest=sm.params.manifest, plan_path=sm.input.plan, backbone_path=sm.input.backbone,
        tokens_dir=sm.input.tokens, generator_dir=Path(sm.input.generator).parent,
        out_dir=Path(sm.output.summary).parent,
    )  # fmt: skip
