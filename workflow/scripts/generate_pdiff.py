"""Snakemake adapter: sample one batch of models from the trained p-diff baseline (rpg.stages.pdiff)."""

from pathlib import Path

from rpg.stages import pdiff
from rpg.stages.job import snakemake_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
with snakemake_job(sm, "generate_pdiff") as settings:
    pdiff.generate(settings, pdiff_dir=Path(sm.input.model).parent, tokens_dir=sm.input.tokens,
                   out_dir=sm.output[0], indices=sm.params.indices)  # fmt: skip
