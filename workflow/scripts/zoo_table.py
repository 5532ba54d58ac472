"""Snakemake adapter: the table of all checkpoints of a zoo with their accuracy (rpg.stages.collect)."""

from rpg.stages import collect
from rpg.stages.job import snakemake_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
with snakemake_job(sm):
    collect.zoo_table(list(sm.input), sm.output[0])
