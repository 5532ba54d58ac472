"""Snakemake adapter: train the generator (rpg.train); it starts torchrun itself when train.nproc > 1."""

from pathlib import Path

from rpg.runtime import stage_logging
from rpg.train import train_generator

sm = snakemake  # noqa: F821 (injected by Snakemake)
with stage_logging(sm.log[0], sm.threads):
    train_generator(
        token_dir=sm.input.tokens,
        out_dir=Path(sm.output.model).parent,
        generator_cfg=sm.params.generator,
        train_cfg=sm.params.train,
        device=sm.params.device,
    )
