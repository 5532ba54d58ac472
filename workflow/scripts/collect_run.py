"""Snakemake adapter: train one run of a zoo and save its checkpoints (rpg.stages.collect)."""

from rpg.stages import collect
from rpg.stages.job import snakemake_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
with snakemake_job(sm, "collect_run") as settings:
    collect.collect_run(settings, run=int(sm.wildcards.run), out_dir=sm.output[0])
