"""Snakemake adapter: evaluate originals, generated models and baselines of one zoo (rpg.evaluate)."""

from pathlib import Path

from rpg.evaluate import evaluate_zoo
from rpg.runtime import stage_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
with stage_logging(sm.log[0], sm.threads):
    evaluate_zoo(
        data_cfg=sm.params.data,
        token_dir=sm.input.tokens,
        checkpoint_paths=list(sm.input.checkpoints),
        generated_paths=list(sm.input.generated),
        pdiff_paths=list(sm.input.pdiff),
        generator_dir=Path(sm.input.generator).parent,
        out_dir=Path(sm.output.summary).parent,
        evaluate_cfg=sm.params.evaluate,
        device=sm.params.device,
    )
