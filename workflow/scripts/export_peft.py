"""Snakemake adapter: one batch of generated adapters as PEFT folders (rpg.stages.adapters)."""

from rpg.stages import adapters
from rpg.stages.job import snakemake_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
with snakemake_job(sm, "export_peft"):
    adapters.export_peft(batch_dir=sm.input[0], out_dir=sm.output[0])
