"""Snakemake adapter: import one run of a bring-your-own zoo from its source folder (rpg.stages.collect)."""

from rpg.stages import collect
from rpg.stages.job import snakemake_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
with snakemake_job(sm, "import_run") as settings:
    collect.import_run(settings, run=int(sm.wildcards.run), out_dir=sm.output[0])
