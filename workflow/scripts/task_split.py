"""Snakemake adapter: write a task zoo's plan (seen / held-out tasks, groups, evaluated tasks) as JSON."""

from rpg.io import write_json
from rpg.stages.job import snakemake_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
with snakemake_job(sm):
    plan = sm.params.plan
    write_json(plan, sm.output[0])
