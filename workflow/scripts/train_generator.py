"""Snakemake adapter: train the generator (rpg.stages.train); torchrun DDP when train.nproc > 1."""

from pathlib import Path

from rpg.stages import train
from rpg.stages.job import snakemake_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
with snakemake_job(sm, "train_generator") as settings:
    train.train(settings, tokens_dir=sm.input.tokens, out_dir=Path(sm.output.model).parent)
