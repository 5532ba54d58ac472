"""Snakemake adapter: tokenize a zoo into layout/index tables and token shards (rpg.stages.tokenize)."""

from rpg.stages import tokenize
from rpg.stages.job import snakemake_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
with snakemake_job(sm, "tokenize") as settings:
    tokenize.tokenize(settings, run_dirs=list(sm.input.runs), out_dir=sm.output[0])
