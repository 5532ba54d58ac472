"""Snakemake adapter: evaluate originals, generated models and baselines of one zoo (rpg.stages.evaluate)."""

from pathlib import Path

from rpg.stages import evaluate
from rpg.stages.job import snakemake_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
with snakemake_job(sm, "evaluate") as settings:
    evaluate.evaluate(
        settings, tokens_dir=sm.input.tokens, run_dirs=list(sm.input.runs), generated=list(sm.input.generated),
        pdiff=list(sm.input.pdiff), generator_dir=Path(sm.input.generator).parent,
        out_dir=Path(sm.output.summary).parent,
    )  # fmt: skip
