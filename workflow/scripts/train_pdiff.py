"""Snakemake adapter: train the p-diff baseline (rpg.pdiff) on a zoo's token store."""

from pathlib import Path

from rpg.pdiff.stages import train_pdiff
from rpg.runtime import stage_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
with stage_logging(sm.log[0], sm.threads):
    train_pdiff(
        token_dir=sm.input.tokens,
        out_dir=Path(sm.output.model).parent,
        pdiff_cfg=sm.params.pdiff,
        device=sm.params.device,
    )
