"""Snakemake adapter: sample models for the evaluated tasks from a task-conditioned generator (rpg.stages.tasks)."""

from pathlib import Path

from rpg.stages import tasks
from rpg.stages.job import snakemake_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
with snakemake_job(sm, "generate_tasks") as settings:
    tasks.generate(settings, models=sm.params.models, generator_dir=Path(sm.input.model).parent,
                   tokens_dir=sm.input.tokens)  # fmt: skip
