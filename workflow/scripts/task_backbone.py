"""Snakemake adapter: train the shared backbone of a task zoo on the full problem (rpg.stages.tasks)."""

from rpg.stages import tasks
from rpg.stages.job import snakemake_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
with snakemake_job(sm, "task_backbone") as settings:
    tasks.backbone(settings, out_path=sm.output.backbone, table_path=sm.output.table)
