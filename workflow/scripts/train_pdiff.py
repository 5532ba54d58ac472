"""Snakemake adapter: train the p-diff baseline on a zoo's token store (rpg.stages.pdiff)."""

from pathlib import Path

from rpg.stages import pdiff
from rpg.stages.job import snakemake_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
with snakemake_job(sm, "train_pdiff") as settings:
    pdiff.train(settings, tokens_dir=sm.input.tokens, out_dir=Path(sm.output.model).parent)
