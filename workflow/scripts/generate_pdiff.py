"""Snakemake adapter: sample models from the trained p-diff baseline (rpg.pdiff)."""

from pathlib import Path

from rpg.pdiff.stages import generate_pdiff
from rpg.runtime import stage_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
with stage_logging(sm.log[0], sm.threads):
    generate_pdiff(
        pdiff_dir=Path(sm.input.model).parent,
        token_dir=sm.input.tokens,
        out_paths=[Path(p) for p in sm.output],
        generate_cfg=sm.params.generate,
        pdiff_cfg=sm.params.pdiff,
        device=sm.params.device,
    )
