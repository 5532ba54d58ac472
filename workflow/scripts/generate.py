"""Snakemake adapter: sample one batch of models from a trained generator (rpg.stages.generate)."""

from pathlib import Path

from rpg.stages import generate
from rpg.stages.job import snakemake_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
with snakemake_job(sm, "generate") as settings:
    generate.generate(settings, generator_dir=Path(sm.input.model).parent, tokens_dir=sm.input.tokens,
                      out_dir=sm.output[0], indices=sm.params.indices)  # fmt: skip
