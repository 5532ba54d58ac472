"""Snakemake adapter: sample new models from a trained generator (rpg.generate)."""

from pathlib import Path

from rpg.generate import generate_models
from rpg.runtime import stage_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
with stage_logging(sm.log[0], sm.threads):
    generate_models(
        generator_dir=Path(sm.input.model).parent,
        token_dir=sm.input.tokens,
        out_paths=[Path(p) for p in sm.output],
        generate_cfg=sm.params.generate,
        device=sm.params.device,
    )
